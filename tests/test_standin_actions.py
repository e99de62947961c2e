"""The stand-in's effect of the commands channelsd's actions send: att_xfer (consultation,
completion, the zombie transferor, cancel), uuid_recv_dtmf, speak/say broadcasts.

Expected events, orders and replies come from the reference notes
(/work/shared/reference/freeswitch-actions-verified.md, section numbers below).  Everything is
driven over real ESL sockets: one connection subscribed to ``json ALL``, one sending commands.
"""

from __future__ import annotations

import json
from typing import Any

import gevent
import pytest
from gevent import socket as gsocket

from channelsd.standin.commands import separate

Event = dict[str, Any]
NO_LISTING = ("CHANNEL_STATE", "API", "CODEC")


class Client:
    """Raw ESL client: packets out, frames in, nothing clever."""

    def __init__(self, port: int, subscribe: bool = False) -> None:
        self.sock = gsocket.create_connection(("127.0.0.1", port), timeout=5)
        self.buf = b""
        assert self._frame(2.0) is not None  # auth/request
        self.send("auth ClueCon")
        assert self.reply()[0]["Reply-Text"] == "+OK accepted"
        if subscribe:
            self.send("event json ALL")
            assert self.reply()[0]["Reply-Text"] == "+OK event listener enabled json"

    def send(self, text: str) -> None:
        self.sock.sendall(text.encode() + b"\n\n")

    def _frame(self, timeout: float) -> tuple[dict[str, str], bytes] | None:
        while True:
            end = self.buf.find(b"\n\n")
            if end >= 0:
                head = dict(line.split(": ", 1) for line in self.buf[:end].decode().split("\n"))
                total = end + 2 + int(head.get("Content-Length", 0))
                if len(self.buf) >= total:
                    body, self.buf = self.buf[end + 2 : total], self.buf[total:]
                    return head, body
            try:
                with gevent.Timeout(timeout):
                    data = self.sock.recv(65536)
            except gevent.Timeout:
                return None
            if not data:
                return None
            self.buf += data

    def reply(self) -> tuple[dict[str, str], bytes]:
        while True:
            frame = self._frame(2.0)
            assert frame is not None, "no reply"
            if not frame[0].get("Content-Type", "").startswith("text/event-"):
                return frame

    def api(self, command: str) -> bytes:
        self.send(f"api {command}")
        return self.reply()[1]

    def api_json(self, command: str) -> Any:
        return json.loads(self.api(command))

    def events(self, quiet: float = 0.3) -> list[Event]:
        """Every event until the connection stays quiet (duplicate keys: last one wins)."""
        out: list[Event] = []
        while (frame := self._frame(quiet)) is not None:
            if frame[0].get("Content-Type") == "text/event-json":
                out.append(json.loads(frame[1]))
        return out

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def esl(switch: Any):
    clients: list[Client] = []

    def make(subscribe: bool = False) -> Client:
        clients.append(Client(switch.port, subscribe))
        return clients[-1]

    yield make
    for c in clients:
        c.close()


# ------------------------------------------------------------------ helpers
def seq(events: list[Event], uid: str, skip: tuple[str, ...] = NO_LISTING) -> list[str]:
    """One leg's events as short labels: NAME, NAME:app, CALLSTATE:x, BRIDGE:a>b."""
    out = []
    for e in events:
        if e.get("Unique-ID") != uid or e["Event-Name"] in skip:
            continue
        name = e["Event-Name"].removeprefix("CHANNEL_")
        if "Application" in e:
            name += ":" + e["Application"]
        elif name == "CALLSTATE":
            name += ":" + e["Channel-Call-State"]
        out.append(name)
    return out


def index(events: list[Event], uid: str, name: str, **match: str) -> int:
    for i, e in enumerate(events):
        mine = e.get("Unique-ID") == uid and e["Event-Name"] == name
        if mine and all(e.get(k.replace("_", "-")) == v for k, v in match.items()):
            return i
    raise AssertionError(f"no {name} {match} on {uid}")


def rows(c: Client) -> dict[str, dict[str, str]]:
    return {r["uuid"]: r for r in c.api_json("show channels as json").get("rows", [])}


def bridged(c: Client) -> list[tuple[str, str]]:
    body = c.api_json("show bridged_calls as json")
    return sorted((r["uuid"], r["b_uuid"]) for r in body.get("rows", []))


class Call:
    """The reference's standard bridged call (§0.2): originate loopback/9002 -> A parked,
    A' (its twin) runs ``bridge`` = the caller (Bridge-A), B = loopback/9000-a the callee,
    B' its twin playing a tone."""

    def __init__(self, switch: Any) -> None:
        self.sw = switch
        self.a, _ = switch.originate(dest="9002")
        self.a2 = switch.channels[self.a].loopback_peer
        self.b = self._named("loopback/9000-a")
        self.b2 = self._named("loopback/9000-b")

    def _named(self, name: str) -> str:
        return next(ch.uuid for ch in self.sw.channels.values() if ch.name == name)

    def target(self, ext: str) -> tuple[str, str]:
        return self._named(f"loopback/{ext}-a"), self._named(f"loopback/{ext}-b")


