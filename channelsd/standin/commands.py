"""The ``api`` / ``bgapi`` commands of the stand-in (mod_commands subset).

Reply texts are the exact bodies recorded in the captures (s4_errors lists every error form);
where a reply was not captured, the text follows FreeSWITCH's mod_commands as documented in the
project's reference notes, and the code says so.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import gevent
import gevent.event

from . import listings, replies
from .channels import CallModel, SwitchError, new_uuid, str2cause

if TYPE_CHECKING:
    from .server import StandinSwitch

VERSION = "1.11.3-dev~64bit"
VERSION_LINE = f"FreeSWITCH Version {VERSION} ( 64bit)\n"


def separate(text: str, limit: int = 0) -> list[str]:
    """switch_separate_string(' '): split at spaces outside single quotes; once ``limit``
    arguments are reached the last one takes the rest of the line.  Every argument is then
    cleaned as FreeSWITCH does: paired quotes removed (a lone quote stays), ``\\`` escapes
    resolved, surrounding spaces trimmed -- so ``'speak::flite|kal|Hello there'`` is one
    argument (reference §0.3)."""
    raw: list[str] = []
    i, n = 0, len(text)
    while i < n:
        while i < n and text[i] == " ":
            i += 1
        if i >= n:
            break
        if limit and len(raw) == limit - 1:
            raw.append(text[i:])
            break
        start, quoted = i, False
        while i < n:
            c = text[i]
            if c == "\\":
                i += 2
                continue
            if c == "'" and (quoted or "'" in text[i + 1 :]):
                quoted = not quoted
            elif c == " " and not quoted:
                break
            i += 1
        raw.append(text[start:i])
    return [_clean_arg(arg) for arg in raw]


_UNESCAPE = {"n": "\n", "r": "\r", "t": "\t", "s": " ", "'": "'", '"': '"', "\\": "\\", " ": " "}


def _clean_arg(arg: str) -> str:
    out: list[str] = []
    keep = 0  # length of ``out`` without trailing unquoted spaces
    quoted = False
    arg = arg.lstrip(" ")
    i, n = 0, len(arg)
    while i < n:
        c = arg[i]
        if c == "\\" and i + 1 < n and arg[i + 1] in _UNESCAPE:
            out.append(_UNESCAPE[arg[i + 1]])
            keep = len(out)
            i += 2
            continue
        if c == "'" and (quoted or "'" in arg[i + 1 :]):
            quoted = not quoted
            if quoted:
                keep = len(out)
        else:
            out.append(c)
            if c != " " or quoted:
                keep = len(out)
        i += 1
    return "".join(out[:keep])


_VARS_BLOCK = re.compile(r"^\{([^}]*)\}")
_APP = re.compile(r"^&([\w-]+)\((.*)\)$", re.S)


class Api:
    """Executes one api command against a :class:`StandinSwitch` and returns the body."""

    def __init__(self, switch: StandinSwitch) -> None:
        self.sw = switch
        self.table: dict[str, Callable[[str], str | bytes]] = {
            "show": self.show,
            "status": self.status,
            "version": lambda arg: VERSION_LINE,
            "global_getvar": self.global_getvar,
            "uuid_exists": self.uuid_exists,
            "uuid_getvar": self.uuid_getvar,
            "uuid_setvar": self.uuid_setvar,
            "uuid_dump": self.uuid_dump,
            "uuid_kill": self.uuid_kill,
            "uuid_answer": self.uuid_answer,
            "uuid_park": self.uuid_park,
            "uuid_break": self.uuid_break,
            "uuid_transfer": self.uuid_transfer,
            "uuid_hold": self.uuid_hold,
            "uuid_bridge": self.uuid_bridge,
            "uuid_broadcast": self.uuid_broadcast,
            "uuid_recv_dtmf": self.uuid_recv_dtmf,
            "uuid_record": self.uuid_record,
            "uuid_audio": self.uuid_audio,
            "hupall": self.hupall,
            "originate": self.originate,
        }

    def execute(self, command: str, arg: str) -> bytes:
        """Fire the API event, run the command, return the api/response body."""
        headers = [("API-Command", command)]
        if arg:
            headers.append(("API-Command-Argument", arg))
        self.sw.emit(self.sw.builder.simple("API", headers))
        fn = self.table.get(command)
        if fn is None:
            return replies.command_not_found(command).encode()
        try:
            out = fn(arg)
        except SwitchError as exc:
            out = exc.reply
        if isinstance(out, str):
            out = out.encode()
        # mod_event_socket answers an empty result with this text (reference, not captured)
        return out or replies.NO_REPLY.encode()

    # -- helpers ------------------------------------------------------------------------------
    @property
    def model(self) -> CallModel:
        return self.sw.model

    # -- listings -----------------------------------------------------------------------------
    def show(self, arg: str) -> str | bytes:
        words = arg.split()
        if not words:
            return replies.USAGE_SHOW
        what = words[0].lower()
        rest = [w.lower() for w in words[1:]]
        fmt = "text"
        if rest[:2] == ["as", "json"]:
            fmt = "json"
        elif rest[:1] == ["count"]:
            fmt = "count"
        listing = ("channels", "calls", "detailed_calls", "bridged_calls")
        if what in listing and self.sw.sql_disabled:
            return replies.SQL_DISABLED
        host = self.sw.hostname
        if what == "channels":
            live = [ch for ch in self.model.live() if ch.uuid not in self.sw.hide_from_listing]
            if rest[:1] == ["like"] and len(words) > 2:
                needle = words[2]
                live = [
                    ch
                    for ch in live
                    if any(needle in v for v in listings.channel_row(ch, host).values())
                ]
            return listings.show_channels(live, host, fmt)
        if what in ("calls", "detailed_calls", "bridged_calls", "detailed_bridged_calls"):
            detailed = what.startswith("detailed")
            bridged = "bridged" in what
            return listings.show_calls(self.model.live(), host, fmt, detailed, bridged)
        return replies.USAGE_SHOW

    def status(self, arg: str) -> str:
        up_us = time.time_ns() // 1000 - self.sw.started_us
        live = len(self.model.live())
        m = self.model
        return (
            f"UP {uptime_text(up_us)}\n"
            f"FreeSWITCH (Version 1.11.3-dev  64bit) is ready\n"
            f"{m.sessions_since_startup} session(s) since startup\n"
            f"{live} session(s) - peak {m.peak}, last 5min {m.peak} \n"
            f"{m.sessions_per_second()} session(s) per Sec out of max 1000, peak {m.peak}, "
            f"last 5min {m.peak} \n"
            "1000 session(s) max\n"
            "min idle cpu 0.00/98.20\n"
            "Current Stack Size/Max 240K/8192K\n"
        )

    def global_getvar(self, arg: str) -> str:
        if not arg:
            return "".join(f"{k}={v}\n" for k, v in self.sw.global_vars().items())
        return str(self.sw.global_vars().get(arg.strip(), ""))

    # -- channel queries ------------------------------------------------------------------------
    def uuid_exists(self, arg: str) -> str:
        return replies.EXISTS if self.model.locate(arg.strip()) is not None else replies.NOT_EXISTS

    def uuid_getvar(self, arg: str) -> str:
        args = separate(arg, 2)
        if not args:
            return replies.USAGE_GETVAR
        ch = self.model.get(args[0])
        if len(args) < 2 or not args[1]:
            return replies.NO_VARIABLE_NAME
        value = ch.variables.get(args[1])
        if value is None:
            return replies.UNDEF
        if isinstance(value, list):
            return "ARRAY::" + "|:".join(value)
        return str(value)

    def uuid_setvar(self, arg: str) -> str:
        args = separate(arg, 3)
        if len(args) < 2:
            return replies.USAGE_SETVAR
        ch = self.model.get(args[0])
        if not args[1]:
            return replies.NO_VARIABLE
        value = args[2] if len(args) > 2 else None
        self.model.set_variable(ch.uuid, args[1], value)
        return replies.OK

    def uuid_dump(self, arg: str) -> str | bytes:
        args = arg.split()
        if not args:
            return replies.USAGE_DUMP
        ch = self.model.get(args[0])
        if len(args) > 1 and args[1] == "json":
            return listings.uuid_dump_json(self.sw.builder, ch)
        return listings.uuid_dump_text(self.sw.builder, ch)

    # -- call control -----------------------------------------------------------------------
    def uuid_kill(self, arg: str) -> str:
        args = separate(arg, 2)
        if not args:
            return replies.USAGE_KILL
        ch = self.model.get(args[0])
        self.model.hangup(ch.uuid, str2cause(args[1] if len(args) > 1 else None))
        return replies.OK

    def uuid_answer(self, arg: str) -> str:
        ch = self.model.locate(arg.strip())
        if ch is None:
            return replies.ANSWER_FAILED
        self.model.answer(ch.uuid)
        return replies.OK

    def uuid_park(self, arg: str) -> str:
        if not arg.strip():
            return replies.USAGE_PARK
        ch = self.model.get(arg.split()[0])
        self.model.park(ch.uuid)
        return replies.OK

    def uuid_break(self, arg: str) -> str:
        args = arg.split()
        if not args:
            return replies.USAGE_BREAK
        ch = self.model.get(args[0])
        self.model.break_media(ch.uuid, all_="all" in args[1:])
        return replies.OK

    def uuid_transfer(self, arg: str) -> str:
        args = separate(arg, 5)
        if len(args) < 2:
            return replies.USAGE_TRANSFER
        ch = self.model.get(args[0])
        leg = ""
        if args[1] in ("-bleg", "-both"):
            leg = args[1]
            args = separate(arg, 6)
            args.pop(1)
            if len(args) < 2:
                return replies.USAGE_TRANSFER
        dest = args[1]
        dialplan = args[2] if len(args) > 2 else ch.profile.get("Dialplan", "XML")
        context = args[3] if len(args) > 3 else ch.profile.get("Context", "default")
        partner = self.model.channels.get(ch.bridge_peer or "")
        targets = [ch]
        if leg == "-bleg":
            # trap from the captures: with no bridge partner, -bleg transfers the leg itself
            targets = [partner] if partner is not None else [ch]
        elif leg == "-both" and partner is not None:
            targets = [ch, partner]
        for target in targets:
            if target.alive:
                self.model.transfer(target.uuid, dest, dialplan, context)
        return replies.OK

    def uuid_hold(self, arg: str) -> str:
        args = arg.split()
        mode = "on"
        if args and args[0] in ("off", "toggle"):
            mode = args.pop(0)
        if not args:
            return replies.USAGE_HOLD
        ch = self.model.locate(args[0])
        if ch is None:
            return replies.OK_SUCCESS  # captured: an unknown uuid still answers +OK Success
        if mode == "toggle":
            mode = "off" if ch.held else "on"
        if mode == "off":
            self.model.unhold(ch.uuid)
        else:
            self.model.hold(ch.uuid)
        return replies.OK_SUCCESS

    def uuid_bridge(self, arg: str) -> str:
        args = arg.split()
        if len(args) < 2:
            return replies.USAGE_BRIDGE
        a = self.model.get(args[0], replies.INVALID_UUID)
        b_uuid = args[1]
        if self.model.locate(b_uuid) is None and len(args) > 2:
            b_uuid = args[2]
        b = self.model.get(b_uuid, replies.INVALID_UUID)
        return replies.ok_uuid(self.model.uuid_bridge(a.uuid, b.uuid))

    def uuid_broadcast(self, arg: str) -> str:
        args = separate(arg, 3)
        if len(args) < 2:
            return replies.USAGE_BROADCAST
        ch = self.model.get(args[0], replies.BROADCAST_INVALID_UUID)
        # no leg word is not "aleg": the partner is held with hold music (reference §5.1)
        self.model.broadcast(ch.uuid, args[1], args[2] if len(args) > 2 else None)
        return replies.MESSAGE_SENT

    def uuid_recv_dtmf(self, arg: str) -> str:
        # Reply text from the reference (§2.4); the trailing newline is assumed, as on every
        # captured mod_commands reply.  Neither an unknown uuid nor missing arguments were
        # tried: those replies take the shape of the captured uuid_kill / uuid_transfer ones.
        args = separate(arg, 2)
        if len(args) < 2 or not args[1]:
            return replies.USAGE_RECV_DTMF
        ch = self.model.get(args[0])
        self.model.recv_dtmf(ch.uuid, args[1])
        return replies.dtmf_received(ch.uuid, args[1])

    def uuid_record(self, arg: str) -> str:
        args = separate(arg, 4)
        if len(args) < 3:
            return replies.USAGE_RECORD
        uid, action, path = args[0], args[1].lower(), args[2]
        if action not in ("start", "stop", "mask", "unmask", "pause", "resume"):
            return replies.USAGE_RECORD
        self.model.record(uid, action, path)
        return replies.OK_SUCCESS

    def uuid_audio(self, arg: str) -> str:
        # mute / volume: no event of its own, so the stand-in only validates and answers
        args = arg.split()
        if len(args) < 2 or args[1] not in ("start", "stop"):
            return replies.USAGE_AUDIO
        self.model.get(args[0])
        return replies.OK

    def hupall(self, arg: str) -> str:
        args = arg.split()
        cause = str2cause(args[0]) if args else "MANAGER_REQUEST"
        if len(args) >= 3:
            self.model.hupall(cause, (args[1], args[2]))
            return replies.hupall_matching(args[1], args[2], cause)
        self.model.hupall(cause)
        return replies.hupall_done(cause)

    def originate(self, arg: str) -> str:
        args = separate(arg, 7)
        if len(args) < 2:
            return replies.USAGE_ORIGINATE
        url, target = args[0], args[1]
        variables: dict[str, str] = {}
        m = _VARS_BLOCK.match(url)
        if m:
            for item in m.group(1).split(","):
                k, _, v = item.partition("=")
                if k:
                    variables[k.strip()] = v
            url = url[m.end() :]
        parts = url.split("/")
        if parts[0] != "loopback" or len(parts) < 2 or not parts[1]:
            return replies.err_cause("CHAN_NOT_IMPLEMENTED")
        dest = parts[1]
        context = parts[2] if len(parts) > 2 and parts[2] else "default"
        app = _APP.match(target)
        start = (app.group(1), app.group(2)) if app else ("__transfer__", target)
        timeout = float(variables.get("originate_timeout") or (args[6] if len(args) > 6 else 60))
        uid = variables.pop("origination_uuid", None)
        a, _b = self.model.originate_legs(dest, context, variables, uid, start)
        # originate succeeds once the leg is answered (or has early media), even if the app
        # it then runs kills it (captured: &nosuchapp() answers +OK <uuid>)
        if a.answered or a.times.get("Channel-Progress-Media-Time"):
            return replies.ok_uuid(a.uuid)
        if a.hungup or a.destroyed:
            return replies.err_cause(a.hangup_cause or "NORMAL_CLEARING")
        if not (a.answered or a.answer_state == "early"):
            done = gevent.event.Event()
            self.model.on_answer(a.uuid, done.set)
            if not done.wait(timeout) and a.alive:
                self.model.hangup(a.uuid, "NO_ANSWER")
                return replies.err_cause("NO_ANSWER")
            if not a.answered:
                return replies.err_cause(a.hangup_cause or "NORMAL_CLEARING")
        return replies.ok_uuid(a.uuid)


def uptime_text(us: int) -> str:
    secs, micro = divmod(us, 1_000_000)
    ms, micro = divmod(micro, 1000)
    mins, secs = divmod(secs, 60)
    hours, mins = divmod(mins, 60)
    days, hours = divmod(hours, 24)
    years, days = divmod(days, 365)
    return (
        f"{years} years, {days} days, {hours} hours, {mins} minutes, {secs} seconds, "
        f"{ms} milliseconds, {micro} microseconds"
    )


def job_uuid() -> str:
    return new_uuid()
