"""`channelsd ls` against hostile switch values: a caller's name is whatever the far end sent.

Whatever a SIP peer puts in a name, a user agent, a Call-ID or a realm (escape sequences, C1
controls, bidi overrides, rich markup, line breaks) must reach the operator's terminal as
visible, literal text in every mode (table, --ended, --json, --csv, --watch), never as a
control or as markup. The command runs for real: the property test calls its entry point
(`channelsd.cli.main`) in this process, over real HTTP to a real daemon fed by the stand-in;
the fixed cases and --watch run it as a process (--watch in a pseudo-terminal).
"""

import contextlib
import csv
import io
import json
import os
import re
import select
import subprocess
import sys
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_terminal import ROOT, Terminal, clean_env, line_of

from channelsd import cli
from channelsd.standin.channels.sofia import SipEnd

from conftest import Harness, token, wait_until

ESC = "\x1b"
# What no output may hold raw (the brief of #15's attack): C0 controls but the line feed, DEL,
# C1 controls, the bidi controls, the line and paragraph separators.
FORBIDDEN = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]")
CSV_FORBIDDEN = re.compile(
    "[\x00-\x09\x0b\x0c\x0e-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]|\r(?!\n)"
)
# What rich itself writes to draw --watch: SGR styles, the alternate screen, the cursor's
# visibility, its home position. A value's escape sequence would be anything else (an OSC, a
# clear screen...), or at least not followed by one of these finals.
RICH_SEQUENCE = re.compile(r"\x1b\[\??[0-9;]*[mhlH]")

HOSTILE = {
    "esc_clear": f"{ESC}[2J{ESC}[H{ESC}[31mEVIL{ESC}[0m",
    "osc_title": f"Bob{ESC}]0;PWNED-TITLE\x07",
    "osc8_link": f"{ESC}]8;;http://evil.example/{ESC}\\click{ESC}]8;;{ESC}\\",
    "markup_close": "[/]",
    "markup_bold": "[bold red]MARKUP[/bold red]",
    "markup_link": "[link=http://evil.example]x[/link]",
    "newline": "Line1\nLine2\rCR",
    "bidi": "\u202eevil\u202c",
    "c1_csi": "\u009b2J C1",
    "emoji_code": ":smiley: :cross_mark:",
}


def shown(value: str) -> str:
    """How the command must show a value: each control as \\xNN (C0, DEL, C1) or \\uXXXX."""
    return "".join(
        (f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}")
        if FORBIDDEN.match(c) or c == "\n"
        else c
        for c in value
    )


def hostile_call(
    switch: Any, account: str, name: str, number: str = "1001", **fields: str
) -> tuple[str, str]:
    """A bridged SIP call whose every switch-provided text field it can set is hostile."""
    sip = SipEnd(
        profile="internal",
        user="1001",
        host="acc.example",
        ip="10.0.0.1",
        user_agent=fields.get("user_agent", name),
        call_id=fields.get("call_id", name),
    )
    variables = {"account_id": account, "domain_name": fields.get("realm", name)}
    return switch.bridged_call(
        variables_a=variables,
        variables_b=variables,
        caller=(name, number),
        callee=(fields.get("callee", name), fields.get("callee_number", number)),
        sip_a=sip,
    )


def end(switch: Any, uuid: str, disposition: str, cause: str = "NORMAL_CLEARING") -> None:
    switch.set_variable(uuid, "sip_hangup_disposition", disposition)
    switch.hangup(uuid, cause)


def ls_process(url: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "channelsd", "ls", *args],
        cwd=ROOT,
        env=clean_env(CHANNELSD_URL=url, CHANNELSD_TOKEN=token("super")),
        capture_output=True,
        timeout=60,
    )


def no_controls(out: bytes, mode: str) -> str:
    text = out.decode("utf-8")  # strict: no raw byte that is not UTF-8 either
    found = (CSV_FORBIDDEN if "--csv" in mode else FORBIDDEN).search(text)
    assert found is None, (
        mode,
        found and repr(text[max(0, found.start() - 40) : found.end() + 40]),
    )
    return text


MODES = [
    (),
    ("--wide",),
    ("--json",),
    ("--csv",),
    ("--ended",),
    ("--ended", "--wide"),
    ("--ended", "--json"),
    ("--ended", "--csv"),
]


# -- the attack's own values, as a process --------------------------------------------------


