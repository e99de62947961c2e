"""The one gate every value passes before it may appear on an ESL command line.

ESL is line-based: a line break in an argument is a header, a blank line a second command,
and FreeSWITCH re-splits arguments on spaces, quotes and `^^`. So values are checked against
allow-lists, never escaped.
"""

from __future__ import annotations

import re

# FreeSWITCH generates RFC 4122 text; origination_uuid lets a dialplan choose others, and SIP
# stacks use Call-ID-like strings. Allowed: the characters those use, nothing that splits.
_UUID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@:+-]{0,127}")


def is_uuid(value: object) -> bool:
    """A string safe to use as a channel uuid on an ESL line."""
    return isinstance(value, str) and _UUID_RE.fullmatch(value) is not None