@pytest.fixture
def call(switch: Any) -> Call:
    return Call(switch)


# ------------------------------------------------------------------ att_xfer: consultation
def test_att_xfer_consultation_events_order_and_state(switch, esl, call):
    """§2.2: EXECUTE att_xfer, RING_WAIT, T originated (Other-Leg = transferor, originator),
    ANSWER(T), transferor ACTIVE, BRIDGE A'->T; the old bridge is not unbridged.  The
    transferee gets its hold_music because no leg word was given (§2.3)."""
    ev, c = esl(subscribe=True), esl()
    assert c.api(f"uuid_setvar {call.b} hold_music /srv/moh.wav") == b"+OK\n"
    assert c.api(f"uuid_broadcast {call.a2} att_xfer::loopback/9003/default") == (
        b"+OK Message sent\n"
    )
    events = ev.events()
    t, t2 = call.target("9003")

    assert seq(events, call.a2) == [
        "EXECUTE:att_xfer",
        "CALLSTATE:RING_WAIT",
        "CALLSTATE:ACTIVE",
        "BRIDGE",
    ]
    execute = events[index(events, call.a2, "CHANNEL_EXECUTE")]
    assert execute["Application-Data"] == "loopback/9003/default"
    bridge = events[index(events, call.a2, "CHANNEL_BRIDGE")]
    assert (bridge["Bridge-A-Unique-ID"], bridge["Bridge-B-Unique-ID"]) == (call.a2, t)
    assert not [e for e in events if e["Event-Name"] == "CHANNEL_UNBRIDGE"]

    assert seq(events, call.b) == ["EXECUTE:playback", "PLAYBACK_START"]
    start = events[index(events, call.b, "PLAYBACK_START")]
    assert start["Playback-File-Path"] == "/srv/moh.wav"

    create = events[index(events, t, "CHANNEL_CREATE")]
    assert create["Channel-Name"] == "loopback/9003-a" and create["Call-Direction"] == "outbound"
    assert create["Other-Leg-Unique-ID"] == call.a2 and create["Other-Type"] == "originator"
    originate = events[index(events, t, "CHANNEL_ORIGINATE")]
    assert originate["Other-Leg-Unique-ID"] == call.a2
    assert seq(events, t2)[-2:] == ["EXECUTE:park", "PARK"]  # its twin runs the extension

    i_exec = index(events, call.a2, "CHANNEL_EXECUTE")
    i_wait = index(events, call.a2, "CHANNEL_CALLSTATE", Channel_Call_State="RING_WAIT")
    i_create = index(events, t, "CHANNEL_CREATE")
    i_answer = index(events, t, "CHANNEL_ANSWER")
    i_active = index(events, call.a2, "CHANNEL_CALLSTATE", Channel_Call_State="ACTIVE")
    i_bridge = index(events, call.a2, "CHANNEL_BRIDGE")
    assert i_exec < i_wait < i_create < i_answer < i_active < i_bridge

    listed = rows(c)
    assert len(listed) == 6
    assert listed[call.a2]["application"] == "att_xfer"
    assert listed[call.a2]["application_data"] == "loopback/9003/default"
    assert listed[call.a2]["callstate"] == "ACTIVE" and listed[call.a2]["state"] == "CS_EXECUTE"
    assert listed[call.b]["state"] == "CS_EXCHANGE_MEDIA"
    assert listed[t]["state"] == "CS_EXCHANGE_MEDIA" and listed[t]["direction"] == "outbound"
    # §2.2: show bridged_calls lists the transferor twice, with the transferee and with T
    assert bridged(c) == sorted([(call.a2, call.b), (call.a2, t)])

    dump = c.api_json(f"uuid_dump {call.a2} json")
    assert dump["variable_bridge_to"] == t and dump["variable_signal_bond"] == t
    assert dump["Other-Leg-Unique-ID"] == t
    assert c.api_json(f"uuid_dump {call.b} json")["variable_bridge_to"] == call.a2


def test_att_xfer_ringing_target_keys_wait_for_answer(switch, esl, call):
    """§2.2 with a ringing target (CHANNEL_PROGRESS); §2.5: keys only work after the answer."""
    ev, c = esl(subscribe=True), esl()
    c.api(f"uuid_broadcast {call.a2} att_xfer::loopback/9004/default aleg")
    t, _ = call.target("9004")
    events = ev.events()
    assert "PROGRESS" in seq(events, t) and seq(events, call.b) == []  # aleg: no hold music
    assert rows(c)[call.a2]["callstate"] == "RING_WAIT"
    assert rows(c)[t]["callstate"] == "RINGING"
    ev.events()  # the API events of those listings

    assert c.api(f"uuid_recv_dtmf {call.a2} #") == f"+OK {call.a2} received DTMF #.\n".encode()
    assert [e["Event-Name"] for e in ev.events()] == ["API"]

    assert c.api(f"uuid_answer {t}") == b"+OK\n"
    events = ev.events()
    assert seq(events, call.a2) == ["CALLSTATE:ACTIVE", "BRIDGE"]
    assert index(events, t, "CHANNEL_ANSWER") < index(events, call.a2, "CHANNEL_BRIDGE")
    assert bridged(c) == sorted([(call.a2, call.b), (call.a2, t)])


