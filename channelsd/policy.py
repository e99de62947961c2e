"""What a tenant may name in a request on a shared switch: contexts, dialplans and media.

A client that chooses the dialplan context escapes its tenant (another account's extensions,
the switch's own features); one that chooses any media path or URL makes the switch read other
tenants' recordings or fetch URLs on its network. So each is an allow-list from [actions]:

* contexts: `context`, `callflow_context` and `allowed_contexts`; any of them may be a template
  with `{account_id}` or `{realm}` of the channel (`ctx_{account_id}`), filled per request.
* dialplans: `dialplan` and `allowed_dialplans` (never `inline`).
* media (`play.id`, `transfer.moh`): values under one of `allowed_media` (directories ending in
  `/`, or a scheme such as `tone_stream://` with an optional URL prefix; templates allowed),
  without `.`/`..` segments, `//` or encoded dots and slashes after the root; or, when
  `media_template` is set, a Kazoo media id (32 hex) resolved through it.

Every answer is a channelsd.gate Checked value; a refusal names the request field.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING

from channelsd import gate
from channelsd.gate import Checked, Refusal, Value
from channelsd.validate import is_media_id

if TYPE_CHECKING:
    from channelsd.config import ActionsConfig

# FreeSWITCH's own generated streams, and the sounds directory of its Debian packages.
DEFAULT_MEDIA = (
    "tone_stream://",
    "silence_stream://",
    "local_stream://",
    "/usr/share/freeswitch/sounds/",
)
# Placeholders a context or media-root template may use, from the channel's own row.
ROW_PLACEHOLDERS = ("account_id", "realm")
# After the root: an empty segment (`root//etc`), a hidden or dot segment, or an encoded `.`,
# `/`, `\` or `%` (a web server would decode them into a climb out of the root).
_ESCAPE = re.compile(r"^/|//|(?:^|/)\.|%(?:2e|2f|5c|25)", re.IGNORECASE)


def _fill_each(
    templates: list[tuple[str, str]], kind: str, row: Mapping[str, Value]
) -> list[Checked]:
    """Each (template, field) filled for this channel; one whose row value is missing (a
    channel without an account id) is skipped, a hostile row value refuses."""
    out = []
    for template, field in templates:
        try:
            out.append(gate.fill(template, field, kind, row))
        except Refusal as r:
            if r.rule != "required" or r.field == field:
                raise
    return out


def dialplan(cfg: ActionsConfig, requested: str | None, field: str) -> Checked:
    default = gate.check("dialplan", cfg.dialplan, "config.actions.dialplan")
    if requested is None:
        return default
    allowed = [default] + [
        gate.check("dialplan", d, f"config.actions.allowed_dialplans[{i}]")
        for i, d in enumerate(cfg.allowed_dialplans)
    ]
    for d in allowed:
        # FreeSWITCH looks dialplans up without regard to case; send the configured spelling.
        if isinstance(requested, str) and requested.lower() == d.text.lower():
            return d
    raise Refusal(
        field,
        "dialplan",
        "Value is not an allowed dialplan",
        rule="enum",
        value=requested,
        target=[d.text for d in allowed],
    )


def context(
    cfg: ActionsConfig,
    requested: str | None,
    field: str,
    default_key: str,
    row: Mapping[str, Value],
) -> Checked:
    """The request's context if allowed for this channel, else the configured default
    (`default_key`: "context" or "callflow_context")."""
    if requested is None:
        key = f"config.actions.{default_key}"
        return gate.fill(getattr(cfg, default_key), key, "context", row)
    asked = gate.check("context", requested, field, echo=True)
    templates = [
        (cfg.context, "config.actions.context"),
        (cfg.callflow_context, "config.actions.callflow_context"),
        *((t, f"config.actions.allowed_contexts[{i}]") for i, t in enumerate(cfg.allowed_contexts)),
    ]
    allowed = _fill_each(templates, "context", row)
    if any(a.text == asked.text for a in allowed):
        return asked
    raise Refusal(
        field,
        "context",
        "Value is not an allowed context",
        rule="enum",
        value=requested,
        target=list(dict.fromkeys(a.text for a in allowed)),
    )


def media(cfg: ActionsConfig, requested: str, field: str, row: Mapping[str, Value]) -> Checked:
    """A media path or stream the tenant may play, or a media id resolved via media_template."""
    if is_media_id(requested):
        if not cfg.media_template:
            raise Refusal(
                field,
                "media-id",
                "Value is a media id (32 hex digits), and media ids play only when the "
                "configuration says which file each is: set media_template in the [actions] "
                'section of channelsd.toml, e.g. media_template = "/var/lib/media/'
                '{account_id}/{media_id}.wav"; or send a path or stream under allowed_media',
                rule="policy",
                value=requested,
            )
        media_id = gate.check("media-id", requested, field, echo=True)
        values = {**row, "media_id": media_id}
        return gate.fill(cfg.media_template, "config.actions.media_template", "media", values)
    asked = gate.check("media", requested, field, echo=True)
    templates = [(t, f"config.actions.allowed_media[{i}]") for i, t in enumerate(cfg.allowed_media)]
    roots = _fill_each(templates, "media-root", row)
    for root in roots:
        if inside(asked.text, root.text):
            return asked
    raise Refusal(
        field,
        "media",
        "Value is not an allowed media path or stream",
        rule="policy",
        value=requested,
        target=[r.text for r in roots],
    )


def inside(value: str, root: str) -> bool:
    """`value` is under `root` without climbing out of it. Roots are matched at a boundary
    (they end in `/` or `://`), so `/media/acc1/` never admits `/media/acc10/`."""
    if not (root.endswith("/") and value.startswith(root)):
        return False
    rest = value[len(root) :]
    return bool(rest) and _ESCAPE.search(rest) is None
