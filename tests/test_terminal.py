"""`channelsd ls`, run as an operator runs it: a real process talking HTTP to a real daemon fed
by the stand-in switch over ESL. `--watch` runs in a pseudo-terminal, read through a terminal
emulator (pyte), so the test sees the screen the operator sees.
"""

import contextlib
import csv
import fcntl
import io
import json
import os
import pty
import re
import select
import signal
import socket
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gevent
import orjson
import pyte
from gevent.server import StreamServer
from hypothesis import given, settings
from hypothesis import strategies as st
from wcwidth import wcwidth

from channelsd.channel import GREGORIAN_OFFSET
from channelsd.standin.replay import load_frames
from channelsd.terminal import calls
from channelsd.terminal.sse import messages

from conftest import CAPTURES, Harness, start_demo, token, wait_until

ROOT = Path(__file__).resolve().parent.parent
ACME = {"account_id": "acc1", "domain_name": "acc1.example"}
ALICE = {**ACME, "owner_id": "user1"}
OTHER = {"account_id": "acc2", "domain_name": "acc2.example"}


def clean_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("CHANNELSD_") and k not in ("COLUMNS", "LINES")
    }
    env.update(extra)
    return env


def ls(
    url: str | None,
    *args: str,
    tok: str | None = "super",
    stdin: str | None = None,
) -> subprocess.CompletedProcess:
    """`channelsd ls ARGS` with the token in $CHANNELSD_TOKEN and the URL in $CHANNELSD_URL."""
    extra = {}
    if url is not None:
        extra["CHANNELSD_URL"] = url
    if tok is not None:
        extra["CHANNELSD_TOKEN"] = token(tok) if not tok.startswith("raw:") else tok[4:]
    return subprocess.run(
        [sys.executable, "-m", "channelsd", "ls", *args],
        cwd=ROOT,
        env=clean_env(**extra),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, (result.returncode, result.stderr)
    assert result.stderr == ""
    return result.stdout


def call(
    switch: Any,
    who: dict[str, str],
    caller: tuple[str, str],
    callee: tuple[str, str],
    answer: bool = True,
) -> tuple[str, str]:
    return switch.bridged_call(
        variables_a=who, variables_b=who, caller=caller, callee=callee, answer=answer
    )


def line_of(text: str, uuid: str) -> str:
    found = [line for line in text.splitlines() if uuid in line]
    assert len(found) == 1, (uuid, text)
    return found[0]


def without(items: list[dict[str, Any]], *keys: str) -> list[dict[str, Any]]:
    return [{k: v for k, v in i.items() if k not in keys} for i in items]


# -- one-shot listings ------------------------------------------------------------------------


def test_the_table_shows_the_calls_the_api_lists_grouped_by_call(
    switch: Any, make_daemon: Any
) -> None:
    h = make_daemon([switch])
    a1, b1 = call(switch, ALICE, ("Alice Archer", "1001"), ("Bob Baker", "1002"))
    a2, b2 = call(switch, ACME, ("Carol Cruz", "1003"), ("+15550001111", "+15550001111"))
    a3, b3 = call(switch, ACME, ("Dan Dorsey", "1004"), ("Eve Ellis", "1005"), answer=False)
    o1, o2 = call(switch, OTHER, ("Frank Fox", "2001"), ("Grace Gill", "2002"))
    switch.hold(a1)
    switch.model.record(a2, "start", "/tmp/carol.wav")
    every = (a1, b1, a2, b2, a3, b3, o1, o2)
    wait_until(
        lambda: (
            h.table.get(a2) is not None
            and all(h.table.get(u) for u in every)
            and h.api.data(f"/v2/accounts/acc1/channels/{a2}")["is_recording"]
            and h.api.data(f"/v2/accounts/acc1/channels/{a1}")["is_onhold"]
        ),
        what="the calls in the table",
    )

    # --json: the API's items, for the account only.
    listed = json.loads(ok(ls(h.api.base, "--json", "--account", "acc1")))
    api = h.api.data("/v2/accounts/acc1/channels")
    assert without(listed, "elapsed_s") == without(api, "elapsed_s")
    assert {i["uuid"] for i in listed} == {a1, b1, a2, b2, a3, b3}

    # The table: one row per channel, the second leg right under the first, marked.
    table = ok(ls(h.api.base, "--account", "acc1", "--wide"))
    lines = table.splitlines()
    for first, second in ((a1, b1), (a2, b2), (a3, b3)):
        i = lines.index(line_of(table, first))
        assert lines[i + 1] == line_of(table, second)
        assert lines[i + 1].lstrip().startswith(f"↳ {second}")
        assert not lines[i].lstrip().startswith("↳")
    assert o1 not in table and "Frank Fox" not in table
    alice = line_of(table, a1)
    assert "Alice Archer (1001)" in alice and "Bob Baker (1002)" in alice
    assert " hold " in alice and " rec " not in alice
    carol = line_of(table, a2)
    assert " rec " in carol and " hold " not in carol and "+15550001111" in carol
    for uuid in (a1, b1, a2, b2):
        assert "ACTIVE" in line_of(table, uuid) or "HELD" in line_of(table, uuid)
        assert re.search(r"\byes\b", line_of(table, uuid))
    assert "RINGING" in line_of(table, b3) and re.search(r"\bno\b", line_of(table, b3))
    assert table.splitlines()[-1] == "3 calls, 6 channels"

    # Without --account a superduper token sees every account; short uuids by default.
    everything = ok(ls(h.api.base))
    assert everything.splitlines()[-1] == "4 calls, 8 channels"
    assert line_of(everything, o1[:8]).split()[0] == o1[:8]
    assert "acc2.example" in line_of(everything, o1[:8])


def test_filters_are_the_apis(switch: Any, make_daemon: Any) -> None:
    h = make_daemon([switch])
    call(switch, ALICE, ("Alice Archer", "1001"), ("Bob Baker", "1002"))
    call(switch, ACME, ("Carol Cruz", "1003"), ("Dan Dorsey", "1004"), answer=False)
    call(switch, OTHER, ("Eve Ellis", "2001"), ("Frank Fox", "2002"))
    wait_until(lambda: len(h.table.all()) == 6, what="the calls in the table")
    cases = [
        (["--filter", "answered=true"], "filter_answered=true"),
        (["--filter", "answered!=true"], "filter_not_answered=true"),
        (["--has-key", "owner_id"], "has_key=owner_id"),
        (["--key-missing", "owner_id"], "key_missing=owner_id"),
        (
            ["--filter", "caller_id_number=1003", "--filter", "direction=inbound"],
            "filter_caller_id_number=1003&filter_direction=inbound",
        ),
        (["--filter", "custom_channel_vars.nothing=x"], "filter_custom_channel_vars.nothing=x"),
        (["--account", "acc1", "--filter", "answered=false"], None),
    ]
    for args, query in cases:
        path = (
            "/v2/accounts/acc1/channels?filter_answered=false"
            if query is None
            else (f"/v2/channels?{query}")
        )
        want = sorted(i["uuid"] for i in h.api.data(path))
        got = sorted(i["uuid"] for i in json.loads(ok(ls(h.api.base, "--json", *args))))
        assert got == want, args
    assert want  # the last case is not vacuous
    shown = ok(ls(h.api.base, "--filter", "answered=false"))
    assert "Carol Cruz (1003)" in shown and "Alice" not in shown and "Eve" not in shown


def test_csv_is_the_apis_csv(switch: Any, make_daemon: Any) -> None:
    h = make_daemon([switch])
    call(switch, ACME, ("=cmd|' /C calc'!A0", "1001"), ("Bob Baker", "1002"))
    wait_until(lambda: len(h.table.all()) == 2, what="the call in the table")

    def rows(text: str) -> list[dict[str, str]]:
        return without(list(csv.DictReader(io.StringIO(text))), "elapsed_s")

    got = ok(ls(h.api.base, "--csv", "--account", "acc1"))
    want = h.api.get("/v2/accounts/acc1/channels", headers={"Accept": "text/csv"}).text
    assert rows(got) == rows(want) and len(rows(got)) == 2
    assert got.splitlines()[0] == want.splitlines()[0]  # the same columns, in order
    assert "'=cmd" in got  # the API's guard against spreadsheet formulas is kept


def test_ended_calls_with_cause_and_duration(switch: Any, make_daemon: Any) -> None:
    h = make_daemon([switch])
    a, b = call(switch, ACME, ("Alice Archer", "1001"), ("Bob Baker", "1002"))
    keep, _ = call(switch, ACME, ("Carol Cruz", "1003"), ("Dan Dorsey", "1004"))
    wait_until(lambda: len(h.table.all()) == 4, what="the calls in the table")
    gevent.sleep(1.1)  # a duration of at least a second
    switch.hangup(a, "USER_BUSY")
    ended = wait_until(
        lambda: (
            len(h.api.data("/v2/accounts/acc1/channels?ended=true")) == 2
            and h.api.data("/v2/accounts/acc1/channels?ended=true")
        ),
        what="the ended call",
    )
    assert ok(ls(h.api.base, "--ended", "--json", "--account", "acc1")) == (
        json.dumps(ended, ensure_ascii=False) + "\n"
    )
    table = ok(ls(h.api.base, "--ended", "--account", "acc1"))
    for item in ended:
        row = line_of(table, item["uuid"][:8])
        assert item["hangup_cause"] in row
        assert "Alice Archer (1001)" in row and "Bob Baker (1002)" in row
        assert f" {calls.clock(item['duration_seconds'])} " in row
        assert item["duration_seconds"] >= 1
        at = time.localtime(item["ended_timestamp"] - GREGORIAN_OFFSET)
        assert row.lstrip().startswith(time.strftime("%H:%M:%S", at))
    assert "USER_BUSY" in line_of(table, a[:8])
    assert keep[:8] not in table  # still up
    assert table.splitlines()[-1] == "2 ended channels"


def test_ended_sip_call_says_who_hung_up_and_its_call_id(switch: Any, make_daemon: Any) -> None:
    """The real SIP call of the s8 capture: its disposition, MOS and Call-ID reach the table."""
    h = make_daemon([switch])
    frames = [
        f for f in load_frames(CAPTURES / "json" / "s8_sip_call.events.raw.gz") if f.event_name
    ]
    switch.send_frames(frames)
    ended = wait_until(
        lambda: h.api.data("/v2/accounts/acc1/channels?ended=true", "admin1"), what="ended"
    )
    item = ended[0]
    assert item["hangup_disposition"] in ("recv_bye", "send_bye")
    row = line_of(
        ok(ls(h.api.base, "--ended", "--wide", "--account", "acc1", tok="admin1")), item["uuid"]
    )
    who = {"recv_bye": "far end", "send_bye": "switch"}[item["hangup_disposition"]]
    assert f" {who} " in row
    assert item["sip_call_id"] in row
    assert f"{item['mos']:.1f}" in row
    assert item["hangup_cause"] in row


def test_who_hung_up_reads_after_its_heading_for_every_disposition(
    switch: Any, make_daemon: Any
) -> None:
    h = make_daemon([switch])
    want = {
        "send_bye": "switch",
        "recv_bye": "far end",
        "send_cancel": "switch (cancel)",
        "recv_cancel": "far end (cancel)",
        "send_refuse": "switch (refused)",
        "recv_refuse": "far end (refused)",
        "something_new": "something_new",  # one the table does not know: as the switch says
    }
    ended = {}
    for n, disposition in enumerate(want):
        a, _ = call(switch, ACME, (f"Caller {n}", f"10{n:02d}"), ("Bob Baker", "1002"))
        wait_until(lambda a=a: h.table.get(a), what="the call in the table")
        switch.set_variable(a, "sip_hangup_disposition", disposition)
        switch.hangup(a)
        ended[disposition] = a
    wait_until(
        lambda: len(h.api.data("/v2/channels?ended=true")) == 2 * len(want), what="ended calls"
    )
    table = ok(ls(h.api.base, "--ended", "--wide"))
    header = table.splitlines()[0]
    column = header.index("Hung up by")
    for disposition, uuid in ended.items():
        row = line_of(table, uuid)
        cell = row[column:].split("  ")[0]
        assert cell == want[disposition], (disposition, row)


# -- where the token and the URL come from, and the errors ----------------------------------


def test_token_from_a_file_or_stdin_never_argv(switch: Any, make_daemon: Any, tmp_path) -> None:
    h = make_daemon([switch])
    call(switch, ACME, ("Alice Archer", "1001"), ("Bob Baker", "1002"))
    wait_until(lambda: len(h.table.all()) == 2, what="the call in the table")
    tok_file = tmp_path / "token"
    tok_file.write_text(token("admin1") + "\n")
    # The file wins over the environment (here a wrong token).
    out = ok(ls(h.api.base, "--account", "acc1", "--token-file", str(tok_file), tok="raw:nope"))
    assert "Alice Archer (1001)" in out
    out = ok(
        ls(
            h.api.base,
            "--account",
            "acc1",
            "--token-file",
            "-",
            tok=None,
            stdin=token("admin1") + "\n",
        )
    )
    assert "Alice Archer (1001)" in out
    # There is no option that takes the token itself.
    refused = ls(h.api.base, "--token", token("admin1"), tok=None)
    assert refused.returncode == 2 and "visible to every user" in refused.stderr
    assert token("admin1") not in refused.stderr
    (tmp_path / "spaced").write_text("tok en\n")
    for args, words in (
        (["--token-file", str(tmp_path / "missing")], "cannot read"),
        (["--token-file", str(tmp_path / "spaced")], "spaces"),
        ([], "no token"),
    ):
        result = ls(h.api.base, *args, tok=None)
        assert result.returncode == 2, (args, result.stderr)
        assert words in result.stderr and result.stderr.count("\n") == 1
        assert result.stdout == ""


def test_url_from_the_config(switch: Any, make_daemon: Any, tmp_path) -> None:
    h = make_daemon([switch])
    call(switch, ACME, ("Alice Archer", "1001"), ("Bob Baker", "1002"))
    wait_until(lambda: len(h.table.all()) == 2, what="the call in the table")
    port = h.daemon.http_address[1]
    conf = tmp_path / "channelsd.toml"
    # A daemon listening on every address is reached on loopback.
    conf.write_text(f'[http]\nhost = "0.0.0.0"\nport = {port}\n')
    assert "Alice Archer (1001)" in ok(ls(None, "-c", str(conf)))
    conf.write_text("[http]\nport = 'x'\n")
    broken = ls(None, "-c", str(conf))
    assert broken.returncode == 2 and "config error" in broken.stderr
    assert broken.stderr.count("\n") == 1


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_errors_are_one_line_with_their_exit_status(switch: Any, make_daemon: Any) -> None:
    h = make_daemon([switch])
    base = h.api.base
    cases = [
        # (url, args, token, exit status, words in the message)
        (base, [], "raw:not-a-token", 4, ["401", "CHANNELSD_TOKEN"]),
        (base, [], "admin1", 4, ["403", "superduper", "--account"]),
        (base, ["--account", "acc2"], "admin1", 4, ["403", "acc2"]),
        (base, ["--watch"], "super", 2, ["terminal"]),
        (base, ["--ended", "--watch"], "super", 2, ["--ended"]),
        (base, ["--filter", "answered"], "super", 2, ["FIELD=VALUE"]),
        (base + "/nothing", [], "super", 1, ["404"]),
        ("ftp://127.0.0.1", [], "super", 2, ["http://"]),
        (f"http://127.0.0.1:{_closed_port()}", [], "super", 3, ["cannot reach", "refused"]),
        (f"http://127.0.0.1:{_closed_port()}", ["--ended", "--csv"], "super", 3, ["refused"]),
    ]
    for url, args, tok, status, words in cases:
        result = ls(url, *args, tok=tok)
        assert result.returncode == status, (args, tok, result.stderr)
        assert result.stdout == ""
        assert result.stderr.startswith("channelsd ls: ") and result.stderr.count("\n") == 1
        for word in words:
            assert word in result.stderr, (word, result.stderr)
        assert "Traceback" not in result.stderr


# -- --watch in a pseudo-terminal -------------------------------------------------------------


def _row_text(row: Any, columns: int) -> str:
    """A pyte screen row as pyte's `display` reads it (a wide character's right half is not
    a character of its own), with a lone empty cell read as a blank."""
    out = []
    wide = False
    for x in range(columns):
        if wide:
            wide = False
            continue
        data = row[x].data
        if not data:
            out.append(" ")
            continue
        out.append(data)
        wide = wcwidth(data[0]) == 2
    return "".join(out)


class Terminal:
    """A process on a pseudo-terminal, and the screen a terminal would show for its output."""

    def __init__(self, args: list[str], env: dict[str, str], rows: int = 45, cols: int = 170):
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "channelsd", "ls", *args],
            cwd=ROOT,
            env={**env, "TERM": "xterm-256color"},
            stdin=slave,
            stdout=slave,
            stderr=subprocess.PIPE,
            text=True,
        )
        os.close(slave)
        self.master = master
        self.screen = pyte.Screen(cols, rows)
        self.stream = pyte.ByteStream(self.screen)

    def pump(self) -> None:
        while select.select([self.master], [], [], 0)[0]:
            try:
                data = os.read(self.master, 65536)
            except OSError:  # the process ended and closed its side
                return
            if not data:
                return
            self.stream.feed(data)

    def text(self) -> str:
        """The screen's text. Read cell by cell, not through pyte's `display`: pyte leaves the
        right half of a wide character as an empty cell when a narrow one overwrites its left
        half (rich redraws the live table in place), and `display` then fails with an
        IndexError, where a real terminal shows a blank."""
        self.pump()
        screen = self.screen
        return "\n".join(
            _row_text(screen.buffer[y], screen.columns).rstrip() for y in range(screen.lines)
        )

    def live(self) -> str:
        """The live calls part of the screen (above "Recently ended")."""
        return self.text().partition("Recently ended")[0]

    def ended(self) -> str:
        return self.text().partition("Recently ended")[2]

    def wait(self, predicate: Callable[[], Any], what: str, timeout: float = 20.0) -> None:
        try:
            wait_until(predicate, timeout, what)
        except AssertionError:
            raise AssertionError(f"{what}; the screen:\n{self.text()}") from None

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
        try:
            status = self.proc.wait(timeout=15)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            self.pump()
            os.close(self.master)
        return status


