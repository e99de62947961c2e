"""Ingest baseline: stock greenswitch InboundESL with a no-op handler, plain events.

Subscribes `event plain <names>`, prints `ready`, counts events in a handler that does nothing
else, and prints `done <count>` once `expected` events were dispatched. Started by
bench/run.py:

    greenswitch_reader.py PORT EXPECTED TIMEOUT "NAME NAME ..."
"""

from gevent import monkey

monkey.patch_all()

import sys  # noqa: E402

import gevent  # noqa: E402
import gevent.event  # noqa: E402
from greenswitch.esl import InboundESL  # noqa: E402


def main() -> int:
    port, expected = int(sys.argv[1]), int(sys.argv[2])
    timeout, names = float(sys.argv[3]), sys.argv[4]
    esl = InboundESL("127.0.0.1", port, "ClueCon", timeout=timeout)
    esl.connect()
    seen = [0]
    done = gevent.event.Event()

    def noop(event: object) -> None:
        seen[0] += 1
        if seen[0] >= expected:
            done.set()

    esl.register_handle("*", noop)
    esl.send(f"event plain {names}")
    print("ready", flush=True)
    done.wait(timeout)
    print(f"done {seen[0]}", flush=True)
    esl._run = False
    esl.sock.close()
    return 0 if seen[0] >= expected else 1


if __name__ == "__main__":
    raise SystemExit(main())