# ------------------------------------------------------------------ att_xfer: completion
def test_att_xfer_completion_leaves_a_zombie_transferor(switch, esl, call):
    """§2.4 + §2.6: without playable hold music, the Bridge-A transferor's hangup fires only
    CHANNEL_HANGUP; T and the transferee are parked, unparked and uuid_bridge'd (BRIDGE T->B).
    The zombie stays listed until the new bridge ends, then gets its late UNBRIDGE,
    EXECUTE_COMPLETE bridge, HANGUP_COMPLETE and DESTROY."""
    ev, c = esl(subscribe=True), esl()
    c.api(f"uuid_broadcast {call.a2} att_xfer::loopback/9003/default")
    t, t2 = call.target("9003")
    events = ev.events()
    # the global hold_music (local_stream://moh) was not playable on the reference switch
    assert seq(events, call.b) == ["EXECUTE:playback", "EXECUTE_COMPLETE:playback"]
    assert events[index(events, call.b, "CHANNEL_EXECUTE_COMPLETE")]["Application-Response"] == (
        "FILE NOT FOUND"
    )

    assert c.api(f"uuid_kill {call.a2}") == b"+OK\n"
    events = ev.events()
    assert seq(events, call.a2) == ["HANGUP"]
    assert events[index(events, call.a2, "CHANNEL_HANGUP")]["Hangup-Cause"] == "NORMAL_CLEARING"
    assert seq(events, call.a) == []  # its loopback twin lingers too
    assert seq(events, call.b) == ["PARK", "UNPARK", "EXECUTE:uuid_bridge"]
    assert seq(events, t) == ["PARK", "UNPARK", "EXECUTE:uuid_bridge", "BRIDGE"]
    bridge = events[index(events, t, "CHANNEL_BRIDGE")]
    assert (bridge["Bridge-A-Unique-ID"], bridge["Bridge-B-Unique-ID"]) == (t, call.b)
    assert index(events, call.a2, "CHANNEL_HANGUP") < index(events, call.b, "CHANNEL_PARK")

    listed = rows(c)
    assert set(listed) == {call.a, call.a2, call.b, call.b2, t, t2}
    zombie = listed[call.a2]
    assert (zombie["state"], zombie["callstate"], zombie["application"]) == (
        "CS_EXECUTE",
        "ACTIVE",
        "att_xfer",
    )
    assert listed[t]["state"] == "CS_SOFT_EXECUTE" and listed[call.b]["state"] == (
        "CS_EXCHANGE_MEDIA"
    )
    assert listed[t]["application"] == "uuid_bridge"
    assert (t, call.b) in bridged(c)
    assert c.api(f"uuid_exists {call.a2}") == b"false"
    assert c.api(f"uuid_dump {call.a2} json") == b"-ERR No such channel!\n"
    assert c.api(f"uuid_kill {call.a2}") == b"-ERR No such channel!\n"
    dump = c.api_json(f"uuid_dump {t} json")
    assert dump["variable_bridge_to"] == call.b and dump["Other-Leg-Unique-ID"] == call.b

    ev.events()
    assert c.api(f"uuid_kill {t}") == b"+OK\n"  # the new bridge ends
    events = ev.events()
    assert seq(events, call.a2) == [
        "UNBRIDGE",
        "EXECUTE_COMPLETE:bridge",
        "CALLSTATE:HANGUP",
        "HANGUP_COMPLETE",
        "DESTROY",
    ]
    unbridge = events[index(events, call.a2, "CHANNEL_UNBRIDGE")]
    assert unbridge["Bridge-B-Unique-ID"] == call.b
    assert index(events, call.b, "CHANNEL_HANGUP") < index(
        events, call.a2, "CHANNEL_HANGUP_COMPLETE"
    )
    assert "DESTROY" in seq(events, call.a)
    assert not switch.channels
    assert c.api("show channels as json") == b'{"row_count": 0}\n'


@pytest.mark.parametrize(
    ("hold_music", "leg", "zombie"),
    [
        (None, "", True),  # §2.6: every run without hold music
        ("/srv/moh.wav", " aleg", True),  # aleg: the transferee is not held at all
        ("/srv/moh.wav", "", False),  # §2.6: 0 of 4 runs with playable hold music
    ],
)
def test_att_xfer_zombie_depends_on_hold_music(switch, esl, call, hold_music, leg, zombie):
    ev, c = esl(subscribe=True), esl()
    if hold_music:
        c.api(f"uuid_setvar {call.b} hold_music {hold_music}")
    c.api(f"uuid_broadcast {call.a2} att_xfer::loopback/9003/default{leg}")
    ev.events()
    # §2.4: the hangup key, injected as the transferor's phone, completes like uuid_kill
    assert c.api(f"uuid_recv_dtmf {call.a2} *") == f"+OK {call.a2} received DTMF *.\n".encode()
    events = ev.events()
    t, _ = call.target("9003")
    assert events[index(events, t, "CHANNEL_BRIDGE")]["Bridge-B-Unique-ID"] == call.b
    assert (call.a2 in rows(c)) is zombie
    if zombie:
        assert seq(events, call.a2) == ["HANGUP"]
    else:
        assert seq(events, call.a2)[-2:] == ["HANGUP_COMPLETE", "DESTROY"]
        assert seq(events, call.b)[:2] == ["PLAYBACK_STOP", "EXECUTE_COMPLETE:playback"]
        assert index(events, call.b, "PLAYBACK_STOP") < index(events, call.b, "CHANNEL_PARK")
        assert call.a not in rows(c)  # the twin went with it