class Relay:
    """A TCP relay in front of the daemon that the test can cut and restore on the same port,
    noting the requests that go through (to see the Last-Event-ID of a reconnection)."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = 0
        self.server: StreamServer | None = None
        self.sockets: list[socket.socket] = []
        self.requests: list[bytes] = []

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.server = StreamServer(("127.0.0.1", self.port), self._relay)
        self.server.start()
        self.port = self.server.server_port

    def cut(self) -> None:
        assert self.server is not None
        self.server.close()
        for sock in self.sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self.sockets.clear()

    def _relay(self, client: socket.socket, _address: Any) -> None:
        upstream = socket.create_connection(self.target)
        self.sockets += [client, upstream]

        def pump(src: socket.socket, dst: socket.socket, note: bool) -> None:
            with contextlib.suppress(OSError):
                while data := src.recv(65536):
                    if note:
                        self.requests.append(data)
                    dst.sendall(data)
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

        back = gevent.spawn(pump, upstream, client, False)
        pump(client, upstream, True)
        back.join()
        upstream.close()


def stream_requests(relay: Relay) -> list[str]:
    return [r.decode("latin-1") for r in relay.requests if b"/channel_events" in r]


def test_watch_redraws_as_calls_come_and_go_and_catches_up_after_a_drop(
    switch: Any, make_daemon: Any
) -> None:
    h: Harness = make_daemon([switch])
    a1, b1 = call(switch, ALICE, ("Alice Archer", "1001"), ("Bob Baker", "1002"))
    gone, _ = call(switch, ACME, ("Old Call", "1009"), ("Someone", "1010"))
    o1, _ = call(switch, OTHER, ("Frank Fox", "2001"), ("Grace Gill", "2002"))
    wait_until(lambda: len(h.table.all()) == 6, what="the calls in the table")
    switch.hangup(gone, "CALL_REJECTED")  # ended before the watch: listed from ?ended=true
    wait_until(lambda: h.api.data("/v2/accounts/acc1/channels?ended=true"), what="ended")
    relay = Relay(h.daemon.http_address)
    relay.start()
    term = Terminal(
        ["--watch", "--account", "acc1"],
        clean_env(CHANNELSD_URL=relay.base, CHANNELSD_TOKEN=token("admin1")),
    )
    try:
        term.wait(
            lambda: "Alice Archer (1001)" in term.live() and " live " in term.text(),
            "the call on the screen",
        )
        assert a1[:8] in term.live() and b1[:8] in term.live()
        assert "Frank Fox" not in term.text()  # another account
        assert "Old Call (1009)" in term.ended() and "CALL_REJECTED" in term.ended()
        assert "1 call, 2 channels" in term.text()

        # A new call appears, its hold shows, and it goes when it hangs up.
        a2, b2 = call(switch, ACME, ("Carol Cruz", "1003"), ("Dan Dorsey", "1004"))
        term.wait(  # both legs: the screen may be drawn between the two legs' events
            lambda: "Carol Cruz (1003)" in term.live() and f"↳ {b2[:8]}" in term.live(),
            "the new call",
        )
        lines = term.live().splitlines()
        i = next(n for n, line in enumerate(lines) if a2[:8] in line)
        assert f"↳ {b2[:8]}" in lines[i + 1]
        switch.hold(a2)
        term.wait(lambda: " hold " in line_of(term.live(), a2[:8]), "the hold badge")
        switch.model.record(a1, "start", "/tmp/alice.wav")
        term.wait(lambda: " rec " in line_of(term.live(), a1[:8]), "the recording badge")
        switch.hangup(a2, "USER_BUSY")
        term.wait(lambda: "Carol Cruz" not in term.live(), "the call gone from the live part")
        term.wait(lambda: "USER_BUSY" in line_of(term.ended(), a2[:8]), "it among ended calls")
        assert "1 call, 2 channels" in term.text()

        # The daemon out of reach: the screen says so; meanwhile a call ends, another starts.
        streams_before = len(stream_requests(relay))
        relay.cut()
        term.wait(lambda: "reconnecting" in term.text(), "the reconnecting status")
        switch.hangup(a1)
        a3, _ = call(switch, ACME, ("Eve Ellis", "1005"), ("Frank Fox", "1006"))
        wait_until(lambda: h.table.get(a3) and not h.table.get(a1), what="the table moved on")
        relay.start()
        term.wait(
            lambda: "Eve Ellis (1005)" in term.live() and "Alice" not in term.live(),
            "caught up after the drop",
        )
        term.wait(lambda: " live " in term.text(), "live again")
        resumed = stream_requests(relay)[streams_before:]
        assert resumed and re.search(r"(?im)^last-event-id: [0-9a-f]+-\d+\r$", resumed[0]), resumed
        assert o1[:8] not in term.text()
    finally:
        status = term.stop()
    assert status == 0, term.proc.stderr.read()


def test_watch_stops_at_once_on_a_refused_token(switch: Any, make_daemon: Any) -> None:
    h = make_daemon([switch])
    term = Terminal(["--watch"], clean_env(CHANNELSD_URL=h.api.base, CHANNELSD_TOKEN="nope"))
    status = term.proc.wait(timeout=30)
    error = term.proc.stderr.read()
    os.close(term.master)
    assert status == 4
    assert error.startswith("channelsd ls: 401") and error.count("\n") == 1


def test_the_demo_listed_and_watched() -> None:
    proc, text = start_demo(calls=6)
    try:
        base = re.search(r"(http://127\.0\.0\.1:\d+)/v2", text).group(1)
        super_token = re.search(r"superduper .*:\s+(\S+)", text).group(1)
        env = clean_env(CHANNELSD_URL=base, CHANNELSD_TOKEN=super_token)
        result = subprocess.run(
            [sys.executable, "-m", "channelsd", "ls", "--json"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        items = json.loads(ok(result))
        assert len(items) >= 6 and {i["node"] for i in items} == {"demo-fs1"}
        table = ok(
            subprocess.run(
                [sys.executable, "-m", "channelsd", "ls"],
                cwd=ROOT,
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
            )
        )
        assert re.search(r"^\d+ calls?, \d+ channels?$", table.splitlines()[-1])
        assert "demo-fs1" in table and ".demo.example" in table
        term = Terminal(["--watch"], env)
        try:
            term.wait(
                lambda: "demo-fs1" in term.live() and " live " in term.text(), "the demo's calls"
            )
        finally:
            assert term.stop() == 0
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise


def test_the_same_uuid_on_two_nodes_is_two_channels(make_switch: Any, make_daemon: Any) -> None:
    """A uuid is unique on its switch only (an originate may choose it): channels are named by
    node and uuid in the table, its grouping and the watch's state."""
    s1, s2 = make_switch(), make_switch()
    h = make_daemon([s1, s2])
    same, b1 = call(s1, ACME, ("On Node One", "1001"), ("Bob Baker", "1002"))
    s2.originate(dest="9003", variables=ACME, uuid=same)
    wait_until(lambda: len(h.api.data("/v2/channels")) == 4, what="4 channels in the API")

    table = ok(ls(h.api.base, "--wide"))
    assert table.splitlines()[-1] == "3 calls, 4 channels"
    lines = table.splitlines()
    (one,) = [n for n, line in enumerate(lines) if same in line and " fs1 " in line]
    (two,) = [n for n, line in enumerate(lines) if same in line and " fs2 " in line]
    assert "On Node One" in lines[one] and "On Node One" not in lines[two]
    # Node 1's call has its two legs together; node 2's channel of that uuid is not in it.
    assert lines[one + 1].lstrip().startswith(f"↳ {b1}") and " fs1 " in lines[one + 1]
    assert not lines[two + 1].lstrip().startswith(f"↳ {b1}")
    assert len(json.loads(ok(ls(h.api.base, "--json")))) == 4

    term = Terminal(
        ["--watch", "--wide"], clean_env(CHANNELSD_URL=h.api.base, CHANNELSD_TOKEN=token("super"))
    )
    try:
        term.wait(lambda: term.live().count(same) == 2, "both channels on the screen")
        assert "3 calls, 4 channels" in term.text()
        s1.hangup(same)
        term.wait(lambda: "2 calls, 2 channels" in term.text(), "node 1's call gone")
        live = term.live()
        assert " fs2 " in line_of(live, same) and "On Node One" not in live
        term.wait(lambda: same in term.ended(), "node 1's channel among ended calls")
        assert " fs1 " in line_of(term.ended(), same)
    finally:
        assert term.stop() == 0


