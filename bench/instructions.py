"""Instructions per ingested event: a gauge of the ingest path that the machine's noise
does not move (run by hand; needs valgrind).

On a shared VM the same build measures 12 to 20 µs of CPU an event from one minute to the
next, so a change worth 3 % cannot be seen in time. Counted by callgrind, the instructions
the daemon's process executes for the same events repeat to within 0.05 % run after run.

How: the stand-in switch (its own process, not counted) sends the burst capture repeated
`low` and then `high` times, with fresh uuids, as fast as the socket takes it, to a daemon
built in process (channelsd.daemon.Daemon, started as `channelsd run` starts it) under
`valgrind --tool=callgrind`. The daemon's count for `high` minus its count for `low`,
divided by the difference in events, leaves out start-up, imports and the first connection.
Instructions are not time (a cache miss costs more than an add), but the same code's
instructions do not change with the machine's load: the gauge for "did this change remove
work", not for events per second (bench/run.py measures those).

    python bench/instructions.py              # low 5, high 25 repetitions (~3 min)
    python bench/instructions.py --low 5 --high 45
    python bench/instructions.py --hydrate    # instructions a channel reconciled (~2 min)

`--hydrate` counts the reconcile's work instead (start-up's, and a blip's): the stand-in
holds `low` and then `high` Kazoo-style channels (answered loopback calls parked, with
account and owner variables, as the many-nodes scenario's), and the daemon starts beside it,
lists them and hydrates each with `uuid_dump`; it exits once its first reconcile is done.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SWITCH_READY = "switch ready"


def switch_main(reps: int, go: Path, hydrate: bool) -> None:
    """The stand-in: serve the capture `reps` times once `go` exists (the daemon is ready);
    or, `hydrate`, hold `reps` channels for the daemon to find at its start."""
    from gevent import monkey

    monkey.patch_all()
    import gevent

    sys.path.insert(0, str(ROOT / "bench"))
    import common

    from channelsd.standin.server import StandinSwitch

    switch = StandinSwitch(hostname="instructions")
    switch.start()
    if hydrate:
        account = common.kazoo_id("instructions-account")
        for k in range(reps // 2):
            owner = common.kazoo_id(f"{account}/{k % 20}")
            switch.originate("9003", {"ecallmgr_Account-ID": account, "ecallmgr_Owner-ID": owner})
        print(SWITCH_READY, switch.port, len(switch.channels), flush=True)
        while True:
            gevent.sleep(1)
    frames = common.CaptureReplay("json").stream(reps)
    print(SWITCH_READY, switch.port, len(frames), flush=True)
    while not go.exists():
        gevent.sleep(0.05)
    switch.send_frames(frames)
    while True:
        gevent.sleep(1)


def daemon_main(port: int, frames: int, go: Path, hydrate: bool) -> None:
    """The daemon, as `channelsd run` builds it, until it has counted every frame (or,
    `hydrate`, until its first reconcile has hydrated the `frames` channels)."""
    from gevent import monkey

    monkey.patch_all()
    import gc

    import gevent

    from channelsd.config import parse
    from channelsd.daemon import Daemon

    cfg = {
        "http": {"host": "127.0.0.1", "port": 0},
        "nodes": [{"name": "fs1", "host": "127.0.0.1", "port": port, "password": "ClueCon"}],
        "sync": {"reconcile_interval": 3600, "heartbeat_timeout": 0},
    }
    daemon = Daemon(parse(cfg, "instructions.toml"))
    gc.freeze()  # as cli.py does before start
    daemon.start()
    node = daemon.nodes["fs1"]
    while node.state != "ready":
        gevent.sleep(0.05)
    if hydrate:
        print("events", len(daemon.table.node_uuids("fs1")), flush=True)
        os._exit(0)
    counted = node._event_counts
    base = sum(counted.values())
    go.touch()
    # Polled seldom: the poll's own instructions are counted too.
    while sum(counted.values()) - base < frames - 5:
        gevent.sleep(0.05)
    print("events", sum(counted.values()) - base, flush=True)
    os._exit(0)


def count(reps: int, hydrate: bool = False) -> tuple[int, int]:
    """(events the daemon took, instructions its process executed) for `reps` repetitions
    (`hydrate`: channels hydrated, for `reps` channels)."""
    with tempfile.TemporaryDirectory() as tmp:
        go = Path(tmp) / "go"
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        switch = subprocess.Popen(
            [sys.executable, __file__, "--switch", str(reps), str(go), *_mode(hydrate)],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        try:
            line = switch.stdout.readline().split() if switch.stdout else []
            if line[:2] != SWITCH_READY.split():
                raise SystemExit(f"the stand-in did not start: {line}")
            port, frames = line[2], line[3]
            done = subprocess.run(
                [
                    "valgrind",
                    "--tool=callgrind",
                    "--callgrind-out-file=/dev/null",
                    sys.executable,
                    __file__,
                    "--daemon",
                    port,
                    frames,
                    str(go),
                    *_mode(hydrate),
                ],
                capture_output=True,
                text=True,
                env=env,
                timeout=1800,
            )
        finally:
            switch.kill()
            switch.wait()
    events = re.search(r"^events (\d+)", done.stdout, re.M)
    instr = re.search(r"Collected : (\d+)", done.stderr)
    if events is None or instr is None:
        raise SystemExit(f"no count:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return int(events.group(1)), int(instr.group(1))


def _mode(hydrate: bool) -> list[str]:
    return ["--hydrate"] if hydrate else []


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--low", type=int, help="repetitions (5), or channels (500) with --hydrate")
    ap.add_argument("--high", type=int, help="repetitions (25), or channels (2500) with --hydrate")
    ap.add_argument("--hydrate", action="store_true", help="channels reconciled, not events")
    ap.add_argument("--switch", nargs=2, help=argparse.SUPPRESS)
    ap.add_argument("--daemon", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.switch:
        switch_main(int(args.switch[0]), Path(args.switch[1]), args.hydrate)
        return
    if args.daemon:
        daemon_main(int(args.daemon[0]), int(args.daemon[1]), Path(args.daemon[2]), args.hydrate)
        return
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed: this gauge counts instructions with it")
    low = args.low or (500 if args.hydrate else 5)
    high = args.high or (2500 if args.hydrate else 25)
    if not 0 < low < high:
        raise SystemExit("--low must be at least 1 and below --high")
    started = time.monotonic()
    low_events, low_instr = count(low, args.hydrate)
    high_events, high_instr = count(high, args.hydrate)
    per_event = (high_instr - low_instr) / (high_events - low_events)
    what = (
        f"{high_events - low_events:,} channels: {high} - {low} Kazoo-style channels hydrated"
        if args.hydrate
        else f"{high_events - low_events:,} events: {high} - {low} repetitions of the burst capture"
    )
    unit = "a channel" if args.hydrate else "an event"
    print(f"{per_event:,.0f} instructions {unit} ({what}; {time.monotonic() - started:.0f} s)")


if __name__ == "__main__":
    main()