def test_att_xfer_callee_transferor_is_no_zombie(switch, esl, call):
    """§2.6: not a zombie in the run where the transferor was the callee B.  The caller A'
    is the transferee; its leaving the ``bridge`` app before the PARK is derived."""
    ev, c = esl(subscribe=True), esl()
    c.api(f"uuid_broadcast {call.b} att_xfer::loopback/9003/default")
    t, _ = call.target("9003")
    ev.events()
    c.api(f"uuid_kill {call.b}")
    events = ev.events()
    assert seq(events, call.b)[-2:] == ["HANGUP_COMPLETE", "DESTROY"]
    bridge = events[index(events, t, "CHANNEL_BRIDGE")]
    assert (bridge["Bridge-A-Unique-ID"], bridge["Bridge-B-Unique-ID"]) == (t, call.a2)
    assert seq(events, call.a2) == [
        "UNBRIDGE",
        "EXECUTE_COMPLETE:bridge",
        "PARK",
        "UNPARK",
        "EXECUTE:uuid_bridge",
    ]
    assert bridged(c) == [(t, call.a2)]


def test_att_xfer_zombie_can_be_switched_off(switch, esl, call):
    """``model.attxfer_zombie`` overrides the reference's rule, for daemon tests."""
    switch.model.attxfer_zombie = False
    ev, c = esl(subscribe=True), esl()
    c.api(f"uuid_broadcast {call.a2} att_xfer::loopback/9003/default")
    ev.events()
    c.api(f"uuid_kill {call.a2}")
    assert seq(ev.events(), call.a2)[-2:] == ["HANGUP_COMPLETE", "DESTROY"]
    assert call.a2 not in rows(c)


# ------------------------------------------------------------------ att_xfer: cancel
@pytest.mark.parametrize("how", ["default key", "own key", "target hangs up"])
def test_att_xfer_cancel_rebridges_transferor(switch, esl, call, how):
    """§2.5: T hangs up NORMAL_CLEARING, then the transferor's old bridge is UNBRIDGEd and a
    new BRIDGE A=transferor B=transferee made via uuid_bridge."""
    ev, c = esl(subscribe=True), esl()
    c.api(f"uuid_setvar {call.b} hold_music /srv/moh.wav")
    if how == "own key":
        assert c.api(f"uuid_setvar {call.a2} attxfer_cancel_key 9") == b"+OK\n"
    c.api(f"uuid_broadcast {call.a2} att_xfer::loopback/9003/default")
    t, t2 = call.target("9003")
    ev.events()
    if how == "own key":
        c.api(f"uuid_recv_dtmf {call.a2} #")  # not a key any more: goes to the target
        assert [e["Event-Name"] for e in ev.events()] == ["API"]
        reply = c.api(f"uuid_recv_dtmf {call.a2} 9")
    elif how == "default key":
        reply = c.api(f"uuid_recv_dtmf {call.a2} #")
    else:
        reply = c.api(f"uuid_kill {t}")
    assert reply.startswith(b"+OK")
    events = ev.events()

    hangup = events[index(events, t, "CHANNEL_HANGUP")]
    assert hangup["Hangup-Cause"] == "NORMAL_CLEARING"
    assert seq(events, t)[-1] == "DESTROY" and seq(events, t2)[-1] == "DESTROY"
    assert seq(events, call.a2) == [
        "EXECUTE_COMPLETE:att_xfer",
        "UNBRIDGE",
        "EXECUTE_COMPLETE:bridge",
        "EXECUTE:uuid_bridge",
        "BRIDGE",
    ]
    unbridge = events[index(events, call.a2, "CHANNEL_UNBRIDGE")]
    bridge = events[index(events, call.a2, "CHANNEL_BRIDGE")]
    assert unbridge["Bridge-B-Unique-ID"] == call.b
    assert (bridge["Bridge-A-Unique-ID"], bridge["Bridge-B-Unique-ID"]) == (call.a2, call.b)
    assert index(events, t, "CHANNEL_HANGUP") < index(events, call.a2, "CHANNEL_UNBRIDGE")
    assert seq(events, call.b)[:2] == ["PLAYBACK_STOP", "EXECUTE_COMPLETE:playback"]

    listed = rows(c)
    assert set(listed) == {call.a, call.a2, call.b, call.b2}
    assert listed[call.a2]["state"] == "CS_SOFT_EXECUTE"
    assert listed[call.b]["state"] == "CS_EXCHANGE_MEDIA"
    assert bridged(c) == [(call.a2, call.b)]
    assert c.api_json(f"uuid_dump {call.a2} json")["variable_bridge_to"] == call.b