# -- the pieces, on any input -----------------------------------------------------------------

_field = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n\0"), max_size=20
)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["snapshot", "create", "update", "destroy"]),
            st.lists(_field, min_size=1, max_size=3),
            st.one_of(st.none(), st.from_regex(r"\A[0-9]{1,6}\Z")),
            st.booleans(),
        ),
        max_size=8,
    ),
    st.sampled_from(["\n", "\r\n"]),
)
def test_sse_messages_read_back(sent, newline) -> None:
    """Frames as the format writes them (comments, multi-line data, CRLF line ends) read back
    to the same messages; the id is the last one set."""
    wire = ""
    want = []
    last = None
    for event, data, ident, comment in sent:
        if comment:
            wire += f": keepalive{newline}{newline}"
        if ident is not None:
            wire += f"id: {ident}{newline}"
            last = ident
        wire += f"event: {event}{newline}"
        wire += "".join(f"data: {d}{newline}" for d in data)
        wire += newline
        want.append((event, "\n".join(data), last))
    # The reader gets lines as readline() gives them: whole lines, ends included.
    lines = io.StringIO(wire, newline="").readlines()
    got = [(m.event, m.data, m.id) for m in messages(lines)]
    assert got == want


def test_sse_message_cut_off_is_not_dispatched() -> None:
    assert list(messages(["event: create\n", 'data: {"uuid":'])) == []


