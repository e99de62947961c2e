"""Conformance: channelsd's actions against every row of freeswitch-actions-verified.md §1-§6.

The reference (a copy is tests/fixtures/freeswitch-actions-verified.md) says what a real switch
does for each action: which parties stay up, with which hang-up causes, and which `+OK`s lie.
The stand-in models those rows; each test here drives channelsd's HTTP API against it and
asserts what the switch leaves behind -- the legs up, the causes of those gone -- or that
channelsd refused (nothing sent) where the switch would lie or lose the call.

ROWS lists every table row and every bullet of §1-§6, each with the test named after its
section (test_3_3_...) or an explicit "not applicable, because ...".
test_every_reference_row_has_a_conformance_test_or_a_reason parses the copy and fails when a
row has neither, or when ROWS names a row the reference does not have.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from channelsd.config import DEFAULT_MOH

from conftest import wait_until

REFERENCE = Path(__file__).parent / "fixtures" / "freeswitch-actions-verified.md"
NA = "not applicable, because "

# -- the reference's rows -----------------------------------------------------------------------


def _short(text: str, width: int = 56) -> str:
    out = ""
    for word in text.split():
        if out and len(out) + len(word) + 1 > width:
            break
        out = f"{out} {word}".strip()
    return out


def reference_rows(text: str) -> list[str]:
    """Every table row (its first cell) and every bullet (continuation lines joined) of
    sections 1-6, as "§<section> <its first words>"; bullets that only label a list below
    them ("Traps:") are not rows."""
    section: str | None = None
    items: list[list[str]] = []
    bullet: list[str] | None = None
    in_code = header = False
    for line in text.splitlines():
        if line.startswith("```"):
            in_code, bullet = not in_code, None
            continue
        if in_code:
            continue
        heading = re.match(r"#{2,3} (\d+)(?:\.(\d+))?\.? ", line)
        if heading:
            section = heading.group(1) + (f".{heading.group(2)}" if heading.group(2) else "")
            bullet, header = None, False
            continue
        if section is None or section.split(".")[0] not in "123456":
            continue
        if line.startswith("|"):
            bullet = None
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if all(set(c) <= set("-: ") for c in cells):
                continue
            if not header:
                header = True  # the table's own header row
                continue
            items.append([section, cells[0]])
            continue
        header = False
        item = re.match(r"\s*\* (.*)", line)
        if item:
            bullet = [section, item.group(1)]
            items.append(bullet)
        elif bullet is not None and line.startswith(" ") and line.strip():
            bullet[1] += " " + line.strip()
        else:
            bullet = None
    rows = []
    for section, raw in items:
        text = re.sub(r"[`*]", "", raw).strip()
        if text.endswith(":") and len(text.split()) <= 2:
            continue
        rows.append(f"§{section} {_short(text)}")
    return rows


NO_DISPLACE = NA + "channelsd never sends uuid_displace (no action or module uses it)"
NO_SEND_DTMF = NA + "channelsd never sends uuid_send_dtmf; keys are injected with uuid_recv_dtmf"
NOT_INLINE = (
    NA + "channelsd never runs att_xfer through uuid_transfer or the inline dialplan (the gate "
    "refuses the inline dialplan, and att_xfer is only ever a uuid_broadcast app)"
)

ROWS: dict[str, str] = {
    "§1.2 uuid_transfer A' 9003 (caller)": "test_1_2_transfer_of_the_caller",
    "§1.2 uuid_transfer B 9003 (callee)": "test_1_2_transfer_of_the_callee",
    "§1.2 uuid_transfer A' -bleg 9003": "test_1_2_bleg_transfer_from_the_caller",
    "§1.2 uuid_transfer B -bleg 9003": "test_1_2_bleg_transfer_from_the_callee",
    "§1.2 uuid_transfer A' -both 9003 (or from B)": "test_1_2_both_legs_transferred",
    "§1.4 park_after_bridge=true": "test_1_4_park_after_bridge_keeps_the_other_party",
    "§1.4 transfer_after_bridge=9005:XML:default": "test_1_4_transfer_after_bridge",
    "§1.4 hangup_after_bridge=true": "test_1_4_hangup_after_bridge_on_a_dialplan_that_goes_on",
    "§1.5 Transferring to an extension that does not exist still": (
        "test_1_5_a_missing_extension_loses_the_whole_call"
    ),
    "§1.5 -bleg or -both on a leg that has no bridge partner (e.g.": (
        "test_1_5_bleg_or_both_without_a_partner_is_refused"
    ),
    "§1.5 ${...} in the extension is not expanded. It becomes a": (
        "test_1_5_an_expansion_in_the_extension_is_refused"
    ),
    "§2.1 This works with either leg as transferor: the caller A',": (
        "test_2_1_attended_transfer_from_either_leg"
    ),
    "§2.1 Omitting the leg word (uuid_broadcast <transferor>": (
        "test_2_1_the_form_without_a_leg_word_holds_the_transferee"
    ),
    "§2.1 A dial string with spaces must be quoted, because the": (
        NA + "the attended dial string is of the gate's endpoint kind, which has no space: "
        "test_actions and test_gate refuse one"
    ),
    "§2.1 The transfer first tears the bridge down, so the": NOT_INLINE,
    "§2.1 att_xfer then runs with no bond.": NOT_INLINE,
    "§2.1 The target leg it dialled died with": NOT_INLINE,
    "§2.2 show bridged_calls lists A' twice: with B and with T.": (
        "test_2_2_show_bridged_calls_lists_the_transferor_twice"
    ),
    "§2.2 A' has bridge_to=T and signal_bond=T, and app": (
        "test_2_2_the_transferor_is_bridged_to_the_target"
    ),
    "§2.2 B keeps bridge_to=A' and stays CS_EXCHANGE_MEDIA.": (
        "test_2_2_the_transferee_stays_with_the_transferor"
    ),
    "§2.3 Transferor, while the target rings: the": (
        NA + "it is what the transferor hears; channelsd sets no ringback and the stand-in "
        "carries no audio"
    ),
    "§2.3 Transferee with the aleg form: silence.": (
        NA + "channelsd never runs att_xfer with the aleg form: the transferee always gets "
        "the moh (test_2_3_the_transferee_hears_the_moh)"
    ),
    "§2.3 Transferee with the default form (no leg word): its own": (
        "test_2_3_the_transferee_hears_the_moh"
    ),
    "§2.3 The stream used is the transferee's hold_music. It falls": (
        "test_2_3_channelsd_sets_the_transferees_hold_music"
    ),
    "§2.3 On this switch that global default was not a playable": (
        "test_2_3_unplayable_hold_music_starts_att_xfer_late"
    ),
    "§2.3 Either set a playable hold_music on the transferee": (
        "test_2_3_a_playable_moh_starts_att_xfer_at_once"
    ),
    "§2.5 Inject keys with uuid_recv_dtmf <transferor> <digit>. It": (
        "test_2_5_a_takeback_key_pressed_on_the_transferor_takes_the_call_back"
    ),
    "§2.5 uuid_send_dtmf <transferor> # sends the digit out to the": NO_SEND_DTMF,
    "§2.5 On loopback, uuid_send_dtmf <transferor's twin> also": NO_SEND_DTMF,
    "§2.5 Keys only work after the target answered. During": (
        "test_2_5_keys_while_the_target_rings_do_nothing"
    ),
    "§2.5 Digits that are not keys are passed through to the": (
        "test_2_5_a_takeback_sequence_takes_the_call_back"
    ),
    "§2.5 # (cancel) after answer": "test_2_5_the_cancel_key_after_answer",
    "§2.5 target hangs up during consultation": "test_2_5_the_target_hangs_up_during_consultation",
    "§2.5 uuid_kill <target> while it is still ringing": (
        "test_2_5_hanging_up_a_ringing_target_resumes_the_old_bridge"
    ),
    "§2.5 target never answers ({leg_timeout=4})": "test_2_5_a_target_that_never_answers",
    "§2.5 0 (conference)": "test_2_5_the_conference_key_is_not_a_takeback",
    "§2.5 transferor hangs up while the target is still ringing": (
        "test_2_5_hanging_up_the_transferor_while_the_target_rings_is_refused"
    ),
    "§2.5 transferee hangs up during consultation": (
        "test_2_5_the_transferee_hangs_up_during_consultation"
    ),
    "§2.6 its row stays in show channels as CS_EXECUTE/ACTIVE with": (
        "test_2_6_the_zombie_transferor_stays_listed"
    ),
    "§2.6 uuid_exists answers false;": "test_2_6_the_zombie_is_gone_for_commands",
    "§2.6 its loopback twin also lingers;": "test_2_6_the_zombies_loopback_twin_lingers",
    "§2.6 with SIP, the transferor's phone got no BYE. In the test": (
        NA + "the stand-in has no SIP signalling; the missing BYE is the zombie lingering, "
        "asserted by test_2_6_the_zombie_transferor_stays_listed"
    ),
    "§2.6 every run without hold music on the transferee: 8 of 8": (
        "test_2_6_without_playable_moh_the_caller_transferor_turns_zombie"
    ),
    "§2.6 0 of 4 runs when the transferee had a playable": (
        "test_2_6_a_playable_moh_leaves_no_zombie"
    ),
    "§2.6 not in the one run where the transferor was the callee": (
        "test_2_6_a_callee_transferor_is_no_zombie"
    ),
    "§2.7 Complete in this order: bridge B and T first, then kill": (
        NA + "channelsd runs att_xfer (§2.1), not the uuid_bridge recipe; its transferor "
        "completes by hanging up"
    ),
    "§2.7 Never uuid_bridge a leg that has not answered (see 6.3).": (
        NA + "it restates §6.3's row (test_6_3_resume_with_an_unanswered_leg_is_refused)"
    ),
    "§3.1 Reply: +OK Job-UUID: <job>. Then BACKGROUND_JOB with": (
        "test_3_1_channelsd_refuses_the_intercept_the_switch_would_fake"
    ),
    "§3.1 The &app(...) form runs intercept directly.": "test_3_1_the_app_form_runs_intercept",
    "§3.1 The inline form shows CHANNEL_EXECUTE set and then": (
        NA + "channelsd never uses the inline dialplan (the gate refuses it); it sends the "
        "&app form (test_3_1_the_app_form_runs_intercept)"
    ),
    "§3.1 Arguments with spaces need quoting. &intercept(-bleg": (
        "test_3_1_pickup_quotes_the_bleg_form"
    ),
    "§3.3 (a) parked answered leg (9003, park in the dialplan)": "test_3_3_parked_answered_leg",
    "§3.3 (b) ringing inbound leg (9004-b, ring_ready + park)": "test_3_3_ringing_inbound_leg",
    "§3.3 caller still ringing its callee (9014 caller leg) = call": (
        "test_3_3_caller_still_ringing_its_callee"
    ),
    "§3.3 intercept -bleg <ringing callee> (quoted or inline)": (
        "test_3_3_intercept_bleg_of_the_ringing_callee"
    ),
    "§3.3 the ringing outbound callee leg itself (9004-a)": (
        "test_3_3_ringing_outbound_callee_leg"
    ),
    "§3.3 (c) bridged callee B, intercept_unbridged_only=true": (
        "test_3_3_bridged_callee_with_unbridged_only"
    ),
    "§3.3 (c) bridged callee B, =false or unset": "test_3_3_bridged_callee_without_unbridged_only",
    "§3.3 bridged caller A', unset": "test_3_3_bridged_caller",
    "§3.3 non-existent uuid": "test_3_3_non_existent_uuid",
    "§3.3 (code) intercept_unanswered_only=true also exists (not": (
        NA + "channelsd never sets intercept_unanswered_only (the stand-in models it from the "
        "code all the same)"
    ),
    "§3.3 To tell success from failure, check the target first": (
        NA + "it is advice, which channelsd follows: every §3.3 test shows the target checked "
        "in the table before anything is sent"
    ),
    "§4.2 uuid_hold S'": "test_4_2_hold_of_a_sip_leg",
    "§4.2 uuid_hold S' again": "test_4_2_hold_again_is_an_error",
    "§4.2 uuid_hold off S'": "test_4_2_unhold_of_a_sip_leg",
    "§4.2 uuid_hold off S' again": "test_4_2_unhold_again_is_an_error",
    "§4.2 uuid_hold toggle S' twice": "test_4_2_toggle_twice",
    "§4.2 uuid_hold S (the unbridged peer: remote hold)": (
        NA + "S was the phone's own leg on the reference's test switch (both SIP profiles on "
        "one host); a deployment's switch has no such leg"
    ),
    "§4.2 SIP hold events carry Caller-Channel-Last-Hold (µs) and": (
        NA + "channelsd shows whether a channel is on hold (test_4_2_hold_of_a_sip_leg), not "
        "its hold times, which are the CDR's"
    ),
    "§4.2 The hold music is the hold_music of the held leg. It is": (
        "test_4_2_the_partner_hears_the_held_legs_hold_music"
    ),
    "§4.3 uuid_hold A'": "test_4_3_hold_of_a_loopback_leg",
    "§4.3 uuid_hold A' again": "test_4_3_hold_of_a_loopback_leg_again",
    "§4.3 uuid_hold off A'": "test_4_3_unhold_of_a_loopback_leg_is_refused",
    "§4.3 uuid_hold toggle A'": "test_4_3_toggle_of_a_held_loopback_leg_is_refused",
    "§4.3 way out: uuid_bridge A' B (re-bridge the same pair)": (
        "test_4_3_resume_brings_the_audio_back"
    ),
    '§4.3 (code) Only channels whose endpoint reports "holding"': (
        "test_4_3_a_loopback_hold_never_reaches_held"
    ),
    "§4.3 uuid_hold on a parked leg with no partner also answers": (
        "test_4_3_hold_of_a_parked_leg"
    ),
    "§4.4 The default hold_music is a global variable": (
        "test_4_4_the_default_hold_music_plays_nothing"
    ),
    "§4.4 Setting hold_music to a playable stream with uuid_setvar": (
        "test_4_4_a_playable_hold_music_plays"
    ),
    "§5.1 aleg": "test_5_1_play_to_self_is_aleg",
    "§5.1 bleg": "test_5_1_play_to_peer_is_bleg",
    "§5.1 both": "test_5_1_play_to_both",
    "§5.1 none": "test_5_1_play_always_names_its_leg",
    "§5.1 app::args runs any app: playback::<wav> worked, and so": (
        "test_5_1_an_app_in_a_media_path_is_refused"
    ),
    "§5.1 app!cause::args runs the app, then hangs the channel up.": (
        "test_5_1_a_hangup_suffix_is_refused"
    ),
    "§5.1 A path with a space must be quoted. Unquoted, it": (
        "test_5_1_a_path_with_a_space_is_refused"
    ),
    "§5.1 An unknown leg word (e.g. sideways) answers +OK Message": (
        "test_5_1_an_unknown_leg_is_refused"
    ),
    "§5.1 A missing file answers +OK Message sent, gives": "test_5_1_a_missing_file_plays_nothing",
    "§5.1 On a parked leg the broadcast plays and the leg stays": (
        "test_5_1_a_parked_leg_plays_and_stays_parked"
    ),
    "§5.1 On a leg running a dialplan playback, the broadcast": (
        "test_5_1_play_on_a_leg_in_a_dialplan_playback_nests"
    ),
    "§5.2 It stops the current playback on that leg:": "test_5_2_break_stops_the_playback",
    "§5.2 all also drops queued broadcasts. Two queued files plus": (
        "test_5_2_break_all_drops_queued_broadcasts"
    ),
    "§5.2 Trap: a single uuid_break on a leg where a broadcast was": (
        "test_5_2_break_in_a_nested_broadcast_stops_both"
    ),
    "§5.3 Events: MEDIA_BUG_START / MEDIA_BUG_STOP with": NO_DISPLACE,
    "§5.3 No flag: the party on <uuid> hears the file instead of": NO_DISPLACE,
    "§5.3 mux: the party hears both, mixed.": NO_DISPLACE,
    "§5.3 A flag containing r: the partner's party hears the file": NO_DISPLACE,
    "§5.3 The bug ends by itself at the end of the file": NO_DISPLACE,
    "§5.4 Events: RECORD_START (Record-File-Path) plus": (
        "test_5_4_a_recording_shows_in_the_channel"
    ),
    "§5.4 Record-Completion-Cause was success-maxtime for a manual": (
        NA + "channelsd reports whether a channel records, not how a recording ended"
    ),
    "§5.4 mask writes silence into the file until unmask.": "test_5_4_mask_and_unmask",
    "§5.4 A limit of 2 s stopped by itself after about 1.4 s.": (
        "test_5_4_a_time_limit_stops_the_recording"
    ),
    "§5.4 A hangup stops and closes the file.": (
        NA + "the channel's row, and its recordings with it, go when it hangs up "
        "(test_table covers rows that end)"
    ),
    "§5.4 A start into a directory that does not exist answers": (
        "test_5_4_the_recording_path_is_the_daemons"
    ),
    "§5.4 ${...} in the path is not expanded.": (
        NA + "record_call takes no path from the client: channelsd builds it from its "
        "record_dir, the uuid and a time stamp (test_5_4_the_recording_path_is_the_daemons)"
    ),
    "§5.4 On SIP hold, no RTP arrives and nothing is written: a": (
        NA + "it concerns the audio in the file, which the stand-in does not carry"
    ),
    "§6.1 Events: 1. P and Q: CHANNEL_UNPARK and": (
        NA + "it is the event sequence, which the stand-in reproduces from capture s6 "
        "(test_standin) and the table reads (test_6_1_resume_leaves_the_pair_bridged)"
    ),
    "§6.1 End state: P is CS_SOFT_EXECUTE, Q is CS_EXCHANGE_MEDIA;": (
        "test_6_1_resume_leaves_the_pair_bridged"
    ),
    "§6.1 If one side then hangs up, the other hangs up too": (
        "test_6_1_after_resume_one_side_hanging_up_ends_the_other"
    ),
    "§6.1 Bridging a leg that is already bridged (B) to a parked": (
        NA + "channelsd's resume only bridges a channel with its own other leg, never with a "
        "third, parked one"
    ),
    "§6.2 USER_BUSY or user_busy": "test_6_2_user_busy",
    "§6.2 17": "test_6_2_a_q850_number",
    "§6.2 (none)": "test_6_2_no_cause_is_normal_clearing",
    "§6.2 NOT_A_REAL_CAUSE": "test_6_2_an_unknown_cause_name_is_refused",
    "§6.2 CALL_REJECTED extra words": "test_6_2_words_after_the_cause_are_refused",
    "§6.2 999": "test_6_2_a_cause_number_out_of_range_is_refused",
    "§6.2 0": "test_6_2_cause_number_0_is_refused",
    "§6.2 ${expr(17)}": "test_6_2_an_expansion_as_cause_is_refused",
    "§6.2 A bridged partner does not inherit the cause. Killing B": (
        "test_6_2_a_bridged_partner_ends_normal_clearing"
    ),
    "§6.2 Killing a ringing inbound leg with CALL_REJECTED gave": (
        "test_6_2_rejecting_a_ringing_inbound_leg"
    ),
    "§6.3 uuid_bridge X X (the same uuid twice) answers +OK X. X": (
        "test_6_3_resume_of_a_leg_with_itself_is_refused"
    ),
    "§6.3 uuid_bridge <loopback-a> <its own loopback-b twin>": (
        "test_6_3_resume_with_the_loopback_twin_is_refused"
    ),
    "§6.3 Never uuid_bridge a leg that has not answered. Bridging": (
        "test_6_3_resume_with_an_unanswered_leg_is_refused"
    ),
}


def test_every_reference_row_has_a_conformance_test_or_a_reason() -> None:
    rows = reference_rows(REFERENCE.read_text("utf-8"))
    assert len(rows) > 100, "the parser found too few rows: it is broken"
    assert len(set(rows)) == len(rows), "two rows read the same: lengthen the row keys"
    missing = [r for r in rows if r not in ROWS]
    unknown = [r for r in ROWS if r not in rows]
    assert not missing, f"reference rows with no conformance test nor reason: {missing}"
    assert not unknown, f"ROWS names rows the reference does not have: {unknown}"
    module = globals()
    for row, cover in ROWS.items():
        if cover.startswith(NA):
            assert len(cover) > len(NA) + 20, (row, "say why")
            continue
        section = row[1:].split(" ")[0].replace(".", "_")
        assert cover.startswith(f"test_{section}_"), (row, cover, "name it after its section")
        assert callable(module.get(cover)), (row, cover, "no such test")
    tests = {n for n in module if re.match(r"test_\d_\d_", n)}
    assert tests <= set(ROWS.values()), (
        f"conformance tests no row names: {tests - set(ROWS.values())}"
    )


# -- the test bed ---------------------------------------------------------------------------------

ACC = {"account_id": "acc1"}
# What a leg the switch creates for an action inherits (actions._tenant_variables): the
# account, in the variable the default identity mapping reads first (these rows have no realm).
IDENTITY = "ecallmgr_Account-ID=acc1"
SIP_CALLER = "sofia/internal/1001@acc1.example"
SIP_CALLEE = "sofia/internal/1002@acc1.example"
MOH = "/srv/moh.wav"
UNPLAYABLE_MOH = (
    "local_stream://moh"  # FreeSWITCH's global default; the reference could not play it
)
INTERCEPTOR = "7000"  # the extension the interceptor rings (a number target: loopback/7000)
POLICY = {
    "allowed_media": ["tone_stream://", "local_stream://", "/srv/"],
    "media_template": "/srv/media/{media_id}.wav",
}


class Std(NamedTuple):
    """The reference's standard call (§0.2): A parked, A' its twin and the caller running
    `bridge`, B the callee, B' B's twin."""

    a: str
    a2: str
    b: str
    b2: str


class Bed:
    """A daemon on a stand-in; every leg the switch ever makes is kept (its fate stays
    readable after it is gone)."""

    def __init__(self, h: Any, switch: Any) -> None:
        self.h, self.sw = h, switch
        self.legs: dict[str, Any] = {}
        self.mark = 0
        register = switch.model._register

        def keep(ch: Any) -> None:
            self.legs[ch.uuid] = ch
            register(ch)

        switch.model._register = keep

    # -- calls
    def std(self, dest: str = "9002") -> Std:
        a, a2 = self.sw.originate(dest=dest)
        b = self.originated_by(a2)
        std = Std(a, a2, b, self.legs[b].loopback_peer)
        self.own(*std)
        return std

    def originated_by(self, caller: str, name: str = "") -> str:
        found = [
            u
            for u, ch in self.legs.items()
            if ch.variables.get("originator") == caller and ch.name.startswith(name)
        ]
        assert found, f"nothing originated by {caller}"
        return found[-1]

    def named(self, name: str) -> str:
        return [u for u, ch in self.legs.items() if ch.name == name][-1]

    def sip(self) -> tuple[str, str]:
        a, b = self.sw.bridged_call(
            variables_a=ACC, variables_b=ACC, name_a=SIP_CALLER, name_b=SIP_CALLEE
        )
        self.own(a, b)
        return a, b

    def parked(self) -> tuple[str, str]:
        p, p2 = self.sw.originate(dest="9003")
        self.own(p, p2)
        return p, p2

    def own(self, *uuids: str) -> None:
        """Give the legs to account acc1 (as Kazoo's ecallmgr would) and wait for the table."""
        for u in uuids:
            if self.up(u) and self.legs[u].variables.get("account_id") != "acc1":
                self.sw.set_variable(u, "account_id", "acc1")
        wait_until(
            lambda: all(
                (row := self.h.table.get(u)) is not None and row.account_id == "acc1"
                for u in uuids
                if self.up(u)
            ),
            what=f"{uuids} in the table",
        )

    # -- requests
    def post(self, uuid: str, **data: Any) -> Any:
        self.mark = len(self.sw.received)
        return self.h.api.request(
            "POST", f"/v2/accounts/acc1/channels/{uuid}", "admin1", json={"data": data}
        )

    def put(self, uuid: str, module: str, **data: Any) -> Any:
        self.mark = len(self.sw.received)
        body = {"action": "metaflow", "data": {"module": module, "data": data}}
        return self.h.api.request("PUT", f"/v2/accounts/acc1/channels/{uuid}", "admin1", json=body)

    def sent(self) -> list[str]:
        """The api/bgapi commands the switch received since the last request."""
        return [c for _, c in self.sw.received[self.mark :] if c.startswith(("api uuid_", "bgapi"))]

    def attended(self, tor: str, target: str = "2000", **data: Any) -> Any:
        return self.post(tor, action="transfer", target=target, transfer_type="attended", **data)

    def intercept(self, uuid: str, **data: Any) -> Any:
        return self.post(
            uuid, action="intercept", target_type="number", target_id=INTERCEPTOR, **data
        )

    def interceptor(self) -> str:
        """The interceptor leg, once it has bridged or hung up."""

        def done() -> str | None:
            found = [u for u, ch in self.legs.items() if ch.name == f"loopback/{INTERCEPTOR}-a"]
            if found and (self.legs[found[-1]].bridge_peer or not self.up(found[-1])):
                return found[-1]
            return None

        return wait_until(done, what="the interceptor")

    # -- what is left
    def up(self, uuid: str) -> bool:
        return self.legs[uuid].alive

    def fate(self, uuid: str) -> str:
        """ "up" for a leg the switch still has, else its hang-up cause."""
        ch = self.legs[uuid]
        return "up" if ch.alive else str(ch.hangup_cause)

    def fates(self, **legs: str) -> dict[str, str]:
        return {name: self.fate(uuid) for name, uuid in legs.items()}

    def synced(self) -> None:
        """Wait until channelsd's table holds exactly the legs the switch has not destroyed."""
        wait_until(
            lambda: all(
                (self.h.table.get(u) is None) == ch.destroyed for u, ch in self.legs.items()
            ),
            what="the table to agree with the switch",
        )

    def row(self, uuid: str) -> dict[str, Any] | None:
        resp = self.h.api.get(f"/v2/accounts/acc1/channels/{uuid}", "admin1")
        return resp.json()["data"] if resp.status_code == 200 else None

    def ended_cause(self, uuid: str) -> str:
        """The hang-up cause channelsd lists for an ended channel."""

        def look() -> str | None:
            items = self.h.api.data("/v2/channels", "super", params={"ended": "true"})
            return next((i.get("hangup_cause") for i in items if i["uuid"] == uuid), None)

        return wait_until(look, what=f"{uuid} among the ended calls")

    def bridged_pairs(self) -> list[tuple[str, str]]:
        body = json.loads(self.sw.api.execute("show", "bridged_calls as json"))
        return sorted((r["uuid"], r["b_uuid"]) for r in body.get("rows", []))


@pytest.fixture
def bed(switch: Any, make_daemon: Any) -> Iterator[Bed]:
    yield Bed(make_daemon([switch], actions=POLICY), switch)


def ok(resp: Any, status: int = 200) -> None:
    assert resp.status_code == status, resp.text


def refused(resp: Any, status: int, key: str) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert key in resp.json()["data"], resp.json()
    return resp.json()["data"][key]


# -- §1 blind transfer ----------------------------------------------------------------------------


def test_1_2_transfer_of_the_caller(bed: Bed) -> None:
    c = bed.std()
    ok(bed.post(c.a2, action="transfer", target="9003"))
    assert bed.sent() == [f"api uuid_transfer {c.a2} 9003 XML default"]
    assert bed.fates(a=c.a, a2=c.a2, b=c.b, b2=c.b2) == {
        "a": "up",
        "a2": "up",
        "b": "NORMAL_CLEARING",
        "b2": "NORMAL_CLEARING",
    }
    bed.synced()
    assert bed.row(c.a2)["destination"] == "9003" and "other_leg" not in bed.row(c.a2)


def test_1_2_transfer_of_the_callee(bed: Bed) -> None:
    c = bed.std()
    ok(bed.post(c.b, action="transfer", target="9003"))
    assert bed.fates(a=c.a, a2=c.a2, b=c.b) == {
        "a": "NORMAL_CLEARING",
        "a2": "NORMAL_CLEARING",
        "b": "up",
    }
    bed.synced()
    assert bed.row(c.b)["destination"] == "9003"


def test_1_2_bleg_transfer_from_the_caller(bed: Bed) -> None:
    c = bed.std()
    ok(bed.post(c.a2, action="transfer", target="9003", leg="bleg"))
    assert bed.sent() == [f"api uuid_transfer {c.a2} -bleg 9003 XML default"]
    assert bed.fates(a2=c.a2, b=c.b) == {"a2": "NORMAL_CLEARING", "b": "up"}
    bed.synced()
    assert bed.row(c.b)["destination"] == "9003"


def test_1_2_bleg_transfer_from_the_callee(bed: Bed) -> None:
    c = bed.std()
    ok(bed.post(c.b, action="transfer", target="9003", leg="bleg"))
    assert bed.fates(a2=c.a2, b=c.b, b2=c.b2) == {
        "a2": "up",
        "b": "NORMAL_CLEARING",
        "b2": "NORMAL_CLEARING",
    }
    bed.synced()
    assert bed.row(c.a2)["destination"] == "9003"


def test_1_2_both_legs_transferred(bed: Bed) -> None:
    c = bed.std()
    ok(bed.post(c.a2, action="transfer", target="9003", leg="both"))
    assert bed.sent() == [f"api uuid_transfer {c.a2} -both 9003 XML default"]
    assert bed.fates(a=c.a, a2=c.a2, b=c.b, b2=c.b2) == dict.fromkeys(("a", "a2", "b", "b2"), "up")
    bed.synced()
    for leg in (c.a2, c.b):  # each parked on its own, not connected to the other
        row = bed.row(leg)
        assert row["destination"] == "9003" and "other_leg" not in row
        assert bed.legs[leg].parked


def test_1_4_park_after_bridge_keeps_the_other_party(bed: Bed) -> None:
    c = bed.std()
    bed.sw.set_variable(c.b, "park_after_bridge", "true")
    ok(bed.post(c.a2, action="transfer", target="9003"))
    assert bed.fates(a2=c.a2, b=c.b) == {"a2": "up", "b": "up"}
    assert bed.legs[c.b].state == "CS_PARK"
    # worked for the caller too
    d = bed.std()
    bed.sw.set_variable(d.a2, "park_after_bridge", "true")
    ok(bed.post(d.b, action="transfer", target="9003"))
    assert bed.fates(a2=d.a2, b=d.b) == {"a2": "up", "b": "up"}
    bed.synced()
    assert bed.row(d.a2)["state"] == "CS_PARK"


def test_1_4_transfer_after_bridge(bed: Bed) -> None:
    c = bed.std()
    bed.sw.set_variable(c.b, "transfer_after_bridge", "9005:XML:default")
    ok(bed.post(c.a2, action="transfer", target="9003"))
    assert bed.fates(a2=c.a2, b=c.b) == {"a2": "up", "b": "up"}
    bed.synced()
    assert bed.row(c.b)["destination"] == "9005"


def test_1_4_hangup_after_bridge_on_a_dialplan_that_goes_on(bed: Bed) -> None:
    c = bed.std("9012")  # the dialplan parks once the bridge returns
    ok(bed.post(c.b, action="transfer", target="9003"))
    assert bed.fates(a2=c.a2, b=c.b) == {"a2": "up", "b": "up"}
    assert bed.legs[c.a2].parked
    d = bed.std("9012")
    bed.sw.set_variable(d.a2, "hangup_after_bridge", "true")
    ok(bed.post(d.b, action="transfer", target="9003"))
    assert bed.fates(a2=d.a2, b=d.b) == {"a2": "NORMAL_CLEARING", "b": "up"}


def test_1_5_a_missing_extension_loses_the_whole_call(bed: Bed) -> None:
    # channelsd cannot know the dialplan: FreeSWITCH answers +OK, and the call is lost.
    c = bed.std()
    ok(bed.post(c.a2, action="transfer", target="9999"))
    assert bed.fates(a2=c.a2, b=c.b) == {"a2": "NO_ROUTE_DESTINATION", "b": "NORMAL_CLEARING"}
    assert bed.ended_cause(c.a2) == "NO_ROUTE_DESTINATION"


def test_1_5_bleg_or_both_without_a_partner_is_refused(bed: Bed) -> None:
    p, _ = bed.parked()
    r = bed.std("9014")  # b: a ringing callee, whose other leg is the caller ringing it
    for uuid in (p, r.b):
        for leg in ("bleg", "both"):
            detail = refused(
                bed.post(uuid, action="transfer", target="9001", leg=leg), 400, "other_leg_call_id"
            )
            assert detail == {"required": {"message": "Channel is not bridged"}}
            assert bed.sent() == []
    assert bed.fates(p=p, b=r.b) == {"p": "up", "b": "up"}
    assert bed.legs[p].profile["Destination-Number"] == "9003"
    # what the switch would have done: +OK, and the named leg itself transferred
    assert bed.sw.api.execute("uuid_transfer", f"{r.b} -bleg 9001 XML default") == b"+OK\n"
    assert bed.legs[r.b].profile["Destination-Number"] == "9001"


def test_1_5_an_expansion_in_the_extension_is_refused(bed: Bed) -> None:
    c = bed.std()
    refused(bed.post(c.a2, action="transfer", target="${expr(9000+3)}"), 400, "target")
    assert bed.sent() == [] and bed.fates(a2=c.a2, b=c.b) == {"a2": "up", "b": "up"}


# -- §2 attended transfer -------------------------------------------------------------------------


def consulting(bed: Bed, tor: str, target: str = "2000") -> str:
    """The target leg the transferor dialled, once it exists."""
    return wait_until(
        lambda: next(
            (
                u
                for u, ch in bed.legs.items()
                if ch.variables.get("originator") == tor and ch.name == f"loopback/{target}-a"
            ),
            None,
        ),
        what="the target leg",
    )


def test_2_1_attended_transfer_from_either_leg(bed: Bed) -> None:
    for leg in ("self", "bleg"):
        c = bed.std()
        ok(bed.attended(c.a2, leg=leg, moh=MOH))
        tor, tee = (c.a2, c.b) if leg == "self" else (c.b, c.a2)
        t = consulting(bed, tor)
        assert (tor, t) in bed.bridged_pairs() or (t, tor) in bed.bridged_pairs()
        assert bed.fates(tor=tor, tee=tee, t=t) == dict.fromkeys(("tor", "tee", "t"), "up")


def test_2_1_the_form_without_a_leg_word_holds_the_transferee(bed: Bed) -> None:
    c = bed.std()
    ok(bed.attended(c.a2, moh=MOH))
    assert bed.sent()[-1] == (
        f"api uuid_broadcast {c.a2} att_xfer::{{{IDENTITY}}}loopback/2000/default"
    )
    assert bed.legs[c.b].playing == MOH


def test_2_2_show_bridged_calls_lists_the_transferor_twice(bed: Bed) -> None:
    c = bed.std()
    ok(bed.attended(c.a2, moh=MOH))
    t = consulting(bed, c.a2)
    assert [p for p in bed.bridged_pairs() if c.a2 in p] == sorted([(c.a2, c.b), (c.a2, t)])


def test_2_2_the_transferor_is_bridged_to_the_target(bed: Bed) -> None:
    c = bed.std()
    ok(bed.attended(c.a2, moh=MOH))
    t = consulting(bed, c.a2)
    wait_until(lambda: bed.row(c.a2).get("other_leg") == t, what="the transferor with the target")
    assert bed.legs[c.a2].variables["signal_bond"] == t


def test_2_2_the_transferee_stays_with_the_transferor(bed: Bed) -> None:
    c = bed.std()
    ok(bed.attended(c.a2, moh=MOH))
    consulting(bed, c.a2)
    bed.synced()
    row = bed.row(c.b)
    assert row["other_leg"] == c.a2 and row["state"] == "CS_EXCHANGE_MEDIA"


def test_2_3_the_transferee_hears_the_moh(bed: Bed) -> None:
    c = bed.std()
    ok(bed.attended(c.a2, moh=MOH))
    consulting(bed, c.a2)
    assert bed.legs[c.b].playing == MOH
    bed.sw.recv_dtmf(c.a2, "#")  # cancelled: att_xfer ends, and the hold music with it
    assert bed.legs[c.b].playing is None


def test_2_3_channelsd_sets_the_transferees_hold_music(bed: Bed) -> None:
    c = bed.std()
    ok(bed.attended(c.a2, moh="0123456789abcdef0123456789abcdef"))  # a Kazoo media id
    assert bed.sent()[0] == (
        f"api uuid_setvar {c.b} hold_music /srv/media/0123456789abcdef0123456789abcdef.wav"
    )
    d = bed.std()
    ok(bed.attended(d.a2))  # no moh: the configured one, never the switch's global default
    assert bed.sent()[0] == f"api uuid_setvar {d.b} hold_music {DEFAULT_MOH}"
    assert bed.legs[d.b].variables["hold_music"] == DEFAULT_MOH


def test_the_default_moh_plays_so_att_xfer_starts_at_once_and_leaves_no_zombie(bed: Bed) -> None:
    """The default [actions].moh is a stream the switch plays: att_xfer starts at once, and
    the transferor completing the transfer is no zombie (§2.3, §2.6)."""
    bed.sw.model.attxfer_late_start = 1.0  # what an unplayable stream would cost
    c = bed.std()
    ok(bed.attended(c.a2))
    assert bed.legs[c.a2].app == "att_xfer" and bed.legs[c.b].playing == DEFAULT_MOH
    t = consulting(bed, c.a2)
    wait_until(lambda: bed.row(c.a2).get("other_leg") == t, what="consulting")
    ok(bed.post(c.a2, action="hangup"))
    assert bed.legs[c.a2].destroyed and (t, c.b) in bed.bridged_pairs()


def test_2_3_unplayable_hold_music_starts_att_xfer_late(bed: Bed) -> None:
    bed.sw.model.attxfer_late_start = 1.0  # the reference's late runs (about 10.6 s there)
    c = bed.std()
    ok(bed.attended(c.a2, moh=UNPLAYABLE_MOH))  # what the reference could not play
    # "transfer initiated", yet nothing is consulting: the hold music failed at once
    assert bed.legs[c.a2].app != "att_xfer"
    assert bed.legs[c.b].variables["current_application_response"] == "FILE NOT FOUND"
    t = consulting(bed, c.a2)
    assert bed.fates(a2=c.a2, b=c.b, t=t) == dict.fromkeys(("a2", "b", "t"), "up")


def test_2_3_a_playable_moh_starts_att_xfer_at_once(bed: Bed) -> None:
    bed.sw.model.attxfer_late_start = 1.0
    c = bed.std()
    ok(bed.attended(c.a2, moh=MOH))
    assert bed.legs[c.a2].app == "att_xfer" and bed.legs[c.b].playing == MOH


def test_2_5_a_takeback_key_pressed_on_the_transferor_takes_the_call_back(bed: Bed) -> None:
    c = bed.std()
    ok(bed.attended(c.a2, moh=MOH, takeback_dtmf="9"))
    t = consulting(bed, c.a2)
    bed.sw.recv_dtmf(c.a2, "#")  # no longer a key: it would reach the target
    assert bed.fate(t) == "up"
    bed.sw.recv_dtmf(c.a2, "9")
    assert bed.fates(a2=c.a2, b=c.b, t=t) == {"a2": "up", "b": "up", "t": "NORMAL_CLEARING"}
    wait_until(lambda: bed.row(c.a2).get("other_leg") == c.b, what="the transferee back")


def test_2_5_keys_while_the_target_rings_do_nothing(bed: Bed) -> None:
    c = bed.std()
    ok(bed.attended(c.a2, target="9004", moh=MOH, takeback_dtmf="9"))
    t = consulting(bed, c.a2, "9004")
    bed.sw.recv_dtmf(c.a2, "9")
    assert bed.fate(t) == "up" and not bed.legs[t].answered
    bed.sw.answer(t)
    bed.sw.recv_dtmf(c.a2, "9")
    assert bed.fates(a2=c.a2, b=c.b, t=t) == {"a2": "up", "b": "up", "t": "NORMAL_CLEARING"}


@pytest.mark.parametrize("sequence", ["*1", "##", "0*"])
def test_2_5_a_takeback_sequence_takes_the_call_back(bed: Bed, sequence: str) -> None:
    """Kazoo's documented transfer example, a media id and all: the sequence is watched by a
    digit binding (modelled from FreeSWITCH's code, not verified on a real switch)."""
    c = bed.std()
    kazoo = {"target": "2000", "takeback_dtmf": sequence, "moh": "0" * 32}
    ok(bed.post(c.a2, action="transfer", **kazoo))
    t = consulting(bed, c.a2)
    wait_until(lambda: bed.row(c.a2).get("other_leg") == t, what="consulting")
    # "~": the digits come through the digit machine, as a phone's do; the first one is held
    bed.sw.recv_dtmf(c.a2, "~" + sequence[0])
    assert bed.fates(a2=c.a2, b=c.b, t=t) == dict.fromkeys(("a2", "b", "t"), "up")
    bed.sw.recv_dtmf(c.a2, "~" + sequence[1:])
    assert bed.fates(a2=c.a2, b=c.b, t=t) == {"a2": "up", "b": "up", "t": "NORMAL_CLEARING"}
    wait_until(lambda: bed.row(c.a2).get("other_leg") == c.b, what="the call taken back")
    assert (c.a2, c.b) in bed.bridged_pairs()


def test_a_takeback_key_never_outlives_its_transfer(bed: Bed) -> None:
    """A key one transfer chose stays on the channel as a variable: the next transfer sets all
    of att_xfer's keys again (FreeSWITCH's defaults unless it asks otherwise)."""
    c = bed.std()
    bed.sw.set_variable(c.a2, "attxfer_conf_key", "9")  # a dialplan's own choice, too
    ok(bed.attended(c.a2, moh=MOH, takeback_dtmf="9"))
    t1 = consulting(bed, c.a2)
    bed.sw.recv_dtmf(c.a2, "9")
    assert bed.fate(t1) == "NORMAL_CLEARING"
    wait_until(lambda: bed.row(c.a2).get("other_leg") == c.b, what="the call taken back")
    ok(bed.attended(c.a2, target="2001", moh=MOH))  # no take-back asked: FreeSWITCH's #
    t2 = consulting(bed, c.a2, "2001")
    bed.sw.recv_dtmf(c.a2, "9")  # the first transfer's key: now a digit for the target
    assert bed.fate(t2) == "up"
    bed.sw.recv_dtmf(c.a2, "#")
    assert bed.fates(a2=c.a2, b=c.b, t2=t2) == {"a2": "up", "b": "up", "t2": "NORMAL_CLEARING"}
    keys = {
        k: bed.legs[c.a2].variables[k]
        for k in ("attxfer_cancel_key", "attxfer_hangup_key", "attxfer_conf_key")
    }
    assert keys == {"attxfer_cancel_key": "#", "attxfer_hangup_key": "*", "attxfer_conf_key": "0"}


def test_a_takeback_sequence_never_outlives_its_transfer(bed: Bed) -> None:
    """The digit binding that watched for one transfer's sequence is cleared by the next."""
    c = bed.std()
    ok(bed.attended(c.a2, moh=MOH, takeback_dtmf="##"))
    t1 = consulting(bed, c.a2)
    wait_until(lambda: bed.row(c.a2).get("other_leg") == t1, what="consulting")
    bed.sw.recv_dtmf(c.a2, "~##")
    assert bed.fate(t1) == "NORMAL_CLEARING"
    wait_until(lambda: bed.row(c.a2).get("other_leg") == c.b, what="the call taken back")
    ok(bed.attended(c.a2, target="2001", moh=MOH, takeback_dtmf="9"))
    t2 = consulting(bed, c.a2, "2001")
    wait_until(lambda: bed.row(c.a2).get("other_leg") == t2, what="consulting again")
    bed.sw.recv_dtmf(c.a2, "~##")  # the old sequence: no binding any more, no take-back
    assert bed.fate(t2) == "up" and bed.legs[c.a2].digit_bindings == {}
    bed.sw.recv_dtmf(c.a2, "~9")
    assert bed.fate(t2) == "NORMAL_CLEARING"


def test_2_5_the_cancel_key_after_answer(bed: Bed) -> None:
    c = bed.std()
    ok(bed.attended(c.a2, moh=MOH))
    t = consulting(bed, c.a2)
    bed.sw.recv_dtmf(c.a2, "#")  # FreeSWITCH's default cancel key
    assert bed.fates(a2=c.a2, b=c.b, t=t) == {"a2": "up", "b": "up", "t": "NORMAL_CLEARING"}
    assert bed.bridged_pairs() == [(c.a2, c.b)]


def test_2_5_the_target_hangs_up_during_consultation(bed: Bed) -> None:
    c = bed.std()
    ok(bed.attended(c.a2, moh=MOH))
    t = consulting(bed, c.a2)
    bed.own(t)
    ok(bed.post(t, action="hangup"))
    assert bed.fates(a2=c.a2, b=c.b, t=t) == {"a2": "up", "b": "up", "t": "NORMAL_CLEARING"}
    wait_until(lambda: bed.row(c.a2).get("other_leg") == c.b, what="re-bridged to the transferee")


def test_2_5_hanging_up_a_ringing_target_resumes_the_old_bridge(bed: Bed) -> None:
    c = bed.std()
    ok(bed.attended(c.a2, target="9004", moh=MOH))
    t = consulting(bed, c.a2, "9004")
    bed.own(t)
    ok(bed.post(t, action="hangup"))
    assert bed.fates(a2=c.a2, b=c.b, t=t) == {"a2": "up", "b": "up", "t": "NORMAL_CLEARING"}
    assert bed.bridged_pairs() == [(c.a2, c.b)] and bed.legs[c.a2].app != "att_xfer"


def test_2_5_a_target_that_never_answers(bed: Bed) -> None:
    c = bed.std()
    ok(bed.attended(c.a2, target="9004", moh=MOH, timeout=1))
    assert bed.sent()[-1].endswith(
        f"{c.a2} att_xfer::{{leg_timeout=1,{IDENTITY}}}loopback/9004/default"
    )
    t = consulting(bed, c.a2, "9004")
    wait_until(lambda: not bed.up(t), what="the ring timeout")
    assert bed.fates(a2=c.a2, b=c.b, t=t) == {"a2": "up", "b": "up", "t": "ALLOTTED_TIMEOUT"}
    assert bed.bridged_pairs() == [(c.a2, c.b)]


def test_2_5_the_conference_key_is_not_a_takeback(bed: Bed) -> None:
    c = bed.std()
    refused(bed.attended(c.a2, takeback_dtmf="0"), 400, "takeback_dtmf")
    assert bed.sent() == []


def test_2_5_hanging_up_the_transferor_while_the_target_rings_is_refused(bed: Bed) -> None:
    c = bed.std()
    ok(bed.attended(c.a2, target="9004", moh=MOH))
    t = consulting(bed, c.a2, "9004")
    wait_until(lambda: bed.row(c.a2)["call_state"] == "RING_WAIT", what="RING_WAIT")
    refused(bed.post(c.a2, action="hangup"), 409, "call_state")
    refused(bed.put(c.a2, "hangup"), 409, "call_state")
    # Taking the transferor away by a transfer or a callflow ends its att_xfer the same way
    # (inferred, not verified on the switch): refused alike, whichever leg is named.
    refused(bed.post(c.a2, action="transfer", target="2000"), 409, "call_state")
    refused(bed.post(c.b, action="transfer", target="2000", leg="bleg"), 409, "call_state")
    refused(bed.post(c.a2, action="transfer", target="2000", leg="both"), 409, "call_state")
    refused(bed.post(c.a2, action="callflow", id="2000"), 409, "call_state")
    assert bed.sent() == []
    assert bed.fates(a2=c.a2, b=c.b, t=t) == dict.fromkeys(("a2", "b", "t"), "up")
    # once the target answers, hanging up completes the transfer
    bed.sw.answer(t)
    wait_until(lambda: bed.row(c.a2)["call_state"] == "ACTIVE", what="ACTIVE")
    ok(bed.post(c.a2, action="hangup"))
    assert bed.fates(b=c.b, t=t) == {"b": "up", "t": "up"}
    assert (t, c.b) in bed.bridged_pairs()


def test_2_5_the_transferee_hangs_up_during_consultation(bed: Bed) -> None:
    c = bed.std()
    ok(bed.attended(c.a2, moh=MOH))
    t = consulting(bed, c.a2)
    ok(bed.post(c.b, action="hangup"))
    assert bed.fates(a2=c.a2, b=c.b, t=t) == {"a2": "up", "b": "NORMAL_CLEARING", "t": "up"}
    assert (c.a2, t) in bed.bridged_pairs()
    ok(bed.post(c.a2, action="hangup"))
    assert bed.fates(t=t) == {"t": "up"} and bed.legs[t].state == "CS_PARK"


def completed_with_unplayable_moh(bed: Bed, leg: str = "self") -> tuple[Std, str]:
    c = bed.std()
    ok(bed.attended(c.a2, leg=leg, moh=UNPLAYABLE_MOH))  # unplayable on the reference switch
    tor = c.a2 if leg == "self" else c.b
    t = consulting(bed, tor)
    wait_until(lambda: bed.row(tor).get("other_leg") == t, what="consulting")
    ok(bed.post(tor, action="hangup"))
    return c, t


def test_2_6_the_zombie_transferor_stays_listed(bed: Bed) -> None:
    c, t = completed_with_unplayable_moh(bed)
    assert (t, c.b) in bed.bridged_pairs()
    listed = json.loads(bed.sw.api.execute("show", "channels as json"))["rows"]
    zombie = next(r for r in listed if r["uuid"] == c.a2)
    assert (zombie["state"], zombie["callstate"], zombie["application"]) == (
        "CS_EXECUTE",
        "ACTIVE",
        "att_xfer",
    )
    bed.synced()
    assert bed.row(c.a2) is not None  # channelsd lists it too: no destroy came
    bed.own(t)
    ok(bed.post(t, action="hangup"))  # the new bridge ends: the zombie goes at last
    bed.synced()
    assert bed.row(c.a2) is None


def test_2_6_the_zombie_is_gone_for_commands(bed: Bed) -> None:
    c, _ = completed_with_unplayable_moh(bed)
    assert bed.sw.api.execute("uuid_exists", c.a2) == b"false"
    resp = bed.post(c.a2, action="hangup")
    assert resp.status_code == 404 and resp.json()["message"] == "-ERR No such channel!"


def test_2_6_the_zombies_loopback_twin_lingers(bed: Bed) -> None:
    c, _ = completed_with_unplayable_moh(bed)
    assert bed.legs[c.a2].hungup and not bed.legs[c.a2].destroyed
    assert bed.fate(c.a) == "up"


def test_2_6_without_playable_moh_the_caller_transferor_turns_zombie(bed: Bed) -> None:
    c, t = completed_with_unplayable_moh(bed)
    assert bed.fates(a2=c.a2, b=c.b, t=t) == {"a2": "NORMAL_CLEARING", "b": "up", "t": "up"}
    assert not bed.legs[c.a2].destroyed


def test_2_6_a_playable_moh_leaves_no_zombie(bed: Bed) -> None:
    c = bed.std()
    ok(bed.attended(c.a2, moh=MOH))
    t = consulting(bed, c.a2)
    ok(bed.post(c.a2, action="hangup"))
    assert bed.legs[c.a2].destroyed and bed.fate(c.a) == "NORMAL_CLEARING"
    assert (t, c.b) in bed.bridged_pairs()


def test_2_6_a_callee_transferor_is_no_zombie(bed: Bed) -> None:
    c, t = completed_with_unplayable_moh(bed, leg="bleg")
    assert bed.legs[c.b].destroyed
    assert bed.bridged_pairs() == [(t, c.a2)]


# -- §3 intercept ---------------------------------------------------------------------------------


def test_3_1_channelsd_refuses_the_intercept_the_switch_would_fake(bed: Bed) -> None:
    # unbridged_only on a bridged caller: FreeSWITCH's job would say +OK <interceptor> and
    # the interceptor would just hang up
    c = bed.std()
    detail = refused(bed.intercept(c.a2), 400, "other_leg_call_id")
    assert detail == {"not": {"message": "Channel is bridged (unbridged_only)"}}
    assert bed.sent() == []


def test_3_1_the_app_form_runs_intercept(bed: Bed) -> None:
    p, _ = bed.parked()
    ok(bed.intercept(p))
    assert bed.sent() == [
        f"bgapi originate {{intercept_unbridged_only=true,{IDENTITY}}}"
        f"loopback/{INTERCEPTOR}/default &intercept({p})"
    ]
    i = bed.interceptor()
    assert bed.legs[i].app == "uuid_bridge" and bed.legs[i].bridge_peer == p


def test_3_1_pickup_quotes_the_bleg_form(bed: Bed) -> None:
    r = bed.std("9014")
    ok(bed.intercept(r.b))
    assert bed.sent() == [
        f"bgapi originate {{intercept_unbridged_only=true,{IDENTITY}}}"
        f"loopback/{INTERCEPTOR}/default '&intercept(-bleg {r.b})'"
    ]
    i = bed.interceptor()
    assert bed.fates(i=i, a2=r.a2, b=r.b) == {"i": "up", "a2": "up", "b": "PICKED_OFF"}


def test_3_3_parked_answered_leg(bed: Bed) -> None:
    p, p2 = bed.parked()
    ok(bed.intercept(p))
    i = bed.interceptor()
    assert bed.fates(i=i, p=p, p2=p2) == dict.fromkeys(("i", "p", "p2"), "up")
    wait_until(lambda: bed.row(p).get("other_leg") == i, what="bridged to the interceptor")
    assert bed.legs[p2].parked  # its twin stays parked


def test_3_3_ringing_inbound_leg(bed: Bed) -> None:
    a, b = bed.sw.originate(dest="9004")  # b: 9004-b, ring_ready and park; a waits on it
    bed.own(a, b)
    assert not bed.legs[b].answered and bed.legs[b].direction == "inbound"
    ok(bed.intercept(b))
    assert bed.sent()[0].endswith(f"&intercept({b})")
    i = bed.interceptor()
    assert bed.fates(i=i, a=a, b=b) == dict.fromkeys(("i", "a", "b"), "up")
    assert bed.legs[b].answered and bed.legs[a].answered  # its twin's originate completed
    assert bed.legs[b].bridge_peer == i


def test_3_3_caller_still_ringing_its_callee(bed: Bed) -> None:
    r = bed.std("9014")  # a2: the caller, ringing its callee b
    ok(bed.intercept(r.a2))
    assert bed.sent()[0].endswith(f"&intercept({r.a2})")
    i = bed.interceptor()
    assert bed.fates(i=i, a2=r.a2, b=r.b) == {"i": "up", "a2": "up", "b": "PICKED_OFF"}
    assert bed.legs[r.a2].answered and bed.legs[r.a2].bridge_peer == i
    assert bed.ended_cause(r.b) == "PICKED_OFF"


def test_3_3_intercept_bleg_of_the_ringing_callee(bed: Bed) -> None:
    r = bed.std("9014")
    ok(bed.intercept(r.b, unbridged_only=False))
    assert bed.sent()[0].endswith(f"'&intercept(-bleg {r.b})'")
    i = bed.interceptor()
    assert bed.fates(i=i, a2=r.a2, b=r.b, b2=r.b2) == {
        "i": "up",
        "a2": "up",
        "b": "PICKED_OFF",
        "b2": "NORMAL_CLEARING",
    }
    wait_until(lambda: bed.row(r.a2).get("other_leg") == i, what="the caller with the interceptor")


@pytest.mark.parametrize("unbridged_only", [True, False])
def test_3_3_ringing_outbound_callee_leg(bed: Bed, unbridged_only: bool) -> None:
    """The phone an operator sees ringing: picked up, not everybody lost."""
    r = bed.std("9014")
    bed.synced()
    assert bed.row(r.b)["other_leg"] == r.a2  # an originate, not a bridge
    ok(bed.intercept(r.b, unbridged_only=unbridged_only))
    i = bed.interceptor()
    assert bed.fates(i=i, a2=r.a2, b=r.b) == {"i": "up", "a2": "up", "b": "PICKED_OFF"}
    assert bed.legs[i].bridge_peer == r.a2
    # A ringing outbound leg nobody originated (api originate's own leg) cannot be picked
    # up: intercepting it would lose it and the interceptor.
    a, _ = bed.sw.originate(dest="9004")
    bed.own(a)
    assert bed.legs[a].direction == "outbound" and not bed.legs[a].answered
    detail = refused(bed.intercept(a, unbridged_only=unbridged_only), 409, "other_leg_call_id")
    assert "no caller" in detail["state"]["message"]
    assert bed.sent() == [] and bed.fate(a) == "up"


def test_3_3_bridged_callee_with_unbridged_only(bed: Bed) -> None:
    c = bed.std()
    refused(bed.intercept(c.b, unbridged_only=True), 400, "other_leg_call_id")
    assert bed.sent() == []
    assert bed.fates(a2=c.a2, b=c.b) == {"a2": "up", "b": "up"}


def test_3_3_bridged_callee_without_unbridged_only(bed: Bed) -> None:
    c = bed.std()
    ok(bed.intercept(c.b, unbridged_only=False))
    i = bed.interceptor()
    assert bed.fates(i=i, a=c.a, a2=c.a2, b=c.b) == {
        "i": "up",
        "a": "NORMAL_CLEARING",
        "a2": "PICKED_OFF",
        "b": "up",
    }
    wait_until(lambda: bed.row(c.b).get("other_leg") == i, what="the callee with the interceptor")


def test_3_3_bridged_caller(bed: Bed) -> None:
    c = bed.std()
    ok(bed.intercept(c.a2, unbridged_only=False))
    i = bed.interceptor()
    assert bed.fates(i=i, a2=c.a2, b=c.b) == {"i": "up", "a2": "up", "b": "PICKED_OFF"}
    assert bed.legs[c.a2].bridge_peer == i


def test_3_3_non_existent_uuid(bed: Bed) -> None:
    resp = bed.intercept("00000000-0000-0000-0000-000000000000")
    assert resp.status_code == 404 and bed.sent() == []


# -- §4 hold --------------------------------------------------------------------------------------


def hold(bed: Bed, uuid: str, action: str) -> Any:
    return bed.put(uuid, "hold_control", action=action)


def test_4_2_hold_of_a_sip_leg(bed: Bed) -> None:
    s, s2 = bed.sip()
    bed.sw.set_variable(s, "hold_music", MOH)
    ok(hold(bed, s, "hold"), 201)
    assert bed.sent() == [f"api uuid_hold {s}"]
    wait_until(lambda: bed.row(s)["is_onhold"], what="on hold")
    assert bed.row(s)["call_state"] == "HELD"
    assert bed.legs[s2].playing == MOH


def test_4_2_hold_again_is_an_error(bed: Bed) -> None:
    s, _ = bed.sip()
    ok(hold(bed, s, "hold"), 201)
    resp = hold(bed, s, "hold")
    assert resp.status_code == 502 and resp.json()["message"] == "-ERR Operation failed"


def test_4_2_unhold_of_a_sip_leg(bed: Bed) -> None:
    s, s2 = bed.sip()
    bed.sw.set_variable(s, "hold_music", MOH)
    ok(hold(bed, s, "hold"), 201)
    ok(hold(bed, s, "unhold"), 201)
    assert bed.sent() == [f"api uuid_hold off {s}"]
    wait_until(lambda: not bed.row(s)["is_onhold"], what="off hold")
    assert bed.row(s)["call_state"] == "ACTIVE" and bed.legs[s2].playing is None


def test_4_2_unhold_again_is_an_error(bed: Bed) -> None:
    s, _ = bed.sip()
    resp = hold(bed, s, "unhold")
    assert resp.status_code == 502 and resp.json()["message"] == "-ERR Operation failed"


def test_4_2_toggle_twice(bed: Bed) -> None:
    s, _ = bed.sip()
    ok(hold(bed, s, "toggle"), 201)
    wait_until(lambda: bed.row(s)["call_state"] == "HELD", what="held")
    ok(hold(bed, s, "toggle"), 201)
    wait_until(lambda: bed.row(s)["call_state"] == "ACTIVE", what="unheld")
    assert not bed.row(s)["is_onhold"]


def test_4_2_the_partner_hears_the_held_legs_hold_music(bed: Bed) -> None:
    s, s2 = bed.sip()
    bed.sw.set_variable(s, "hold_music", MOH)
    bed.sw.set_variable(s2, "hold_music", "/srv/other.wav")
    ok(hold(bed, s, "hold"), 201)
    assert bed.legs[s2].playing == MOH


def test_4_3_hold_of_a_loopback_leg(bed: Bed) -> None:
    c = bed.std()
    ok(hold(bed, c.a2, "hold"), 201)
    wait_until(lambda: bed.row(c.a2)["is_onhold"], what="CHANNEL_HOLD")
    assert bed.row(c.a2)["call_state"] == "ACTIVE"
    assert bed.legs[c.a2].audio_cut  # the audio stops both ways
    assert bed.legs[c.b].variables["current_application_response"] == "FILE NOT FOUND"


def test_4_3_hold_of_a_loopback_leg_again(bed: Bed) -> None:
    c = bed.std()
    ok(hold(bed, c.a2, "hold"), 201)
    ok(hold(bed, c.a2, "hold"), 201)
    assert bed.sent() == [f"api uuid_hold {c.a2}"] and bed.legs[c.a2].audio_cut


def test_4_3_unhold_of_a_loopback_leg_is_refused(bed: Bed) -> None:
    c = bed.std()
    ok(hold(bed, c.a2, "hold"), 201)
    detail = refused(hold(bed, c.a2, "unhold"), 409, "action")
    assert "resume" in detail["state"]["message"]
    assert bed.sent() == [] and bed.legs[c.a2].audio_cut
    assert bed.sw.api.execute("uuid_hold", f"off {c.a2}") == b"-ERR Operation failed\n"


def test_4_3_toggle_of_a_held_loopback_leg_is_refused(bed: Bed) -> None:
    c = bed.std()
    ok(hold(bed, c.a2, "toggle"), 201)  # not on hold: toggle holds
    wait_until(lambda: bed.row(c.a2)["is_onhold"], what="CHANNEL_HOLD")
    refused(hold(bed, c.a2, "toggle"), 409, "action")  # FreeSWITCH would hold it again
    assert bed.sent() == [] and bed.legs[c.a2].audio_cut


def test_4_3_resume_brings_the_audio_back(bed: Bed) -> None:
    c = bed.std()
    ok(hold(bed, c.a2, "hold"), 201)
    ok(bed.put(c.a2, "resume"), 201)
    assert bed.sent() == [f"api uuid_bridge {c.a2} {c.b}"]
    assert not bed.legs[c.a2].audio_cut
    assert bed.bridged_pairs() == [(c.a2, c.b)]


def test_4_3_a_loopback_hold_never_reaches_held(bed: Bed) -> None:
    c = bed.std()
    for _ in range(2):
        ok(hold(bed, c.a2, "hold"), 201)
    assert bed.legs[c.a2].call_state == "ACTIVE" and not bed.legs[c.a2].held


def test_4_3_hold_of_a_parked_leg(bed: Bed) -> None:
    p, _ = bed.parked()
    ok(hold(bed, p, "hold"), 201)
    wait_until(lambda: bed.row(p)["is_onhold"], what="CHANNEL_HOLD")
    assert bed.fate(p) == "up" and bed.legs[p].parked


def test_4_4_the_default_hold_music_plays_nothing(bed: Bed) -> None:
    s, s2 = bed.sip()
    ok(hold(bed, s, "hold"), 201)
    assert bed.legs[s2].playing is None
    assert bed.legs[s2].variables["current_application_response"] == "FILE NOT FOUND"


def test_4_4_a_playable_hold_music_plays(bed: Bed) -> None:
    s, s2 = bed.sip()
    bed.sw.set_variable(s, "hold_music", "tone_stream://%(2000,4000,440)")
    ok(hold(bed, s, "hold"), 201)
    assert bed.legs[s2].playing == "tone_stream://%(2000,4000,440)"


# -- §5 media -------------------------------------------------------------------------------------


def play(bed: Bed, uuid: str, path: str = "/srv/a.wav", **data: Any) -> Any:
    return bed.put(uuid, "play", id=path, **data)


def test_5_1_play_to_self_is_aleg(bed: Bed) -> None:
    c = bed.std()
    ok(play(bed, c.a2, leg="self"), 201)
    assert bed.sent() == [f"api uuid_broadcast {c.a2} /srv/a.wav aleg"]
    assert bed.legs[c.a2].playing == "/srv/a.wav" and bed.legs[c.b].playing is None


def test_5_1_play_to_peer_is_bleg(bed: Bed) -> None:
    c = bed.std()
    ok(play(bed, c.a2, leg="peer"), 201)
    assert bed.sent() == [f"api uuid_broadcast {c.a2} /srv/a.wav bleg"]
    assert bed.legs[c.b].playing == "/srv/a.wav" and bed.legs[c.a2].playing is None


def test_5_1_play_to_both(bed: Bed) -> None:
    c = bed.std()
    ok(play(bed, c.a2, leg="both"), 201)
    assert bed.legs[c.b].playing == bed.legs[c.a2].playing == "/srv/a.wav"


def test_5_1_play_always_names_its_leg(bed: Bed) -> None:
    # without a leg word the partner would be held with hold music meanwhile
    c = bed.std()
    for leg, word in (("self", "aleg"), ("peer", "bleg"), ("both", "both"), (None, "both")):
        ok(play(bed, c.a2, **({"leg": leg} if leg else {})), 201)
        assert bed.sent() == [f"api uuid_broadcast {c.a2} /srv/a.wav {word}"]
        ok(bed.put(c.a2, "break"), 201)
        ok(bed.put(c.b, "break"), 201)


def test_5_1_an_app_in_a_media_path_is_refused(bed: Bed) -> None:
    p, _ = bed.parked()
    for path in ("playback::/srv/a.wav", "att_xfer::loopback/2000"):
        refused(play(bed, p, path), 400, "data.id")
    assert bed.sent() == []


def test_5_1_a_hangup_suffix_is_refused(bed: Bed) -> None:
    p, _ = bed.parked()
    for path in ("playback!user_busy::/srv/a.wav", "/srv/a.wav!user_busy"):
        refused(play(bed, p, path), 400, "data.id")
    assert bed.sent() == [] and bed.fate(p) == "up"


def test_5_1_a_path_with_a_space_is_refused(bed: Bed) -> None:
    p, _ = bed.parked()
    refused(play(bed, p, "/srv/a b.wav"), 400, "data.id")
    assert bed.sent() == []


def test_5_1_an_unknown_leg_is_refused(bed: Bed) -> None:
    p, _ = bed.parked()
    refused(play(bed, p, leg="sideways"), 400, "data.leg")
    assert bed.sent() == []
    # the switch: +OK Message sent, and nothing plays
    assert bed.sw.api.execute("uuid_broadcast", f"{p} /srv/a.wav sideways") == (
        b"+OK Message sent\n"
    )
    assert bed.legs[p].playing is None


def test_5_1_a_missing_file_plays_nothing(bed: Bed) -> None:
    # channelsd cannot know the file is missing: the switch answers +OK and plays nothing
    bed.sw.model.missing_media.add("/srv/missing.wav")
    p, _ = bed.parked()
    ok(play(bed, p, "/srv/missing.wav", leg="self"), 201)
    assert bed.legs[p].playing is None and bed.legs[p].parked
    assert bed.legs[p].variables["current_application_response"] == "FILE NOT FOUND"


def test_5_1_a_parked_leg_plays_and_stays_parked(bed: Bed) -> None:
    p, _ = bed.parked()
    ok(play(bed, p, leg="self"), 201)
    assert bed.legs[p].playing == "/srv/a.wav"
    ok(bed.put(p, "break"), 201)
    assert bed.legs[p].parked and bed.fate(p) == "up"


def dialplan_playback(bed: Bed) -> str:
    """A leg in the first of 9005's three dialplan playbacks."""
    a, b = bed.sw.originate(dest="9005")
    bed.own(a, b)
    assert bed.legs[b].playing.startswith("tone_stream://%(500,500,440)")
    return b


def test_5_1_play_on_a_leg_in_a_dialplan_playback_nests(bed: Bed) -> None:
    b = dialplan_playback(bed)
    ok(play(bed, b, leg="self"), 201)
    leg = bed.legs[b]
    assert leg.playing == "/srv/a.wav"
    app, data, _, running, _ = leg.app_stack[-1]  # the dialplan playback, paused underneath
    assert (app, running) == ("playback", True) and data.endswith("440);loops=5")


def test_5_2_break_stops_the_playback(bed: Bed) -> None:
    c = bed.std()
    ok(play(bed, c.a2, leg="self"), 201)
    ok(bed.put(c.a2, "break"), 201)
    assert bed.sent() == [f"api uuid_break {c.a2}"]
    assert bed.legs[c.a2].playing is None and bed.bridged_pairs() == [(c.a2, c.b)]


def test_5_2_break_all_drops_queued_broadcasts(bed: Bed) -> None:
    p, _ = bed.parked()
    ok(play(bed, p, "/srv/one.wav", leg="self"), 201)
    ok(play(bed, p, "/srv/two.wav", leg="self"), 201)
    assert len(bed.legs[p].broadcast_queue) == 1
    ok(bed.put(p, "break", all=True), 201)
    assert bed.sent() == [f"api uuid_break {p} all"]
    assert bed.legs[p].playing is None and bed.legs[p].broadcast_queue == []


def test_5_2_break_in_a_nested_broadcast_stops_both(bed: Bed) -> None:
    b = dialplan_playback(bed)
    ok(play(bed, b, leg="self"), 201)
    ok(bed.put(b, "break"), 201)
    # both stopped; the dialplan went on to its next app (9005's second playback)
    assert bed.legs[b].playing.startswith("tone_stream://%(500,500,480)")


def test_5_4_a_recording_shows_in_the_channel(bed: Bed) -> None:
    p, _ = bed.parked()
    ok(bed.put(p, "record_call", action="start"), 201)
    wait_until(lambda: bed.row(p)["is_recording"], what="RECORD_START")


def test_5_4_mask_and_unmask(bed: Bed) -> None:
    p, _ = bed.parked()
    ok(bed.put(p, "record_call", action="start"), 201)
    path = bed.sent()[0].split(" ")[4]
    wait_until(lambda: bed.row(p)["is_recording"], what="RECORD_START")
    for action in ("mask", "unmask"):
        ok(bed.put(p, "record_call", action=action), 201)
        assert bed.sent() == [f"api uuid_record {p} {action} {path}"]
    assert bed.row(p)["is_recording"]


def test_5_4_a_time_limit_stops_the_recording(bed: Bed) -> None:
    p, _ = bed.parked()
    ok(bed.put(p, "record_call", action="start", time_limit=1), 201)
    assert bed.sent()[0].endswith(" 1")
    wait_until(lambda: bed.row(p)["is_recording"], what="RECORD_START")
    wait_until(lambda: not bed.row(p)["is_recording"], what="the limit to stop it")


def test_5_4_the_recording_path_is_the_daemons(bed: Bed) -> None:
    p, _ = bed.parked()
    # a client has no way to name a path: a key record_call does not take is refused
    refused(
        bed.put(p, "record_call", action="start", path="/nonexistent/dir/x.wav"), 400, "data.path"
    )
    refused(bed.put(p, "record_call", action="start", media_name="x.wav"), 400, "data.media_name")
    assert bed.sent() == []
    ok(bed.put(p, "record_call", action="start"), 201)
    (line,) = bed.sent()
    assert line.split(" ")[4].startswith(f"/var/lib/freeswitch/recordings/channelsd/{p}-")
    assert "/nonexistent" not in line


# -- §6 uuid_bridge and uuid_kill -----------------------------------------------------------------


def test_6_1_resume_leaves_the_pair_bridged(bed: Bed) -> None:
    c = bed.std()
    ok(bed.put(c.a2, "resume"), 201)
    assert (bed.legs[c.a2].state, bed.legs[c.b].state) == ("CS_SOFT_EXECUTE", "CS_EXCHANGE_MEDIA")
    assert bed.legs[c.a2].app == "uuid_bridge"
    bed.synced()
    assert bed.row(c.a2)["other_leg"] == c.b and bed.row(c.b)["other_leg"] == c.a2


def test_6_1_after_resume_one_side_hanging_up_ends_the_other(bed: Bed) -> None:
    for gone, kept in (("b", "a2"), ("a2", "b")):
        c = bed.std()
        ok(bed.put(c.a2, "resume"), 201)
        ok(bed.post(getattr(c, gone), action="hangup"))
        assert bed.fate(getattr(c, kept)) == "NORMAL_CLEARING"
        d = bed.std()
        ok(bed.put(d.a2, "resume"), 201)
        bed.sw.set_variable(getattr(d, kept), "park_after_bridge", "true")
        ok(bed.post(getattr(d, gone), action="hangup"))
        assert bed.fate(getattr(d, kept)) == "up"
        assert bed.legs[getattr(d, kept)].state == "CS_PARK"


def hangup(bed: Bed, uuid: str, cause: str | None) -> Any:
    return bed.post(uuid, action="hangup", **({"cause": cause} if cause is not None else {}))


@pytest.mark.parametrize("cause", ["USER_BUSY", "user_busy"])
def test_6_2_user_busy(bed: Bed, cause: str) -> None:
    p, p2 = bed.parked()
    ok(hangup(bed, p, cause))
    assert bed.fates(p=p, p2=p2) == {"p": "USER_BUSY", "p2": "USER_BUSY"}
    assert bed.ended_cause(p) == "USER_BUSY"


def test_6_2_a_q850_number(bed: Bed) -> None:
    p, _ = bed.parked()
    ok(hangup(bed, p, "17"))
    assert bed.sent() == [f"api uuid_kill {p} 17"] and bed.fate(p) == "USER_BUSY"


def test_6_2_no_cause_is_normal_clearing(bed: Bed) -> None:
    p, _ = bed.parked()
    ok(hangup(bed, p, None))
    assert bed.fate(p) == "NORMAL_CLEARING"


def refused_cause(bed: Bed, cause: str, switch_would: str) -> None:
    """channelsd refuses the cause; the switch itself would answer +OK and end the leg with
    `switch_would`."""
    p, _ = bed.parked()
    refused(hangup(bed, p, cause), 400, "cause")
    assert bed.sent() == [] and bed.fate(p) == "up"
    assert bed.sw.api.execute("uuid_kill", f"{p} {cause}") == b"+OK\n"
    assert bed.fate(p) == switch_would


def test_6_2_an_unknown_cause_name_is_refused(bed: Bed) -> None:
    refused_cause(bed, "NOT_A_REAL_CAUSE", "NORMAL_CLEARING")


def test_6_2_words_after_the_cause_are_refused(bed: Bed) -> None:
    refused_cause(bed, "CALL_REJECTED extra words", "NORMAL_CLEARING")


def test_6_2_a_cause_number_out_of_range_is_refused(bed: Bed) -> None:
    refused_cause(bed, "999", "UNKNOWN")


def test_6_2_cause_number_0_is_refused(bed: Bed) -> None:
    refused_cause(bed, "0", "NONE")


def test_6_2_an_expansion_as_cause_is_refused(bed: Bed) -> None:
    refused_cause(bed, "${expr(17)}", "NORMAL_CLEARING")


def test_6_2_a_bridged_partner_ends_normal_clearing(bed: Bed) -> None:
    c = bed.std()
    ok(hangup(bed, c.b, "USER_BUSY"))
    assert bed.fates(a2=c.a2, b=c.b) == {"a2": "NORMAL_CLEARING", "b": "USER_BUSY"}


def test_6_2_rejecting_a_ringing_inbound_leg(bed: Bed) -> None:
    a, b = bed.sw.originate(dest="9004")
    bed.own(a, b)
    ok(hangup(bed, b, "CALL_REJECTED"))
    assert bed.fate(b) == "CALL_REJECTED"


def test_6_3_resume_of_a_leg_with_itself_is_refused(bed: Bed) -> None:
    p, _ = bed.parked()
    bed.h.table.get(p).other_leg = p  # a row naming itself (a stale or hostile value)
    detail = refused(bed.put(p, "resume"), 400, "other_leg_call_id")
    assert "itself" in detail["state"]["message"]
    assert bed.sent() == [] and bed.legs[p].parked
    assert bed.sw.api.execute("uuid_bridge", f"{p} {p}") == f"+OK {p}\n".encode()
    assert bed.legs[p].state == "CS_SOFT_EXECUTE" and not bed.legs[p].bridge_peer


def test_6_3_resume_with_the_loopback_twin_is_refused(bed: Bed) -> None:
    p, p2 = bed.parked()
    bed.h.table.get(p).other_leg = p2
    refused(bed.put(p, "resume"), 400, "other_leg_call_id")
    assert bed.sent() == [] and bed.sw.crashes == 0
    assert bed.fates(p=p, p2=p2) == {"p": "up", "p2": "up"}


def test_6_3_resume_with_an_unanswered_leg_is_refused(bed: Bed) -> None:
    r = bed.std("9014")  # b rings; its other leg is the caller
    detail = refused(bed.put(r.b, "resume"), 400, "answered")
    assert "answered" in detail["state"]["message"]
    assert bed.sent() == []
    assert bed.fates(a2=r.a2, b=r.b) == {"a2": "up", "b": "up"}
