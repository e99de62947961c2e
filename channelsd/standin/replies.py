"""Every reply text the stand-in answers, each with where it comes from.

First the ``api``/``bgapi`` bodies (mod_commands; they carry their own trailing newline), then
the ``Reply-Text`` of ``command/reply`` frames (mod_event_socket; the frame adds the newline).
Sources, cited on every text:

  s1 .. s7     a capture of the real switch, tests/fixtures/captures/<fmt>/<scenario>.*
               (replies in steps.jsonl, every byte in the .raw.gz files; s4_errors tried every
               error form); "every capture": each scenario's connections show it
  ref §N       the reference notes freeswitch-actions-verified.md: what a real switch answered
  esl §N       the reference notes freeswitch-esl.md: mod_commands / mod_event_socket texts
  unverified   neither: the stand-in's own text, shaped like the verified usage lines

A reply a new behaviour needs goes here first, with its source.
"""

from __future__ import annotations

# -- api bodies: success ----------------------------------------------------------------------
OK = "+OK\n"  # s1_park_kill (uuid_kill), s3_break (uuid_break); ref §1.1, §6.2
OK_SUCCESS = "+OK Success\n"  # s4_errors (uuid_hold); ref §4.1, §5.4
MESSAGE_SENT = "+OK Message sent\n"  # s3_break (uuid_broadcast); ref §5.1
EXISTS = "true"  # esl §3 (uuid_exists: no newline)
NOT_EXISTS = "false"  # s4_errors (uuid_exists)
UNDEF = "_undef_"  # esl §3 (uuid_getvar of an unset variable)


def ok_uuid(uid: str) -> str:
    """originate's and uuid_bridge's success: s1_park_kill (originate); ref §6.1."""
    return f"+OK {uid}\n"


def dtmf_received(uid: str, digits: str) -> str:
    """uuid_recv_dtmf: ref §2.4 (the trailing newline is assumed, as on every captured reply)."""
    return f"+OK {uid} received DTMF {digits}.\n"


def hupall_done(cause: str) -> str:
    """hupall: s2_transfer, s4_errors."""
    return f"+OK hangup all channels with cause {cause}\n"


def hupall_matching(name: str, value: str, cause: str) -> str:
    """hupall <cause> <var> <value>: esl §3."""
    return f"+OK hangup all channels matching [{name}]=[{value}] with cause: {cause}\n"


# -- api bodies: errors -----------------------------------------------------------------------
NO_SUCH_CHANNEL = "-ERR No such channel!\n"  # s4_errors (uuid_kill, uuid_transfer, ...)
INVALID_UUID = "-ERR Invalid uuid\n"  # s4_errors (uuid_bridge); ref §6.1
BROADCAST_INVALID_UUID = "-ERR invalid uuid\n"  # s4_errors (uuid_broadcast); ref §5.1
ANSWER_FAILED = "-ERROR\n"  # s4_errors (uuid_answer of an unknown uuid)
OPERATION_FAILED = "-ERR Operation failed\n"  # ref §4.1 (hold when held, unhold when not)
# ref §5.4 (uuid_record); mod_commands' uuid_recv_dtmf answers the same (code, not tried)
CANNOT_LOCATE_SESSION = "-ERR Cannot locate session!\n"
CANNOT_STOP_RECORD = "-ERR Cannot stop record session!\n"  # ref §5.4
NO_VARIABLE_NAME = "-ERR No variable name specified!\n"  # esl §3 (uuid_getvar)
NO_VARIABLE = "-ERR No variable specified\n"  # esl §3 (uuid_setvar)
SQL_DISABLED = "-ERR SQL disabled, no data available!\n"  # esl §3 (show with core SQL off)
NO_REPLY = "-ERR no reply\n"  # esl §1.4 (a command that answered nothing)


def err_cause(cause: str) -> str:
    """A failed originate: s4_errors (NO_ROUTE_DESTINATION, USER_BUSY, CHAN_NOT_IMPLEMENTED);
    esl §1.4 (NO_ANSWER)."""
    return f"-ERR {cause}\n"


def command_not_found(command: str) -> str:
    """An unknown api command: s4_errors."""
    return f"-ERR {command} Command not found!\n"


def cannot_record(action: str) -> str:
    """uuid_record mask|unmask|pause|resume of a path not recording: esl §3 names the verbs
    (``-ERR Cannot pause…``); the rest of the text is unverified."""
    return f"-ERR Cannot {action} recording session!\n"