def test_att_xfer_ringing_target_killed_resumes_old_bridge(switch, esl, call):
    """§2.5: uuid_kill of a still-ringing target -- the old bridge simply resumes (no BRIDGE)."""
    ev, c = esl(subscribe=True), esl()
    c.api(f"uuid_broadcast {call.a2} att_xfer::loopback/9004/default aleg")
    t, _ = call.target("9004")
    ev.events()
    c.api(f"uuid_kill {t}")
    events = ev.events()
    assert not [e for e in events if "BRIDGE" in e["Event-Name"]]
    assert seq(events, call.a2) == ["CALLSTATE:ACTIVE", "EXECUTE_COMPLETE:att_xfer"]
    assert bridged(c) == [(call.a2, call.b)]
    # the old bridge is whole again: the callee leaving ends the caller as usual
    c.api(f"uuid_kill {call.b}")
    assert not switch.channels


def test_att_xfer_transferor_hangs_up_while_target_rings(switch, esl, call):
    """§2.5: everybody lost -- T DESTINATION_OUT_OF_ORDER, the transferee ORIGINATOR_CANCEL."""
    ev, c = esl(subscribe=True), esl()
    c.api(f"uuid_broadcast {call.a2} att_xfer::loopback/9004/default aleg")
    t, _ = call.target("9004")
    ev.events()
    c.api(f"uuid_kill {call.a2}")
    causes = {
        e["Unique-ID"]: e["Hangup-Cause"]
        for e in ev.events()
        if e["Event-Name"] == "CHANNEL_HANGUP"
    }
    assert causes[t] == "DESTINATION_OUT_OF_ORDER"
    assert causes[call.b] == "ORIGINATOR_CANCEL"
    assert not switch.channels


# ------------------------------------------------------------------ uuid_recv_dtmf, sendmsg
def test_uuid_recv_dtmf_replies(switch, esl):
    ev, c = esl(subscribe=True), esl()
    p, _ = switch.originate(dest="9003")
    ev.events()
    assert c.api(f"uuid_recv_dtmf {p} 123") == f"+OK {p} received DTMF 123.\n".encode()
    assert [e["Event-Name"] for e in ev.events()] == ["API"]
    unknown = "00000000-0000-0000-0000-000000000000"
    assert c.api(f"uuid_recv_dtmf {unknown} 1") == b"-ERR Cannot locate session!\n"
    assert c.api(f"uuid_recv_dtmf {p}") == b"-USAGE: <uuid> <dtmf_data>\n"


def test_sendmsg_execute_att_xfer_matches_aleg_broadcast(switch, esl, call):
    """§2.1: sendmsg execute att_xfer gives the events of the aleg broadcast."""
    ev, c = esl(subscribe=True), esl()
    c.send(
        f"sendmsg {call.a2}\ncall-command: execute\nexecute-app-name: att_xfer\n"
        "execute-app-arg: loopback/9003/default"
    )
    assert c.reply()[0]["Reply-Text"] == "+OK"
    events = ev.events()
    assert seq(events, call.a2) == [
        "EXECUTE:att_xfer",
        "CALLSTATE:RING_WAIT",
        "CALLSTATE:ACTIVE",
        "BRIDGE",
    ]
    assert seq(events, call.b) == []


# ------------------------------------------------------------------ speak / say
def test_separate_groups_single_quotes_like_freeswitch():
    line = "U 'speak::flite|kal|Hello there, caller' aleg"
    assert separate(line, 3) == ["U", "speak::flite|kal|Hello there, caller", "aleg"]
    assert separate("U 'say::en number pronounced 1234' aleg", 3)[1] == (
        "say::en number pronounced 1234"
    )
    assert separate("U speak::a b aleg", 3) == ["U", "speak::a", "b aleg"]
    assert separate("U it's", 3) == ["U", "it's"]  # a lone quote stays
    assert separate(r"U a\sb 'c d'e", 3) == ["U", "a b", "c de"]
    assert separate("U foo bar 'baz qux'", 3) == ["U", "foo", "bar baz qux"]


@pytest.mark.parametrize(
    ("path", "app", "data"),
    [
        ("'speak::flite|kal|Hello there, caller'", "speak", "flite|kal|Hello there, caller"),
        ("'say::en number pronounced 1234'", "say", "en number pronounced 1234"),
    ],
)
def test_speak_and_say_broadcast_on_a_parked_leg(switch, esl, path, app, data):
    ev, c = esl(subscribe=True), esl()
    p, _ = switch.originate(dest="9003")
    ev.events()
    assert c.api(f"uuid_broadcast {p} {path} aleg") == b"+OK Message sent\n"
    events = ev.events()
    assert seq(events, p) == [f"EXECUTE:{app}", f"EXECUTE_COMPLETE:{app}"]
    for e in events[-2:]:
        assert e["Application"] == app and e["Application-Data"] == data
    assert not [e for e in events if e["Event-Name"].startswith("PLAYBACK")]
    row = rows(c)[p]
    # the leg is back in park; the listing's application column is stale (§0.3)
    assert row["state"] == "CS_EXECUTE" and (row["application"], row["application_data"]) == (
        app,
        data,
    )
    c.api(f"uuid_kill {p}")
    assert seq(ev.events(), p)[:3] == ["HANGUP", "UNPARK", "EXECUTE_COMPLETE:park"]


