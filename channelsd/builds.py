"""Whether the compiled parts this interpreter imports were built from the sources beside
this package (a checkout's).

An in-place build (`pip install -e .`, or a virtualenv shared by two checkouts) is found
first and is not rebuilt by editing its `.c` file: tests would then hold an old build, and a
benchmark would measure a daemon other than the checkout's. setup.py stamps each build with
its source's sha256 (`<module>.SOURCE_SHA256`); this compares the two.
"""

from __future__ import annotations

import hashlib
import importlib
from pathlib import Path

# Each compiled module, and its source beside this file.
COMPILED = {
    "channelsd_picker": "picker.c",
    "channelsd_fields": "fields.c",
    "channelsd_sendmany": "sendmany.c",
}


def source_state(name: str) -> str:
    """'current' (built from the source as it is now), 'stale' (from another), 'missing'
    (not built: the Python path runs), or 'no source' (an installed package, no `.c` here)."""
    try:
        module = importlib.import_module(name)
    except ImportError:
        return "missing"
    source = Path(__file__).with_name(COMPILED[name])
    if not source.exists():
        return "no source"
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    return "current" if getattr(module, "SOURCE_SHA256", None) == digest else "stale"


def missing(name: str, consequence: str) -> str:
    """What `check` and `run` warn of when the compiled part `name` is not installed
    (`pip install` says nothing of an extension it could not build, unless run with -v)."""
    return (
        f"{name} (C) is not installed: {consequence}; install a C compiler and Python's "
        "headers (Debian: gcc python3-dev), then `pip install .` again"
    )
