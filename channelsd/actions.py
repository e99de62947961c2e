"""POST actions and PUT metaflows, turned into FreeSWITCH commands on the channel's own node.

Every request is read and validated against its JSON Schema; then a plan of commands is built
by channelsd.gate, the only way to make an ESL line: every argument is checked as its kind
under the name of the field it came from, whether that is the request (`target`,
`children._.data.id`), the channel row (`channel.realm`, `other_leg.uuid`: identity chains
can be mapped to variables a caller controls, so rows are as hostile as requests) or the
configuration (`config.actions.moh`). Contexts, dialplans and media also pass the tenant
policy (channelsd.policy). A whole plan is built before its first command is sent, and every
module of a metaflow is planned before the first one runs, so a refusal (400 in Kazoo's
validation-error shape) means nothing was sent. The answer waits for FreeSWITCH's reply:
`+OK` is success, anything else is an error in the API's envelope (spec §3 and §4); for a
`bgapi` originate (intercept, eavesdrop) the job's own result is awaited a short while
(`[actions] job_wait`), and an `-ERR` within it is the error. A field is never accepted and
ignored: a module's data may hold only the fields its schema declares, and the fields Kazoo
documents that channelsd does not act on are refused with the reason (_REFUSED_FIELDS).

State checks read the table, which the switch's events fill; what channelsd's own commands
started and the switch has not reported yet is kept in channelsd.inflight, and the checks
consult it, so a check made right after a command (the next module of a metaflow, or another
request) never passes on a table the events have not caught up with. A metaflow waits a short
while (`[actions] chain_wait`) for its previous module's events before checking the next.
Recipes follow freeswitch-actions-verified.md.
"""

from __future__ import annotations

import logging
import re
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import gevent

from channelsd import envelope, gate, policy, turns
from channelsd.channel import Channel
from channelsd.config import ActionsConfig, leg_variable
from channelsd.envelope import ApiError
from channelsd.esl import CommandTimeout
from channelsd.gate import Checked, Command, Refusal, Value, compose, fixed
from channelsd.inflight import Inflight, Pending
from channelsd.jobs import job_uuid
from channelsd.jsonschemas import echoable, module_schema, validate, with_defaults
from channelsd.node import NodeUnavailable
from channelsd.table import ChannelTable
from channelsd.tokens import Token
from channelsd.validate import is_uuid

log = logging.getLogger("channelsd.actions")

POST_ACTIONS = ("transfer", "hangup", "break", "callflow", "intercept", "eavesdrop")
# Replies by which FreeSWITCH says the channel is not there (any more).
_GONE = ("-ERR No such channel", "-ERR invalid uuid", "-ERR Invalid uuid", "-ERR Cannot locate")
# Names clients use for the same field (Kazoo POST: transfer-type; monster-ui: Transfer-Type).
_ALIASES = {"transfer-type": "transfer_type", "Transfer-Type": "transfer_type"}
_NAMES = {
    name: (name, *[a for a, n in _ALIASES.items() if n == name]) for name in _ALIASES.values()
}
_LEG_WORD = {"self": "aleg", "peer": "bleg", "both": "both"}
# Transfer fields only an attended transfer uses.
_ATTENDED_ONLY = ("moh", "takeback_dtmf", "timeout")
# The cancel key a take-back sequence's digit binding sends att_xfer (see _takeback_sequence).
_TAKEBACK_RELAY_KEY = "D"
# att_xfer's keys and FreeSWITCH's defaults for them (mod_dptools att_xfer; reference §2.5).
# Every attended transfer sets all three on the transferor: a key one transfer chose must not
# stay for the next, and a dialplan's own choice must not change what the API promised.
_ATTXFER_KEYS = (
    ("attxfer_cancel_key", "#"),
    ("attxfer_hangup_key", "*"),
    ("attxfer_conf_key", "0"),
)

# Fields Kazoo documents for a module that channelsd does not act on, and why; refused, never
# accepted and ignored. Any other key a module's data does not declare is refused too (POST:
# in `data`; the top level and the query string also carry the envelope's own keys, so there
# only these are looked for).
_NO_RECORDING_DOCUMENTS = (
    "Kazoo's recording-document field: channelsd keeps no recording documents, and the file "
    "is always channelsd's own, under [actions].record_dir"
)
_NO_UPLOAD = (
    "channelsd does not upload recordings: the file stays under [actions].record_dir on the "
    "switch (a client-chosen URL would have the call's audio sent anywhere)"
)
_REFUSED_FIELDS: dict[str, dict[str, str]] = {
    "transfer": {
        "captures": "Kazoo's DTMF metaflow captures: a transfer through the API has none",
        "ringback": (
            "the transferor hears its own transfer_ringback while the target rings (the "
            "switch's setting); channelsd does not change it"
        ),
    },
    "callflow": {
        "captures": "channelsd sends the channel to the extension `id`; send the number as id",
        "collected": "channelsd sends the channel to the extension `id`; send the number as id",
        "flow": (
            "an inline callflow needs Kazoo's callflow engine; channelsd sends the channel "
            "to the extension `id` of [actions].callflow_context"
        ),
    },
    "record_call": {
        "url": _NO_UPLOAD,
        "method": _NO_UPLOAD,
        "label": _NO_RECORDING_DOCUMENTS,
        "media_name": _NO_RECORDING_DOCUMENTS,
        "origin": _NO_RECORDING_DOCUMENTS,
    },
    "tts": {
        "terminators": (
            "a broadcast speak has no terminators of its own: FreeSWITCH would read the "
            "channel's playback_terminators variable, which would change every later "
            "playback on the channel"
        ),
    },
    "eavesdrop": {
        "unbridged_only": (
            "listening in takes nothing over, so there is no unbridged_only; bridged_only "
            "refuses a channel that is not bridged"
        ),
    },
}
# Recording fields that only a start uses (a toggle that stops does not need them).
_RECORD_START_ONLY = ("time_limit", "record_min_sec", "record_sample_rate")
_RECORD_START_FLAGS = (
    ("record_on_answer", "record_answer_req"),
    ("record_on_bridge", "record_bridge_req"),
)
# What each kind of Pending is, in a refusal (channelsd.inflight).
_PENDING_WHAT = {
    "att_xfer": "attended transfer",
    "intercept": "intercept (pickup)",
    "transfer": "transfer",
    "bridge": "bridge (resume)",
    "kill": "hang-up",
}

# A metaflow is a tree; only the `_` chain runs, the other branches (DTMF keys in Kazoo) are
# validated. Both bounds keep one request's validation short (see put()).
MAX_METAFLOW_DEPTH = 16
MAX_METAFLOW_NODES = 64
# An integer field given as text (a query string): ASCII digits only, and few enough of them
# that the value stays a 64-bit integer an error body can show. "²".isdigit() is true.
_INT_TEXT = re.compile(r"-?[0-9]{1,15}")


def _pause() -> None:
    """Let the hub run other greenlets: called between metaflow nodes."""
    gevent.sleep(0)


