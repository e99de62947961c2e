"""The one compiled part of channelsd (everything else is in setup.cfg).

channelsd_picker picks the table's headers out of json events (channelsd/eventpick.py). It is
optional: where it cannot be built (no C compiler or Python headers), `pip install` goes on
(saying so only with -v) and channelsd parses every event whole, as it did before it existed
(slower ingest: `channelsd check` and the daemon's start-up log warn).
"""

import hashlib
from pathlib import Path

from setuptools import Extension, setup

SOURCE = "channelsd/picker.c"
# The build says which source it is (channelsd_picker.SOURCE_SHA256): the tests refuse a
# stale in-place build.
SHA256 = hashlib.sha256((Path(__file__).parent / SOURCE).read_bytes()).hexdigest()

setup(
    ext_modules=[
        Extension(
            "channelsd_picker",
            [SOURCE],
            define_macros=[("PICKER_SOURCE_SHA256", f'"{SHA256}"')],
            optional=True,
        ),
    ]
)
