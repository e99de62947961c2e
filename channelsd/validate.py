"""Every kind of value that may appear on an ESL command line, and its strict pattern.

ESL is line-based: a line break in an argument is a header, a blank line a second command
(freeswitch-actions-verified §7). FreeSWITCH then re-splits arguments on spaces, quotes and
`^^`, expands `${…}` inside broadcast and inline-dialplan arguments (a `${system(…)}` ran an
OS command in the test), runs `app::args` given as a broadcast path, and turns an unknown
hang-up cause into NORMAL_CLEARING. So values are checked against allow-lists, never escaped.

The request-facing kinds are also JSON-Schema `format`s: the action and metaflow schemas name
them, and jsonschema reports a refusal under the `format` rule of the offending field. The
gate (channelsd.gate) checks every argument of every command against the same kinds, whatever
the value came from: the request, a channel row, or the configuration.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from functools import cache
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker, ValidationError, validators

# What can end a line, open a new command, a variable block, an expansion or an app, or
# change FreeSWITCH's argument delimiter. No kind allows these.
_ALWAYS_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f\x85\u2028\u2029{}\[\]'|&$\\\"`]|\^\^|::|;;")

# FreeSWITCH generates RFC 4122 text; origination_uuid lets a dialplan choose others, and SIP
# stacks use Call-ID-like strings. Allowed: the characters those use, nothing that splits.
# All patterns are ASCII-only: `re.ASCII` keeps \w and \d from matching other scripts' digits.
_UUID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@:+-]{0,127}")
_EXTENSION = re.compile(r"[A-Za-z0-9*#+][A-Za-z0-9*#+._@-]{0,63}")
_CONTEXT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_DIALPLAN = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,31}")
_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}")
_DTMF = re.compile(r"[0-9*#A-Da-d]{1,8}")
# A take-back: one key att_xfer compares itself (`*` is its hang-up (complete) key and `0` its
# conference key, so neither), or a sequence of 2 to 8 keys a digit binding watches for
# (Kazoo's default is `*1`).
_TAKEBACK = re.compile(r"[1-9#A-D]|[0-9*#A-D]{2,8}")
# A file path or a stream URL (tone_stream://%(2000,4000,440,480);loops=-1): no spaces, and
# no `!` (a broadcast's `app!cause` hang-up suffix). Which of them a tenant may play is the
# media policy's business (channelsd.policy); this is only what can stand on a line.
_MEDIA = re.compile(r"(?:/|[A-Za-z][A-Za-z0-9_+.-]{0,31}://)[A-Za-z0-9/_.,:%=+@~()#;*-]{1,255}")
# Where an allowed media value may start (channelsd.policy): a directory ending in `/`, or a
# scheme (`tone_stream://`) with an optional URL prefix after it.
_MEDIA_ROOT = re.compile(
    r"/(?:[A-Za-z0-9_.,:%=+@~-]+/)*|[A-Za-z][A-Za-z0-9_+.-]{0,31}://[A-Za-z0-9/_.,:%=+@~-]{0,255}"
)
# A `.` or `..` path segment: no kind that names a file or a URL may climb out of its root.
_DOT_SEGMENT = re.compile(r"(?:^|/)\.\.?(?:/|$)")
# Spoken text: any letters and digits, spaces and sentence punctuation.
_TEXT = re.compile(r"[\w .,?!:;%+/@#*()-]{1,500}")
_SAY_VALUE = re.compile(r"[A-Za-z0-9.@:+/_-]{1,128}")
# Values read from channel rows. A realm is a domain name (or an IPv4 address); an account id
# a Kazoo id (32 hex) or any short name of the same characters as a context.
_REALM = re.compile(
    r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,62})(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,62}))*"
)
_ACCOUNT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
# The daemon's own words: command names, leg words, `-bleg`, `start`, `hold_music`, ….
_KEYWORD = re.compile(r"-?[a-z][a-z0-9_]{0,31}")
_NUMBER = re.compile(r"-?[0-9]{1,9}")
# A dial string an endpoint template produced (user/1000@acc1.example, loopback/9001/ctx).
_ENDPOINT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_./@:+*#=-]{0,255}")
# A file the daemon names itself (recordings) or a directory it names them in.
_FILE_PATH = re.compile(r"/[A-Za-z0-9_.@:+/-]{1,255}")
# What channel variables FreeSWITCH is given in an originate `{…}` block (name=value): the
# daemon's own flags, and the identity a created leg inherits (ecallmgr_Account-ID=<account
# id>, ecallmgr_Realm=<realm>). Nothing that ends a value or the block: no `,` `}` `'` `"`
# space or `^`. A value as long as a realm may be (253): a shorter bound refused every action
# that creates a leg on a channel of a longer, valid realm.
_VARIABLE = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}=[A-Za-z0-9_.-]{1,253}")
# A Kazoo media id (the documented transfer example's "moh": "media_id").
_MEDIA_ID = re.compile(r"[0-9a-f]{32}")
# A Q.850 cause number, ASCII digits only: `isdigit()` also accepts ² and ١٧.
_CAUSE_NUMBER = re.compile(r"[0-9]{1,3}")

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
is_text = _kind(_TEXT)
is_keyword = _kind(_KEYWORD)


def _no_dot_segment(check: Callable[[object], bool]) -> Callable[[object], bool]:
    def checked(value: object) -> bool:
        return check(value) and _DOT_SEGMENT.search(value) is None  # type: ignore[arg-type]

    return checked


is_media = _no_dot_segment(_kind(_MEDIA))
is_file_path = _no_dot_segment(_kind(_FILE_PATH))


def whole_number(value: object, digits: int = 18) -> int | None:
    """A non-negative integer written in ASCII digits (at most `digits` of them, so that it
    fits the 64 bits JSON consumers assume), or None. `str.isdigit` alone lets "²" and "١٧"
    through, which int() then refuses or reads."""
    ok = isinstance(value, str) and 0 < len(value) <= digits and value.isascii()
    return int(value) if ok and value.isdigit() else None  # type: ignore[union-attr]


def is_dialplan(value: object) -> bool:
    return _kind(_DIALPLAN)(value) and str(value).lower() not in _FORBIDDEN_DIALPLANS


def is_realm(value: object) -> bool:
    return _kind(_REALM)(value) and len(value) <= 253  # type: ignore[arg-type]


def is_hangup_cause(value: object) -> bool:
    if not isinstance(value, str) or not value.isascii():
        return False  # "ı".upper() is "I": only ASCII names compare as FreeSWITCH's do
    if _CAUSE_NUMBER.fullmatch(value):
        return 1 <= int(value) <= 127  # a Q.850 cause number
    return value.upper() in HANGUP_CAUSES


def is_media_id(value: object) -> bool:
    return isinstance(value, str) and _MEDIA_ID.fullmatch(value) is not None


def is_media_ref(value: object) -> bool:
    """What a request may name as media: a path or stream, or a Kazoo media id."""
    return is_media(value) or is_media_id(value)


FORMATS: dict[str, Callable[[object], bool]] = {
    "uuid": is_uuid,
    "extension": is_extension,
    "context": is_context,
    "dialplan": is_dialplan,
    "word": _kind(_WORD),
    "dtmf": _kind(_DTMF),
    "takeback-key": _kind(_TAKEBACK),
    "media": is_media,
    "media-ref": is_media_ref,
    "text": is_text,
    "say-value": _kind(_SAY_VALUE),
    "hangup-cause": is_hangup_cause,
}

# Kinds only the gate uses: values from channel rows and the configuration, the daemon's own
# words, and what templates produce.
KINDS: dict[str, Callable[[object], bool]] = {
    **FORMATS,
    "realm": is_realm,
    "account-id": _kind(_ACCOUNT_ID),
    "keyword": is_keyword,
    "number": _kind(_NUMBER),
    "endpoint": _kind(_ENDPOINT),
    "file-path": is_file_path,
    "variable": _kind(_VARIABLE),
    "media-id": is_media_id,
    "media-root": _no_dot_segment(_kind(_MEDIA_ROOT)),
}

FORMAT_MESSAGES = {
    "uuid": "must look like a FreeSWITCH channel uuid",
    "extension": "must be an extension: letters, digits and * # + . _ @ - only, at most 64",
    "context": "must be a dialplan context name: letters, digits and . _ - only",
    "dialplan": "must be a dialplan name such as XML (inline is refused)",
    "word": "must be a single word: letters, digits and _ . - only",
    "dtmf": "must be DTMF digits (0-9 * # A-D), at most 8",
    "takeback-key": "must be one key, 1-9 # or A-D (* completes and 0 conferences the transfer), "
    "or a sequence of 2 to 8 keys 0-9 * # A-D",
    "media": "must be a media path or stream URL without spaces, quotes, $ { } | :: or ..",
    "media-ref": "must be a media path or stream URL without spaces, quotes, $ { } | :: or .., "
    "or a media id (32 lower-case hex digits)",
    "text": "must be plain text: letters, digits, spaces and . , ? ! : ; % + / @ # * ( ) -",
    "say-value": "must be letters, digits and . @ : + / _ - only",
    "hangup-cause": "must be a FreeSWITCH hangup cause name (e.g. NORMAL_CLEARING) or Q.850 "
    "number (ASCII digits 1-127)",
    "realm": "must be a domain name: ASCII letters, digits, - and _ in dot-separated labels",
    "account-id": "must be an account id: letters, digits and . _ - only",
    "keyword": "must be one of the daemon's own command words",
    "number": "must be an integer in ASCII digits",
    "endpoint": "must be a dial string: letters, digits and _ . / @ : + * # = - only",
    "file-path": "must be an absolute path of letters, digits and _ . @ : + / - without ..",
    "variable": "must be a channel variable assignment name=value",
    "media-id": "must be a media id (32 lower-case hex digits)",
    "media-root": "must be a directory ending in / or a scheme such as tone_stream://",
}


def format_checker() -> FormatChecker:
    """A jsonschema FormatChecker that knows every request-facing ESL value kind above."""
    checker = FormatChecker(formats=())
    for name, check in FORMATS.items():
        checker.checks(name)(check)
    return checker


@cache
def ecma_pattern(pattern: str) -> re.Pattern[str]:
    """A JSON Schema `pattern` compiled as JSON Schema means it (ECMA-262): `$` is the end of
    the text. In Python's `re` it also matches before a final newline, so "fs1\n" passed
    "^[A-Za-z0-9._-]+$" and a node's password "ClueCon\n" reached the `auth` line. (`[]`
    and `[^]`, ECMA's classes of nothing and of anything, are translated too.)"""
    out: list[str] = []
    i, in_class = 0, False
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            out.append(pattern[i : i + 2])
            i += 2
            continue
        if in_class:
            in_class = c != "]"
        elif c == "[":
            # ECMA's empty classes; Python would read their "]" as a member
            if pattern.startswith("[]", i):
                out.append("(?!)")
                i += 2
                continue
            if pattern.startswith("[^]", i):
                out.append(r"[\s\S]")
                i += 3
                continue
            in_class = True
        elif c == "$":
            c = r"\Z"
        out.append(c)
        i += 1
    return re.compile("".join(out))


def _pattern(validator: Any, pattern: str, instance: Any, schema: Any) -> Iterator[ValidationError]:
    if validator.is_type(instance, "string") and not ecma_pattern(pattern).search(instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


# Every schema of channelsd (configuration, metaflows) is checked by this one: Draft 2020-12
# with `pattern` as the schema's own language means it.
SchemaValidator = validators.extend(Draft202012Validator, {"pattern": _pattern})