@dataclass
class Plan:
    steps: list[Command] = field(default_factory=list)
    # Once every step succeeded: what the commands started that the switch will report
    # (channelsd.inflight), for later checks to consult.
    after: Callable[[], list[Pending]] | None = None
    # A background command's job said +OK <uuid> within job_wait (the new leg answered):
    # called with that uuid, for what the leg does next (an intercept's pickup).
    answered: Callable[[str], list[Pending]] | None = None


@dataclass
class _Node:
    """One validated metaflow node on the `_` chain."""

    module: str
    data: dict[str, Any]
    prefix: str  # its request fields' prefix in error keys: "data." or "children._.data."
    path: str  # its path in runtime errors: "" or "children._"


def _coerce(value: Any, prop: Mapping[str, Any]) -> Any:
    """Kazoo's non-strict validation: "true" and "5" from a query string are fine."""
    kind = prop.get("type")
    if kind == "integer" and isinstance(value, float) and value.is_integer():
        # JSON 3.0 is an integer to the schema; the line must say 3, never "3.0".
        return int(value) if abs(value) < 2**53 else value
    if not isinstance(value, str):
        return value
    if kind == "boolean" and value.lower() in ("true", "false"):
        return value.lower() == "true"
    if kind == "integer" and _INT_TEXT.fullmatch(value):
        return int(value)
    return value


def _read_fields(source: Mapping[str, Any], props: Mapping[str, Any]) -> dict[str, Any]:
    """The declared fields of a module, under their canonical names (see _unknown_fields for
    the others)."""
    fields = {}
    for name, prop in props.items():
        for key in _NAMES.get(name, (name,)):
            if key in source:
                fields[name] = _coerce(source[key], prop)
                break
    return fields


def _unknown_fields(
    source: Mapping[str, Any],
    module: str,
    props: Mapping[str, Any],
    prefix: str,
    strict: bool,
    also: tuple[str, ...] = (),
) -> None:
    """Refuse (400) a field the module does not take: one of _REFUSED_FIELDS with its reason,
    and when `strict` (a module's own data object) any key it does not declare (`also`: keys
    that object may hold besides, such as POST's `action`)."""
    refused = _REFUSED_FIELDS.get(module, {})
    for key in source:
        if key in refused:
            message = f"Field is not supported: {refused[key]}"
        elif not strict or key in props or key in also or _ALIASES.get(key) in props:
            continue
        else:
            message = f"Field is not one the {module} module takes: refused, not ignored"
        raise envelope.validation_error(
            {f"{prefix}{key}": {"additionalProperties": {"message": message}}}
        )


def _not_bridged() -> ApiError:
    return envelope.validation_error(
        {"other_leg_call_id": {"required": {"message": "Channel is not bridged"}}}
    )


def _state_error(key: str, message: str) -> ApiError:
    return envelope.validation_error({key: {"state": {"message": message}}})


def _conflict(key: str, message: str) -> ApiError:
    """The channel's state makes the action one FreeSWITCH would answer +OK to and then lose
    parties or do something else (freeswitch-actions-verified.md): 409, nothing sent."""
    return ApiError(409, "conflict", {key: {"state": {"message": message}}})


def _not_for(field_name: str, what: str) -> ApiError:
    """A field the chosen variant has no use for: refused, never silently ignored."""
    return envelope.validation_error(
        {field_name: {"not": {"message": f"Field applies to {what} only"}}}
    )


def _refused(r: Refusal) -> ApiError:
    """A gate refusal as Kazoo's validation error naming the field."""
    detail: dict[str, Any] = {"message": r.message, "target": r.target}
    if r.shows_value and echoable(r.value):
        detail["value"] = r.value
    else:
        # A row or configuration value: the operator must hear of it, the client gets the name.
        log.warning("refused %s: %s (%s)", r.field, r.message, r.kind)
    return envelope.validation_error({r.field: {r.rule: detail}})


class _Fields:
    """Names every value of a plan for the gate: request fields under their prefix, row
    values as channel.<attr> or other_leg.<attr>, configuration as config.actions.<key>."""

    def __init__(self, prefix: str, cfg: ActionsConfig) -> None:
        self.prefix = prefix
        self.cfg = cfg

    def name(self, key: str) -> str:
        return self.prefix + key

    def req(self, key: str, kind: str, value: Any) -> Checked:
        return gate.check(kind, value, self.name(key), echo=True)

    def conf(self, key: str, kind: str) -> Checked:
        return gate.check(kind, getattr(self.cfg, key), f"config.actions.{key}")

    @staticmethod
    def row(ch: Channel, attr: str, kind: str, role: str = "channel") -> Checked:
        return gate.check(kind, getattr(ch, attr), f"{role}.{attr}")

    @staticmethod
    def row_values(ch: Channel, role: str = "channel") -> dict[str, Value]:
        """The row placeholders of templates, checked only if a template uses them."""
        return {
            "account_id": lambda: _Fields.row(ch, "account_id", "account-id", role),
            "realm": lambda: _Fields.row(ch, "realm", "realm", role),
        }


def _gone_after_seen(path: str, seen: bool) -> Callable[[Channel, str], bool]:
    """A stopped recording's Pending test: settled once the row has shown `path` and no
    longer does. Not merely "not in the row": its RECORD_START may still be on its way (the
    reply to a start comes before the switch's events), and another recording's RECORD_STOP
    would then settle this one before it was ever reported."""
    state = [seen]

    def test(row: Channel, _name: str) -> bool:
        if path in row.recordings:
            state[0] = True
            return False
        return state[0]

    return test


