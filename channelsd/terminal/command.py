"""`channelsd ls`: its options, where the URL and token come from, and its exit statuses.

The token never comes from the command line, where `ps` would show it to every user of the
box: it is read from $CHANNELSD_TOKEN or from a file (`--token-file`, `-` for stdin).
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import sys
import urllib.parse
from typing import Any

from channelsd.config import DEFAULT_HTTP_PORT
from channelsd.terminal import safe
from channelsd.terminal.client import (
    EXIT_API,
    EXIT_OK,
    EXIT_USAGE,
    ApiFailure,
    Client,
)

TOKEN_ENV = "CHANNELSD_TOKEN"
URL_ENV = "CHANNELSD_URL"
DEFAULT_URL = f"http://127.0.0.1:{DEFAULT_HTTP_PORT}"
# Wide enough that a piped table keeps one line per channel (a terminal gives its own width).
PIPE_WIDTH = 220
EXIT_INTERRUPTED = 130  # Ctrl-C during a one-shot listing, as shells report SIGINT

EPILOG = f"""\
token: ${TOKEN_ENV}, or --token-file FILE ('-' reads standard input); never an argument.
URL: --url, else ${URL_ENV}, else the [http] host and port of --config, else {DEFAULT_URL}.

exit statuses:
  0  done (--watch: stopped with Ctrl-C)
  1  the daemon answered with an error (4xx other than 401/403, 5xx)
  2  usage: bad options, no token, an unreadable config or token file
  3  the daemon cannot be reached (connection refused, unknown host, timeout)
  4  the token was refused (401) or may not see this (403)
"""


class UsageError(Exception):
    """A problem with how the command was called: exit status 2."""


def add_parser(sub: Any) -> None:
    """Register `ls` on the `channelsd` command's subparsers."""
    ls = sub.add_parser(
        "ls",
        help="list the live calls of the running daemon (--watch follows them)",
        description="The live calls of the running daemon, grouped by call, like "
        "`fs_cli -x 'show channels'`; from its /v2 API.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,  # `--token X` must not be taken for `--token-file X`
    )
    ls.add_argument(
        "-a",
        "--account",
        help="the account's calls (default: every account, which needs a superduper token "
        "and api.system_wide_channels_list = true)",
    )
    ls.add_argument(
        "--filter",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="keep channels whose FIELD is VALUE (FIELD!=VALUE: is not); dotted fields reach "
        "into custom_channel_vars; repeatable (all must hold)",
    )
    ls.add_argument(
        "--has-key",
        action="append",
        default=[],
        metavar="FIELD",
        help="keep channels that have FIELD",
    )
    ls.add_argument(
        "--key-missing",
        action="append",
        default=[],
        metavar="FIELD",
        help="keep channels that lack FIELD",
    )
    form = ls.add_mutually_exclusive_group()
    form.add_argument("--json", action="store_true", help="the API's items as JSON")
    form.add_argument("--csv", action="store_true", help="the API's CSV form")
    form.add_argument(
        "-w",
        "--watch",
        action="store_true",
        help="follow the live event stream and redraw in place (Ctrl-C stops)",
    )
    ls.add_argument(
        "--ended",
        action="store_true",
        help="the calls that ended in the last minutes, with cause and duration",
    )
    ls.add_argument(
        "--wide",
        action="store_true",
        help="whole uuids and account ids, endpoint or SIP Call-ID columns",
    )
    ls.add_argument("--url", help="the daemon's base URL (default: see below)")
    ls.add_argument("-c", "--config", help="a channelsd.toml to take the [http] address from")
    ls.add_argument(
        "--token-file", metavar="FILE", help=f"read the token from FILE, not ${TOKEN_ENV}"
    )
    # Refused with a reason (and without echoing it): argv is visible to every user via ps.
    ls.add_argument("--token", dest="token_in_argv", help=argparse.SUPPRESS)


def filter_params(args: argparse.Namespace) -> list[tuple[str, str]]:
    """The options' filters as the API's query parameters."""
    params: list[tuple[str, str]] = []
    for spec in args.filter:
        field, sep, value = spec.partition("=")
        negate = field.endswith("!")
        field = field[:-1] if negate else field
        if not sep or not field:
            raise UsageError(f"--filter {spec!r}: expected FIELD=VALUE or FIELD!=VALUE")
        params.append((f"filter_not_{field}" if negate else f"filter_{field}", value))
    for option, name in ((args.has_key, "has_key"), (args.key_missing, "key_missing")):
        for field in option:
            if not field:
                raise UsageError(f"--{name.replace('_', '-')}: give a field name")
            params.append((name, field))
    return params


