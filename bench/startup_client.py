"""Bench child: the start-up scenario's client, in a process of its own (as a dashboard is).

It asks for the system list again 10 ms after each answer until one holds exactly the
expected channels, none stale. In the bench's process it shared one core with the 20
stand-ins that answer the daemon's `uuid_dump`s, and parsing each ~11 MB answer held them
back: the start-up figure measured the bench as much as the daemon.

    startup_client.py < {"port", "expected": [uuid, ...], "deadline_s"}
    prints "ready" once started, then {"ready_at", "first_answer_at", "complete_at",
    "polls", "answers", "bytes"} (times: time.perf_counter, CLOCK_MONOTONIC on Linux,
    which the bench's clock shares)
"""

from gevent import monkey

monkey.patch_all()

import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common as bc  # noqa: E402
import gevent  # noqa: E402
import orjson  # noqa: E402

perf = time.perf_counter


def main() -> int:
    job = json.loads(sys.stdin.readline())
    expected = set(job["expected"])
    http = bc.Http(job["port"], timeout=10)
    out = {"ready_at": perf(), "first_answer_at": None, "complete_at": None}
    print("ready", flush=True)
    polls = answers = got = 0
    deadline = perf() + job["deadline_s"]
    try:
        while perf() < deadline:
            try:
                status, body = http.request("GET", "/v2/channels")
            except (OSError, bc.HttpError):
                http.close()
                gevent.sleep(0.01)
                continue
            t = perf()
            polls += 1
            if out["first_answer_at"] is None:
                out["first_answer_at"] = t
            if status == 200:
                answers += 1
                got += len(body)
                items = orjson.loads(body)["data"]
                if (
                    len(items) == len(expected)
                    and not any(it["stale"] for it in items)
                    and {it["uuid"] for it in items} == expected
                ):
                    out["complete_at"] = t
                    break
            gevent.sleep(0.01)
    finally:
        http.close()
    out.update(polls=polls, answers=answers, bytes=got)
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
