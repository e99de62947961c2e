"""Bench-only launcher: build channelsd's Daemon from a config file and serve, like
`channelsd run -c FILE`, optionally with the per-second list cache switched off.

The suite measures `python -m channelsd run` itself; this launcher exists only for the
what-if rows of BENCHMARKS.md, which show what the lists cost when every answer is built
afresh (as when the ingested events keep changing the listed accounts).

    launch_daemon.py -c FILE [--no-list-cache]
"""

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402
from typing import Any  # noqa: E402

from channelsd import listing  # noqa: E402
from channelsd.config import load  # noqa: E402
from channelsd.daemon import Daemon  # noqa: E402
from channelsd.table import Scope  # noqa: E402


def _uncached(self: Any, table: Any, scope: Any, now: float) -> bytes:
    channels = scope.ordered() if isinstance(scope, Scope) else scope
    return listing.list_json(table, channels, now)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("-c", "--config", required=True)
    ap.add_argument("--no-list-cache", action="store_true")
    args = ap.parse_args()
    cfg = load(args.config)
    logging.basicConfig(
        level=getattr(logging, cfg.log_level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    if args.no_list_cache:
        listing.ListCache.json = _uncached  # type: ignore[method-assign]
    daemon = Daemon(cfg)
    daemon.start()
    daemon.wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