def test_speak_broadcast_legs_and_hold(switch, esl, call):
    ev, c = esl(subscribe=True), esl()
    c.api(f"uuid_broadcast {call.a2} 'say::en number pronounced 7' bleg")
    events = ev.events()
    assert seq(events, call.b) == ["EXECUTE:say", "EXECUTE_COMPLETE:say"]
    assert seq(events, call.a2) == []
    c.api(f"uuid_broadcast {call.a2} 'speak::flite|kal|Hi there' both")
    events = ev.events()
    assert (
        seq(events, call.a2) == seq(events, call.b) == ["EXECUTE:speak", "EXECUTE_COMPLETE:speak"]
    )
    # no leg word: the partner hears its hold_music meanwhile (§5.1)
    c.api(f"uuid_setvar {call.b} hold_music /srv/moh.wav")
    c.api(f"uuid_broadcast {call.a2} 'speak::flite|kal|Hold on'")
    events = ev.events()
    assert seq(events, call.b) == [
        "EXECUTE:playback",
        "PLAYBACK_START",
        "PLAYBACK_STOP",
        "EXECUTE_COMPLETE:playback",
    ]
    # derived order: the partner is put on hold before the app runs
    assert index(events, call.b, "PLAYBACK_START") < index(events, call.a2, "CHANNEL_EXECUTE")
    # the caller's bridge survives the nested app: the callee leaving still ends it normally
    c.api(f"uuid_kill {call.b}")
    events = ev.events()
    assert seq(events, call.a2)[:3] == ["UNBRIDGE", "EXECUTE_COMPLETE:bridge", "HANGUP"]


def test_unquoted_speak_plays_nothing(switch, esl):
    """§5.1: a path with spaces must be quoted; unquoted the rest is an unknown leg word."""
    ev, c = esl(subscribe=True), esl()
    p, _ = switch.originate(dest="9003")
    ev.events()
    assert c.api(f"uuid_broadcast {p} speak::flite|kal|Hello there aleg") == b"+OK Message sent\n"
    assert [e["Event-Name"] for e in ev.events()] == ["API"]


# ------------------------------------------------------------------ intercept (reference §3.3)
def hangup_causes(events: list[Event]) -> dict[str, str]:
    return {
        e["Unique-ID"]: e["Hangup-Cause"] for e in events if e["Event-Name"] == "CHANNEL_HANGUP"
    }


def job_body(events: list[Event]) -> str:
    return next(e["_body"] for e in events if e["Event-Name"] == "BACKGROUND_JOB")


def ringing_call(switch: Any) -> tuple[str, str, str]:
    """9014: the caller A' (loopback/9014-b) rings its callee B (loopback/9004-a)."""
    a, a2 = switch.originate(dest="9014")
    b = next(c.uuid for c in switch.channels.values() if c.variables.get("originator") == a2)
    return a, a2, b


def test_intercepting_a_ringing_outbound_callee_loses_everybody(switch, esl):
    """§3.3 the ringing outbound callee leg itself: caller PICKED_OFF, callee
    DESTINATION_OUT_OF_ORDER, interceptor ORIGINATOR_CANCEL -- and the job said +OK."""
    _, a2, b = ringing_call(switch)
    ev, c = esl(subscribe=True), esl()
    c.send(f"bgapi originate {{origination_uuid=ii}}loopback/7000/default &intercept({b})")
    assert c.reply()[0]["Reply-Text"].startswith("+OK Job-UUID")
    events = ev.events()
    assert job_body(events) == "+OK ii\n"
    causes = hangup_causes(events)
    assert (causes[a2], causes[b], causes["ii"]) == (
        "PICKED_OFF",
        "DESTINATION_OUT_OF_ORDER",
        "ORIGINATOR_CANCEL",
    )
    assert not [e for e in events if e["Event-Name"] == "CHANNEL_BRIDGE"]


@pytest.mark.parametrize("form", ["quoted", "unquoted"])
def test_intercept_bleg_of_a_ringing_callee_picks_up_only_when_quoted(switch, esl, form):
    """§3.1/§3.3: '&intercept(-bleg <callee>)' picks up the caller (callee PICKED_OFF);
    unquoted the space splits it and intercept runs with Application-Data=-bleg: it fails,
    the interceptor hangs up NORMAL_CLEARING, and the job still says +OK."""
    _, a2, b = ringing_call(switch)
    ev, c = esl(subscribe=True), esl()
    app = f"&intercept(-bleg {b})"
    c.send(
        "bgapi originate {origination_uuid=ii}loopback/7000/default "
        + (f"'{app}'" if form == "quoted" else app)
    )
    c.reply()
    events = ev.events()
    assert job_body(events) == "+OK ii\n"
    execute = next(
        e
        for e in events
        if e.get("Unique-ID") == "ii"
        and e["Event-Name"] == "CHANNEL_EXECUTE"
        and e["Application"] == "intercept"
    )
    causes = hangup_causes(events)
    if form == "quoted":
        assert execute["Application-Data"] == f"-bleg {b}"
        assert causes[b] == "PICKED_OFF" and "ii" not in causes and a2 not in causes
        bridge = next(e for e in events if e["Event-Name"] == "CHANNEL_BRIDGE")
        assert (bridge["Bridge-A-Unique-ID"], bridge["Bridge-B-Unique-ID"]) == ("ii", a2)
    else:
        assert execute["Application-Data"] == "-bleg"
        assert causes["ii"] == "NORMAL_CLEARING"
        assert a2 not in causes and b not in causes  # the call rings on