class Actions:
    """Runs actions and metaflows for the API; holds no socket of its own."""

    def __init__(
        self,
        table: ChannelTable,
        nodes: Mapping[str, Any],
        cfg: ActionsConfig | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.table = table
        self.nodes = nodes
        self.cfg = cfg or ActionsConfig()
        self._clock = clock
        # What this daemon's commands started that the switch has not reported yet.
        self.inflight = Inflight(table)

    # -- entry points ------------------------------------------------------------------------

    def post(
        self, ch: Channel, body: dict[str, Any] | None, query: Mapping[str, str], token: Token
    ) -> tuple[int, str]:
        return self.run_post(ch, *self.plan_post(ch, body, query), token)

    def plan_post(
        self, ch: Channel, body: dict[str, Any] | None, query: Mapping[str, str]
    ) -> tuple[_Node, Plan]:
        """A POST's action validated and planned, nothing sent: ApiError refuses it."""
        body = body or {}
        data = body.get("data") if isinstance(body.get("data"), dict) else {}
        sources = (data, body, query)
        action = next((s["action"] for s in sources if "action" in s), None)
        if not isinstance(action, str) or action not in POST_ACTIONS:
            detail = {"message": "action must be one of: " + ", ".join(POST_ACTIONS)}
            if echoable(action):
                detail["value"] = action
            raise ApiError(400, "invalid data", detail)
        props = module_schema(action).get("properties", {})
        _unknown_fields(data, action, props, "", strict=True, also=("action",))
        _unknown_fields(body, action, props, "", strict=False)
        _unknown_fields(query, action, props, "", strict=False)
        fields: dict[str, Any] = {}
        for source in reversed(sources):  # data wins over the top level, which wins over the query
            fields.update(_read_fields(source, props))
        errors = validate(f"metaflows.{action}.json", fields)
        if errors:
            raise envelope.validation_error(errors)
        node = _Node(action, with_defaults(action, fields), "", "")
        plan = self._plan(ch, node)
        assert plan is not None
        return node, plan

    def run_post(self, ch: Channel, node: _Node, plan: Plan, token: Token) -> tuple[int, str]:
        """Send a planned POST action (plan_post); the status and data of the answer."""
        self._run(ch, node, plan, token)
        return 200, f"{node.module} initiated"

    def put(
        self, ch: Channel, body: dict[str, Any] | None, query: Mapping[str, str], token: Token
    ) -> tuple[int, str]:
        body = body or {}
        data = body.get("data")
        action = body.get("action") or (data.get("action") if isinstance(data, dict) else None)
        action = action or query.get("action")
        if action != "metaflow":
            raise ApiError(400, "invalid data", {"message": 'action must be "metaflow"'})
        if not isinstance(data, dict):
            raise envelope.validation_error(
                {"data": {"type": {"message": "Value is not of type object", "target": "object"}}}
            )
        # Kazoo's documentation nests the metaflow one level deeper; accept that shape too.
        if "module" not in data and isinstance(data.get("data"), dict) and "module" in data["data"]:
            data = data["data"]
        chain = self._check_flow(data)
        # Every module planned (so every value gated) before the first command; a module's
        # state checks are made again when it runs, after the modules before it.
        for node in chain:
            self._plan(ch, node, dry_run=True)
            _pause()
        started: list[Pending] = []
        for node in chain:
            # What the module before did is checked against the switch's own report of it:
            # wait (briefly) for the events its commands cause; a check that still finds them
            # missing refuses (409) rather than pass on the old state.
            if started:
                self.inflight.wait(started, self.cfg.chain_wait)
            try:
                plan = self._plan(ch, node)
            except ApiError as err:
                if node.path:  # a later module's state refused it: say which
                    err.extra.setdefault("path", node.path)
                raise
            started = self._run(ch, node, plan, token)
        return 201, "metaflow sent"

    # -- validation --------------------------------------------------------------------------

    def _check_flow(self, root: dict[str, Any]) -> list[_Node]:
        """Validate a metaflow tree once, node by node, without recursion, yielding to the hub
        between nodes; bounded by MAX_METAFLOW_DEPTH and MAX_METAFLOW_NODES. Returns the `_`
        chain (what runs), defaults filled in."""
        chain: list[_Node] = []
        stack: list[tuple[Any, str, int, bool]] = [(root, "", 1, True)]
        seen = 0
        while stack:
            flow, path, depth, runs = stack.pop()
            seen += 1
            key = path or "data"
            if seen > MAX_METAFLOW_NODES:
                message = f"A metaflow has at most {MAX_METAFLOW_NODES} nodes"
                raise envelope.validation_error(
                    {key: {"maxNodes": {"message": message, "target": MAX_METAFLOW_NODES}}}
                )
            prefix = f"{path}." if path else ""
            errors = validate("metaflow.json", flow, path)
            if errors:
                raise envelope.validation_error(errors)
            for key in flow:
                if key not in ("module", "data", "children"):
                    message = "Field is not part of a metaflow (module, data, children)"
                    raise envelope.validation_error(
                        {f"{prefix}{key}": {"additionalProperties": {"message": message}}}
                    )
            module = flow["module"]
            raw = flow.get("data", {})
            props = module_schema(module).get("properties", {})
            _unknown_fields(raw, module, props, f"{prefix}data.", strict=True)
            fields = _read_fields(raw, props)
            errors = validate(f"metaflows.{module}.json", fields, f"{prefix}data")
            if errors:
                raise envelope.validation_error(errors)
            if runs:
                chain.append(_Node(module, with_defaults(module, fields), f"{prefix}data.", path))
            children = list(flow.get("children", {}).items())
            for name, child in reversed(children):
                child_path = f"{prefix}children.{name.replace('.', '%2E')}"
                if depth + 1 > MAX_METAFLOW_DEPTH:
                    message = f"Metaflows nest at most {MAX_METAFLOW_DEPTH} levels"
                    raise envelope.validation_error(
                        {
                            child_path: {
                                "maxDepth": {"message": message, "target": MAX_METAFLOW_DEPTH}
                            }
                        }
                    )
                stack.append((child, child_path, depth + 1, runs and name == "_"))
            _pause()
        return chain

    # -- execution ---------------------------------------------------------------------------

    def _build(self, ch: Channel, node: _Node) -> Plan:
        """The module's plan; Refusal for a value the gate refuses, ApiError for the state."""
        return getattr(self, f"_plan_{node.module}")(ch, node.data, _Fields(node.prefix, self.cfg))

    def _plan(self, ch: Channel, node: _Node, dry_run: bool = False) -> Plan | None:
        try:
            return self._build(ch, node)
        except Refusal as r:
            raise _refused(r) from None
        except ApiError:
            if dry_run:  # the state is checked again when the module runs
                return None
            raise

    def _run(self, ch: Channel, flow: _Node, plan: Plan | None, token: Token) -> list[Pending]:
        """Send the plan's commands in order; what they started (see Plan.after)."""
        assert plan is not None
        node = self.nodes.get(ch.node)
        if node is None:
            raise ApiError(503, "freeswitch unavailable", ch.node)
        new_leg = None
        for command in plan.steps:
            reply = self._send(node, command, ch)
            if not reply.startswith("+OK"):
                status = 404 if reply.startswith(_GONE) else 502
                extra = {"path": flow.path} if flow.path else {}
                raise ApiError(status, reply.strip() or "no reply", command.name, **extra)
            if command.background and not reply.startswith("+OK Job-UUID"):
                new_leg = reply[3:].strip()  # the job's own "+OK <uuid>"
        started = plan.after() if plan.after is not None else []
        if new_leg and is_uuid(new_leg) and plan.answered is not None:
            started += plan.answered(new_leg)
        turns.after_answer(
            log.info,
            "action=%s uuid=%r node=%s account=%r token=%s commands=%d",
            flow.module,
            ch.uuid,
            ch.node,
            ch.account_id,
            token.name or token.account_id,
            len(plan.steps),
        )
        return started

    def _send(self, node: Any, command: Command, ch: Channel) -> str:
        # The only place a line leaves: it must be a Command's, made of gated values.
        if not isinstance(command, Command):
            raise TypeError(f"not a gated command: {command!r}")
        try:
            if not command.background:
                return node.api(command.line)
            jobs = getattr(node, "jobs", None)
            if jobs is None:
                return node.bgapi(command.line)
            # The watch opens before the command goes: the job's result may come first.
            with jobs.watch() as watch:
                reply = node.bgapi(command.line)
                if not reply.startswith("+OK"):
                    return reply
                result = watch.wait(job_uuid(reply.strip()), self.cfg.job_wait)
            # No result yet: the new leg still rings (it may yet fail; the answer says the
            # command is under way, as Kazoo's does): the bgapi reply. An -ERR is what
            # FreeSWITCH refused; +OK <uuid>, that the new leg answered.
            return reply if result is None else result
        except NodeUnavailable:
            raise ApiError(503, "freeswitch unavailable", ch.node) from None
        except CommandTimeout:
            raise ApiError(504, "freeswitch timeout", ch.node) from None

    # -- state checks ------------------------------------------------------------------------

    def _settled(self, ch: Channel) -> None:
        """409 while a command channelsd sent changes who `ch` is bridged to and the switch
        has not reported it yet: the table would show the bridge as it was."""
        for p in self.inflight.find(ch.node, ch.uuid, *_PENDING_WHAT):
            raise _conflict(
                "other_leg_call_id",
                f"channelsd's {_PENDING_WHAT[p.kind]} on this call is not yet reported by the "
                "switch: who is bridged to whom is not known until it is; try again in a moment",
            )

    def _other(self, ch: Channel) -> Channel | None:
        """The row other_leg names, while the table has it and it has not hung up (a hung-up
        leg, a zombie transferor included, is nobody's partner). Refuses (409) while either
        is changing by a command of channelsd's own (_settled)."""
        self._settled(ch)
        if not ch.other_leg:
            return None
        other = self.table.row(ch.node, ch.other_leg)
        if other is None:
            return None
        self._settled(other)
        return other if other.ending is None else None

    def _bridged_with(self, ch: Channel) -> Channel | None:
        """The leg `ch` is bridged with, or None. other_leg alone is not a bridge: the table
        also sets it from the Other-Leg-Unique-ID of a leg's first event, which for a leg the
        `bridge` app (or att_xfer) originated names the caller ringing it -- an originate,
        not a bridge. A bridge (CHANNEL_BRIDGE) only forms between answered legs, so both
        must be answered. (A table field set only by CHANNEL_BRIDGE/UNBRIDGE would say this
        directly; until there is one, this is derived from what the rows hold.)"""
        other = self._other(ch)
        if other is None or other is ch or not (ch.answered and other.answered):
            return None
        return other

    def _partner(self, ch: Channel) -> Channel:
        """The bridged other leg, which must be known and alive."""
        other = self._bridged_with(ch)
        if other is None:
            raise _not_bridged()
        return other

    def _alive(self, ch: Channel, command: str) -> None:
        """404 for a channel that hung up, or that channelsd is hanging up: for a gone channel
        uuid_hold answers `+OK Success` and an originate's job `+OK`, and nothing happens
        (freeswitch-actions-verified §4.1, §3.3), so they are never sent for one."""
        if ch.ending is not None or self.inflight.find(ch.node, ch.uuid, "kill"):
            raise ApiError(404, "the channel has hung up", command)

    def _expect(
        self,
        kind: str,
        rows: tuple[Channel, ...],
        settles: tuple[str, ...],
        reached: Callable[[], bool] | None = None,
        **kw: Any,
    ) -> Pending:
        """Remember what a command started on `rows` until the switch reports it (or any of
        them hangs up, or settle_timeout passes). Not for a channel gone meanwhile (its
        destroy came before the command's +OK): nothing would ever settle it."""
        if any(self.table.row(r.node, r.uuid) is not r for r in rows):
            gone = Pending(kind, rows[0].node, (), frozenset(), 0.0)
            gone.done.set()
            return gone

        def done() -> bool:
            return any(r.ending is not None for r in rows) or bool(reached and reached())

        return self.inflight.add(
            kind,
            rows[0].node,
            [r.uuid for r in rows],
            settles,
            self.cfg.settle_timeout,
            reached=done,
            **kw,
        )

    def _unbridging(
        self, kind: str, ch: Channel, partner: Channel | None
    ) -> Callable[[], list[Pending]]:
        """Plan.after for a command that takes `ch` and `partner` apart (a blind transfer, a
        callflow): pending until the switch reports them apart (CHANNEL_UNBRIDGE, or either
        hanging up). Nothing when they were not bridged."""

        def after() -> list[Pending]:
            if partner is None:
                return []
            return [
                self._expect(
                    kind,
                    (ch, partner),
                    ("CHANNEL_UNBRIDGE",),
                    lambda: ch.other_leg != partner.uuid and partner.other_leg != ch.uuid,
                )
            ]

        return after

    # One _plan_<module> per module: checks on the channel's state, then the commands, every
    # argument through the gate (f: how each value is named in a refusal).

    def _not_consulting(self, ch: Channel, doing: str) -> None:
        """409 while `ch` is an attended transfer's transferor whose target may still ring.
        Hanging it up then makes FreeSWITCH bridge the unanswered target to the transferee,
        and both die (§2.5, verified). Taking it away by a transfer or a callflow ends its
        att_xfer the same way (inferred from the same core path, not verified on a switch):
        refused alike, nothing sent."""
        if self.inflight.find(ch.node, ch.uuid, "att_xfer"):
            # channelsd started an attended transfer here and the switch has not yet said the
            # target rings (RING_WAIT): it may.
            raise _conflict(
                "call_state",
                "channelsd has just started an attended transfer on this channel and its "
                f"target may be ringing: {doing} now would lose the target and the "
                "transferee; wait for the target to answer, or hang the target up to cancel",
            )
        if ch.call_state == "RING_WAIT" and self._bridged_with(ch) is not None:
            raise _conflict(
                "call_state",
                "the channel is consulting a transfer target that still rings: "
                f"{doing} now loses the target and the transferee; hang up the target to "
                "cancel, or wait for it to answer",
            )

    def _plan_hangup(self, ch: Channel, d: dict[str, Any], f: _Fields) -> Plan:
        self._not_consulting(ch, "hanging it up")
        cause = d["cause"]
        if isinstance(cause, str) and cause.isascii():
            cause = cause.upper()  # numbers are unchanged; FreeSWITCH's names are upper case
        uuid = f.row(ch, "uuid", "uuid")

        def after() -> list[Pending]:
            # until CHANNEL_HANGUP: the row still looks alive, and the commands that answer
            # +OK for a gone channel must not be sent (_alive)
            return [self._expect("kill", (ch,), ("CHANNEL_HANGUP",))]

        return Plan([Command("uuid_kill", uuid, f.req("cause", "hangup-cause", cause))], after)

    def _plan_break(self, ch: Channel, d: dict[str, Any], f: _Fields) -> Plan:
        args = [f.row(ch, "uuid", "uuid")] + ([fixed("all")] if d["all"] else [])
        return Plan([Command("uuid_break", *args)])

    def _plan_transfer(self, ch: Channel, d: dict[str, Any], f: _Fields) -> Plan:
        row = f.row_values(ch)
        context = policy.context(self.cfg, d.get("context"), f.name("context"), "context", row)
        dialplan = policy.dialplan(self.cfg, d.get("dialplan"), f.name("dialplan"))
        target = f.req("target", "extension", d["target"])
        uuid = f.row(ch, "uuid", "uuid")
        leg = d["leg"]
        # Only an attended transfer has something to play, a take-back and a ring timeout;
        # Kazoo's documented payload names them without a transfer type (its transfer is
        # always attended), so they make the transfer attended unless it says blind.
        attended_only = [k for k in _ATTENDED_ONLY if d.get(k) is not None]
        kind = d.get("transfer_type") or ("attended" if attended_only else "blind")
        if kind == "blind":
            if attended_only:
                raise _not_for(f.name(attended_only[0]), "attended transfers")
            if leg in ("self", "both"):
                self._not_consulting(ch, "transferring it")
            if leg in ("bleg", "both") and (partner := self._bridged_with(ch)) is not None:
                self._not_consulting(partner, "transferring its partner")
            if leg == "self":
                # The channel leaves its bridge, if it is in one; its partner is hung up.
                steps = [Command("uuid_transfer", uuid, target, dialplan, context)]
                return Plan(steps, self._unbridging("transfer", ch, self._bridged_with(ch)))
            # -bleg/-both on an unbridged channel silently transfer the channel itself.
            partner = self._partner(ch)
            steps = [Command("uuid_transfer", uuid, fixed(f"-{leg}"), target, dialplan, context)]
            return Plan(steps, self._unbridging("transfer", ch, partner))
        # Attended: the transferor runs att_xfer inside its bridge; the partner waits on hold.
        if leg == "both":
            raise Refusal(
                f.name("leg"), "leg", "an attended transfer moves one leg", rule="enum", value=leg
            )
        moh = (
            policy.media(self.cfg, d["moh"], f.name("moh"), row)
            if d.get("moh") is not None
            else f.conf("moh", "media")
        )
        takeback = d.get("takeback_dtmf")
        takeback = f.req("takeback_dtmf", "takeback-key", takeback) if takeback else None
        timeout = d.get("timeout")
        partner = self._partner(ch)
        ours, theirs = ("channel", ch), ("other_leg", partner)
        (tor_role, transferor), (tee_role, transferee) = (
            (ours, theirs) if leg == "self" else (theirs, ours)
        )
        # The consultation leg att_xfer originates is the account's whose channel was acted on
        # (the tenant that asked, whose context it dials), even when the peer transfers: given
        # the transferor's, a tenant placed calls counted as another account's.
        consult_vars = self._tenant_variables(ch)
        if timeout is not None:
            consult_vars.insert(
                0, gate.check("variable", f"leg_timeout={int(timeout)}", f.name("timeout"))
            )
        if not (transferor.answered and transferee.answered):
            raise _state_error("answered", "both legs must be answered for an attended transfer")
        dialstring = gate.fill(
            self.cfg.attended_dialstring,
            "config.actions.attended_dialstring",
            "endpoint",
            {"target": target, "context": context, **f.row_values(transferor, tor_role)},
        )
        tor = f.row(transferor, "uuid", "uuid", tor_role)
        tee = f.row(transferee, "uuid", "uuid", tee_role)
        steps = [Command("uuid_setvar", tee, fixed("hold_music"), moh)]
        steps += self._takeback_keys(tor, takeback)
        # No leg word: att_xfer runs on the transferor and the transferee hears its hold_music.
        app = compose("att-xfer-app", variables=consult_vars or None, dialstring=dialstring)
        steps.append(Command("uuid_broadcast", tor, app))
        state, other = transferor.call_state, transferor.other_leg

        def moved_on() -> bool:
            return transferor.call_state != state or transferor.other_leg != other

        def target_gone(leg: Channel) -> bool:
            # a leg the transferor originated (not its transferee) is gone: the target
            # failed before the transferor's call ever moved on, and att_xfer is over
            return leg.other_leg == transferor.uuid and leg.uuid != other

        def after() -> list[Pending]:
            # Until the switch says the transferor's call moved on (RING_WAIT: the target
            # rings; a bridge to the target) the table still shows it ACTIVE with its partner,
            # and hanging it up would pass the RING_WAIT guard (§2.5).
            bridge_events = ("CHANNEL_BRIDGE", "CHANNEL_UNBRIDGE")
            return [
                self._expect(
                    "att_xfer", (transferor,), bridge_events, moved_on, ends_with=target_gone
                )
            ]

        return Plan(steps, after)

    @staticmethod
    def _takeback_keys(tor: Checked, takeback: Checked | None) -> list[Command]:
        """Every attended transfer sets all of att_xfer's keys on the transferor, and clears
        the take-back binding a previous one may have left: a key or a sequence one transfer
        chose must not take the next one back, whoever set it. A one-key take-back is
        att_xfer's cancel key; none is FreeSWITCH's default `#`; a sequence is relayed by a
        digit binding (_takeback_sequence)."""
        keys = dict(_ATTXFER_KEYS)
        if takeback is not None:
            single = len(takeback.text) == 1
            keys["attxfer_cancel_key"] = takeback.text if single else _TAKEBACK_RELAY_KEY
        steps = [
            Command("uuid_setvar", tor, fixed(name), gate.check("dtmf", key, gate.DAEMON))
            for name, key in keys.items()
        ]
        # aleg: the form without a leg word would put the transferee on hold meanwhile
        steps.append(Command("uuid_broadcast", tor, compose("takeback-clear-app"), fixed("aleg")))
        if takeback is not None and len(takeback.text) > 1:
            steps.append(Actions._takeback_sequence(tor, takeback))
        return steps

    @staticmethod
    def _takeback_sequence(tor: Checked, digits: Checked) -> Command:
        """att_xfer compares single keys only, so a sequence (Kazoo's `*1`) is watched by a
        digit binding on the transferor (mod_dptools bind_digit_action) whose action injects
        att_xfer's cancel key: `uuid_recv_dtmf <transferor> D`, which arrives past the
        binding (no `~`) and cancels. D is the cancel key because no other key should take
        the call back, and phones seldom have it. The binding keeps the sequence's digits
        from the target, and a mistyped sequence's digits reach att_xfer as typed (a `*`
        completes the transfer, as it always does). The next attended transfer clears it
        (clear_digit_action of its realm, which leaves the channel's digit machine without
        an active realm when it was the active one: switch_ivr_dmachine_clear_realm).

        Modelled from FreeSWITCH's code (switch_ivr_async.c dmachine, mod_dptools
        bind_digit_action, clear_digit_action and att_xfer, switch_channel.c
        queue_dtmf_string) and its documentation; not verified on a real switch
        (freeswitch-actions-verified.md covers single keys only)."""
        relay = gate.check("takeback-key", _TAKEBACK_RELAY_KEY, gate.DAEMON)
        bind = compose("takeback-bind-app", digits=digits, uuid=tor, key=relay)
        # aleg: the form without a leg word would put the transferee on hold meanwhile
        return Command("uuid_broadcast", tor, bind, fixed("aleg"))

    def _plan_callflow(self, ch: Channel, d: dict[str, Any], f: _Fields) -> Plan:
        row = f.row_values(ch)
        context = policy.context(
            self.cfg, d.get("context"), f.name("context"), "callflow_context", row
        )
        dialplan = policy.dialplan(self.cfg, None, f.name("dialplan"))
        self._not_consulting(ch, "sending it to a callflow")
        args = [f.row(ch, "uuid", "uuid"), f.req("id", "extension", d["id"]), dialplan, context]
        # a callflow is a transfer: the channel leaves its bridge, if it is in one
        return Plan(
            [Command("uuid_transfer", *args)],
            self._unbridging("transfer", ch, self._bridged_with(ch)),
        )

    def _target_endpoint(self, ch: Channel, d: dict[str, Any], f: _Fields) -> Checked:
        """The dial string of an intercept's or eavesdrop's target: its type's template in
        [actions].intercept_endpoints, filled with the checked target_id and the channel's
        own values; can_call_self=false refuses the channel's own device or user."""
        kind = d["target_type"]
        if not d["can_call_self"]:
            self._not_calling_self(ch, kind, d["target_id"], f)
        row = f.row_values(ch)
        template = self.cfg.intercept_endpoints.get(kind)
        return gate.fill(
            template if isinstance(template, str) else "",
            f"config.actions.intercept_endpoints.{kind}",
            "endpoint",
            {
                "target_id": f.req("target_id", "extension", d["target_id"]),
                "context": lambda: policy.context(self.cfg, None, "", "context", row),
                **row,
            },
        )

    def _tenant_variables(self, ch: Channel) -> list[Checked]:
        """What gives a leg the switch creates for an action on `ch` (the interceptor, the
        listener, an attended transfer's consultation) the account and realm of `ch`: the
        channel variables the identity mapping reads them from, as Kazoo's originates carry
        the account's custom channel variables. Without them the leg has no account: listed
        system-wide only, and out of reach of the tenant whose action made it."""
        chains = dict(self.table.identity.chains)
        found = []
        for attr, kind in (("account_id", "account-id"), ("realm", "realm")):
            name = leg_variable(chains.get(attr, ()))
            if name is None or getattr(ch, attr) is None:
                continue
            # A chain may name a variable no originate can set (`variable__x`, `variable_1x`):
            # that is the configuration's fault, not the channel's, and is named so.
            gate.check("variable", f"{name}=0", f"config.identity.{attr}")
            value = _Fields.row(ch, attr, kind, "channel")
            found.append(gate.check("variable", f"{name}={value.text}", f"channel.{attr}"))
        return found

    def _plan_intercept(self, ch: Channel, d: dict[str, Any], f: _Fields) -> Plan:
        self._alive(ch, "originate")
        app, survivor = self._intercept_app(ch, d)
        endpoint = self._target_endpoint(ch, d, f)
        variables = [
            gate.check(
                "variable",
                f"intercept_unbridged_only={'true' if d['unbridged_only'] else 'false'}",
                gate.DAEMON,
            )
        ]
        if d["auto_answer"]:
            variables.append(gate.check("variable", "sip_auto_answer=true", gate.DAEMON))
        variables += self._tenant_variables(ch)
        # bgapi: ringing the interceptor can take as long as it likes; FreeSWITCH's +OK Job-UUID
        # says the originate is under way, its job's result (awaited job_wait seconds) whether
        # the switch could dial the interceptor at all, and the pickup is seen as a
        # CHANNEL_BRIDGE.
        url = compose("originate-url", variables=variables, endpoint=endpoint)
        # Who is bridged to whom changes now: the channel (or, for a pickup, the caller
        # ringing it) is bridged to the interceptor; its old partner (or the ringing leg)
        # ends PICKED_OFF, and its destroy must not end the wait for the bridge.

        def answered(interceptor: str) -> list[Pending]:
            # the interceptor answered within job_wait: the pickup is under way until the
            # switch reports the interceptor's bridge (CHANNEL_BRIDGE, fired on Bridge-A:
            # the interceptor, §3.2), or the interceptor leaves (intercept failed: its
            # destroy). Not when the old partner hangs up PICKED_OFF: that comes first.
            return [
                self.inflight.add(
                    "intercept",
                    ch.node,
                    [interceptor, survivor],
                    ("CHANNEL_BRIDGE",),
                    self.cfg.settle_timeout,
                    test=lambda row, _name: row.uuid == interceptor,
                )
            ]

        return Plan([Command("originate", url, app, background=True)], answered=answered)

    def _intercept_app(self, ch: Channel, d: dict[str, Any]) -> tuple[Checked, str]:
        """What the interceptor runs, for each case of freeswitch-actions-verified §3.3.

        The channel an operator sees ringing is usually the outbound leg to the phone. Intercept
        cannot answer an outbound leg: intercepting it loses the caller (PICKED_OFF), the leg
        and the interceptor. Picking up that call means intercepting the caller that rings it
        (`-bleg <leg>`: FreeSWITCH resolves the leg's partner); the ringing leg then ends
        PICKED_OFF. A ringing outbound leg with no caller cannot be picked up at all. Any other
        leg (parked, ringing inbound, bridged) is intercepted itself; `unbridged_only` refuses
        a bridged one, where FreeSWITCH would answer +OK and end the interceptor. Also the
        uuid of the leg the interceptor will be bridged to."""
        uuid = _Fields.row(ch, "uuid", "uuid")
        if ch.direction == "outbound" and not ch.answered:
            caller = self._other(ch)
            if caller is None or caller.uuid in (ch.uuid, ch.loopback_other_leg):
                raise _conflict(
                    "other_leg_call_id",
                    "the channel is a ringing outbound leg with no caller: intercept cannot "
                    "answer an outbound leg, and it and the interceptor would be lost",
                )
            if self._bridged_with(caller) is not None:
                raise _conflict(
                    "other_leg_call_id",
                    "the caller ringing this channel is in another call (an attended "
                    "transfer's consultation): picking this call up would take that call",
                )
            return compose("intercept-bleg-app", uuid=uuid), caller.uuid
        if d["unbridged_only"] and self._bridged_with(ch) is not None:
            raise envelope.validation_error(
                {"other_leg_call_id": {"not": {"message": "Channel is bridged (unbridged_only)"}}}
            )
        return compose("intercept-app", uuid=uuid), ch.uuid

    @staticmethod
    def _not_calling_self(ch: Channel, kind: str, target_id: str, f: _Fields) -> None:
        """can_call_self=false (Kazoo): the interceptor must not be the channel's own device
        (device) or user (user); a number cannot be told apart from the channel's own."""
        own = {"device": ch.authorizing_id, "user": ch.owner_id}
        if kind not in own:
            raise _not_for(f.name("can_call_self"), "device and user targets")
        if target_id == own[kind]:
            raise Refusal(
                f.name("target_id"),
                "extension",
                f"Value is the channel's own {kind} (can_call_self is false)",
                rule="not",
                value=target_id,
            )

    def _plan_hold_control(self, ch: Channel, d: dict[str, Any], f: _Fields) -> Plan:
        self._alive(ch, "uuid_hold")  # it answers +OK Success for a channel that is gone
        action = d["action"]
        # A hold channelsd just sent counts before its CHANNEL_HOLD arrives: the next check
        # (a toggle right after) must see the channel held.
        pending = self.inflight.find(ch.node, ch.uuid, "hold")
        onhold = pending[-1].value if pending else ch.is_onhold
        if ch.is_loopback and (action == "unhold" or (action == "toggle" and onhold)):
            # A loopback leg never reports "holding" (its call state stays ACTIVE): `uuid_hold
            # off` answers -ERR with the audio still cut, and `toggle` holds it again (§4.3).
            raise _conflict(
                "action",
                "FreeSWITCH cannot take a loopback channel off hold (uuid_hold off fails and "
                "toggle holds it again); resume re-bridges the pair, which brings the audio "
                "back",
            )
        word = {"hold": [], "unhold": [fixed("off")], "toggle": [fixed("toggle")]}[action]
        expected = {"hold": True, "unhold": False, "toggle": not onhold}[action]

        def after() -> list[Pending]:
            # Settled by the event of this change only: a late CHANNEL_HOLD of a hold sent
            # just before an unhold must not settle the unhold (the reply to each command
            # comes before the switch's events).
            events = ("CHANNEL_HOLD",) if expected else ("CHANNEL_UNHOLD",)
            return [self._expect("hold", (ch,), events, value=expected)]

        return Plan([Command("uuid_hold", *word, f.row(ch, "uuid", "uuid"))], after)

    def _leg(self, ch: Channel, d: dict[str, Any], f: _Fields) -> Checked:
        if d["leg"] != "self":
            self._partner(ch)
        return f.req("leg", "keyword", _LEG_WORD[d["leg"]])

    def _plan_play(self, ch: Channel, d: dict[str, Any], f: _Fields) -> Plan:
        media = policy.media(self.cfg, d["id"], f.name("id"), f.row_values(ch))
        leg = self._leg(ch, d, f)
        return Plan([Command("uuid_broadcast", f.row(ch, "uuid", "uuid"), media, leg)])

    def _plan_tts(self, ch: Channel, d: dict[str, Any], f: _Fields) -> Plan:
        if d.get("language") is not None:
            # speak::<engine>|<voice>|<text> has no language; accepting it would ignore it
            raise _not_for(f.name("language"), "say (tts speaks in its voice's language)")
        # Quoted by the composite because the text has spaces; the text kind admits no quote.
        app = compose(
            "speak-app",
            engine=f.req("engine", "word", d["engine"]),
            voice=f.req("voice", "word", d["voice"]),
            text=f.req("text", "text", d["text"]),
        )
        leg = self._leg(ch, d, f)
        return Plan([Command("uuid_broadcast", f.row(ch, "uuid", "uuid"), app, leg)])

    def _plan_say(self, ch: Channel, d: dict[str, Any], f: _Fields) -> Plan:
        gender = d.get("gender")
        app = compose(
            "say-app",
            language=f.req("language", "word", d["language"]),
            type=f.req("type", "keyword", d["type"]),
            method=f.req("method", "keyword", d["method"]),
            gender=f.req("gender", "keyword", gender) if gender else None,
            value=f.req("text", "say-value", d["text"]),
        )
        leg = self._leg(ch, d, f)
        return Plan([Command("uuid_broadcast", f.row(ch, "uuid", "uuid"), app, leg)])

    # -- recordings ------------------------------------------------------------------------------
    # record_call acts on channelsd's own recordings only: the paths it generated for this
    # channel under record_dir (<record_dir>/<uuid>-<UTC time>-<8 random hex>.<format>), as
    # the switch reports them running (RECORD_START / RECORD_STOP) or as channelsd just started
    # them (channelsd.inflight). Recordings the dialplan or Kazoo started are never stopped,
    # masked or counted: `start` works beside them, `stop` without one of channelsd's own is
    # refused (never `stop all`).

    def _own_path(self, ch: Channel) -> re.Pattern[str]:
        return re.compile(
            re.escape(self.cfg.record_dir.rstrip("/"))
            + "/"
            + re.escape(ch.uuid)
            + r"-[0-9]{8}T[0-9]{6}(?:-[0-9a-f]{8})?\.(?:wav|mp3)"
        )

    def _own_recordings(self, ch: Channel) -> list[str]:
        """channelsd's recordings running on `ch` now, oldest first."""
        own = self._own_path(ch).fullmatch
        reported = [p for p in ch.recordings if own(p)]
        starting = [p.tag for p in self.inflight.find(ch.node, ch.uuid, "record_start")]
        stopping = {p.tag for p in self.inflight.find(ch.node, ch.uuid, "record_stop")}
        running = reported + [p for p in starting if p not in reported]
        return [p for p in running if p not in stopping]

    def _plan_record_call(self, ch: Channel, d: dict[str, Any], f: _Fields) -> Plan:
        uuid = f.row(ch, "uuid", "uuid")
        own = self._own_recordings(ch)
        action = d["action"]
        if action == "toggle":
            action = "stop" if own else "start"
        elif action != "start":
            given = [k for k in (*_RECORD_START_ONLY, *dict(_RECORD_START_FLAGS)) if k in d]
            if given:
                raise _not_for(f.name(given[0]), "starting a recording (start or toggle)")
        if action == "start":
            if own:
                raise _state_error(
                    "action",
                    "channelsd is already recording this channel (recordings others started "
                    "do not count: a start works beside them)",
                )
            return self._record_start(ch, d, f, uuid)
        if not own:
            others = len(ch.recordings)
            message = "channelsd is not recording this channel"
            if others:
                message += (
                    f" ({others} recording(s) running were started by someone else: "
                    "record_call never stops or masks those)"
                )
            raise _state_error("action", message)
        paths = [gate.check("file-path", p, "channel.recording") for p in own]
        word = f.req("action", "keyword", action)
        steps = [Command("uuid_record", uuid, word, path) for path in paths]
        if action != "stop":
            return Plan(steps)

        def after() -> list[Pending]:
            # until RECORD_STOP says each is gone: a start right after must not be refused
            return [
                self._expect(
                    "record_stop",
                    (ch,),
                    ("RECORD_START", "RECORD_STOP"),
                    tag=path.text,
                    test=_gone_after_seen(path.text, path.text in ch.recordings),
                )
                for path in paths
            ]

        return Plan(steps, after)

    def _record_start(self, ch: Channel, d: dict[str, Any], f: _Fields, uuid: Checked) -> Plan:
        """`uuid_record <uuid> start <path> [<limit> [{vars}]]`. The path is always the
        daemon's (a client-chosen one would make FreeSWITCH create directories anywhere it may
        write), and never the same twice (a second start into a finished file would write
        over it). Kazoo's recording options are FreeSWITCH's per-recording variables, given in
        the command's {…} block so they change this recording only (switch_ivr_async.c
        record_session_event reads them there before the channel's variables; mod_commands
        uuid_record takes the block since FreeSWITCH 1.10.0 -- read in the code, not run on the
        reference switch): record_min_sec (RECORD_MIN_SEC: shorter files are deleted),
        record_sample_rate, record_on_answer (RECORD_ANSWER_REQ: the media is written once the
        channel is answered) and record_on_bridge (RECORD_BRIDGE_REQ: once it is bridged)."""
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(self._clock()))
        path = gate.fill(
            "{dir}/{uuid}-{stamp}-{nonce}.{format}",
            gate.DAEMON,
            "file-path",
            {
                "dir": gate.check(
                    "file-path", self.cfg.record_dir.rstrip("/"), "config.actions.record_dir"
                ),
                "uuid": uuid,
                "stamp": gate.check("word", stamp, gate.DAEMON),
                "nonce": gate.check("word", secrets.token_hex(4), gate.DAEMON),
                "format": f.req("format", "keyword", d["format"]),
            },
        )
        variables = []
        for key in ("record_min_sec", "record_sample_rate"):
            if d.get(key) is not None:
                # integral by the schema (an integer, or a member of an enum of integers, which
                # JSON 8000.0 also matches): the line says 8000, never 8000.0
                variables.append(gate.check("variable", f"{key}={int(d[key])}", f.name(key)))
        for key, var in _RECORD_START_FLAGS:
            if d.get(key):
                variables.append(gate.check("variable", f"{var}=true", f.name(key)))
        args = [uuid, fixed("start"), path]
        limit = d.get("time_limit")
        if limit or variables:
            args.append(f.req("time_limit", "number", str(limit or 0)))  # 0: no limit
        if variables:
            args.append(compose("recording-vars", variables=variables))

        def after() -> list[Pending]:
            # until RECORD_START names it: a stop right after must find it
            return [
                self._expect(
                    "record_start",
                    (ch,),
                    ("RECORD_START",),
                    tag=path.text,
                    test=lambda row, _name: path.text in row.recordings,
                )
            ]

        return Plan([Command("uuid_record", *args)], after)

    def _plan_resume(self, ch: Channel, d: dict[str, Any], f: _Fields) -> Plan:
        other = self._other(ch)
        if other is None:
            raise _not_bridged()
        # uuid_bridge X X answers +OK and strands X; bridging a loopback leg to its own twin
        # crashed FreeSWITCH; bridging an unanswered leg loses every party.
        if (
            other.uuid == ch.uuid
            or other.uuid == ch.loopback_other_leg
            or ch.uuid == other.loopback_other_leg
        ):
            raise _state_error(
                "other_leg_call_id", "refusing to bridge a channel to itself or its loopback twin"
            )
        if not (ch.answered and other.answered):
            raise _state_error("answered", "both legs must be answered to bridge them")
        uuid, other_uuid = f.row(ch, "uuid", "uuid"), f.row(other, "uuid", "uuid", "other_leg")

        def after() -> list[Pending]:
            return [self._expect("bridge", (ch, other), ("CHANNEL_BRIDGE",))]

        return Plan([Command("uuid_bridge", uuid, other_uuid)], after)

    def _plan_audio_level(self, ch: Channel, d: dict[str, Any], f: _Fields) -> Plan:
        uuid = f.row(ch, "uuid", "uuid")
        if d["action"] == "stop":
            return Plan([Command("uuid_audio", uuid, fixed("stop"))])
        mode = f.req("mode", "keyword", d["mode"])
        if d["mute"]:
            how = [fixed("mute"), gate.check("number", "1", gate.DAEMON)]
        else:
            how = [fixed("level"), f.req("level", "number", str(d["level"]))]
        return Plan([Command("uuid_audio", uuid, fixed("start"), mode, *how)])

    # -- listen in -------------------------------------------------------------------------------
    # FreeSWITCH's `eavesdrop <uuid>` (mod_dptools eavesdrop_function, then
    # switch_ivr_eavesdrop_session in switch_ivr_async.c; read in the source and the mod_dptools
    # documentation, NOT run on a real switch here: freeswitch-actions-verified.md has no
    # eavesdrop) puts a media bug on <uuid>; the leg running it hears what <uuid> reads and what
    # is written to it. The listener's own channel variables, read once when the application
    # starts, choose who also hears the listener:
    #   eavesdrop_whisper_aleg=true: ED_MUX_READ, mixed into what <uuid> reads, which its bridge
    #     carries to the partner (the DTMF key 1: "speak with the other half");
    #   eavesdrop_whisper_bleg=true: ED_MUX_WRITE, mixed into what is written to <uuid>, which
    #     its own phone plays (the key 2: "speak with the uuid");
    #   both: three_way's ED_MUX_READ|ED_MUX_WRITE (the key 3); neither: listen only (the key 0).
    # The names are the media bug's directions, not the call's legs, hence `whisper_leg`
    # (self / peer) in the API. All three variables are always sent, so the mode does not
    # depend on FreeSWITCH's defaults (DTMF on, no whisper) or a global; whether the {…} block
    # also wins over a directory user's own eavesdrop_* variables was not tried.
    _EAVESDROP_MUX = {
        ("listen", "self"): (False, False),
        ("listen", "peer"): (False, False),
        ("whisper", "self"): (False, True),
        ("whisper", "peer"): (True, False),
        ("barge", "self"): (True, True),
        ("barge", "peer"): (True, True),
    }

    def _plan_eavesdrop(self, ch: Channel, d: dict[str, Any], f: _Fields) -> Plan:
        self._alive(ch, "originate")
        mode, side = d["mode"], d["whisper_leg"]
        # eavesdrop waits at most ~6 s (600 x 10 ms) for <uuid> to have media, then returns and
        # the listener is hung up: a ringing channel would ring the target for nothing.
        if not (ch.answered or ch.call_state == "EARLY"):
            raise _state_error(
                "answered", "the channel has no media yet: listen in once it is answered"
            )
        # Whispering to the partner, or barging, into a channel alone: what is mixed into its
        # read stream reaches nobody. bridged_only: the caller wants a conversation or nothing.
        # Checked against the table now; a call that unbridges before the target answers is
        # still listened to (FreeSWITCH has no such guard to hand the check to).
        if mode == "barge":
            why = "barge is heard by both sides of a bridged call; whisper with whisper_leg self"
            why += " talks to this channel alone"
        elif mode == "whisper" and side == "peer":
            why = "whisper_leg peer needs a bridged partner"
        else:
            why = "bridged_only" if d["bridged_only"] else ""
        if why and self._other(ch) is None:
            raise envelope.validation_error(
                {"other_leg_call_id": {"required": {"message": f"Channel is not bridged ({why})"}}}
            )
        whisper_read, whisper_write = self._EAVESDROP_MUX[(mode, side)]

        def flag(name: str, on: bool) -> Checked:
            return gate.check("variable", f"{name}={'true' if on else 'false'}", gate.DAEMON)

        variables = [
            flag("eavesdrop_enable_dtmf", d["dtmf_controls"]),
            flag("eavesdrop_whisper_aleg", whisper_read),
            flag("eavesdrop_whisper_bleg", whisper_write),
        ]
        if d["auto_answer"]:
            variables.append(flag("sip_auto_answer", True))
        variables += self._tenant_variables(ch)
        endpoint = self._target_endpoint(ch, d, f)
        # bgapi, as intercept: the target rings as long as it likes; +OK Job-UUID says the
        # originate is under way (its job's -ERR within job_wait, that it failed), and
        # eavesdrop runs on the new leg once it answers.
        uuid = f.row(ch, "uuid", "uuid")
        if uuid.text.lower() == "all":
            # `eavesdrop all` spies on every channel of the switch: a row is as hostile as a
            # request, and origination_uuid lets a dialplan name a channel so.
            raise Refusal("channel.uuid", "uuid", "Value all would listen to every channel")
        url = compose("originate-url", variables=variables, endpoint=endpoint)
        app = compose("eavesdrop-app", uuid=uuid)
        return Plan([Command("originate", url, app, background=True)])
