"""The one way to build an ESL command line.

Actions hand a node nothing but a Command, and a Command takes nothing but Checked values. A
Checked is made only here, by checking a value against its kind (channelsd.validate.KINDS)
under the name of the field it came from: a request field (`target`, `data.id`), a channel
row (`channel.realm`, `other_leg.uuid`) or the configuration (`config.actions.moh`). A value
that fails raises Refusal, which refuses the whole action before its first command is sent.

Templates (endpoint dial strings, per-account contexts and media directories) are filled
only with Checked values, and what they produce is checked again as its own kind; so are the
composite arguments the daemon assembles itself (`'speak::…'`, `{…}endpoint`,
`&intercept(…)`, `&eavesdrop(…)`). A Command checks every argument once more when it is made.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable, Mapping
from typing import Any

from channelsd.validate import FORMAT_MESSAGES, KINDS

# Only this module holds the seal, so a Checked cannot be made by accident elsewhere.
_SEAL = object()
_LINE_BREAKERS = re.compile(r"[\x00-\x1f\x7f\x85\u2028\u2029]")
_HIDDEN = object()

# The commands actions may send; anything else is a bug, refused before it is a line.
COMMANDS = frozenset(
    (
        "uuid_kill",
        "uuid_break",
        "uuid_transfer",
        "uuid_setvar",
        "uuid_broadcast",
        "originate",
        "uuid_hold",
        "uuid_record",
        "uuid_bridge",
        "uuid_audio",
    )
)
DAEMON = "(daemon)"  # the field name of the daemon's own words


class Refusal(Exception):
    """A value that may not reach a command line. `field` names where it came from."""

    def __init__(
        self,
        field: str,
        kind: str,
        message: str,
        *,
        rule: str = "format",
        value: Any = _HIDDEN,
        target: Any = None,
    ) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.kind = kind
        self.message = message
        self.rule = rule
        self.value = value
        self.target = kind if target is None else target

    @property
    def shows_value(self) -> bool:
        """Only a request's own values are echoed: a row may be another account's."""
        return self.value is not _HIDDEN


class Checked:
    """A value that passed the gate as `kind`; `text` is what goes on the line."""

    __slots__ = ("kind", "text", "field")

    def __init__(self, kind: str, text: str, field: str, seal: object) -> None:
        if seal is not _SEAL:
            raise TypeError("Checked values are made by channelsd.gate only")
        self.kind = kind
        self.text = text
        self.field = field

    def __repr__(self) -> str:
        return f"Checked({self.kind}, {self.text!r}, {self.field})"


def check(kind: str, value: object, field: str, *, echo: bool = False) -> Checked:
    """`value` as a Checked of `kind`, or Refusal naming `field`. `echo`: the value came from
    the request, so the error may show it to the client."""
    shown = value if echo else _HIDDEN
    if value is None or value == "":
        raise Refusal(field, kind, "Value is missing", rule="required", value=shown)
    if not _CHECKS[kind](value):
        raise Refusal(field, kind, f"Value {_MESSAGES[kind]}", value=shown)
    return Checked(kind, value, field, _SEAL)  # type: ignore[arg-type]


def fixed(word: str) -> Checked:
    """One of the daemon's own words (`all`, `-bleg`, `hold_music`), checked all the same."""
    return check("keyword", word, DAEMON)


def placeholders(template: str) -> list[str]:
    """The `{name}` fields of a template; ValueError for conversions, format specs and
    anything but a plain name (`{realm!r}`, `{realm:>99}`, `{realm.x}` would let a template
    produce what its values were not checked for)."""
    names = []
    for _, name, spec, conversion in string.Formatter().parse(template):
        if name is None:
            continue
        if spec or conversion or not name.isidentifier():
            raise ValueError(f"placeholder {{{name}}} must be a plain name")
        names.append(name)
    return names


Value = Checked | Callable[[], Checked]


