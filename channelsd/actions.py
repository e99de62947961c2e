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
`+OK` is success, anything else is an error in the API's envelope (spec §3 and §4). Recipes
follow freeswitch-actions-verified.md.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import gevent

from channelsd import envelope, gate, policy
from channelsd.channel import Channel
from channelsd.config import ActionsConfig
from channelsd.envelope import ApiError
from channelsd.esl import CommandTimeout
from channelsd.gate import Checked, Command, Refusal, Value, compose, fixed
from channelsd.jsonschemas import echoable, module_schema, validate, with_defaults
from channelsd.node import NodeUnavailable
from channelsd.table import ChannelTable
from channelsd.tokens import Token

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
    after: Callable[[], None] | None = None  # bookkeeping once every step succeeded


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
    """The declared fields of a module, under their canonical names; other keys are ignored
    (as Kazoo does) without being looked at, so their number costs nothing."""
    fields = {}
    for name, prop in props.items():
        for key in _NAMES.get(name, (name,)):
            if key in source:
                fields[name] = _coerce(source[key], prop)
                break
    return fields


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
        # Recordings this daemon started that the switch has not reported yet (RECORD_START
        # is on its way on the event connection); the channel's own `recordings`, from the
        # switch, are the truth otherwise. Forgotten with the channel, so nothing here grows
        # with the calls ever recorded.
        self._started: dict[tuple[str, str], str] = {}
        table.listen(self._on_change, destroys_only=True, names=("RECORD_START", "RECORD_STOP"))

    def _on_change(self, kind: str, ch: Channel, info: Any) -> None:
        if kind == "destroy" or info in ("RECORD_START", "RECORD_STOP"):
            self._started.pop((ch.node, ch.uuid), None)

    # -- entry points ------------------------------------------------------------------------

    def post(
        self, ch: Channel, body: dict[str, Any] | None, query: Mapping[str, str], token: Token
    ) -> tuple[int, str]:
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
        fields: dict[str, Any] = {}
        for source in reversed(sources):  # data wins over the top level, which wins over the query
            fields.update(_read_fields(source, props))
        errors = validate(f"metaflows.{action}.json", fields)
        if errors:
            raise envelope.validation_error(errors)
        node = _Node(action, with_defaults(action, fields), "", "")
        self._run(ch, node, self._plan(ch, node), token)
        return 200, f"{action} initiated"

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
        for node in chain:
            self._run(ch, node, self._plan(ch, node), token)
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
            module = flow["module"]
            raw = flow.get("data", {})
            fields = _read_fields(raw, module_schema(module).get("properties", {}))
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

    def _run(self, ch: Channel, flow: _Node, plan: Plan | None, token: Token) -> None:
        assert plan is not None
        node = self.nodes.get(ch.node)
        if node is None:
            raise ApiError(503, "freeswitch unavailable", ch.node)
        for command in plan.steps:
            reply = self._send(node, command, ch)
            if not reply.startswith("+OK"):
                status = 404 if reply.startswith(_GONE) else 502
                extra = {"path": flow.path} if flow.path else {}
                raise ApiError(status, reply.strip() or "no reply", command.name, **extra)
        if plan.after is not None:
            plan.after()
        log.info(
            "action=%s uuid=%r node=%s account=%r token=%s commands=%d",
            flow.module,
            ch.uuid,
            ch.node,
            ch.account_id,
            token.name or token.account_id,
            len(plan.steps),
        )

    def _send(self, node: Any, command: Command, ch: Channel) -> str:
        # The only place a line leaves: it must be a Command's, made of gated values.
        if not isinstance(command, Command):
            raise TypeError(f"not a gated command: {command!r}")
        try:
            return node.bgapi(command.line) if command.background else node.api(command.line)
        except NodeUnavailable:
            raise ApiError(503, "freeswitch unavailable", ch.node) from None
        except CommandTimeout:
            raise ApiError(504, "freeswitch timeout", ch.node) from None

    def _other(self, ch: Channel) -> Channel | None:
        """The row other_leg names, while the table has it."""
        return self.table.row(ch.node, ch.other_leg) if ch.other_leg else None

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

    # One _plan_<module> per module: checks on the channel's state, then the commands, every
    # argument through the gate (f: how each value is named in a refusal).

    def _plan_hangup(self, ch: Channel, d: dict[str, Any], f: _Fields) -> Plan:
        if ch.call_state == "RING_WAIT" and self._bridged_with(ch) is not None:
            # An attended transfer's transferor while the target still rings: FreeSWITCH
            # bridges the unanswered target to the transferee and both die (§2.5).
            raise _conflict(
                "call_state",
                "the channel is consulting a transfer target that still rings: hanging it up "
                "now loses the target and the transferee; hang up the target to cancel, or "
                "wait for it to answer",
            )
        cause = d["cause"]
        if isinstance(cause, str) and cause.isascii():
            cause = cause.upper()  # numbers are unchanged; FreeSWITCH's names are upper case
        return Plan(
            [Command("uuid_kill", f.row(ch, "uuid", "uuid"), f.req("cause", "hangup-cause", cause))]
        )

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
            if leg == "self":
                return Plan([Command("uuid_transfer", uuid, target, dialplan, context)])
            # -bleg/-both on an unbridged channel silently transfer the channel itself.
            self._partner(ch)
            return Plan(
                [Command("uuid_transfer", uuid, fixed(f"-{leg}"), target, dialplan, context)]
            )
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
        leg_timeout = (
            [gate.check("variable", f"leg_timeout={int(timeout)}", f.name("timeout"))]
            if timeout is not None
            else None
        )
        partner = self._partner(ch)
        ours, theirs = ("channel", ch), ("other_leg", partner)
        (tor_role, transferor), (tee_role, transferee) = (
            (ours, theirs) if leg == "self" else (theirs, ours)
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
        if takeback and len(takeback.text) == 1:
            steps.append(Command("uuid_setvar", tor, fixed("attxfer_cancel_key"), takeback))
        elif takeback:
            steps += self._takeback_sequence(tor, takeback)
        # No leg word: att_xfer runs on the transferor and the transferee hears its hold_music.
        app = compose("att-xfer-app", variables=leg_timeout, dialstring=dialstring)
        steps.append(Command("uuid_broadcast", tor, app))
        return Plan(steps)

    @staticmethod
    def _takeback_sequence(tor: Checked, digits: Checked) -> list[Command]:
        """att_xfer compares single keys only, so a sequence (Kazoo's `*1`) is watched by a
        digit binding on the transferor (mod_dptools bind_digit_action) whose action injects
        att_xfer's cancel key: `uuid_recv_dtmf <transferor> D`, which arrives past the
        binding (no `~`) and cancels. D is the cancel key because no other key should take
        the call back, and phones seldom have it. The binding keeps the sequence's digits
        from the target, and a mistyped sequence's digits reach att_xfer as typed (a `*`
        completes the transfer, as it always does). It stays on the channel after the
        transfer, and its realm becomes the one the channel's digit machine uses.

        Modelled from FreeSWITCH's code (switch_ivr_async.c dmachine, mod_dptools
        bind_digit_action and att_xfer, switch_channel.c queue_dtmf_string) and its
        documentation; not verified on a real switch (freeswitch-actions-verified.md covers
        single keys only)."""
        relay = gate.check("takeback-key", _TAKEBACK_RELAY_KEY, gate.DAEMON)
        bind = compose("takeback-bind-app", digits=digits, uuid=tor, key=relay)
        return [
            Command("uuid_setvar", tor, fixed("attxfer_cancel_key"), relay),
            # aleg: the form without a leg word would put the transferee on hold meanwhile
            Command("uuid_broadcast", tor, bind, fixed("aleg")),
        ]

    def _plan_callflow(self, ch: Channel, d: dict[str, Any], f: _Fields) -> Plan:
        row = f.row_values(ch)
        context = policy.context(
            self.cfg, d.get("context"), f.name("context"), "callflow_context", row
        )
        dialplan = policy.dialplan(self.cfg, None, f.name("dialplan"))
        args = [f.row(ch, "uuid", "uuid"), f.req("id", "extension", d["id"]), dialplan, context]
        return Plan([Command("uuid_transfer", *args)])

    def _plan_intercept(self, ch: Channel, d: dict[str, Any], f: _Fields) -> Plan:
        app = self._intercept_app(ch, d)
        row = f.row_values(ch)
        kind = d["target_type"]
        if not d["can_call_self"]:
            self._not_calling_self(ch, kind, d["target_id"], f)
        template = self.cfg.intercept_endpoints.get(kind)
        endpoint = gate.fill(
            template if isinstance(template, str) else "",
            f"config.actions.intercept_endpoints.{kind}",
            "endpoint",
            {
                "target_id": f.req("target_id", "extension", d["target_id"]),
                "context": lambda: policy.context(self.cfg, None, "", "context", row),
                **row,
            },
        )
        variables = [
            gate.check(
                "variable",
                f"intercept_unbridged_only={'true' if d['unbridged_only'] else 'false'}",
                gate.DAEMON,
            )
        ]
        if d["auto_answer"]:
            variables.append(gate.check("variable", "sip_auto_answer=true", gate.DAEMON))
        # bgapi: ringing the interceptor can take as long as it likes; FreeSWITCH's +OK Job-UUID
        # says the originate is under way, and the pickup is seen as a CHANNEL_BRIDGE.
        url = compose("originate-url", variables=variables, endpoint=endpoint)
        return Plan([Command("originate", url, app, background=True)])

    def _intercept_app(self, ch: Channel, d: dict[str, Any]) -> Checked:
        """What the interceptor runs, for each case of freeswitch-actions-verified §3.3.

        The channel an operator sees ringing is usually the outbound leg to the phone. Intercept
        cannot answer an outbound leg: intercepting it loses the caller (PICKED_OFF), the leg
        and the interceptor. Picking up that call means intercepting the caller that rings it
        (`-bleg <leg>`: FreeSWITCH resolves the leg's partner); the ringing leg then ends
        PICKED_OFF. A ringing outbound leg with no caller cannot be picked up at all. Any other
        leg (parked, ringing inbound, bridged) is intercepted itself; `unbridged_only` refuses
        a bridged one, where FreeSWITCH would answer +OK and end the interceptor."""
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
            return compose("intercept-bleg-app", uuid=uuid)
        if d["unbridged_only"] and self._bridged_with(ch) is not None:
            raise envelope.validation_error(
                {"other_leg_call_id": {"not": {"message": "Channel is bridged (unbridged_only)"}}}
            )
        return compose("intercept-app", uuid=uuid)

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
        action = d["action"]
        if ch.is_loopback and (action == "unhold" or (action == "toggle" and ch.is_onhold)):
            # A loopback leg never reports "holding" (its call state stays ACTIVE): `uuid_hold
            # off` answers -ERR with the audio still cut, and `toggle` holds it again (§4.3).
            raise _conflict(
                "action",
                "FreeSWITCH cannot take a loopback channel off hold (uuid_hold off fails and "
                "toggle holds it again); resume re-bridges the pair, which brings the audio "
                "back",
            )
        word = {"hold": [], "unhold": [fixed("off")], "toggle": [fixed("toggle")]}[action]
        return Plan([Command("uuid_hold", *word, f.row(ch, "uuid", "uuid"))])

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

    def _plan_record_call(self, ch: Channel, d: dict[str, Any], f: _Fields) -> Plan:
        uuid = f.row(ch, "uuid", "uuid")
        key = (ch.node, ch.uuid)
        current = ch.recordings[-1] if ch.recordings else self._started.get(key)
        action = d["action"]
        if action == "toggle":
            action = "stop" if current else "start"
        if action == "start":
            if current:
                raise _state_error("action", "the channel is already being recorded")
            # The path is always the daemon's: a client-chosen one would make FreeSWITCH create
            # directories anywhere it may write.
            stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(self._clock()))
            path = gate.fill(
                "{dir}/{uuid}-{stamp}.{format}",
                gate.DAEMON,
                "file-path",
                {
                    "dir": f.conf("record_dir", "file-path"),
                    "uuid": uuid,
                    "stamp": gate.check("word", stamp, gate.DAEMON),
                    "format": f.req("format", "keyword", d["format"]),
                },
            )
            args = [uuid, fixed("start"), path]
            if d.get("time_limit"):
                args.append(f.req("time_limit", "number", str(d["time_limit"])))

            def remember() -> None:
                # (not for a channel gone meanwhile: nothing would ever forget it)
                if not ch.recordings and self.table.row(ch.node, ch.uuid) is ch:
                    self._started[key] = path.text

            return Plan([Command("uuid_record", *args)], after=remember)
        if action == "stop":

            def forget() -> None:
                self._started.pop(key, None)

            target = (
                gate.check("file-path", current, "channel.recording") if current else fixed("all")
            )
            return Plan([Command("uuid_record", uuid, fixed("stop"), target)], forget)
        if not current:
            raise _state_error("action", "the channel is not being recorded")
        path = gate.check("file-path", current, "channel.recording")
        return Plan([Command("uuid_record", uuid, f.req("action", "keyword", action), path)])

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
        return Plan([Command("uuid_bridge", uuid, other_uuid)])

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
        if why and (not ch.other_leg or self.table.row(ch.node, ch.other_leg) is None):
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
        row = f.row_values(ch)
        kind = d["target_type"]
        template = self.cfg.intercept_endpoints.get(kind)
        endpoint = gate.fill(
            template if isinstance(template, str) else "",
            f"config.actions.intercept_endpoints.{kind}",
            "endpoint",
            {
                "target_id": f.req("target_id", "extension", d["target_id"]),
                "context": lambda: policy.context(self.cfg, None, "", "context", row),
                **row,
            },
        )
        # bgapi, as intercept: the target rings as long as it likes; +OK Job-UUID says the
        # originate is under way, and eavesdrop runs on the new leg once it answers.
        uuid = f.row(ch, "uuid", "uuid")
        if uuid.text.lower() == "all":
            # `eavesdrop all` spies on every channel of the switch: a row is as hostile as a
            # request, and origination_uuid lets a dialplan name a channel so.
            raise Refusal("channel.uuid", "uuid", "Value all would listen to every channel")
        url = compose("originate-url", variables=variables, endpoint=endpoint)
        app = compose("eavesdrop-app", uuid=uuid)
        return Plan([Command("originate", url, app, background=True)])