def test_hostile_values_are_literal_and_visible_in_every_mode(
    switch: Any, make_daemon: Any
) -> None:
    h = make_daemon([switch])
    made = {
        k: hostile_call(switch, "acc1", v, f"10{i:02d}") for i, (k, v) in enumerate(HOSTILE.items())
    }
    wait_until(lambda: len(h.table.all()) == 2 * len(HOSTILE), what="the calls in the table")
    for k in ("esc_clear", "osc_title", "markup_close", "bidi", "c1_csi"):
        end(switch, made[k][0], HOSTILE[k])  # hostile dispositions and ended-list rows too
    wait_until(lambda: len(h.api.data("/v2/channels?ended=true")) == 10, what="ended calls")

    outputs = {}
    for mode in MODES:
        result = ls_process(h.api.base, *mode)
        assert result.returncode == 0, (mode, result.stderr.decode())
        assert result.stderr == b"", mode
        outputs[mode] = no_controls(result.stdout, " ".join(mode))

    wide, ended_wide = outputs[("--wide",)], outputs[("--ended", "--wide")]

    def row(k: str) -> str:
        uuid = made[k][0]
        return line_of(ended_wide if uuid in ended_wide else wide, uuid)

    # Markup is text: shown as it was sent, not styled, not a link, not a crash.
    for k in ("markup_close", "markup_bold", "markup_link", "emoji_code"):
        assert HOSTILE[k] in row(k), (k, row(k))
    # Escapes are shown, not written.
    for k in ("esc_clear", "osc_title", "osc8_link", "newline", "bidi", "c1_csi"):
        assert shown(HOSTILE[k])[:24] in row(k), (k, row(k))  # long ones are cut (…)
    assert "\\x1b[2J\\x1b[H\\x1b[31mEVIL\\x1b[0m" in row("esc_clear")
    # caller, callee, who hung up (its disposition), Call-ID, realm
    assert row("bidi").count("\\u202eevil\\u202c") == 5
    # The summary still counts right: nothing was swallowed.
    assert (
        outputs[()].splitlines()[-1]
        == f"{len(HOSTILE) - 5} calls, {2 * (len(HOSTILE) - 5)} channels"
    )

    # --json is the API's data, every character intact (escaped as JSON escapes them).
    def strip(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{k: v for k, v in i.items() if k != "elapsed_s"} for i in items]

    assert strip(json.loads(outputs[("--json",)])) == strip(h.api.data("/v2/channels"))
    ended_json = outputs[("--ended", "--json")]
    assert json.loads(ended_json) == h.api.data("/v2/channels?ended=true")
    assert "\\u009b2J C1" in ended_json and "\\u202eevil\\u202c" in ended_json
    # --csv: the API's rows, each cell shown as the table shows it.
    got = list(csv.reader(io.StringIO(outputs[("--ended", "--csv")], newline="")))
    want = list(
        csv.reader(
            io.StringIO(
                h.api.get(
                    "/v2/channels?ended=true", headers={"Accept": "text/csv"}
                ).content.decode(),
                newline="",
            )
        )
    )
    assert len(got) == len(want) == 11
    for got_row, want_row in zip(got, want, strict=True):
        assert got_row == [shown(c) for c in want_row], [
            (g, w) for g, w in zip(got_row, want_row, strict=True) if g != shown(w)
        ]
    assert got != want  # the case is not vacuous: there were controls to show