def fill(template: str, field: str, kind: str, values: Mapping[str, Value]) -> Checked:
    """Fill `template` with Checked values (callables are asked only for the placeholders the
    template uses, so a row value is checked only where it is needed), then check the
    result as `kind`. `field` names the template in a refusal."""
    parts: list[str] = []
    try:
        pieces = list(string.Formatter().parse(template))
        placeholders(template)
    except ValueError as exc:
        raise Refusal(field, kind, f"Template is not usable ({exc})") from None
    for literal, name, _, _ in pieces:
        parts.append(literal)
        if name is None:
            continue
        if name not in values:
            raise Refusal(field, kind, f"Template has an unknown placeholder {{{name}}}")
        value = values[name]
        checked = value() if callable(value) else value
        if not isinstance(checked, Checked):
            raise TypeError(f"{name} is not a Checked value")
        parts.append(checked.text)
    return check(kind, "".join(parts), field)


# -- composite arguments the daemon assembles from checked parts ------------------------------
# Each: how it is built, and a pattern whose groups are re-checked as their kinds (a group
# kind "variable," is a comma-separated list of that kind).

_COMPOSITES: dict[str, tuple[Callable[[dict[str, str]], str], re.Pattern[str], dict[str, str]]] = {
    "speak-app": (
        lambda p: f"'speak::{p['engine']}|{p['voice']}|{p['text']}'",
        re.compile(r"'speak::(?P<engine>[^|']+)\|(?P<voice>[^|']+)\|(?P<text>[^|']+)'"),
        {"engine": "word", "voice": "word", "text": "text"},
    ),
    "say-app": (
        lambda p: (
            "'say::"
            + " ".join(p[k] for k in ("language", "type", "method", "gender", "value") if k in p)
            + "'"
        ),
        re.compile(
            r"'say::(?P<language>[^ ']+) (?P<type>[^ ']+) (?P<method>[^ ']+)"
            r"(?: (?P<gender>[a-z]+))? (?P<value>[^ ']+)'"
        ),
        {
            "language": "word",
            "type": "keyword",
            "method": "keyword",
            "gender": "keyword",
            "value": "say-value",
        },
    ),
    "att-xfer-app": (
        lambda p: (
            "att_xfer::"
            + ("{" + p["variables"] + "}" if "variables" in p else "")
            + p["dialstring"]
        ),
        re.compile(r"att_xfer::(?:\{(?P<variables>[^{}]+)\})?(?P<dialstring>[^{}]+)"),
        {"variables": "variable,", "dialstring": "endpoint"},
    ),
    # A digit binding on the transferor that relays a take-back sequence to att_xfer as its
    # one-key cancel key (channelsd.actions); quoted because the api value has a space.
    "takeback-bind-app": (
        lambda p: (
            f"'bind_digit_action::channelsd_takeback,{p['digits']},"
            f"api:uuid_recv_dtmf,{p['uuid']} {p['key']}'"
        ),
        re.compile(
            r"'bind_digit_action::channelsd_takeback,(?P<digits>[^,' ]+),"
            r"api:uuid_recv_dtmf,(?P<uuid>[^,' ]+) (?P<key>[^,' ]+)'"
        ),
        {"digits": "takeback-key", "uuid": "uuid", "key": "takeback-key"},
    ),
    # Clears that binding's realm (the next attended transfer must not inherit it).
    "takeback-clear-app": (
        lambda p: "clear_digit_action::channelsd_takeback",
        re.compile(r"clear_digit_action::channelsd_takeback"),
        {},
    ),
    # uuid_record's per-recording variables ({record_min_sec=30,record_answer_req=true}).
    "recording-vars": (
        lambda p: "{" + p["variables"] + "}",
        re.compile(r"\{(?P<variables>[^{}]+)\}"),
        {"variables": "variable,"},
    ),
    "originate-url": (
        lambda p: "{" + p["variables"] + "}" + p["endpoint"],
        re.compile(r"\{(?P<variables>[^{}]+)\}(?P<endpoint>.+)"),
        {"variables": "variable,", "endpoint": "endpoint"},
    ),
    "intercept-app": (
        lambda p: f"&intercept({p['uuid']})",
        re.compile(r"&intercept\((?P<uuid>[^()]+)\)"),
        {"uuid": "uuid"},
    ),
    # The partner of <uuid> (its bridge partner, or the caller that rings it); quoted, or the
    # space splits it and intercept gets only "-bleg" (freeswitch-actions-verified §3.1).
    "intercept-bleg-app": (
        lambda p: f"'&intercept(-bleg {p['uuid']})'",
        re.compile(r"'&intercept\(-bleg (?P<uuid>[^()' ]+)\)'"),
        {"uuid": "uuid"},
    ),
    # `eavesdrop all` (any case) listens to every channel of the switch, one after another.
    "eavesdrop-app": (
        lambda p: f"&eavesdrop({p['uuid']})",
        re.compile(r"&eavesdrop\((?P<uuid>(?!(?i:all)\))[^()]+)\)"),
        {"uuid": "uuid"},
    ),
}


