"""The one compiled part of channelsd (everything else is in setup.cfg).

channelsd_picker picks the table's headers out of json events (channelsd/eventpick.py). It is
optional: where it cannot be built (no C compiler or Python headers), `pip install` goes on
and channelsd parses every event whole, as fast as it did before it existed.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension("channelsd_picker", ["channelsd/picker.c"], optional=True),
    ]
)
