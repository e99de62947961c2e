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


@lru_cache(maxsize=1)
def load() -> dict[str, Any]:
    with gzip.open(TEMPLATE_PATH, "rt", encoding="utf-8") as fh:
        return json.load(fh)


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