def read_token(args: argparse.Namespace, env: dict[str, str]) -> str:
    if args.token_in_argv is not None:
        raise UsageError(
            f"a token on the command line is visible to every user (ps): set {TOKEN_ENV} "
            "or give --token-file FILE"
        )
    if args.token_file:
        where = "standard input" if args.token_file == "-" else args.token_file
        try:
            if args.token_file == "-":
                raw = sys.stdin.readline()
            else:
                with open(args.token_file, encoding="utf-8") as f:
                    raw = f.readline()
        except OSError as exc:
            raise UsageError(f"--token-file: cannot read {where}: {exc.strerror or exc}") from None
        except UnicodeDecodeError:
            raise UsageError(f"--token-file: {where} is not UTF-8 text") from None
    else:
        where = f"${TOKEN_ENV}"
        raw = env.get(TOKEN_ENV, "")
        if not raw:
            raise UsageError(
                f"no token: set {TOKEN_ENV} or give --token-file FILE "
                "(`channelsd token new` makes one)"
            )
    token = raw.strip()
    if not token:
        raise UsageError(f"the token in {where} is empty")
    # It goes into an HTTP header: printable ASCII without spaces, as `token new` makes them.
    if not all("!" <= c <= "~" for c in token):
        raise UsageError(f"the token in {where} has spaces, control or non-ASCII characters")
    return token


def base_url(args: argparse.Namespace, env: dict[str, str]) -> str:
    url = args.url or env.get(URL_ENV)
    if not url and args.config:
        from channelsd.config import ConfigError, load

        try:
            cfg = load(args.config)
        except ConfigError as exc:
            raise UsageError(f"config error: {exc}") from None
        host = cfg.http_host
        # A daemon listening on every address is reached on loopback from its own box.
        host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
        if ":" in host:
            host = f"[{host}]"
        url = f"http://{host}:{cfg.http_port}"
    url = (url or DEFAULT_URL).rstrip("/")
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise UsageError(f"--url {url!r}: expected http://HOST:PORT or https://HOST:PORT")
    return url


def routes(account: str | None) -> tuple[str, str]:
    """The list route and the event stream route of the scope."""
    if account:
        base = f"/v2/accounts/{urllib.parse.quote(account, safe='')}"
        return f"{base}/channels", f"{base}/channel_events"
    return "/v2/channels", "/v2/channel_events"


def hint(failure: ApiFailure, args: argparse.Namespace) -> str:
    """What to do about a refusal, when it is clear."""
    if failure.status == 401:
        return f" (check {TOKEN_ENV} or --token-file)"
    if failure.status == 403 and not args.account:
        return " (give --account ACCOUNT_ID to list one account)"
    return ""


def run(args: argparse.Namespace, env: dict[str, str] | None = None) -> int:
    """Carry out `channelsd ls`; the exit status."""
    env = dict(os.environ) if env is None else env
    # A name this terminal's encoding cannot show is written as an escape, not a crash.
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="backslashreplace")
    try:
        if args.watch and args.ended:
            raise UsageError("--ended lists ended calls once; --watch shows the last ones itself")
        params = filter_params(args)
        token = read_token(args, env)
        client = Client(base_url(args, env), token)
        list_path, events_path = routes(args.account)
        if args.watch:
            if not sys.stdout.isatty():
                raise UsageError("--watch needs a terminal (use --json or --csv in scripts)")
            from channelsd.terminal.watch import watch

            return watch(client, list_path, events_path, params, args.wide)
        if args.ended:
            params.append(("ended", "true"))
        if args.csv:
            body = client.raw(list_path, params, "text/csv")
            try:
                shown = safe.csv_text(body)
            except csv.Error:
                raise ApiFailure(f"{client.base} did not answer with CSV", EXIT_API) from None
            sys.stdout.write(shown)
            sys.stdout.flush()
            return EXIT_OK
        items = client.items(list_path, params)
        if args.json:
            indent = 2 if sys.stdout.isatty() else None
            sys.stdout.write(safe.json_text(items, indent) + "\n")
            sys.stdout.flush()
            return EXIT_OK
        print_table(items, args.ended, args.wide)
        return EXIT_OK
    except UsageError as exc:
        _error(str(exc))
        return EXIT_USAGE
    except ApiFailure as exc:
        _error(f"{exc}{hint(exc, args)}")
        return exc.exit_code
    except BrokenPipeError:
        # `channelsd ls | head`: the reader has what it wanted.
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (silences the flush at exit)
        return EXIT_OK
    except KeyboardInterrupt:
        return EXIT_OK if args.watch else EXIT_INTERRUPTED


def _error(message: str) -> None:
    # The message may quote the daemon (its error envelope) or the command line.
    print(f"channelsd ls: {safe.visible(message)}", file=sys.stderr)


def print_table(items: list[dict[str, Any]], ended: bool, wide: bool) -> None:
    from channelsd.terminal import calls, tables

    width = None if sys.stdout.isatty() or os.environ.get("COLUMNS") else PIPE_WIDTH
    console = safe.console(file=sys.stdout, width=width)
    if ended:
        if items:
            console.print(tables.ended_table(items, console, wide))
        console.print(safe.as_text(f"{len(items)} ended channel{'' if len(items) == 1 else 's'}"))
        return
    groups = calls.group(items)
    if groups:
        console.print(tables.live_table(groups, console, calls.Clock().seconds, wide))
    console.print(safe.as_text(tables.summary(groups)))
