"""The `channelsd` command: run, demo, check, token new."""

from __future__ import annotations

import argparse
import functools
import gc
import logging
import sys
from collections.abc import Sequence

from channelsd import __version__, logs
from channelsd.config import DEFAULT_HTTP_PORT

DEFAULT_CONFIG = "/etc/channelsd/channelsd.toml"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="channelsd", description=__doc__)
    p.add_argument("--version", action="version", version=f"channelsd {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the daemon against the FreeSWITCH nodes in the config")
    run.add_argument("-c", "--config", default=DEFAULT_CONFIG, help="TOML config file")

    check = sub.add_parser("check", help="check a config file and exit")
    check.add_argument("-c", "--config", default=DEFAULT_CONFIG, help="TOML config file")

    demo = sub.add_parser("demo", help="run against a built-in stand-in FreeSWITCH with demo calls")
    demo.add_argument("--host", default="127.0.0.1", help="HTTP listen address")
    demo.add_argument(
        "--port", type=int, default=DEFAULT_HTTP_PORT, help="HTTP port (0: any free port)"
    )
    demo.add_argument("--calls", type=int, default=12, help="calls to keep up on average")

    tok = sub.add_parser("token", help="API tokens")
    toksub = tok.add_subparsers(dest="token_command", required=True)
    new = toksub.add_parser("new", help="print a new random token and the TOML lines to paste")
    new.add_argument("--account", required=True, help="account id the token belongs to")
    new.add_argument("--role", required=True, choices=("superduper", "admin", "user"))
    new.add_argument("--owner", help="owner (user) id; required for role user")
    new.add_argument("--descendant", action="append", default=[], help="extra account it may see")
    new.add_argument("--name", default="", help="a label for the operator")

    from channelsd.terminal.command import add_parser as add_ls

    add_ls(sub)  # `channelsd ls`: a client of the running daemon (channelsd/terminal/)
    return p


_TOKEN_OPTIONS = {"account_id": "--account", "owner_id": "--owner", "descendants": "--descendant"}


def _token_new(args: argparse.Namespace) -> int:
    from channelsd.config import token_problem
    from channelsd.tokens import new_token, toml_lines

    if args.role == "user" and not args.owner:
        print("channelsd: a 'user' token needs --owner", file=sys.stderr)
        return 2
    token, sha = new_token()
    entry = {"sha256": sha, "account_id": args.account, "role": args.role}
    if args.owner:
        entry["owner_id"] = args.owner
    if args.descendant:
        entry["descendants"] = args.descendant
    problem = token_problem(entry)  # the config file's own rule for these values
    if problem:
        key = problem.split(":", 1)[0].removeprefix("tokens[0].").split("[", 1)[0]
        option = _TOKEN_OPTIONS.get(key, key)
        print(f"channelsd: {option}: {problem.split(': ', 1)[-1]}", file=sys.stderr)
        return 2
    print(f"token (shown once, store it now): {token}")
    print()
    print("# paste into channelsd.toml:")
    print(toml_lines(sha, args.account, args.role, args.owner, args.descendant, args.name), end="")
    return 0


def _load(path: str):  # -> (Config, warnings), or exit with the one-line error
    """The one validation path of `check` and `run`: the file, then what serving needs."""
    from channelsd import eventpick, fields, sendmany
    from channelsd.config import ConfigError, load, service_warnings

    try:
        cfg = load(path)
        warnings = service_warnings(cfg)
    except ConfigError as exc:
        print(f"channelsd: config error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    missing = [
        w
        for w in (eventpick.install_warning(), fields.install_warning(), sendmany.install_warning())
        if w
    ]
    return cfg, [*warnings, *missing]


def _patch_all() -> None:
    """gevent's monkey.patch_all, with the installed packages' entry points read once.

    patch_all announces each module it patches to the plugins registered as entry points, and
    looks them up afresh for each announcement: 25 scans of every installed distribution's
    metadata, 0.1-0.15 s of each start (BENCHMARKS.md, issue #16). The plugins cannot change
    within the call, so every one is still loaded and called as gevent intends."""
    from importlib import metadata

    from gevent import monkey

    scan = metadata.entry_points
    metadata.entry_points = functools.cache(scan)
    try:
        monkey.patch_all()
    finally:
        metadata.entry_points = scan


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "ls":  # a plain client: no gevent
        from channelsd.terminal.command import run as run_ls

        return run_ls(args)
    if args.command == "token":
        return _token_new(args)
    if args.command == "check":
        cfg, warnings = _load(args.config)
        for warning in warnings:
            print(f"channelsd: warning: {warning}", file=sys.stderr)
        print(f"{args.config}: ok ({len(cfg.nodes)} nodes, {len(cfg.tokens)} tokens)")
        return 0

    _patch_all()

    import gevent

    logs.log_greenlet_errors(gevent.get_hub())

    if args.command == "run":
        cfg, warnings = _load(args.config)
        logs.setup(cfg.log_level, cfg.log_format)
        for warning in warnings:
            logging.getLogger("channelsd").warning("%s", warning)
        from channelsd.daemon import Daemon

        daemon = Daemon(cfg)
        # What exists by now (modules, the Flask app, the schemas: ~45,000 objects the
        # collector tracks) lives as long as the process. Frozen, the interpreter's full
        # collections no longer walk it each time: those walks took 30-80 ms with 10,000
        # channels, a stall of every request in flight (the blip benchmark's API p99).
        gc.freeze()
        try:
            daemon.start()
        except OSError as exc:
            print(
                f"channelsd: cannot listen on {cfg.http_host}:{cfg.http_port}: {exc}",
                file=sys.stderr,
            )
            return 1
        daemon.wait()
        return 0

    logs.setup("info")
    from channelsd.demo import run_demo

    return run_demo(args.host, args.port, args.calls)


if __name__ == "__main__":
    raise SystemExit(main())
