"""POST actions and PUT metaflows, turned into FreeSWITCH commands on the channel's own node.

Every request is read, validated against its JSON Schema (field formats are the ESL value
gate of channelsd.validate), checked against the channel's state, and only then turned into
commands. The answer waits for FreeSWITCH's reply: `+OK` is success, anything else is an
error in the API's envelope (spec §3 and §4). Recipes follow freeswitch-actions-verified.md.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from channelsd import envelope
from channelsd.config import ActionsConfig
from channelsd.envelope import ApiError
from channelsd.esl import CommandTimeout
from channelsd.jsonschemas import module_schema, validate, with_defaults
from channelsd.node import NodeUnavailable
from channelsd.table import Channel, ChannelTable
from channelsd.tokens import Token
from channelsd.validate import esl_args

log = logging.getLogger("channelsd.actions")

POST_ACTIONS = ("transfer", "hangup", "break", "callflow", "intercept")
# Replies by which FreeSWITCH says the channel is not there (any more).
_GONE = ("-ERR No such channel", "-ERR invalid uuid", "-ERR Invalid uuid", "-ERR Cannot locate")
# Names clients use for the same field (Kazoo POST: transfer-type; monster-ui: Transfer-Type).
_ALIASES = {"transfer-type": "transfer_type", "Transfer-Type": "transfer_type"}
_LEG_WORD = {"self": "aleg", "peer": "bleg", "both": "both"}


@dataclass
class Step:
    """One ESL api command and what to call it in an error."""

    command: str
    name: str
    background: bool = False  # bgapi: FreeSWITCH's +OK means "started"


@dataclass
class Plan:
    steps: list[Step] = field(default_factory=list)
    after: Callable[[], None] | None = None  # bookkeeping once every step succeeded


def _coerce(value: Any, prop: Mapping[str, Any]) -> Any:
    """Kazoo's non-strict validation: "true" and "5" from a query string are fine."""
    if not isinstance(value, str):
        return value
    kind = prop.get("type")
    if kind == "boolean" and value.lower() in ("true", "false"):
        return value.lower() == "true"
    if kind == "integer" and value.lstrip("-").isdigit():
        return int(value)
    return value


def _not_bridged() -> ApiError:
    return envelope.validation_error(
        {"other_leg_call_id": {"required": {"message": "Channel is not bridged"}}}
    )


