"""Text from the daemon made safe to print on the operator's terminal: the one gate.

Every value `channelsd ls` prints comes from the switch through the API (a caller's name is
whatever the far end put in its SIP From), so it may carry terminal escape sequences (ESC,
or C1's one-byte CSI U+009B), BEL, carriage returns, bidi overrides that reverse what
follows, or rich's markup. Printed raw, those clear the screen, set the window title, plant
hyperlinks, or make a row read as something else. Here they are shown visibly instead
(`\\x1b`, `\\u202e`), never written, and nothing is ever read as markup: table cells are
rich Text objects built by `cell`, the console has markup and emoji codes off, JSON and CSV
are escaped at their own one place.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # rich is imported when a table is drawn: `channelsd run` never needs it
    from rich.console import Console
    from rich.style import Style
    from rich.text import Text

# C0 controls, DEL and C1 controls; the bidi controls (Arabic letter mark, LRM/RLM, the
# embeddings and overrides LRE..RLO with their PDF, the isolates LRI..PDI); the line and
# paragraph separators (a line break nobody sees coming); lone surrogates (JSON can name
# them with \ud800; written out they crash the encoder or, with surrogateescape, become raw
# bytes 0x80-0xff).
# The same set is what a log line never carries raw (channelsd.logs).
C0 = "\x00-\x1f"
BEYOND_C0 = "\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\ud800-\udfff"
UNSAFE = re.compile(f"[{C0}{BEYOND_C0}]")
# In JSON text the encoder already escapes C0 inside strings, and its own line breaks (the
# indented form) are structure, to be kept.
_UNSAFE_IN_JSON = re.compile(f"[{BEYOND_C0}]")


def _shown(m: re.Match[str]) -> str:
    code = ord(m.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def visible(value: str) -> str:
    """The value with every control character shown as an escape, never written raw."""
    return UNSAFE.sub(_shown, value) if UNSAFE.search(value) else value


def cell(value: str, style: str | Style = "") -> Text:
    """A value as a rich renderable: literal text (rich Text is never parsed as markup),
    controls shown visibly."""
    from rich.text import Text

    return Text(visible(value), style=style)


def as_text(value: str | Text) -> Text:
    """Any cell as safe Text: a string through `cell`; a Text that somehow holds a control
    character is rebuilt from its plain text (its inner styles are lost, never the guard)."""
    from rich.text import Text

    if isinstance(value, Text):
        return value if not UNSAFE.search(value.plain) else cell(value.plain, value.style)
    return cell(value)


def console(**options: Any) -> Console:
    """A rich console that reads nothing it prints as markup, emoji codes or highlights."""
    from rich.console import Console

    return Console(markup=False, emoji=False, highlight=False, **options)


def json_text(data: Any, indent: int | None = None) -> str:
    """JSON with the characters the encoder leaves raw (DEL, C1, bidi, separators, lone
    surrogates) escaped as \\uXXXX: the same JSON to a parser, nothing live to a terminal.
    They can only occur inside strings, where an escape means the very same character."""
    return json_safe(json.dumps(data, indent=indent, ensure_ascii=False))


def json_safe(text: str) -> str:
    """JSON text with what the encoder leaves raw (see json_text) escaped as \\uXXXX. An
    ASCII text (isascii() reads a flag, it does not scan) can only hold DEL of them."""
    if text.isascii() and "\x7f" not in text:
        return text
    return _UNSAFE_IN_JSON.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def csv_text(body: bytes, lineterminator: str = "\r\n") -> str:
    """The daemon's CSV rewritten cell by cell with controls shown visibly: a cell may hold
    line breaks and escapes (quoted, as CSV allows), which reach a terminal as they are.
    Raises csv.Error when the body is not CSV."""
    text = codecs.decode(body, "utf-8", "replace")
    out = io.StringIO()
    writer = csv.writer(out, lineterminator=lineterminator)
    for row in csv.reader(io.StringIO(text, newline="")):
        writer.writerow([visible(v) for v in row])
    return out.getvalue()
