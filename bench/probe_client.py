"""Bench child: the blip scenario's API readers, in a process of their own (as a portal is).

While twenty nodes reconcile, the twenty stand-ins in the bench's process answer 10,000
`uuid_dump`s, and their collector's full passes take 150-280 ms there: readers sharing that
process measured the stand-ins' pauses as the daemon's latency. Here `load.probe_channels`
runs two readers until a line arrives on stdin.

    probe_client.py < {"port", "accounts", "uuids", "readers"} + "\n", later any line (stop)
    prints "ready" once started, then {"lat": [[sent_at, seconds], ...], "statuses"}
    (sent_at: time.perf_counter, CLOCK_MONOTONIC on Linux, which the bench's clock shares)
"""

from gevent import monkey

monkey.patch_all()

import json  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

import gevent  # noqa: E402
import gevent.select  # noqa: E402
import load  # noqa: E402


def main() -> int:
    job = json.loads(sys.stdin.readline())
    probing = [True]
    lat: list[tuple[float, float]] = []
    statuses: dict[int, int] = {}
    readers = [
        gevent.spawn(
            load.probe_channels,
            job["port"],
            job["accounts"],
            job["uuids"],
            k,
            probing,
            lat,
            statuses,
        )
        for k in range(job["readers"])
    ]
    print("ready", flush=True)
    gevent.select.select([sys.stdin], [], [])  # (a bare readline would block the hub)
    sys.stdin.readline()
    probing[0] = False
    gevent.joinall(readers, timeout=30)
    sys.stdout.write(json.dumps({"lat": lat, "statuses": statuses}) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
