"""The ``api`` / ``bgapi`` commands of the stand-in (a mod_commands subset).

Each command is an :class:`Api` method registered with ``@api_command(name)``, as mod_commands
registers its commands with ``SWITCH_ADD_API``; a new command is one decorated method.  The
commands parse their argument line (``args.separate``), call the call model
(``channels/``), and answer with a text of ``replies.py``, where every reply cites its source.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

import gevent
import gevent.event

from . import listings, replies
from .args import separate
from .channels import CallModel, SwitchCrash, SwitchError, str2cause

if TYPE_CHECKING:
    from .server import StandinSwitch

VERSION = "1.11.3-dev~64bit"
VERSION_LINE = f"FreeSWITCH Version {VERSION} ( 64bit)\n"  # s2_transfer, s5_vars (version)
_VARS_BLOCK = re.compile(r"^\{([^}]*)\}")
# &app(args); an unquoted argument with a space loses its closing parenthesis to the split and
# the app gets only the first word (reference §3.1: &intercept(-bleg <uuid>) ran as "-bleg")
_APP = re.compile(r"^&([\w-]+)\((.*?)\)?$", re.S)

# An api command runs with its argument string and returns the api/response body.
ApiCommand = Callable[["Api", str], "str | bytes"]
_Cmd = TypeVar("_Cmd", bound=ApiCommand)
API_COMMANDS: dict[str, ApiCommand] = {}


def api_command(name: str) -> Callable[[_Cmd], _Cmd]:
    """Register an :class:`Api` method as the api command ``name`` (what mod_commands does
    with ``SWITCH_ADD_API``); ``execute`` answers any other name "Command not found"."""

    def register(fn: _Cmd) -> _Cmd:
        API_COMMANDS[name] = fn
        return fn

    return register


class Api:
    """Executes one api command against a :class:`StandinSwitch` and returns the body."""

    def __init__(self, switch: StandinSwitch) -> None:
        self.sw = switch

    def execute(self, command: str, arg: str) -> bytes:
        """Fire the API event, run the command, return the api/response body."""
        headers = [("API-Command", command)]
        if arg:
            headers.append(("API-Command-Argument", arg))
        self.sw.emit(self.sw.builder.simple("API", headers))
        fn = API_COMMANDS.get(command)
        if fn is None:
            return replies.command_not_found(command).encode()
        try:
            out = fn(self, arg)
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
    @api_command("show")
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

    @api_command("version")
    def version(self, arg: str) -> str:
        return VERSION_LINE

    @api_command("status")
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

    @api_command("global_getvar")
    def global_getvar(self, arg: str) -> str:
        if not arg:
            return "".join(f"{k}={v}\n" for k, v in self.sw.global_vars().items())
        return str(self.sw.global_vars().get(arg.strip(), ""))

    # -- channel queries ------------------------------------------------------------------------
    @api_command("uuid_exists")
    def uuid_exists(self, arg: str) -> str:
        return replies.EXISTS if self.model.locate(arg.strip()) is not None else replies.NOT_EXISTS

    @api_command("uuid_getvar")
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

    @api_command("uuid_setvar")
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

    @api_command("uuid_dump")
    def uuid_dump(self, arg: str) -> str | bytes:
        args = arg.split()
        if not args:
            return replies.USAGE_DUMP
        ch = self.model.get(args[0])
        if len(args) > 1 and args[1] == "json":
            return listings.uuid_dump_json(self.sw.builder, ch)
        return listings.uuid_dump_text(self.sw.builder, ch)

    # -- call control -----------------------------------------------------------------------
    @api_command("uuid_kill")
    def uuid_kill(self, arg: str) -> str:
        args = separate(arg, 2)
        if not args:
            return replies.USAGE_KILL
        ch = self.model.get(args[0])
        self.model.hangup(ch.uuid, str2cause(args[1] if len(args) > 1 else None))
        return replies.OK

    @api_command("uuid_answer")
    def uuid_answer(self, arg: str) -> str:
        ch = self.model.locate(arg.strip())
        if ch is None:
            return replies.ANSWER_FAILED
        self.model.answer(ch.uuid)
        return replies.OK

    @api_command("uuid_park")
    def uuid_park(self, arg: str) -> str:
        if not arg.strip():
            return replies.USAGE_PARK
        ch = self.model.get(arg.split()[0])
        self.model.park(ch.uuid)
        return replies.OK

    @api_command("uuid_break")
    def uuid_break(self, arg: str) -> str:
        args = arg.split()
        if not args:
            return replies.USAGE_BREAK
        ch = self.model.get(args[0])
        self.model.break_media(ch.uuid, all_="all" in args[1:])
        return replies.OK

    @api_command("uuid_transfer")
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
        partner = self.model.locate(ch.bridge_peer)
        if leg == "-both":
            # reference §1.2: both legs run the extension, nobody is hung up; with no partner
            # (§1.5) the named leg alone is transferred
            self.model.transfer_both(ch.uuid, dest, dialplan, context)
            return replies.OK
        # reference §1.5: with no bridge partner, -bleg transfers the named leg itself
        target = partner if leg == "-bleg" and partner is not None else ch
        self.model.transfer(target.uuid, dest, dialplan, context)
        return replies.OK

    @api_command("uuid_hold")
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
        self.model.uuid_hold(ch.uuid, mode)
        return replies.OK_SUCCESS

    @api_command("uuid_bridge")
    def uuid_bridge(self, arg: str) -> str:
        args = arg.split()
        if len(args) < 2:
            return replies.USAGE_BRIDGE
        a = self.model.get(args[0], replies.INVALID_UUID)
        b_uuid = args[1]
        if self.model.locate(b_uuid) is None and len(args) > 2:
            b_uuid = args[2]
        b = self.model.get(b_uuid, replies.INVALID_UUID)
        try:
            return replies.ok_uuid(self.model.uuid_bridge(a.uuid, b.uuid))
        except SwitchCrash:
            # reference §6.3: the switch died (segfault); modelled as the process restarting:
            # every connection drops without a reply and the calls are gone
            self.sw.crash()
            return ""

    @api_command("uuid_broadcast")
    def uuid_broadcast(self, arg: str) -> str:
        args = separate(arg, 3)
        if len(args) < 2:
            return replies.USAGE_BROADCAST
        ch = self.model.get(args[0], replies.BROADCAST_INVALID_UUID)
        # no leg word is not "aleg": the partner is held with hold music (reference §5.1)
        self.model.broadcast(ch.uuid, args[1], args[2] if len(args) > 2 else None)
        return replies.MESSAGE_SENT

    @api_command("uuid_recv_dtmf")
    def uuid_recv_dtmf(self, arg: str) -> str:
        # Reply text from the reference (§2.4); the trailing newline is assumed, as on every
        # captured mod_commands reply.  An unknown uuid and missing arguments were not tried:
        # their replies are read in mod_commands' uuid_recv_dtmf_function (code).
        args = separate(arg, 2)
        if len(args) < 2 or not args[1]:
            return replies.USAGE_RECV_DTMF
        ch = self.model.get(args[0], replies.CANNOT_LOCATE_SESSION)
        self.model.recv_dtmf(ch.uuid, args[1])
        return replies.dtmf_received(ch.uuid, args[1])

    @api_command("uuid_record")
    def uuid_record(self, arg: str) -> str:
        args = separate(arg, 4)
        if len(args) < 3:
            return replies.USAGE_RECORD
        uid, action, path = args[0], args[1].lower(), args[2]
        if action not in ("start", "stop", "mask", "unmask", "pause", "resume"):
            return replies.USAGE_RECORD
        rest = args[3].split() if len(args) > 3 else []
        limit = rest[0] if rest else ""
        variables = rest[1] if len(rest) > 1 and action == "start" else ""
        self.model.record(uid, action, path, limit, variables)
        return replies.OK_SUCCESS

    @api_command("uuid_audio")
    def uuid_audio(self, arg: str) -> str:
        # mute / volume: no event of its own, so the stand-in only validates and answers
        args = arg.split()
        if len(args) < 2 or args[1] not in ("start", "stop"):
            return replies.USAGE_AUDIO
        self.model.get(args[0])
        return replies.OK

    @api_command("hupall")
    def hupall(self, arg: str) -> str:
        args = arg.split()
        cause = str2cause(args[0]) if args else "MANAGER_REQUEST"
        if len(args) >= 3:
            self.model.hupall(cause, (args[1], args[2]))
            return replies.hupall_matching(args[1], args[2], cause)
        self.model.hupall(cause)
        return replies.hupall_done(cause)

    @api_command("originate")
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
