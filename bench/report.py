"""What a run of the suite reports: target rows, Markdown sections, and the page around them.

A target is identified by (scenario, what): its text names the sizes but never a measured
value, so that the same target can be lined up across the runs of `run.py --runs N`, where it
counts as met only when it held in every run.
"""

from __future__ import annotations

import contextlib
import os
import platform
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MARK_BEGIN = "<!-- bench/run.py report: begin -->"
MARK_END = "<!-- bench/run.py report: end -->"


@dataclass
class Target:
    scenario: str
    what: str
    measured: str
    met: bool

    @property
    def key(self) -> tuple[str, str]:
        return (self.scenario, self.what)


@dataclass
class Report:
    sections: dict[str, list[str]] = field(default_factory=dict)
    targets: list[Target] = field(default_factory=list)
    profiles: dict[str, list[str]] = field(default_factory=dict)

    def add(self, key: str, *lines: str) -> None:
        self.sections.setdefault(key, []).extend(lines)

    def target(self, scenario: str, what: str, measured: str, met: bool) -> None:
        self.targets.append(Target(scenario, what, measured, bool(met)))


@dataclass
class RunResult:
    """One pass over the scenarios: its report, raw figures, and the machine's noise."""

    report: Report
    data: dict[str, Any]
    noise: dict[str, tuple[float, float, int]]
    seconds: float
    failed: list[str]
    # the machine's pace (common.machine_pace) just before each scenario's kept attempt
    pace: dict[str, float] = field(default_factory=dict)


def per_run(runs: list[RunResult], describe: Callable[[RunResult], str]) -> str:
    """Each run's description ("run N: " before each when there are several), those that
    say something, joined."""
    return "; ".join(
        (f"run {i + 1}: " if len(runs) > 1 else "") + said
        for i, run in enumerate(runs)
        if (said := describe(run))
    )


def pace_text(runs: list[RunResult]) -> str:
    """The machine's pace before each scenario of each run, or "" when none was taken."""
    paces = per_run(runs, lambda run: ", ".join(f"{k} {v:,.0f}" for k, v in run.pace.items()))
    if not paces:
        return ""
    return (
        "The machine's pace just before each scenario (a fixed Python loop's iterations per ms, "
        "the median of 50 ms slices over 0.3 s; higher is faster). This VM's host slows it for "
        "spells without steal time, which the quiet check cannot see; shown, not judged: "
        + paces
        + "."
    )


def machine() -> str:
    model = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem = ""
    with contextlib.suppress(OSError, ValueError, IndexError):
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kb / 1024 / 1024:.0f} GiB"
    return f"{os.cpu_count()}-core {model} ({platform.machine()}{mem})"


# The targets each scenario judges (issue #16's table, 17 in all). A run that measured fewer
# of them has not shown the missing ones held: a scenario that failed in every run, or stopped
# judging a target, must not leave "every target held" standing on the rest.
EXPECTED_TARGETS = {
    "ingest": 2,
    "reads": 5,
    "memory": 1,
    "actions": 1,
    "fanout": 4,
    "nodes": 3,
    "startup": 1,
}


def targets_table(runs: list[RunResult], ran: Iterable[str] = ()) -> list[str]:
    """One row per target, one column per run, and whether it held in every run. `ran`: the
    scenarios run, whose EXPECTED_TARGETS must all be there; a run in which a scenario
    failed holds nothing."""
    wanted = set(ran)  # (looked up once per scenario: an iterator would be spent at the first)
    keys: list[tuple[str, str]] = []
    by_run: list[dict[tuple[str, str], Any]] = []
    for run in runs:
        found = {}
        for t in run.report.targets:
            if t.key not in found:
                found[t.key] = t
            if t.key not in keys:
                keys.append(t.key)
        by_run.append(found)
    missing = {
        scenario: count - sum(1 for key in keys if key[0] == scenario)
        for scenario, count in EXPECTED_TARGETS.items()
        if scenario in wanted
    }
    unmeasured = [
        f"| {scenario} | {n} target(s) of this scenario never measured | "
        + " | ".join(["not measured"] * len(runs))
        + f" | {verdict(False)} |"
        for scenario, n in missing.items()
        if n > 0
    ]
    if len(runs) == 1:
        lines = ["| scenario | target | measured | |", "|---|---|---:|---|"]
        for key in keys:
            t = by_run[0][key]
            lines.append(f"| {t.scenario} | {t.what} | {t.measured} | {verdict(t.met)} |")
        return lines + unmeasured
    head = " | ".join(f"run {i + 1}" for i in range(len(runs)))
    every = [
        not unmeasured
        and not run.failed
        and all(found.get(key) is not None and found[key].met for key in keys)
        for run, found in zip(runs, by_run, strict=True)
    ]
    lines = [
        f"| scenario | target | {head} | held in every run |",
        "|---|---|" + "---:|" * len(runs) + "---|",
    ]
    for key in keys:
        cells = []
        held = True
        for found in by_run:
            t = found.get(key)
            if t is None:
                cells.append("not measured")
                held = False
            else:
                cells.append(t.measured + ("" if t.met else " **missed**"))
                held = held and t.met
        lines.append(f"| {key[0]} | {key[1]} | {' | '.join(cells)} | {verdict(held)} |")
    return [*lines, *unmeasured, "", stretch_line(every)]


def stretch_line(every: list[bool]) -> str:
    """Which runs held every target, and the longest stretch of them in a row (the issue's
    bar is three consecutive runs)."""
    held = [str(i + 1) for i, ok in enumerate(every) if ok]
    best = (0, 0)  # (length, first run)
    length = 0
    for i, ok in enumerate(every):
        length = length + 1 if ok else 0
        if length > best[0]:
            best = (length, i - length + 2)
    if not best[0]:
        return f"Every target held in none of the {len(every)} runs."
    span = f"run {best[1]}" if best[0] == 1 else f"runs {best[1]}–{best[1] + best[0] - 1}"
    return (
        f"Every target held in run(s) {', '.join(held)} of {len(every)}; the longest stretch "
        f"of consecutive runs holding every target: {best[0]} ({span})."
    )


def verdict(met: bool) -> str:
    return "met" if met else "**missed**"


def demote(lines: list[str]) -> list[str]:
    """Headings one level down (a run's sections under its own heading)."""
    return ["#" + ln if ln.startswith("###") else ln for ln in lines]


def write_benchmarks(path: Path, text: str) -> None:
    """Replace the generated part of BENCHMARKS.md (between the markers) with `text`."""
    current = path.read_text()
    if MARK_BEGIN in current and MARK_END in current:
        head, rest = current.split(MARK_BEGIN, 1)
        tail = rest.split(MARK_END, 1)[1]
        new = head + text.rstrip("\n") + tail
    else:
        new = current.rstrip("\n") + "\n\n" + text
    path.write_text(new)
