"""Bench-only launcher: build channelsd's Daemon from a config file and serve, like
`channelsd run -c FILE`, optionally with TCP_NODELAY on the HTTP listening socket.

The suite measures `python -m channelsd run` itself; this launcher exists only for the
what-if rows of BENCHMARKS.md, which show what one suggested fix (Nagle off on the API's
sockets; accepted sockets inherit the option from the listener on Linux) would change.

    launch_daemon.py -c FILE [--nodelay]
"""

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import logging  # noqa: E402
import socket  # noqa: E402
import sys  # noqa: E402

from channelsd.config import load  # noqa: E402
from channelsd.daemon import Daemon  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("-c", "--config", required=True)
    ap.add_argument("--nodelay", action="store_true")
    args = ap.parse_args()
    cfg = load(args.config)
    logging.basicConfig(
        level=getattr(logging, cfg.log_level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    daemon = Daemon(cfg)
    daemon.start()
    if args.nodelay:
        assert daemon.http is not None
        daemon.http.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    daemon.wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
