"""Bench child: HTTP clients in a process of their own, as a portal's backend is.

The stand-in switch (and, in the loaded rows, the 5,000 events/s it replays) runs in the
bench's process; clients sharing that process and its hub wait behind it, and a row would
measure the bench instead of the daemon. `load.http_load_apart` runs `load.http_load` here.

    http_client.py < {"port", "clients", "seconds", "paths", "period", "max_per_client"}
    prints {"n", "seconds", "latencies", "errors", "statuses", "client_cpu", "body_bytes",
    "gzipped"}
"""

from gevent import monkey

monkey.patch_all()

import json  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

import load  # noqa: E402


def main() -> int:
    job = json.loads(sys.stdin.read())
    paths = job["paths"]
    res = load.http_load(
        job["port"],
        job["clients"],
        job["seconds"],
        lambda r: r.choice(paths),
        max_per_client=job.get("max_per_client", 200_000),
        period=job.get("period", 0.0),
    )
    out = {
        "n": res.n,
        "seconds": res.seconds,
        "latencies": res.latencies,
        "errors": res.errors,
        "statuses": res.statuses,
        "client_cpu": res.client_cpu,
        "body_bytes": res.body_bytes,
        "gzipped": res.gzipped,
    }
    sys.stdout.write(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
