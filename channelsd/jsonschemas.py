"""The metaflow JSON Schemas (schemas/*.json) and Kazoo-shaped validation errors.

Kazoo clients parse a failed validation as
`{"<dotted.path>": {"<rule>": {"message": …, "value"?: …, "target"?: …}}}` under HTTP 400
`validation error`; jsonschema's errors are turned into exactly that.
"""

from __future__ import annotations

import copy
import json
import math
from functools import cache
from importlib import resources
from typing import Any

import jsonschema
from referencing import Registry, Resource

from channelsd.validate import FORMAT_MESSAGES, SchemaValidator, format_checker

MODULES = (
    "hangup",
    "break",
    "transfer",
    "callflow",
    "intercept",
    "eavesdrop",
    "hold_control",
    "play",
    "tts",
    "say",
    "record_call",
    "resume",
    "audio_level",
)

# Kazoo's own words for the fields its clients know (cb_channels).
REQUIRED_MESSAGES = {
    "target": "No target destination specified",
    "target_type": "No target type specified",
    "target_id": "No target id specified",
    "module": "Field is required but missing",
}
RULE_MESSAGES = {
    "enum": "Value not found in enumerated list of values",
    "type": "Value is not of type {target}",
    "minLength": "Value is shorter than {target} characters",
    "maxLength": "Value is longer than {target} characters",
    "minimum": "Value must be at least {target}",
    "maximum": "Value must be at most {target}",
    "additionalProperties": "Field is not allowed",
    "maxProperties": "Value has more than {target} properties",
}


def echoable(value: Any) -> bool:
    """Whether a refused value can be shown back in an error body. Objects and arrays are
    not (their depth is the client's: orjson refuses more than 254 levels), nor integers
    beyond 64 bits (orjson refuses them), nor non-finite floats."""
    if value is None or isinstance(value, bool | str):
        return True
    if isinstance(value, int):
        return -(2**63) <= value < 2**64
    if isinstance(value, float):
        return math.isfinite(value)
    return False


def _load(name: str) -> dict[str, Any]:
    text = resources.files("channelsd").joinpath(f"schemas/{name}").read_text("utf-8")
    return json.loads(text)


@cache
def _validators() -> dict[str, jsonschema.protocols.Validator]:
    names = ["metaflow.json"] + [f"metaflows.{m}.json" for m in MODULES]
    schemas = {n: _load(n) for n in names}
    registry = Registry().with_resources((n, Resource.from_contents(s)) for n, s in schemas.items())
    checker = format_checker()
    return {
        n: SchemaValidator(s, registry=registry, format_checker=checker) for n, s in schemas.items()
    }


def module_schema(module: str) -> dict[str, Any]:
    return _validators()[f"metaflows.{module}.json"].schema


def _path(prefix: str, parts: Any) -> str:
    keys = [str(p).replace(".", "%2E") for p in parts]
    return ".".join([prefix, *keys] if prefix else keys)


def kazoo_errors(errors: Any, prefix: str = "") -> dict[str, Any]:
    """jsonschema errors as Kazoo's validation-error object."""
    out: dict[str, Any] = {}
    for err in errors:
        rule = err.validator
        if rule == "required":
            missing = err.message.split("'")[1] if "'" in err.message else ""
            key = _path(prefix, [*err.absolute_path, missing])
            detail = {"message": REQUIRED_MESSAGES.get(missing, "Field is required but missing")}
        else:
            key = _path(prefix, err.absolute_path)
            if rule == "format":
                detail = {
                    "message": f"Value {FORMAT_MESSAGES.get(err.validator_value, 'is malformed')}",
                    "target": err.validator_value,
                }
            else:
                target = err.validator_value
                # Never jsonschema's own message: it quotes the whole (client's) instance.
                template = RULE_MESSAGES.get(rule, "Value does not satisfy {rule}")
                detail = {"message": template.format(target=target, rule=rule)}
                if rule != "additionalProperties":
                    detail["target"] = target
            if echoable(err.instance):
                detail["value"] = err.instance
        out.setdefault(key or "data", {})[rule] = detail
    return out


def validate(name: str, data: Any, prefix: str = "") -> dict[str, Any]:
    """Kazoo-shaped errors of `data` against schemas/<name>; empty when valid."""
    return kazoo_errors(_validators()[name].iter_errors(data), prefix)


def with_defaults(module: str, data: dict[str, Any]) -> dict[str, Any]:
    """A copy of module data with the schema's declared defaults filled in, as Kazoo does."""
    filled = copy.deepcopy(data)
    for key, prop in module_schema(module).get("properties", {}).items():
        if key not in filled and "default" in prop:
            filled[key] = copy.deepcopy(prop["default"])
    return filled