def _part_ok(kind: str, text: str) -> bool:
    if kind.endswith(","):
        return all(KINDS[kind[:-1]](item) for item in text.split(","))
    return KINDS[kind](text)


def _composite_ok(kind: str, text: object) -> bool:
    _, pattern, kinds = _COMPOSITES[kind]
    if not isinstance(text, str) or _LINE_BREAKERS.search(text):
        return False
    m = pattern.fullmatch(text)
    if m is None:
        return False
    return all(
        _part_ok(kinds[name], value) for name, value in m.groupdict().items() if value is not None
    )


def compose(kind: str, field: str = DAEMON, **parts: Checked | list[Checked] | None) -> Checked:
    """A composite argument from Checked parts of the right kinds, checked again whole."""
    build, _, kinds = _COMPOSITES[kind]
    texts: dict[str, str] = {}
    for name, part in parts.items():
        if part is None:
            continue
        items = part if isinstance(part, list) else [part]
        want = kinds[name].rstrip(",")
        for item in items:
            if not isinstance(item, Checked) or item.kind != want:
                raise TypeError(f"{kind}.{name} needs a Checked {want}, not {item!r}")
        texts[name] = ",".join(i.text for i in items)
    return check(kind, build(texts), field)


_CHECKS: dict[str, Callable[[object], bool]] = {
    **KINDS,
    **{name: (lambda v, n=name: _composite_ok(n, v)) for name in _COMPOSITES},
}
_MESSAGES = {
    **FORMAT_MESSAGES,
    "speak-app": "must be a speak:: broadcast built from checked parts",
    "say-app": "must be a say:: broadcast built from checked parts",
    "att-xfer-app": "must be att_xfer::, an optional {variables} block and a dial string",
    "takeback-bind-app": "must be a take-back digit binding built from checked parts",
    "takeback-clear-app": "must be clear_digit_action::channelsd_takeback",
    "recording-vars": "must be a {variables} block",
    "intercept-bleg-app": "must be '&intercept(-bleg <uuid>)'",
    "originate-url": "must be a {variables} block and a dial string",
    "intercept-app": "must be &intercept(<uuid>)",
    "eavesdrop-app": "must be &eavesdrop(<uuid>), never all",
}


class Command:
    """One ESL api (or bgapi) command whose every argument passed the gate."""

    __slots__ = ("name", "args", "line", "background")

    def __init__(self, name: str, *args: Checked, background: bool = False) -> None:
        if name not in COMMANDS:
            raise ValueError(f"not a command actions may send: {name!r}")
        for arg in args:
            if not isinstance(arg, Checked):
                raise TypeError(f"{name}: argument {arg!r} did not pass the gate")
            # Once more, as the line is made: a Checked altered after the gate is caught here.
            if not _CHECKS[arg.kind](arg.text):
                raise Refusal(arg.field, arg.kind, f"Value {_MESSAGES[arg.kind]}")
        self.name = name
        self.args = args
        self.line = " ".join([name, *(a.text for a in args)])
        self.background = background

    def __repr__(self) -> str:
        return f"Command({self.line!r})"