def test_an_error_message_from_the_daemon_is_shown_not_written(
    switch: Any, make_daemon: Any
) -> None:
    """Error lines quote what the daemon said: the same gate holds for stderr."""
    from gevent.pywsgi import WSGIServer

    def hostile_api(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        body = json.dumps(
            {"message": f"nope{ESC}]0;TITLE\x07", "data": {"reason": "\u202eevil"}, "error": "403"}
        ).encode()
        start_response("403 Forbidden", [("Content-Type", "application/json")])
        return [body]

    server = WSGIServer(("127.0.0.1", 0), hostile_api, log=None)
    server.start()
    try:
        result = ls_process(f"http://127.0.0.1:{server.server_port}")
    finally:
        server.stop()
    assert result.returncode == 4
    err = no_controls(result.stderr, "stderr")
    assert "nope\\x1b]0;TITLE\\x07: \\u202eevil" in err


# -- any text, through every one-shot mode --------------------------------------------------

# Any character a far end can send (surrogates are not text: no switch can send one), with the
# dangerous ones and markup's brackets more often than chance would pick them.
_char = st.one_of(
    st.characters(blacklist_categories=("Cs",)),
    st.sampled_from(
        [
            ESC,
            "\x9b",
            "\x07",
            "\x00",
            "\r",
            "\n",
            "\x7f",
            "\u202e",
            "\u2069",
            "\u2066",
            "\u200f",
            "\u2028",
            "[",
            "]",
            "/",
            ":",
            "\\",
            "\u061c",
            "\x85",
        ]
    ),
)
_value = st.text(_char, min_size=1, max_size=24)


def run_ls(*args: str) -> tuple[int, bytes]:
    """The command's entry point, in this process, its standard output as bytes."""
    raw = io.BytesIO()
    out = io.TextIOWrapper(raw, encoding="utf-8", newline="", write_through=True)
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        status = cli.main(["ls", *args])
    out.flush()
    data = raw.getvalue()
    out.detach()
    return status, data


def test_no_control_reaches_stdout_whatever_the_switch_sends(
    switch: Any, make_daemon: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    h: Harness = make_daemon([switch])
    monkeypatch.setenv("CHANNELSD_URL", h.api.base)
    monkeypatch.setenv("CHANNELSD_TOKEN", token("super"))
    monkeypatch.delenv("COLUMNS", raising=False)
    seen = {"n": 0}

    @settings(
        max_examples=150,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(
        st.fixed_dictionaries(
            {
                "name": _value,
                "number": _value,
                "callee": _value,
                "callee_number": _value,
                "user_agent": _value,
                "call_id": _value,
                "realm": _value,
                "disposition": _value,
            }
        )
    )
    def check(values: dict[str, str]) -> None:
        seen["n"] += 1
        account = f"hostile{seen['n']}"
        kept, _ = hostile_call(switch, account, **values)
        gone, _ = hostile_call(switch, account, **values)
        path = f"/v2/accounts/{account}/channels"
        wait_until(lambda: len(h.api.data(path)) == 4, what="the calls in the table")
        end(switch, gone, values["disposition"])
        wait_until(lambda: len(h.api.data(path + "?ended=true")) == 2, what="the ended call")
        for mode in MODES:
            status, out = run_ls("--account", account, *mode)
            assert status == 0, mode
            text = no_controls(out, " ".join(mode))
            if mode == ("--json",):
                listed = json.loads(text)
                assert {i["caller_id_name"] for i in listed} == {values["name"]}
            if mode == ():
                assert text.splitlines()[-1] == "1 call, 2 channels"
                assert kept[:8] in text
        switch.hangup(kept)

    check()


# -- --watch, in a pseudo-terminal ----------------------------------------------------------


class RawTerminal(Terminal):
    """The terminal, keeping every byte the command wrote as well."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.raw = bytearray()

    def pump(self) -> None:
        while select.select([self.master], [], [], 0)[0]:
            try:
                data = os.read(self.master, 65536)
            except OSError:
                return
            if not data:
                return
            self.raw += data
            self.stream.feed(data)


def only_rich_sequences(raw: bytes) -> None:
    """What --watch wrote holds no control but rich's own drawing: line ends and the few
    CSI sequences rich uses; no OSC (title, hyperlink), no C1, no bidi control."""
    text = raw.decode("utf-8")
    drawn = RICH_SEQUENCE.sub("", text).replace("\r\n", "\n")
    found = FORBIDDEN.search(drawn)
    assert found is None, repr(drawn[max(0, found.start() - 60) : found.end() + 60])


def test_watch_shows_hostile_values_and_writes_none(switch: Any, make_daemon: Any) -> None:
    h = make_daemon([switch])
    made = {
        k: hostile_call(switch, "acc1", v, f"10{i:02d}") for i, (k, v) in enumerate(HOSTILE.items())
    }
    wait_until(lambda: len(h.table.all()) == 2 * len(HOSTILE), what="the calls in the table")
    end(switch, made["osc_title"][0], HOSTILE["osc_title"])  # in "Recently ended" from the start
    term = RawTerminal(
        ["--watch", "--wide"],
        clean_env(CHANNELSD_URL=h.api.base, CHANNELSD_TOKEN=token("super")),
        rows=60,
        cols=250,
    )
    try:
        term.wait(
            lambda: " live " in term.text() and made["c1_csi"][0] in term.live(),
            "the calls on the screen",
        )
        # Ended while watching: from the stream's destroy.
        end(switch, made["esc_clear"][0], HOSTILE["bidi"])
        term.wait(lambda: made["esc_clear"][0] in term.ended(), "the ended call")
        screen = term.text()
        for k in ("markup_close", "markup_bold", "markup_link", "emoji_code"):
            assert HOSTILE[k] in line_of(screen, made[k][0]), k
        for k in ("osc8_link", "newline", "c1_csi", "bidi"):
            assert shown(HOSTILE[k])[:24] in line_of(term.live(), made[k][0]), k
        assert shown(HOSTILE["esc_clear"])[:24] in line_of(term.ended(), made["esc_clear"][0])
        assert shown(HOSTILE["osc_title"]) in line_of(term.ended(), made["osc_title"][0])
        assert term.screen.title == ""  # no OSC 0 reached the terminal
        only_rich_sequences(bytes(term.raw))

        # Any text, while the same watch runs: calls come, show, end.
        seen = {"n": 0}

        @settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
        @given(_value, _value, _value)
        def check(name: str, realm: str, disposition: str) -> None:
            seen["n"] += 1
            a, b = hostile_call(switch, f"w{seen['n']}", name, realm=realm)
            term.wait(lambda: b in term.live(), "the call on the screen")
            end(switch, a, disposition)
            term.wait(lambda: a in term.ended() and a not in term.live(), "the call ended")
            only_rich_sequences(bytes(term.raw))

        check()
    finally:
        status = term.stop()
    assert status == 0, term.proc.stderr.read()
    only_rich_sequences(bytes(term.raw))
