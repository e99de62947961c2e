"""The one gate every value passes before it may appear on an ESL command line.

ESL is line-based: a line break in an argument is a header, a blank line a second command
(freeswitch-actions-verified §7). FreeSWITCH then re-splits arguments on spaces, quotes and
`^^`, expands `${…}` inside broadcast and inline-dialplan arguments (a `${system(…)}` ran an
OS command in the test), runs `app::args` given as a broadcast path, and turns an unknown
hang-up cause into NORMAL_CLEARING. So values are checked against allow-lists, never escaped.

The kinds below are JSON-Schema `format`s: the action and metaflow schemas name them, and
jsonschema reports a refusal under the `format` rule of the offending field.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from jsonschema import FormatChecker

# What can end a line, open a new command, a variable block, an expansion or an app, or
# change FreeSWITCH's argument delimiter. No field allows these.
_ALWAYS_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f\x85\u2028\u2029{}\[\]'|&$\\\"`]|\^\^|::|;;")

# FreeSWITCH generates RFC 4122 text; origination_uuid lets a dialplan choose others, and SIP
# stacks use Call-ID-like strings. Allowed: the characters those use, nothing that splits.
_UUID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@:+-]{0,127}")
_EXTENSION = re.compile(r"[A-Za-z0-9*#+][A-Za-z0-9*#+._@-]{0,63}")
_CONTEXT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_DIALPLAN = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,31}")
_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}")
_DTMF = re.compile(r"[0-9*#A-Da-d]{1,8}")
# att_xfer compares one digit: `*` is its hang-up (complete) key and `0` its conference key.
_TAKEBACK = re.compile(r"[1-9#A-D]")
# A file path or a stream URL (tone_stream://%(2000,4000,440,480);loops=-1): no spaces, and
# no `!` (a broadcast's `app!cause` hang-up suffix).
_MEDIA = re.compile(r"(?:/|[A-Za-z][A-Za-z0-9_+.-]{0,31}://)[A-Za-z0-9/_.,:%=+@~()#;*-]{1,255}")
# Spoken text: any letters and digits, spaces and sentence punctuation.
_TEXT = re.compile(r"[\w .,?!:;%+/@#*()-]{1,500}")
_SAY_VALUE = re.compile(r"[A-Za-z0-9.@:+/_-]{1,128}")

# The inline dialplan executes whatever applications it is given: never reachable.
_FORBIDDEN_DIALPLANS = frozenset(("inline",))

# switch_channel.c CAUSE_CHART; an unknown name would silently become NORMAL_CLEARING.
HANGUP_CAUSES = frozenset(
    """NONE UNALLOCATED_NUMBER NO_ROUTE_TRANSIT_NET NO_ROUTE_DESTINATION CHANNEL_UNACCEPTABLE
    CALL_AWARDED_DELIVERED NORMAL_CLEARING USER_BUSY NO_USER_RESPONSE NO_ANSWER SUBSCRIBER_ABSENT
    CALL_REJECTED NUMBER_CHANGED REDIRECTION_TO_NEW_DESTINATION EXCHANGE_ROUTING_ERROR
    DESTINATION_OUT_OF_ORDER INVALID_NUMBER_FORMAT FACILITY_REJECTED RESPONSE_TO_STATUS_ENQUIRY
    NORMAL_UNSPECIFIED NORMAL_CIRCUIT_CONGESTION NETWORK_OUT_OF_ORDER NORMAL_TEMPORARY_FAILURE
    SWITCH_CONGESTION ACCESS_INFO_DISCARDED REQUESTED_CHAN_UNAVAIL PRE_EMPTED
    FACILITY_NOT_SUBSCRIBED OUTGOING_CALL_BARRED INCOMING_CALL_BARRED BEARERCAPABILITY_NOTAUTH
    BEARERCAPABILITY_NOTAVAIL SERVICE_UNAVAILABLE BEARERCAPABILITY_NOTIMPL CHAN_NOT_IMPLEMENTED
    FACILITY_NOT_IMPLEMENTED SERVICE_NOT_IMPLEMENTED INVALID_CALL_REFERENCE
    INCOMPATIBLE_DESTINATION INVALID_MSG_UNSPECIFIED MANDATORY_IE_MISSING MESSAGE_TYPE_NONEXIST
    WRONG_MESSAGE IE_NONEXIST INVALID_IE_CONTENTS WRONG_CALL_STATE RECOVERY_ON_TIMER_EXPIRE
    MANDATORY_IE_LENGTH_ERROR PROTOCOL_ERROR INTERWORKING SUCCESS ORIGINATOR_CANCEL CRASH
    SYSTEM_SHUTDOWN LOSE_RACE MANAGER_REQUEST BLIND_TRANSFER ATTENDED_TRANSFER ALLOTTED_TIMEOUT
    USER_CHALLENGE MEDIA_TIMEOUT PICKED_OFF USER_NOT_REGISTERED PROGRESS_TIMEOUT INVALID_GATEWAY
    GATEWAY_DOWN INVALID_URL INVALID_PROFILE NO_PICKUP""".split()
)


def is_safe(value: object) -> bool:
    """No character or sequence that could end a line or open something on an ESL line."""
    return isinstance(value, str) and _ALWAYS_FORBIDDEN.search(value) is None


def _kind(pattern: re.Pattern[str]) -> Callable[[object], bool]:
    def check(value: object) -> bool:
        return is_safe(value) and pattern.fullmatch(value) is not None  # type: ignore[arg-type]

    return check


is_uuid = _kind(_UUID)
is_extension = _kind(_EXTENSION)
is_context = _kind(_CONTEXT)
is_media = _kind(_MEDIA)
is_text = _kind(_TEXT)


def is_dialplan(value: object) -> bool:
    return _kind(_DIALPLAN)(value) and str(value).lower() not in _FORBIDDEN_DIALPLANS


def is_hangup_cause(value: object) -> bool:
    if not isinstance(value, str):
        return False
    if value.isdigit() and len(value) <= 3:
        return 1 <= int(value) <= 127  # a Q.850 cause number
    return value.upper() in HANGUP_CAUSES


FORMATS: dict[str, Callable[[object], bool]] = {
    "uuid": is_uuid,
    "extension": is_extension,
    "context": is_context,
    "dialplan": is_dialplan,
    "word": _kind(_WORD),
    "dtmf": _kind(_DTMF),
    "takeback-key": _kind(_TAKEBACK),
    "media": is_media,
    "text": is_text,
    "say-value": _kind(_SAY_VALUE),
    "hangup-cause": is_hangup_cause,
}

FORMAT_MESSAGES = {
    "uuid": "must look like a FreeSWITCH channel uuid",
    "extension": "must be an extension: letters, digits and * # + . _ @ - only, at most 64",
    "context": "must be a dialplan context name: letters, digits and . _ - only",
    "dialplan": "must be a dialplan name such as XML (inline is refused)",
    "word": "must be a single word: letters, digits and _ . - only",
    "dtmf": "must be DTMF digits (0-9 * # A-D), at most 8",
    "takeback-key": "must be one key, 1-9 # or A-D (* completes and 0 conferences the transfer)",
    "media": "must be a media path or stream URL without spaces, quotes, $ { } | or ::",
    "text": "must be plain text: letters, digits, spaces and . , ? ! : ; % + / @ # * ( ) -",
    "say-value": "must be letters, digits and . @ : + / _ - only",
    "hangup-cause": "must be a FreeSWITCH hangup cause name (e.g. NORMAL_CLEARING) or Q.850 number",
}


def format_checker() -> FormatChecker:
    """A jsonschema FormatChecker that knows every ESL value kind above."""
    checker = FormatChecker(formats=())
    for name, check in FORMATS.items():
        checker.checks(name)(check)
    return checker


_LINE_BREAKERS = re.compile(r"[\x00-\x1f\x7f\x85\u2028\u2029]")


def esl_args(*args: str) -> str:
    """Join the arguments of a command built from checked values, checking once more that
    none is empty or could end the line: the last line of defence, not the validation."""
    for a in args:
        if not a or _LINE_BREAKERS.search(a):
            raise ValueError(f"unsafe ESL argument {a!r}")
    return " ".join(args)
