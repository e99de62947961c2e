"""The compiled parts of channelsd (everything else is in setup.cfg).

channelsd_picker picks the table's headers out of json events (channelsd/eventpick.py);
channelsd_fields runs the table's loops over an event's headers (channelsd/fields.py);
channelsd_sendmany writes a publish to its subscribers' sockets off the main thread
(channelsd/sendmany.py). All three are optional: where they cannot be built (no C compiler or
Python headers), `pip install` goes on (saying so only with -v) and channelsd does the same
work in Python, as it did before they existed (slower ingest: `channelsd check` and the
daemon's start-up log warn).
"""

import hashlib
from pathlib import Path

from setuptools import Extension, setup


def extension(name: str, source: str, macro: str) -> Extension:
    # The build says which source it is (<module>.SOURCE_SHA256): the tests refuse a stale
    # in-place build.
    sha256 = hashlib.sha256((Path(__file__).parent / source).read_bytes()).hexdigest()
    return Extension(name, [source], define_macros=[(macro, f'"{sha256}"')], optional=True)


setup(
    ext_modules=[
        extension("channelsd_picker", "channelsd/picker.c", "PICKER_SOURCE_SHA256"),
        extension("channelsd_fields", "channelsd/fields.c", "FIELDS_SOURCE_SHA256"),
        extension("channelsd_sendmany", "channelsd/sendmany.c", "SENDMANY_SOURCE_SHA256"),
    ]
)