def _state_error(key: str, message: str) -> ApiError:
    return envelope.validation_error({key: {"state": {"message": message}}})


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
        self._recordings: dict[str, str] = {}  # uuid -> file being recorded

    # -- entry points ------------------------------------------------------------------------

    def post(
        self, ch: Channel, body: dict[str, Any] | None, query: Mapping[str, str], token: Token
    ) -> tuple[int, str]:
        body = body or {}
        data = body.get("data") if isinstance(body.get("data"), dict) else {}

        def read(name: str) -> Any:
            for source in (data, body, query):
                for key in (name, *[a for a, n in _ALIASES.items() if n == name]):
                    if key in source:
                        return source[key]
            return None

        action = read("action")
        if action not in POST_ACTIONS:
            raise ApiError(
                400,
                "invalid data",
                {"message": "action must be one of: " + ", ".join(POST_ACTIONS), "value": action},
            )
        props = module_schema(action).get("properties", {})
        fields = {}
        for name, prop in props.items():
            value = read(name)
            if value is not None:
                fields[name] = _coerce(value, prop)
        errors = validate(f"metaflows.{action}.json", fields)
        if errors:
            raise envelope.validation_error(errors)
        self._run(ch, action, with_defaults(action, fields), token, path="")
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
        flow = self._check_flow(data, "")
        node: dict[str, Any] | None = flow
        path = ""
        while node is not None:
            self._run(ch, node["module"], node["data"], token, path)
            child = node.get("children", {}).get("_")
            path = f"{path}.children._" if path else "children._"
            node = child
        return 201, "metaflow sent"

    # -- validation --------------------------------------------------------------------------

    def _check_flow(self, flow: Any, prefix: str) -> dict[str, Any]:
        """Validate a whole metaflow tree before anything runs; defaults filled in."""
        errors = validate("metaflow.json", flow, prefix)
        if errors:
            raise envelope.validation_error(errors)
        module = flow["module"]
        raw = {_ALIASES.get(k, k): v for k, v in flow.get("data", {}).items()}
        props = module_schema(module).get("properties", {})
        raw = {k: _coerce(v, props.get(k, {})) for k, v in raw.items()}
        data_prefix = f"{prefix}.data" if prefix else "data"
        errors = validate(f"metaflows.{module}.json", raw, data_prefix)
        if errors:
            raise envelope.validation_error(errors)
        checked: dict[str, Any] = {"module": module, "data": with_defaults(module, raw)}
        children = {}
        for name, child in flow.get("children", {}).items():
            child_prefix = f"{prefix}.children.{name}" if prefix else f"children.{name}"
            children[name] = self._check_flow(child, child_prefix)
        checked["children"] = children
        return checked

    # -- execution ---------------------------------------------------------------------------

    def _run(self, ch: Channel, module: str, data: dict[str, Any], token: Token, path: str) -> None:
        plan = getattr(self, f"_plan_{module}")(ch, data)
        node = self.nodes.get(ch.node)
        if node is None:
            raise ApiError(503, "freeswitch unavailable", ch.node)
        for step in plan.steps:
            reply = self._send(node, step, ch)
            if not reply.startswith("+OK"):
                status = 404 if reply.startswith(_GONE) else 502
                extra = {"path": path} if path else {}
                raise ApiError(status, reply.strip() or "no reply", step.name, **extra)
        if plan.after is not None:
            plan.after()
        log.info(
            "action=%s uuid=%s node=%s account=%s token=%s commands=%d",
            module,
            ch.uuid,
            ch.node,
            ch.account_id,
            token.name or token.account_id,
            len(plan.steps),
        )

    def _send(self, node: Any, step: Step, ch: Channel) -> str:
        try:
            return node.bgapi(step.command) if step.background else node.api(step.command)
        except NodeUnavailable:
            raise ApiError(503, "freeswitch unavailable", ch.node) from None
        except CommandTimeout:
            raise ApiError(504, "freeswitch timeout", ch.node) from None

    def _partner(self, ch: Channel) -> Channel:
        """The bridged other leg, which must be known and alive."""
        if not ch.other_leg:
            raise _not_bridged()
        other = self.table.row(ch.node, ch.other_leg)
        if other is None:
            raise _not_bridged()
        return other

    # One _plan_<module> per module: checks on the channel's state, then the commands.

    def _plan_hangup(self, ch: Channel, d: dict[str, Any]) -> Plan:
        cause = d["cause"] if d["cause"].isdigit() else d["cause"].upper()
        return Plan([Step(esl_args("uuid_kill", ch.uuid, cause), "uuid_kill")])

    def _plan_break(self, ch: Channel, d: dict[str, Any]) -> Plan:
        args = ["uuid_break", ch.uuid] + (["all"] if d["all"] else [])
        return Plan([Step(esl_args(*args), "uuid_break")])

    def _plan_transfer(self, ch: Channel, d: dict[str, Any]) -> Plan:
        context = d.get("context") or self.cfg.context
        dialplan = d.get("dialplan") or self.cfg.dialplan
        leg = d["leg"]
        if d["transfer_type"] == "blind":
            if leg == "self":
                args = ["uuid_transfer", ch.uuid, d["target"], dialplan, context]
            else:
                # -bleg/-both on an unbridged channel silently transfer the channel itself.
                self._partner(ch)
                args = ["uuid_transfer", ch.uuid, f"-{leg}", d["target"], dialplan, context]
            return Plan([Step(esl_args(*args), "uuid_transfer")])
        # Attended: the transferor runs att_xfer inside its bridge; the partner waits on hold.
        if leg == "both":
            raise envelope.validation_error(
                {"leg": {"enum": {"message": "an attended transfer moves one leg", "value": leg}}}
            )
        partner = self._partner(ch)
        transferor, transferee = (ch, partner) if leg == "self" else (partner, ch)
        if not (transferor.answered and transferee.answered):
            raise _state_error("answered", "both legs must be answered for an attended transfer")
        dialstring = self.cfg.attended_dialstring.format(
            target=d["target"],
            context=context,
            realm=transferor.realm or "",
            account_id=transferor.account_id or "",
        )
        moh = d.get("moh") or self.cfg.moh
        steps = [
            Step(esl_args("uuid_setvar", transferee.uuid, "hold_music", moh), "uuid_setvar"),
        ]
        if d.get("takeback_dtmf"):
            steps.append(
                Step(
                    esl_args(
                        "uuid_setvar", transferor.uuid, "attxfer_cancel_key", d["takeback_dtmf"]
                    ),
                    "uuid_setvar",
                )
            )
        # No leg word: att_xfer runs on the transferor and the transferee hears its hold_music.
        steps.append(
            Step(
                esl_args("uuid_broadcast", transferor.uuid, f"att_xfer::{dialstring}"),
                "uuid_broadcast",
            )
        )
        return Plan(steps)

    def _plan_callflow(self, ch: Channel, d: dict[str, Any]) -> Plan:
        context = d.get("context") or self.cfg.callflow_context
        args = ["uuid_transfer", ch.uuid, d["id"], self.cfg.dialplan, context]
        return Plan([Step(esl_args(*args), "uuid_transfer")])

    def _plan_intercept(self, ch: Channel, d: dict[str, Any]) -> Plan:
        if d["unbridged_only"] and ch.other_leg and self.table.row(ch.node, ch.other_leg):
            raise envelope.validation_error(
                {"other_leg_call_id": {"not": {"message": "Channel is bridged (unbridged_only)"}}}
            )
        endpoint = self.cfg.intercept_endpoints[d["target_type"]].format(
            target_id=d["target_id"],
            context=self.cfg.context,
            realm=ch.realm or "",
            account_id=ch.account_id or "",
        )
        variables = [f"intercept_unbridged_only={'true' if d['unbridged_only'] else 'false'}"]
        if d["auto_answer"]:
            variables.append("sip_auto_answer=true")
        originate = "{" + ",".join(variables) + "}" + endpoint
        # bgapi: ringing the interceptor can take as long as it likes; FreeSWITCH's +OK Job-UUID
        # says the originate is under way, and the pickup is seen as a CHANNEL_BRIDGE.
        command = esl_args("originate", originate, f"&intercept({ch.uuid})")
        return Plan([Step(command, "originate", background=True)])

    def _plan_hold_control(self, ch: Channel, d: dict[str, Any]) -> Plan:
        word = {"hold": [], "unhold": ["off"], "toggle": ["toggle"]}[d["action"]]
        return Plan([Step(esl_args("uuid_hold", *word, ch.uuid), "uuid_hold")])

    def _plan_play(self, ch: Channel, d: dict[str, Any]) -> Plan:
        if d["leg"] != "self":
            self._partner(ch)
        args = ["uuid_broadcast", ch.uuid, d["id"], _LEG_WORD[d["leg"]]]
        return Plan([Step(esl_args(*args), "uuid_broadcast")])

    def _plan_tts(self, ch: Channel, d: dict[str, Any]) -> Plan:
        if d["leg"] != "self":
            self._partner(ch)
        # Quoted because the text has spaces; the text format admits no quote.
        app = f"'speak::{d['engine']}|{d['voice']}|{d['text']}'"
        return Plan(
            [Step(esl_args("uuid_broadcast", ch.uuid, app, _LEG_WORD[d["leg"]]), "uuid_broadcast")]
        )

    def _plan_say(self, ch: Channel, d: dict[str, Any]) -> Plan:
        if d["leg"] != "self":
            self._partner(ch)
        words = [d["language"], d["type"], d["method"]] + ([d["gender"]] if d.get("gender") else [])
        app = "'say::" + " ".join([*words, d["text"]]) + "'"
        return Plan(
            [Step(esl_args("uuid_broadcast", ch.uuid, app, _LEG_WORD[d["leg"]]), "uuid_broadcast")]
        )

    def _plan_record_call(self, ch: Channel, d: dict[str, Any]) -> Plan:
        current = self._recordings.get(ch.uuid)
        action = d["action"]
        if action == "toggle":
            action = "stop" if current else "start"
        if action == "start":
            if current:
                raise _state_error("action", "the channel is already being recorded")
            # The path is always the daemon's: a client-chosen one would make FreeSWITCH create
            # directories anywhere it may write.
            stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(self._clock()))
            path = f"{self.cfg.record_dir}/{ch.uuid}-{stamp}.{d['format']}"
            args = ["uuid_record", ch.uuid, "start", path]
            if d.get("time_limit"):
                args.append(str(d["time_limit"]))

            def remember() -> None:
                self._recordings[ch.uuid] = path

            return Plan([Step(esl_args(*args), "uuid_record")], after=remember)
        if action == "stop":

            def forget() -> None:
                self._recordings.pop(ch.uuid, None)

            target = current or "all"
            return Plan(
                [Step(esl_args("uuid_record", ch.uuid, "stop", target), "uuid_record")], forget
            )
        if not current:
            raise _state_error("action", "the channel is not being recorded")
        return Plan([Step(esl_args("uuid_record", ch.uuid, action, current), "uuid_record")])

    def _plan_resume(self, ch: Channel, d: dict[str, Any]) -> Plan:
        other = self._partner(ch)
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
        return Plan([Step(esl_args("uuid_bridge", ch.uuid, other.uuid), "uuid_bridge")])

    def _plan_audio_level(self, ch: Channel, d: dict[str, Any]) -> Plan:
        if d["action"] == "stop":
            return Plan([Step(esl_args("uuid_audio", ch.uuid, "stop"), "uuid_audio")])
        how = ["mute", "1"] if d["mute"] else ["level", str(d["level"])]
        return Plan([Step(esl_args("uuid_audio", ch.uuid, "start", d["mode"], *how), "uuid_audio")])