def test_a_refused_intercept_still_answers_ok(switch, esl):
    """§3.3 (c) with intercept_unbridged_only=true: the interceptor answers, runs intercept and
    hangs up NORMAL_CLEARING; the bridged pair is untouched; BACKGROUND_JOB says +OK."""
    a2, b = switch.bridged_call()
    ev, c = esl(subscribe=True), esl()
    c.send(
        "bgapi originate {origination_uuid=ii,intercept_unbridged_only=true}"
        f"loopback/7000/default &intercept({b})"
    )
    c.reply()
    events = ev.events()
    assert job_body(events) == "+OK ii\n"
    assert hangup_causes(events)["ii"] == "NORMAL_CLEARING"
    assert a2 not in hangup_causes(events) and b not in hangup_causes(events)
    assert bridged(c) == [(a2, b)]


# ------------------------------------------------------------------ uuid_bridge traps (§6.3)
def test_uuid_bridge_of_a_leg_with_itself_strands_it(switch, esl, call):
    ev, c = esl(subscribe=True), esl()
    p, _ = switch.originate(dest="9003")
    ev.events()
    assert c.api(f"uuid_bridge {p} {p}") == f"+OK {p}\n".encode()
    events = ev.events()
    assert seq(events, p) == ["UNPARK", "EXECUTE_COMPLETE:park"]
    assert rows(c)[p]["state"] == "CS_SOFT_EXECUTE"
    assert c.api(f"uuid_getvar {p} signal_bond") == p.encode()
    assert not [e for e in events if e["Event-Name"] == "CHANNEL_BRIDGE"]


def test_uuid_bridge_of_a_loopback_twin_crashes_the_switch(switch, esl):
    """§6.3: a segfault. Modelled as the process dying and coming back: no reply, every
    connection drops, a new Core-UUID and no calls."""
    p, p2 = switch.originate(dest="9003")
    before = switch.core_uuid
    c = esl()
    c.send(f"api uuid_bridge {p} {p2}")
    assert c._frame(1.0) is None  # the connection closed with no reply
    assert switch.core_uuid != before and not switch.channels and switch.crashes == 1
    c2 = esl()
    assert c2.api("show channels as json") == b'{"row_count": 0}\n'


def test_uuid_bridge_of_an_unanswered_leg_loses_both(switch, esl):
    """§6.3: +OK, then the ringing leg dies DESTINATION_OUT_OF_ORDER (its pending originate
    fails) and the answered one ORIGINATOR_CANCEL."""
    p, _ = switch.originate(dest="9003")
    r, r2 = switch.originate(dest="9004")  # r2: 9004-b, ringing inbound; r waits on it
    ev, c = esl(subscribe=True), esl()
    assert c.api(f"uuid_bridge {p} {r2}") == f"+OK {r2}\n".encode()
    causes = hangup_causes(ev.events())
    assert (causes[r2], causes[r], causes[p]) == (
        "DESTINATION_OUT_OF_ORDER",
        "DESTINATION_OUT_OF_ORDER",
        "ORIGINATOR_CANCEL",
    )


# ------------------------------------------------------------------ hold per endpoint (§4)
def test_uuid_hold_on_loopback_is_one_way(switch, esl, call):
    """§4.3: HOLD without HELD; off answers -ERR; toggle holds again; re-bridging the pair
    brings the audio back with UNBRIDGE + BRIDGE and no UNHOLD."""
    ev, c = esl(subscribe=True), esl()
    assert c.api(f"uuid_hold {call.a2}") == b"+OK Success\n"
    events = ev.events()
    assert seq(events, call.a2) == ["HOLD"]
    assert seq(events, call.b) == ["EXECUTE:playback", "EXECUTE_COMPLETE:playback"]
    assert rows(c)[call.a2]["callstate"] == "ACTIVE"
    assert c.api(f"uuid_hold off {call.a2}") == b"-ERR Operation failed\n"
    assert c.api(f"uuid_hold toggle {call.a2}") == b"+OK Success\n"
    assert seq(ev.events(), call.a2) == ["HOLD"]
    assert switch.channels[call.a2].audio_cut
    assert c.api(f"uuid_bridge {call.a2} {call.b}") == f"+OK {call.b}\n".encode()
    events = ev.events()
    names = seq(events, call.a2)
    assert "UNBRIDGE" in names and names[-1] == "BRIDGE" and "UNHOLD" not in names
    assert not switch.channels[call.a2].audio_cut