# -- api bodies: usage ------------------------------------------------------------------------
USAGE_SHOW = (  # s4_errors (show nosuchthing)
    "-USAGE: codec|endpoint|application|api|dialplan|file|timer|calls [count]|channels "
    "[count|like <match string>]|calls|detailed_calls|bridged_calls|detailed_bridged_calls|"
    "aliases|complete|chat|management|modules|nat_map|say|interfaces|interface_types|tasks|"
    "limits|status\n"
)
USAGE_ORIGINATE = (  # s4_errors (originate)
    "-USAGE: <call url> <exten>|&<application_name>(<app_args>) [<dialplan>] [<context>] "
    "[<cid_name>] [<cid_num>] [<timeout_sec>]\n"
)
# s4_errors; ref §1.1
USAGE_TRANSFER = "-USAGE: <uuid> [-bleg|-both] <dest-exten> [<dialplan>] [<context>]\n"
USAGE_KILL = "-USAGE: <uuid> [cause]\n"  # s4_errors
USAGE_SETVAR = "-USAGE: <uuid> <var> [value]\n"  # esl §3
USAGE_BREAK = "-USAGE: <uuid> [all]\n"  # esl §3
USAGE_BRIDGE = "-USAGE: <uuid> <other_uuid>\n"  # ref §6.1
USAGE_HOLD = "-USAGE: [off|toggle] <uuid> [<display>]\n-ERR Operation failed\n"  # ref §4.1
USAGE_BROADCAST = "-USAGE: <uuid> <path> [aleg|bleg|holdb|both]\n"  # ref §5.1
# esl §3
USAGE_RECORD = "-USAGE: <uuid> [start|stop|mask|unmask] <path> [<limit>] [<recording_vars>]\n"
# unverified: the syntax string esl §3 gives for uuid_audio
USAGE_AUDIO = "-USAGE: <uuid> [start [read|write] [mute|level <level>]|stop]\n"
USAGE_GETVAR = "-USAGE: <uuid> <var>\n"  # unverified
USAGE_DUMP = "-USAGE: <uuid> [format]\n"  # unverified
USAGE_PARK = "-USAGE: <uuid>\n"  # unverified
USAGE_RECV_DTMF = "-USAGE: <uuid> <dtmf_data>\n"  # mod_commands UUID_RECV_DTMF_SYNTAX (code)

# -- command/reply texts (mod_event_socket) ---------------------------------------------------
AUTH_ACCEPTED = "+OK accepted"  # every capture
AUTH_INVALID = "-ERR invalid"  # esl §1.1 (then the switch disconnects)
COMMAND_NOT_FOUND = "-ERR command not found"  # s4_errors (unknown command, bare api/bgapi)
BYE = "+OK bye"  # every capture (exit)
NO_KEYWORDS = "-ERR no keywords supplied"  # s4_errors (event with no known name)
EVENTS_NIXED = "+OK events nixed"  # esl §1.4
NO_LONGER_LISTENING = "+OK no longer listening for events"  # esl §1.4
NOT_LISTENING = "-ERR not listening for events"  # s4_errors
INVALID_SYNTAX = "-ERR invalid syntax"  # esl §1.4 (filter)
EVENTS_ENABLED = "+OK Events Enabled"  # s4_errors (myevents)
INVALID_LOG_LEVEL = "-ERR invalid log level"  # s4_errors
NOT_LOGGING = "-ERR not loging"  # s4_errors (sic)
NO_LONGER_LOGGING = "+OK no longer logging"  # esl §1.4
NOT_CONTROLLING = "-ERR not controlling a session"  # s4_errors (linger in inbound mode)
SENDMSG_OK = "+OK"  # esl §1.4; ref §2.1


def job_accepted(job: str) -> str:
    """bgapi: s4_errors."""
    return f"+OK Job-UUID: {job}"


def listener_enabled(fmt: str) -> str:
    """event <fmt> ...: every capture."""
    return f"+OK event listener enabled {fmt}"


def filter_added(header: str, value: str) -> str:
    """filter <header> <value>: s4_errors."""
    return f"+OK filter added. [{header}]=[{value}]"


def filter_deleted(spec: str) -> str:
    """filter delete <spec>: unverified (esl §1.4 shows ``[Header][value]``)."""
    return f"+OK filter deleted. [{spec}]"


def log_level(name: str, number: int) -> str:
    """log <level>: esl §1.4."""
    return f"+OK log level {name} [{number}]"


def invalid_session(uid: str) -> str:
    """sendmsg to an unknown uuid: s4_errors."""
    return f"-ERR invalid session id [{uid}]"
