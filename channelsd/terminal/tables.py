"""The calls as rich tables: live calls grouped by call, and recently ended calls.

Every cell passes `safe.as_text` (rows are added by `_add_row` only): a value from the switch
is literal text with its controls shown, never markup.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from channelsd.channel import GREGORIAN_OFFSET
from channelsd.terminal import calls, safe
from channelsd.terminal.calls import Item

FLAG_STYLES = {
    "hold": "black on yellow",
    "rec": "white on red",
    "srtp": "black on green",
    "stale": "white on magenta",
}
STATE_STYLES = {
    "ACTIVE": "green",
    "RINGING": "yellow",
    "EARLY": "yellow",
    "HELD": "yellow",
    "HANGUP": "red",
}


def _table(title: str | None) -> Table:
    return Table(
        box=box.SIMPLE_HEAD,
        title=title,
        title_justify="left",
        title_style="bold",
        pad_edge=False,
        show_edge=False,
        header_style="bold",
    )


def _uuid(item: Item, wide: bool, leg: int, console: Console) -> Text:
    uuid = calls.text(item, "uuid")
    shown = uuid if wide else uuid[:8]
    if leg == 0:
        return safe.cell(shown)
    arrow = "\\_" if console.options.ascii_only else "↳"
    return safe.cell(f"{arrow} {shown}", style="dim")


def _flags(item: Item) -> Text:
    out = Text()
    for i, flag in enumerate(calls.flags(item)):
        if i:
            out.append(" ")
        out.append_text(safe.cell(f" {flag} ", style=FLAG_STYLES[flag]))
    return out


def _state(item: Item) -> Text:
    state = calls.state(item)
    return safe.cell(state, style=STATE_STYLES.get(state, ""))


def _add_row(t: Table, cells: Sequence[str | Text]) -> None:
    t.add_row(*(safe.as_text(c) for c in cells))


def live_table(
    groups: Sequence[Sequence[Item]],
    console: Console,
    seconds: Callable[[Item], float | None],
    wide: bool = False,
    title: str | None = None,
) -> Table:
    """One row per channel, the legs of a call together under its first (oldest) leg."""
    t = _table(title)
    t.add_column("UUID", no_wrap=True)
    t.add_column("Dir", no_wrap=True)
    t.add_column("Caller", overflow="ellipsis", max_width=None if wide else 28)
    t.add_column("Callee", overflow="ellipsis", max_width=None if wide else 28)
    t.add_column("State", no_wrap=True)
    t.add_column("Answered", no_wrap=True)
    t.add_column("Flags", no_wrap=True)
    t.add_column("Duration", justify="right", no_wrap=True)
    if wide:
        t.add_column("Endpoint", no_wrap=True)
    t.add_column("Node", no_wrap=True)
    t.add_column("Account", overflow="ellipsis")
    for legs in groups:
        for leg, item in enumerate(legs):
            row: list[Text | str] = [
                _uuid(item, wide, leg, console),
                calls.text(item, "direction")[:3] if not wide else calls.text(item, "direction"),
                calls.caller(item),
                calls.callee(item),
                _state(item),
                "yes" if item.get("answered") is True else "no",
                _flags(item),
                calls.clock(seconds(item)),
            ]
            if wide:
                row.append(calls.text(item, "endpoint"))
            row += [calls.text(item, "node"), calls.account(item, wide)]
            _add_row(t, row)
    return t


def ended_table(
    items: Sequence[Item],
    console: Console,
    wide: bool = False,
    title: str | None = None,
) -> Table:
    """Channels that hung up: when, who, why and how long, newest first (as the API lists
    them). One row per channel: each leg has its own cause and its own side that hung up."""
    t = _table(title)
    t.add_column("Ended", no_wrap=True)
    t.add_column("UUID", no_wrap=True)
    t.add_column("Caller", overflow="ellipsis", max_width=None if wide else 28)
    t.add_column("Callee", overflow="ellipsis", max_width=None if wide else 28)
    t.add_column("Cause", no_wrap=True)
    t.add_column("Hung up by", no_wrap=True)
    t.add_column("Duration", justify="right", no_wrap=True)
    t.add_column("Billed", justify="right", no_wrap=True)
    t.add_column("MOS", justify="right", no_wrap=True)
    if wide:
        t.add_column("Call-ID", overflow="fold")
    t.add_column("Node", no_wrap=True)
    t.add_column("Account", overflow="ellipsis")
    for item in items:
        mos = calls.number(item, "mos")
        row: list[Text | str] = [
            ended_at(item),
            _uuid(item, wide, 0, console),
            calls.caller(item),
            calls.callee(item),
            safe.cell(
                calls.text(item, "hangup_cause"),
                style="" if calls.text(item, "hangup_cause") == "NORMAL_CLEARING" else "yellow",
            ),
            calls.who_hung_up(item),
            calls.clock(calls.number(item, "duration_seconds")),
            calls.clock(calls.number(item, "billing_seconds")),
            f"{mos:.1f}" if mos is not None else "",
        ]
        if wide:
            row.append(calls.text(item, "sip_call_id"))
        row += [calls.text(item, "node"), calls.account(item, wide)]
        _add_row(t, row)
    return t


def ended_at(item: Item) -> str:
    """The time of day the call ended, on this box's clock and time zone."""
    ts = calls.number(item, "ended_timestamp")
    if ts is None:
        return ""
    try:
        return time.strftime("%H:%M:%S", time.localtime(ts - GREGORIAN_OFFSET))
    except (OverflowError, OSError, ValueError):
        return ""


def summary(groups: Sequence[Sequence[Item]]) -> str:
    channels = sum(len(legs) for legs in groups)
    return f"{_plural(len(groups), 'call')}, {_plural(channels, 'channel')}"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"
