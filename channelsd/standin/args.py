"""Splitting an api command's argument string the way mod_commands does.

Mirrors FreeSWITCH's ``switch_separate_string`` (``switch_utils.c``) with its quote and escape
handling, which every ``uuid_*`` command uses on its argument line (reference §0.3).
"""

from __future__ import annotations


def separate(text: str, limit: int = 0) -> list[str]:
    """switch_separate_string(' '): split at spaces outside single quotes; once ``limit``
    arguments are reached the last one takes the rest of the line.  Every argument is then
    cleaned as FreeSWITCH does: paired quotes removed (a lone quote stays), ``\\`` escapes
    resolved, surrounding spaces trimmed -- so ``'speak::flite|kal|Hello there'`` is one
    argument (reference §0.3)."""
    raw: list[str] = []
    i, n = 0, len(text)
    while i < n:
        while i < n and text[i] == " ":
            i += 1
        if i >= n:
            break
        if limit and len(raw) == limit - 1:
            raw.append(text[i:])
            break
        start, quoted = i, False
        while i < n:
            c = text[i]
            if c == "\\":
                i += 2
                continue
            if c == "'" and (quoted or "'" in text[i + 1 :]):
                quoted = not quoted
            elif c == " " and not quoted:
                break
            i += 1
        raw.append(text[start:i])
    return [_clean_arg(arg) for arg in raw]


_UNESCAPE = {"n": "\n", "r": "\r", "t": "\t", "s": " ", "'": "'", '"': '"', "\\": "\\", " ": " "}


def _clean_arg(arg: str) -> str:
    out: list[str] = []
    keep = 0  # length of ``out`` without trailing unquoted spaces
    quoted = False
    arg = arg.lstrip(" ")
    i, n = 0, len(arg)
    while i < n:
        c = arg[i]
        if c == "\\" and i + 1 < n and arg[i + 1] in _UNESCAPE:
            out.append(_UNESCAPE[arg[i + 1]])
            keep = len(out)
            i += 2
            continue
        if c == "'" and (quoted or "'" in arg[i + 1 :]):
            quoted = not quoted
            if quoted:
                keep = len(out)
        else:
            out.append(c)
            if c != " " or quoted:
                keep = len(out)
        i += 1
    return "".join(out[:keep])
