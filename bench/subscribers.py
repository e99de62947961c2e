"""Ingest with and without live-event subscribers (issue #6): does a crowd of SSE clients slow
the table down?

Run by hand:  .venv/bin/python bench/subscribers.py [--subscribers 200] [--reps 10]
The daemon runs as `channelsd run` in its own process; the stand-in replays the burst capture
(fresh uuids per repetition) while N raw-socket clients follow /v2/channel_events and read
everything. Measured side by side in one run: events/s to the final state with 0 and N
subscribers, and how many bytes the subscribers received.
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import socket  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402
from time import perf_counter  # noqa: E402

import gevent  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import common as bc  # noqa: E402
from load import drained, subscribed  # noqa: E402

from channelsd.standin.server import StandinSwitch  # noqa: E402


class Follower:
    """One SSE client that reads the stream as fast as it comes and counts the bytes."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection((bc.LOOPBACK, port))
        ask = (
            f"GET /v2/channel_events HTTP/1.1\r\nHost: bench\r\n"
            f"X-Auth-Token: {bc.SUPER_TOKEN}\r\n\r\n"
        )
        self.sock.sendall(ask.encode())
        self.received = 0
        self.greenlet = gevent.spawn(self._read)

    def _read(self) -> None:
        while True:
            data = self.sock.recv(65536)
            if not data:
                return
            self.received += len(data)

    def close(self) -> None:
        self.greenlet.kill()
        self.sock.close()


def one_run(workdir: Path, frames: list, expected: set[str], followers: int) -> dict:
    sw = StandinSwitch(host=bc.LOOPBACK)
    sw.start()
    d = bc.DaemonProcess(workdir, f"subs{followers}", sw.port)
    crowd: list[Follower] = []
    try:
        d.wait_ready()
        bc.wait_until(lambda: subscribed(sw), 10, "the daemon's subscription")
        crowd = [Follower(d.http_port) for _ in range(followers)]
        bc.wait_until(lambda: all(f.received for f in crowd), 30, "every snapshot")
        http = bc.Http(d.http_port)
        cpu0 = d.cpu_seconds()
        sw.send_frames(frames)
        t0 = perf_counter()
        bc.wait_until(lambda: drained(sw), 600, "the stand-in to write everything")
        while {i["uuid"] for i in http.get_json("/v2/channels")["data"]} != expected:
            gevent.sleep(0.01)
        seconds = perf_counter() - t0
        return {
            "rate": len(frames) / seconds,
            "cpu": (d.cpu_seconds() - cpu0) / seconds,
            "bytes": sum(f.received for f in crowd),
        }
    finally:
        for f in crowd:
            f.close()
        d.stop()
        sw.stop()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--subscribers", type=int, default=200)
    ap.add_argument("--reps", type=int, default=10)
    args = ap.parse_args()
    replay = bc.CaptureReplay("json")
    frames = replay.stream(args.reps)
    expected = bc.final_uuids(frames[-replay.cut :])
    with tempfile.TemporaryDirectory() as tmp:
        base = one_run(Path(tmp), frames, expected, 0)
        crowd = one_run(Path(tmp), frames, expected, args.subscribers)
    print(f"input: s7_burst50, {args.reps} repetitions + cut, {len(frames):,} json events")
    print()
    print("| subscribers | events/s to final state | daemon CPU | bytes streamed | vs none |")
    print("|---:|---:|---:|---:|---:|")
    for n, r in ((0, base), (args.subscribers, crowd)):
        ratio = r["rate"] / base["rate"]
        print(f"| {n} | {r['rate']:,.0f} | {r['cpu']:.0%} | {r['bytes']:,} | {ratio:.2f}x |")


if __name__ == "__main__":
    main()
