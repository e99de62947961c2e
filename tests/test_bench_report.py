"""The suite's verdict (bench/report.py): "every target held in N consecutive runs" must not
stand on targets that were never measured or on a run in which a scenario failed."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

from report import EXPECTED_TARGETS, Report, RunResult, pace_text, targets_table  # noqa: E402


def _run(met: bool = True, skip: str = "", failed: tuple[str, ...] = ()) -> RunResult:
    report = Report()
    for scenario, count in EXPECTED_TARGETS.items():
        if scenario == skip:
            continue
        for i in range(count):
            report.target(scenario, f"target {i}", "1", met)
    return RunResult(report, {}, {}, 1.0, list(failed))


def _verdict(runs: list[RunResult]) -> str:
    return targets_table(runs, EXPECTED_TARGETS)[-1]


def test_every_target_measured_and_held_makes_a_streak() -> None:
    assert "longest stretch of consecutive runs holding every target: 3" in _verdict(
        [_run(), _run(), _run()]
    )


def test_a_miss_breaks_the_streak() -> None:
    verdict = _verdict([_run(), _run(met=False), _run()])
    assert "run(s) 1, 3 of 3" in verdict and ": 1 (run 1)" in verdict


def test_a_scenario_never_measured_holds_nothing() -> None:
    lines = targets_table([_run(skip="nodes")] * 3, EXPECTED_TARGETS)
    assert any("3 target(s) of this scenario never measured" in line for line in lines)
    assert lines[-1] == "Every target held in none of the 3 runs."


def test_a_run_with_a_failed_scenario_holds_nothing() -> None:
    verdict = _verdict([_run(), _run(failed=("fanout",)), _run(), _run()])
    assert "run(s) 1, 3, 4 of 4" in verdict and ": 2 (runs 3–4)" in verdict


def test_scenarios_not_run_are_not_expected() -> None:
    lines = targets_table([_run(skip="nodes")], [k for k in EXPECTED_TARGETS if k != "nodes"])
    assert not any("never measured" in line for line in lines)


def test_the_scenarios_run_may_come_as_any_iterable() -> None:
    """An iterator of the scenarios run is read once, not spent at the first scenario."""
    lines = targets_table([_run(skip="startup")] * 3, iter(EXPECTED_TARGETS))
    assert any("1 target(s) of this scenario never measured" in line for line in lines)


def test_the_rounds_spread_is_each_kinds_fastest_round_over_its_slowest() -> None:
    import common

    text = common.steadiness_text({"none": [100.0, 50.0, 80.0], "crowd": [90.0, 90.0], "x": []})
    assert text.endswith("none 2.00×, crowd 1.00×.")
    # one round is no spread (not a steady 1.00×); a failed round's zero is left out
    assert common.steadiness_text({"a": [5.0], "b": [0.0, 4.0, 2.0]}).endswith(
        "a one round, b 2.00×."
    )
    assert common.steadiness_text({"a": [], "b": [0.0]}) == ""


def test_interleaved_rounds_are_reported_with_both_estimators_and_their_spread() -> None:
    import common

    base = [{"rate": 100_000.0}, {"rate": 80_000.0}]
    other = [{"rate": 90_000.0}, {"rate": 88_000.0}]
    assert common.rounds_text("one node", base, "20 nodes", other) == (
        "All rounds, events/s: one node 100,000, 80,000; 20 nodes 90,000, 88,000. "
        "Each round over its interleaved neighbour (shown, not judged): 0.90×, 1.10×; "
        "median 1.00×. Fastest round over slowest, each kind (the same work repeated: how "
        "much it varied): one node 1.25×, 20 nodes 1.02×."
    )


def test_the_pace_line_names_each_runs_scenarios_and_is_left_out_when_none_was_taken() -> None:
    one, two = _run(), _run()
    one.pace = {"ingest": 7641.2, "actions": 4433.0}
    two.pace = {"ingest": 4190.6}
    text = pace_text([one, two])
    assert text.endswith("run 1: ingest 7,641, actions 4,433; run 2: ingest 4,191.")
    assert pace_text([one]).endswith(": ingest 7,641, actions 4,433.")
    assert pace_text([_run(), _run()]) == ""


def test_the_machines_pace_is_a_loops_rate_per_ms() -> None:
    import common

    pace = common.machine_pace(seconds=0.1, slice_s=0.02)
    # a Python loop of a few calls: thousands an ms on any machine this runs on, not millions
    assert 100 < pace < 1_000_000