_uuid = st.sampled_from([f"u{i}" for i in range(8)])


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.fixed_dictionaries(
            {"uuid": _uuid},
            optional={
                "node": st.sampled_from(["fs1", "fs2"]),
                "other_leg": _uuid,
                "bridge_id": st.sampled_from(["b1", "b2", "b3"]),
                "timestamp": st.integers(0, 5),
                "direction": st.sampled_from(["inbound", "outbound"]),
            },
        ),
        max_size=10,
        unique_by=lambda i: (i.get("node", ""), i["uuid"]),
    )
)
def test_grouping_joins_linked_legs_only(items: list[dict[str, Any]]) -> None:
    """Each channel (node, uuid) in exactly one call; legs that name each other on the same
    node share it, and nothing else does (the same uuid on two nodes is two channels)."""

    def key(i: dict[str, Any]) -> tuple[str, str]:
        return (i.get("node", ""), i["uuid"])

    def linked(a: dict[str, Any], b: dict[str, Any]) -> bool:
        if a.get("node", "") != b.get("node", ""):
            return False
        return (
            a.get("other_leg") == b["uuid"]
            or b.get("other_leg") == a["uuid"]
            or bool(a.get("bridge_id") and a.get("bridge_id") == b.get("bridge_id"))
        )

    groups = calls.group(items)
    where = {key(leg): n for n, legs in enumerate(groups) for leg in legs}
    assert sorted(where) == sorted(key(i) for i in items)  # each channel exactly once
    assert sum(len(g) for g in groups) == len(items)
    for a in items:  # linked legs share their call
        for b in items:
            if linked(a, b):
                assert where[key(a)] == where[key(b)]
    for n, legs in enumerate(groups):  # and nothing else does: each call is connected
        reached = [legs[0]]
        grew = True
        while grew:
            grew = False
            for leg in legs:
                if leg not in reached and any(linked(leg, r) for r in reached):
                    reached.append(leg)
                    grew = True
        assert len(reached) == len(legs), n
        assert legs == sorted(legs, key=calls.by_age)
    assert [g[0] for g in groups] == sorted((g[0] for g in groups), key=calls.by_age)


def test_fields_from_the_daemon_are_read_defensively() -> None:
    odd = {
        "uuid": "u",
        "caller_id_name": {"x": 1},
        "timestamp": "soon",
        "elapsed_s": float("nan"),
        "is_onhold": "true",
        "hangup_disposition": ["recv_bye"],
        "mos": True,
    }
    assert calls.caller(odd) == "unknown"
    assert calls.flags(odd) == []
    assert calls.Clock().seconds(odd) is None
    assert calls.who_hung_up(odd) == ""
    assert calls.number(odd, "mos") is None
    assert orjson.dumps(calls.group([odd, {"uuid": 5}, {}])) == orjson.dumps([[odd]])