def test_uuid_hold_on_sip_plays_the_held_legs_hold_music_to_the_partner(switch, esl):
    """§4.2: HELD + HOLD, the partner plays the held leg's hold_music; off: UNHELD, ACTIVE,
    UNHOLD, then the partner's PLAYBACK_STOP."""
    s, s2 = switch.bridged_call(name_a="sofia/internal/1001@x", name_b="sofia/internal/1002@x")
    ev, c = esl(subscribe=True), esl()
    c.api(f"uuid_setvar {s} hold_music /srv/moh.wav")
    assert c.api(f"uuid_hold {s}") == b"+OK Success\n"
    events = ev.events()
    assert seq(events, s) == ["CALLSTATE:HELD", "HOLD"]
    assert seq(events, s2) == ["EXECUTE:playback", "PLAYBACK_START"]
    assert events[index(events, s2, "PLAYBACK_START")]["Playback-File-Path"] == "/srv/moh.wav"
    assert c.api(f"uuid_hold {s}") == b"-ERR Operation failed\n"
    assert c.api(f"uuid_hold off {s}") == b"+OK Success\n"
    events = ev.events()
    assert seq(events, s) == ["CALLSTATE:UNHELD", "CALLSTATE:ACTIVE", "UNHOLD"]
    assert seq(events, s2) == ["PLAYBACK_STOP", "EXECUTE_COMPLETE:playback"]
    assert index(events, s, "CHANNEL_UNHOLD") < index(events, s2, "PLAYBACK_STOP")


# ------------------------------------------------------------------ transfer (§1)
def test_uuid_transfer_both_hangs_nobody_up(switch, esl, call):
    ev, c = esl(subscribe=True), esl()
    assert c.api(f"uuid_transfer {call.a2} -both 9003 XML default") == b"+OK\n"
    events = ev.events()
    assert not hangup_causes(events)
    assert [e["Event-Name"] for e in events].count("CHANNEL_UNBRIDGE") == 1
    assert bridged(c) == []
    for leg in (call.a2, call.b):
        assert seq(events, leg)[-2:] == ["EXECUTE:park", "PARK"]


def test_park_after_bridge_keeps_the_callee(switch, esl, call):
    """§1.4 on the callee: park_after_bridge parks it (PARK, no EXECUTE park)."""
    ev, c = esl(subscribe=True), esl()
    c.api(f"uuid_setvar {call.b} park_after_bridge true")
    c.api(f"uuid_transfer {call.a2} 9003 XML default")
    events = ev.events()
    assert call.b not in hangup_causes(events)
    assert seq(events, call.b) == ["PARK"]  # CS_PARK and CHANNEL_PARK, no EXECUTE park
    assert rows(c)[call.b]["state"] == "CS_PARK"


# ------------------------------------------------------------------ take-back sequences
def test_bind_digit_action_watches_a_sequence_and_runs_its_api_action(switch, esl, call):
    """Modelled from FreeSWITCH's code (not verified on a real switch): digits a phone sends
    go through the digit machine; uuid_recv_dtmf's go past it unless they start with `~`."""
    ev, c = esl(subscribe=True), esl()
    c.api(f"uuid_setvar {call.b} hold_music /srv/moh.wav")
    c.api(f"uuid_setvar {call.a2} attxfer_cancel_key D")
    bind = f"'bind_digit_action::channelsd_takeback,*1,api:uuid_recv_dtmf,{call.a2} D'"
    assert c.api(f"uuid_broadcast {call.a2} {bind} aleg") == b"+OK Message sent\n"
    c.api(f"uuid_broadcast {call.a2} att_xfer::loopback/9003/default")
    t, _ = call.target("9003")
    events = ev.events()
    assert seq(events, call.a2)[:2] == [
        "EXECUTE:bind_digit_action",
        "EXECUTE_COMPLETE:bind_digit_action",
    ]
    # "*" past the machine is att_xfer's hang-up key... so not pressed here; "1" is not a key
    c.api(f"uuid_recv_dtmf {call.a2} 1")
    assert switch.channels[t].alive
    c.api(f"uuid_recv_dtmf {call.a2} ~*")  # held back: it may start the sequence
    assert switch.channels[t].alive and switch.channels[call.a2].alive
    ev.events()
    c.api(f"uuid_recv_dtmf {call.a2} ~1")
    events = ev.events()
    api = [e["API-Command-Argument"] for e in events if e["Event-Name"] == "API"]
    assert f"{call.a2} D" in api  # the binding's action ran
    assert hangup_causes(events)[t] == "NORMAL_CLEARING"
    assert bridged(c) == [(call.a2, call.b)]
    assert c.api(f"uuid_getvar {call.a2} last_matching_digits") == b"*1"


def test_a_mistyped_sequence_reaches_att_xfer_as_typed(switch, esl, call):
    """Digits that can no longer match go on past the machine: `*2` completes the transfer
    with att_xfer's own hang-up key, as `*` always does."""
    c = esl()
    c.api(f"uuid_setvar {call.b} hold_music /srv/moh.wav")
    bind = f"'bind_digit_action::channelsd_takeback,*1,api:uuid_recv_dtmf,{call.a2} D'"
    c.api(f"uuid_broadcast {call.a2} {bind} aleg")
    c.api(f"uuid_broadcast {call.a2} att_xfer::loopback/9003/default")
    t, _ = call.target("9003")
    c.api(f"uuid_recv_dtmf {call.a2} ~*2")
    assert c.api(f"uuid_exists {call.a2}") == b"false"  # it hung up: the transfer completed
    assert (t, call.b) in bridged(c)
