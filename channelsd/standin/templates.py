"""Access to the header-order templates extracted from real captures.

``templates.json.gz`` is produced by ``tools/make_standin_templates.py`` and shipped inside the
package, so the stand-in never needs the original capture folder at run time.
"""

from __future__ import annotations

import gzip
import json
from functools import lru_cache
from pathlib import Path
from typing import Any

TEMPLATE_PATH = Path(__file__).with_name("templates.json.gz")


# Channel events the loopback captures the generator reads do not hold, laid out as the SIP
# capture (s8_sip_call, a session_record media bug) shows them: core headers, the two
# Media-Bug-* headers, the channel data with its variables, nothing after.
_MEDIA_BUG = {
    "calling_variants": [],
    "pre": ["Media-Bug-Function", "Media-Bug-Target"],
    "post": [],
    "post_by_function": {},
    "channel": True,
    "variables": True,
    "constants": {},
    "example": [],
    "example_source": "json/s8_sip_call.events.raw",
}
EXTRA_EVENTS = {
    "MEDIA_BUG_START": {
        **_MEDIA_BUG,
        "calling": ["switch_core_media_bug.c", "switch_core_media_bug_add", "1014"],
    },
    "MEDIA_BUG_STOP": {
        **_MEDIA_BUG,
        "calling": ["switch_core_media_bug.c", "switch_core_media_bug_destroy", "84"],
    },
}


@lru_cache(maxsize=1)
def load() -> dict[str, Any]:
    with gzip.open(TEMPLATE_PATH, "rt", encoding="utf-8") as fh:
        data = json.load(fh)
    for name, tpl in EXTRA_EVENTS.items():
        data["events"].setdefault(name, tpl)  # a regenerated file that has them wins
    return data


def event(name: str) -> dict[str, Any]:
    """Template of one event type: calling location, pre/post header names, constants."""
    return load()["events"][name]


def calling(name: str, function: str | None = None) -> tuple[str, str, str]:
    """(file, function, line) FreeSWITCH stamps on this event; ``function`` picks a variant."""
    tpl = event(name)
    if function is not None:
        for variant in [tpl["calling"], *tpl["calling_variants"]]:
            if variant[1] == function:
                return tuple(variant)  # type: ignore[return-value]
    return tuple(tpl["calling"])  # type: ignore[return-value]
