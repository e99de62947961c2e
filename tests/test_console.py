"""The operator console (/console/), end to end: a real headless Chromium against a real daemon.

Selenium drives Debian's chromium through Debian's chromedriver. The suite runs on one gevent
hub (conftest monkey-patches first), and Selenium talks to chromedriver over patched sockets,
so a driver call that waits yields to the hub: the in-process stand-in switch and daemon keep
serving the page meanwhile. The demo case runs `channelsd demo` as a real process instead.

Screenshots of the main states land in test-artifacts/console/.
"""

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import gevent
import orjson
import pytest
from gevent.server import StreamServer

from channelsd.standin.replay import load_frames

from conftest import CAPTURES, Harness, start_demo, token, wait_until

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts" / "console"
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
CHROME_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,900",
)

if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
    if os.environ.get("CI"):
        raise RuntimeError("chromium and chromium-driver are needed: .ci/run installs them")
    pytest.skip("Debian's chromium and chromium-driver are not installed", allow_module_level=True)

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.select import Select  # noqa: E402

ACME = {"account_id": "acc1", "domain_name": "acc1.example"}
ACME_SUB = {"account_id": "acc1-sub", "domain_name": "sub.acc1.example"}
OTHER = {"account_id": "acc2", "domain_name": "acc2.example"}


class Page:
    """The console in the browser, with the few moves a person makes."""

    def __init__(self, driver: Any) -> None:
        self.driver = driver

    def find(self, css: str) -> Any:
        return self.driver.find_element(By.CSS_SELECTOR, css)

    def finds(self, css: str) -> list[Any]:
        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def wait(self, predicate: Callable[[], Any], what: str, timeout: float = 10.0) -> Any:
        def attempt() -> Any:
            try:
                return predicate()
            except Exception:  # an element replaced under us: look again
                return None

        return wait_until(attempt, timeout, what)

    def shot(self, name: str) -> None:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        self.driver.save_screenshot(str(ARTIFACTS / f"{name}.png"))

    def open(self, base: str) -> None:
        self.driver.get(base + "/console")  # the bare path redirects to /console/
        self.wait(lambda: self.find("#login-token").is_displayed(), "the sign-in form")

    def login(self, tok: str, account: str = "") -> None:
        self.find("#login-token").send_keys(tok)
        field = self.find("#login-account")
        field.clear()
        field.send_keys(account)
        self.find("#login-submit").click()

    def wait_live(self) -> None:
        self.wait(lambda: self.find("#live-state").text == "Live", "the stream to be live")

    def uuids(self) -> list[str]:
        rows = "document.querySelectorAll('#channels tbody tr')"
        return self.driver.execute_script(f"return [...{rows}].map(tr => tr.dataset.uuid)")

    def row(self, uuid: str) -> Any:
        return self.find(f'#channels tr[data-uuid="{uuid}"]')

    def cells(self, uuid: str) -> dict[str, str]:
        return self.driver.execute_script(
            "const tr = document.querySelector(`#channels tr[data-uuid='${arguments[0]}']`);"
            "return tr ? Object.fromEntries([...tr.cells].map(td => "
            "[td.className.replace('col-', ''), td.textContent])) : null;",
            uuid,
        )

    def open_actions(self, uuid: str) -> Any:
        button = self.row(uuid).find_element(By.CSS_SELECTOR, "button.act")
        button.send_keys(Keys.ENTER)  # by keyboard: a real button
        self.wait(lambda: self.find("#action-dialog").is_displayed(), "the actions dialog")
        return button

    def active_id(self) -> str:
        return self.driver.execute_script(
            "const a = document.activeElement; return a.id || a.value || a.tagName;"
        )

    def problems(self, allow: tuple[str, ...] = ()) -> list[dict[str, Any]]:
        """Console entries that are errors or warnings, less the expected network refusals."""
        found = []
        for entry in self.driver.get_log("browser"):
            if entry["level"] not in ("SEVERE", "WARNING"):
                continue
            if entry["source"] == "network" and any(a in entry["message"] for a in allow):
                continue
            found.append(entry)
        return found


@pytest.fixture(scope="module")
def driver() -> Iterator[Any]:
    profile = tempfile.mkdtemp(prefix="channelsd-console-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROME_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    drv = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    drv.set_page_load_timeout(20)
    try:
        yield drv
    finally:
        drv.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def page(driver: Any) -> Iterator[Page]:
    driver.set_window_size(1280, 900)
    driver.get("about:blank")
    driver.get_log("browser")  # start each test with an empty console
    yield Page(driver)
    driver.get("about:blank")  # close this test's stream before its daemon stops


def call(switch: Any, who: dict[str, str], caller: tuple[str, str], callee: tuple[str, str]):
    return switch.bridged_call(variables_a=who, variables_b=who, caller=caller, callee=callee)


def base(h: Harness) -> str:
    return h.api.base


# -- the demo, as a user runs it ----------------------------------------------------------------


def _start_demo() -> tuple[subprocess.Popen, str, dict[str, str]]:
    proc, text = start_demo(calls=6)
    console = re.search(r"(http://127\.0\.0\.1:\d+/console/)", text).group(1)
    tokens = {
        "super": re.search(r"superduper .*:\s+(\S+)", text).group(1),
        "admin": re.search(r"admin of .*:\s+(\S+)", text).group(1),
        "acme": re.search(r'admin of account "acme" \((\w+)\)', text).group(1),
    }
    return proc, console, tokens


def test_demo_calls_on_desktop_and_phone(page: Page) -> None:
    proc, console, tokens = _start_demo()
    try:
        page.driver.get(console)
        page.wait(lambda: page.find("#login-token").is_displayed(), "the sign-in form")
        page.shot("01-login")
        page.login(tokens["super"])
        page.wait_live()
        page.wait(lambda: len(page.uuids()) >= 4, "the demo calls")
        page.wait(lambda: len(page.finds("#channels tbody.call.multi")) >= 2, "calls of two legs")
        assert page.find("#counts").text.startswith(f"{len(page.finds('tbody.call'))} call")
        # Rows carry what an operator reads.
        first = page.cells(page.uuids()[0])
        assert first["caller"] and first["callee"] and first["node"] == "demo-fs1"
        assert first["direction"] in ("inbound", "outbound")
        assert re.fullmatch(r"\d+:\d\d", first["duration"])
        page.shot("02-demo-desktop")

        # The account selector narrows the board to one account, by its realm.
        # The demo's traffic leaves an account without calls for seconds at a time
        # (test_demo_traffic), hence the longer bounds where acme must have calls up.
        select = Select(page.find("#account-select"))
        page.wait(lambda: any("acme" in o.text for o in select.options), "acme in the selector", 30)
        select.select_by_visible_text(next(o.text for o in select.options if "acme" in o.text))
        page.wait(
            lambda: {page.cells(u)["account"] for u in page.uuids()} == {"acme.demo.example"},
            "only acme's calls",
            timeout=30,
        )
        # Sorting by caller: a real button in the header, aria-sort says the order.
        page.find('th[data-sort="caller"] button').click()
        assert page.find('th[data-sort="caller"]').get_attribute("aria-sort") == "ascending"
        select.select_by_index(0)  # all accounts again

        page.driver.set_window_size(390, 844)
        page.wait(lambda: page.find("#channels td.col-caller").size["width"] > 300, "cards")
        page.shot("03-demo-phone")
        width = page.driver.execute_script("return document.documentElement.scrollWidth")
        assert width <= 390, "nothing sticks out sideways on a phone"
        page.open_actions(page.uuids()[0])
        box = page.driver.execute_script(
            "return document.getElementById('action-dialog').getBoundingClientRect().toJSON()"
        )
        assert box["left"] >= 0 and box["right"] <= 390, box
        page.shot("04-demo-phone-actions")
        page.driver.switch_to.active_element.send_keys(Keys.ESCAPE)
        page.driver.set_window_size(1280, 900)

        # Another tab of the same origin: an admin token and its account, by the form.
        page.find("#logout").click()
        page.wait(lambda: page.find("#login-token").is_displayed(), "signed out")
        page.login(tokens["admin"], tokens["acme"])
        page.wait_live()
        page.wait(lambda: page.uuids(), "acme's calls for its admin", timeout=30)
        accounts = {page.cells(u)["account"] for u in page.uuids()}
        assert accounts == {"acme.demo.example"}
        # Only the expected probe refusal (the token is not superduper) reached the console.
        assert page.problems(allow=("status of 403",)) == []
    finally:
        page.driver.get("about:blank")
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise


# -- live changes, against a stand-in the test controls ---------------------------------------


def test_calls_appear_and_disappear_without_reload(switch: Any, make_daemon: Any, page: Page):
    h = make_daemon([switch])
    a1, b1 = call(switch, ACME, ("Alice Archer", "1001"), ("Bob Baker", "1002"))
    wait_until(lambda: h.table.get(b1), what="first call in the table")
    page.open(base(h))
    page.login(token("super"))
    page.wait_live()
    page.wait(lambda: set(page.uuids()) == {a1, b1}, "the first call")
    page.driver.execute_script("window.__sameDocument = true")

    a2, b2 = call(switch, OTHER, ("Carol Cruz", "2001"), ("Dan Dorsey", "2002"))
    page.wait(lambda: {a2, b2} <= set(page.uuids()), "the new call")
    assert page.cells(a2)["caller"] == "Carol Cruz (2001)"
    assert page.cells(a2)["account"] == "acc2.example"
    # Two legs of one call share a <tbody>.
    assert page.driver.execute_script(
        "const q = u => document.querySelector(`tr[data-uuid='${u}']`).parentElement;"
        "return q(arguments[0]) === q(arguments[1]);",
        a2,
        b2,
    )
    switch.hold(a2)
    page.wait(lambda: page.cells(a2)["flags"] == "on hold", "the hold badge")
    page.shot("05-new-call")

    # The filter box keeps only the calls that match, both legs.
    page.find("#filter").send_keys("carol")
    page.wait(lambda: set(page.uuids()) == {a2, b2}, "only Carol's call")
    page.find("#filter").send_keys(Keys.CONTROL, "a", Keys.DELETE)
    page.wait(lambda: len(page.uuids()) == 4, "every call again")

    switch.hangup(a1)
    page.wait(lambda: set(page.uuids()) == {a2, b2}, "the hung-up call gone")
    assert page.driver.execute_script("return window.__sameDocument === true"), "no reload"
    assert page.problems() == []


def test_hang_up_from_the_page(switch: Any, make_daemon: Any, page: Page) -> None:
    h = make_daemon([switch])
    a, b = call(switch, ACME, ("Alice Archer", "1001"), ("Bob Baker", "1002"))
    keep_a, keep_b = call(switch, ACME, ("Carol Cruz", "1003"), ("Dan Dorsey", "1004"))
    wait_until(lambda: h.table.get(keep_b), what="calls in the table")
    page.open(base(h))
    page.login(token("admin1"), "acc1")
    page.wait_live()
    page.wait(lambda: set(page.uuids()) == {a, b, keep_a, keep_b}, "acc1's calls")

    page.open_actions(a)
    assert page.active_id() == "hangup", "focus moves into the dialog"
    cause = page.find("#hangup-cause")
    cause.send_keys(Keys.CONTROL, "a", Keys.DELETE)
    cause.send_keys("USER_BUSY", Keys.ENTER)  # Enter submits: first comes the confirmation
    confirm = page.find("#action-confirm")
    page.wait(confirm.is_displayed, "the confirmation")
    assert "Alice Archer (1001)" in confirm.text and "USER_BUSY" in confirm.text
    assert page.active_id() == "action-submit"
    assert page.find("#action-submit").text == "Yes, hang up"
    page.shot("06-hangup-confirm")
    page.driver.switch_to.active_element.send_keys(Keys.ENTER)

    page.wait(lambda: not page.find("#action-dialog").is_displayed(), "the dialog to close")
    page.wait(lambda: set(page.uuids()) == {keep_a, keep_b}, "the call gone from the board")
    assert a not in switch.channels or switch.channels[a].destroyed
    assert any("uuid_kill" in c and a in c and "USER_BUSY" in c for _, c in switch.received)
    assert "Hang-up sent" in page.find("#notice").text
    assert page.active_id() == "filter", "focus lands somewhere useful when its row is gone"
    page.shot("07-hangup-done")
    assert page.problems(allow=("status of 403",)) == []


def test_refused_action_shows_the_api_message(switch: Any, make_daemon: Any, page: Page):
    h = make_daemon([switch])
    a, b = call(switch, ACME, ("Alice Archer", "1001"), ("Bob Baker", "1002"))
    wait_until(lambda: h.table.get(b), what="the call in the table")
    page.open(base(h))
    page.login(token("super"))
    page.wait_live()
    page.wait(lambda: a in page.uuids(), "the call")

    # Escape closes the dialog and gives focus back to the row's button.
    opener = page.open_actions(b)
    # The choices are the registry's, each one an action the API has (no dead button).
    choices = [i.get_attribute("value") for i in page.finds('input[name="action"]')]
    assert choices == ["hangup", "hold", "break", "transfer", "intercept", "eavesdrop"]
    page.driver.switch_to.active_element.send_keys(Keys.ESCAPE)
    page.wait(lambda: not page.find("#action-dialog").is_displayed(), "the dialog to close")
    assert page.driver.switch_to.active_element == opener

    page.open_actions(a)
    page.find('input[name="action"][value="transfer"]').click()
    page.find("#transfer-target").send_keys("9 9")
    page.find('input[name="transfer_type"][value="attended"]').click()
    page.find("#action-submit").click()
    page.wait(page.find("#action-confirm").is_displayed, "the confirmation")
    assert "to 9 9" in page.find("#action-confirm").text
    page.find("#action-submit").click()
    error = page.find("#action-error")
    page.wait(error.is_displayed, "the refusal")
    assert "validation error" in error.text and "target" in error.text, error.text
    assert "must be an extension" in error.text
    assert page.find("#action-dialog").is_displayed(), "the dialog stays for a correction"
    page.shot("08-refused-transfer")
    assert not any("uuid_transfer" in c for _, c in switch.received), "nothing was sent"

    # Hold toggle is not destructive: no confirmation, and the board shows the result.
    page.find('input[name="action"][value="hold"]').click()
    page.find("#action-submit").click()
    page.wait(lambda: page.cells(a)["flags"] == "on hold", "the call on hold")
    assert page.problems(allow=("status of 400",)) == []


def test_listen_in_from_the_page(switch: Any, make_daemon: Any, page: Page) -> None:
    h = make_daemon([switch])
    a, b = call(switch, ACME, ("Alice Archer", "1001"), ("Bob Baker", "1002"))
    wait_until(lambda: h.table.get(b), what="the call in the table")
    page.open(base(h))
    page.login(token("admin1"), "acc1")
    page.wait_live()
    page.wait(lambda: a in page.uuids(), "the call")

    page.open_actions(a)
    page.find('input[name="action"][value="eavesdrop"]').click()
    assert page.find('[data-panel="eavesdrop"]').is_displayed()
    whisper_to = page.find('input[name="whisper_leg"][value="peer"]')
    assert not whisper_to.is_enabled(), "'Whisper to' only in whisper mode"
    page.find("#action-submit").click()  # nothing entered yet
    page.wait(page.find("#action-error").is_displayed, "what is missing")
    assert "listens in" in page.find("#action-error").text

    Select(page.find("#listen-type")).select_by_value("number")
    page.find("#listen-id").send_keys("9003")
    page.find('input[name="listen_mode"][value="whisper"]').click()
    page.wait(whisper_to.is_enabled, "'Whisper to' enabled")
    page.find('input[name="whisper_leg"][value="peer"]').click()
    page.find("#action-submit").click()
    confirm = page.find("#action-confirm")
    page.wait(confirm.is_displayed, "the confirmation")
    assert confirm.text == (
        "Ring number 9003 to whisper to the other leg of Alice Archer (1001) → Bob Baker (1002)?"
    ), confirm.text
    page.shot("11-listen-in-confirm")
    page.find("#action-submit").click()

    page.wait(lambda: not page.find("#action-dialog").is_displayed(), "the dialog to close")
    assert "Listen-in started" in page.find("#notice").text
    sent = [c for _, c in switch.received if "&eavesdrop(" in c]
    assert sent == [
        "bgapi originate {eavesdrop_enable_dtmf=true,eavesdrop_whisper_aleg=true,"
        "eavesdrop_whisper_bleg=false,ecallmgr_Account-ID=acc1,ecallmgr_Realm=acc1.example}"
        f"loopback/9003/default &eavesdrop({a})"
    ]
    e = wait_until(lambda: next(iter(switch.model.eavesdrops.values()), None), what="listening")
    assert (e.target, e.mode) == (a, "whisper-peer")
    page.shot("12-listen-in-done")

    # Barge on a channel alone is refused by the API, and the dialog says why.
    p, _ = switch.originate(dest="9003", variables=ACME)
    page.wait(lambda: p in page.uuids(), "the parked channel")
    page.open_actions(p)
    page.find('input[name="action"][value="eavesdrop"]').click()
    page.find("#listen-id").send_keys("9003")
    page.find('input[name="listen_mode"][value="barge"]').click()
    page.find("#action-submit").click()
    page.wait(page.find("#action-confirm").is_displayed, "the confirmation")
    assert "barge into" in page.find("#action-confirm").text
    page.find("#action-submit").click()
    error = page.find("#action-error")
    page.wait(error.is_displayed, "the refusal")
    assert "Channel is not bridged" in error.text and "barge" in error.text, error.text
    assert len([c for _, c in switch.received if "&eavesdrop(" in c]) == 1, "nothing more sent"
    page.shot("13-listen-in-refused")
    assert page.problems(allow=("status of 400", "status of 403")) == []


def test_account_selector_for_a_token_with_descendants(
    switch: Any, make_daemon: Any, page: Page
) -> None:
    h = make_daemon([switch])
    a, b = call(switch, ACME, ("Alice Archer", "1001"), ("Bob Baker", "1002"))
    sa, sb = call(switch, ACME_SUB, ("Sub Caller", "3001"), ("Sub Callee", "3002"))
    oa, ob = call(switch, OTHER, ("Carol Cruz", "2001"), ("Dan Dorsey", "2002"))
    wait_until(lambda: all(h.table.get(u) for u in (b, sb, ob)), what="calls in the table")
    page.open(base(h))
    page.login(token("admin1"))  # no account: the page says what it needs
    error = page.find("#login-error")
    page.wait(error.is_displayed, "the sign-in refusal")
    assert "account id" in error.text
    assert page.active_id() == "login-account"
    page.login("", "acc1")
    page.wait_live()
    page.wait(lambda: set(page.uuids()) == {a, b}, "acc1's calls")

    select = Select(page.find("#account-select"))
    select.select_by_visible_text("Other account…")
    page.wait(lambda: page.active_id() == "add-account-id", "the account id box")
    page.find("#add-account-id").send_keys("acc2", Keys.ENTER)
    refusal = page.find("#add-account-error")
    page.wait(refusal.is_displayed, "the refusal for another account")
    assert "forbidden" in refusal.text and "acc2" in refusal.text
    box = page.find("#add-account-id")
    box.send_keys(Keys.CONTROL, "a", Keys.DELETE)
    box.send_keys("acc1-sub", Keys.ENTER)
    page.wait(lambda: set(page.uuids()) == {sa, sb}, "the descendant account's calls")
    page.wait_live()
    assert select.first_selected_option.get_attribute("value") == "acc1-sub"
    page.shot("09-descendant-account")
    # A reload keeps the session (sessionStorage) and the chosen account.
    page.driver.refresh()
    page.wait(lambda: set(page.uuids()) == {sa, sb}, "the same board after a reload")
    assert page.problems(allow=("status of 403",)) == []


class Relay:
    """A TCP relay in front of the daemon that the test can cut (the network is down) and
    restore on the same port, while the daemon itself keeps running."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = 0
        self.server: StreamServer | None = None
        self.sockets: list[socket.socket] = []

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

        def pump(src: socket.socket, dst: socket.socket) -> None:
            with contextlib.suppress(OSError):
                while data := src.recv(65536):
                    dst.sendall(data)
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

        back = gevent.spawn(pump, upstream, client)
        pump(client, upstream)
        back.join()
        upstream.close()


def test_stream_down_and_back_catches_up(switch: Any, make_daemon: Any, page: Page) -> None:
    h = make_daemon([switch])
    a, b = call(switch, ACME, ("Alice Archer", "1001"), ("Bob Baker", "1002"))
    c, d = call(switch, ACME, ("Carol Cruz", "1003"), ("Dan Dorsey", "1004"))
    wait_until(lambda: h.table.get(d), what="calls in the table")
    relay = Relay(h.daemon.http_address)
    relay.start()
    page.open(relay.base)
    page.login(token("super"))
    page.wait_live()
    page.wait(lambda: set(page.uuids()) == {a, b, c, d}, "both calls")
    page.driver.execute_script("window.__sameDocument = true")

    relay.cut()
    banner = page.find("#banner")
    page.wait(lambda: "interrupted" in banner.text, "the stream-down banner")
    assert page.find("#live-state").text == "Reconnecting…"
    page.shot("10-stream-down")
    # While the page cannot hear: one call ends, another begins.
    switch.hangup(a)
    e, f = call(switch, ACME, ("Eve Ellis", "1005"), ("Frank Fox", "1006"))
    wait_until(lambda: h.table.get(f) and not h.table.get(a), what="the table moved on")
    relay.start()
    page.wait(lambda: "are back" in banner.text, "the stream-back banner", timeout=20)
    page.wait(lambda: set(page.uuids()) == {c, d, e, f}, "caught up with what was missed")
    page.shot("11-stream-back")
    assert page.driver.execute_script("return window.__sameDocument === true"), "no reload"
    # Only the refused reconnection attempts while the server was down.
    assert page.problems(allow=("ERR_CONNECTION_REFUSED", "ERR_INCOMPLETE_CHUNKED_ENCODING")) == []


def test_stale_node_channels_are_marked(switch: Any, make_daemon: Any, page: Page) -> None:
    h = make_daemon([switch])
    a, b = call(switch, ACME, ("Alice Archer", "1001"), ("Bob Baker", "1002"))
    wait_until(lambda: h.table.get(b), what="the call in the table")
    page.open(base(h))
    page.login(token("super"))
    page.wait_live()
    page.wait(lambda: set(page.uuids()) == {a, b}, "the call")
    assert page.cells(a)["node"] == "fs1"

    switch.pause_accept(True)
    switch.drop_connections()
    wait_until(lambda: h.table.is_node_stale("fs1"), what="fs1 stale")
    page.wait(lambda: page.cells(a)["node"] == "fs1 stale", "the stale mark", timeout=15)
    assert "stale" in page.row(a).get_attribute("class")
    page.shot("12-stale-node")
    switch.pause_accept(False)
    h.wait_ready()
    page.wait(lambda: page.cells(a)["node"] == "fs1", "the mark gone", timeout=15)
    gevent.sleep(0)
    assert page.problems() == []


# -- the operator's view (#15): density, details, badges, recently ended ------------------------

SIP = CAPTURES / "json" / "s8_sip_call.events.raw.gz"


def visible_rows(page: Page) -> int:
    """Board rows wholly in view: below the sticky header, inside the board and the window."""
    return page.driver.execute_script(
        """
        const wrap = document.querySelector('.table-wrap').getBoundingClientRect();
        const head = document.querySelector('#channels thead').getBoundingClientRect();
        const top = Math.max(wrap.top, head.bottom);
        const bottom = Math.min(wrap.bottom, window.innerHeight);
        return [...document.querySelectorAll('#channels tbody tr')].filter((tr) => {
          const r = tr.getBoundingClientRect();
          return r.height > 0 && r.top >= top - 0.5 && r.bottom <= bottom + 0.5;
        }).length;
        """
    )


def layout_problems(page: Page) -> list[str]:
    """Regions that overlap each other or stick out of the window, and sideways scrolling."""
    return page.driver.execute_script(
        """
        const names = ['.topbar', '.toolbar', '.table-wrap', '#details', '#ended'];
        const boxes = names.map((n) => [n, document.querySelector(n).getBoundingClientRect()]);
        const found = [];
        for (const [i, [a, ra]] of boxes.entries()) {
          if (ra.right > innerWidth + 0.5 || ra.bottom > innerHeight + 0.5) found.push(`${a} out`);
          for (const [b, rb] of boxes.slice(i + 1)) {
            const apart = ra.right <= rb.left + 0.5 || rb.right <= ra.left + 0.5 ||
                          ra.bottom <= rb.top + 0.5 || rb.bottom <= ra.top + 0.5;
            if (!apart) found.push(`${a} overlaps ${b}`);
          }
        }
        const wrap = document.querySelector('.table-wrap');
        if (wrap.scrollWidth > wrap.clientWidth) found.push('the board scrolls sideways');
        if (document.documentElement.scrollWidth > innerWidth) found.push('the page scrolls');
        return found;
        """
    )


def field(page: Page, name: str) -> str:
    found = page.finds(f'#details-body dd[data-field="{name}"]')
    return found[0].text if found else ""


def test_25_rows_visible_at_1400x900_without_overlap(switch: Any, make_daemon: Any, page: Page):
    h = make_daemon([switch])
    for i in range(20):
        call(switch, ACME, (f"Caller {i:02d}", f"10{i:02d}"), (f"Callee {i:02d}", f"20{i:02d}"))
    wait_until(lambda: len(h.table.all()) == 40, what="the calls in the table")
    switch.hangup(next(iter(h.table.all())).uuid)  # something in "recently ended"
    page.driver.set_window_size(1400, 900)
    page.open(base(h))
    page.login(token("super"))
    page.wait_live()
    page.wait(lambda: len(page.uuids()) == 38, "every call on the board")
    page.wait(lambda: page.finds("#ended-list li"), "the ended call")
    page.find("#channels tbody tr button.sel").click()  # the details panel open too
    page.wait(lambda: field(page, "uuid"), "the details")
    rows = visible_rows(page)
    assert rows >= 25, f"only {rows} rows in view"
    assert layout_problems(page) == []
    page.shot("13-density-1400x900")
    # The existing width of the other tests, and a phone: still no overlap.
    page.driver.set_window_size(1280, 900)
    page.wait(lambda: layout_problems(page) == [], "a clean layout at 1280x900")
    assert visible_rows(page) >= 25
    assert page.problems() == []


def _sip_events() -> tuple[list[Any], list[dict[str, Any]]]:
    frames = [f for f in load_frames(SIP) if f.event_name]
    return frames, [orjson.loads(f.raw.split(b"\n\n", 1)[1]) for f in frames]


def _index(evs: list[dict[str, Any]], name: str, uuid: str) -> int:
    return next(i for i, e in enumerate(evs) if e["Event-Name"] == name and e["Unique-ID"] == uuid)


def test_details_badges_and_ending_of_a_real_sip_call(switch: Any, make_daemon: Any, page: Page):
    """The s8 capture's SIP call, replayed byte for byte: what the panel shows is what the
    single GET says, it follows the call as it changes, and the call's end lands in
    "recently ended" with who hung up."""
    frames, evs = _sip_events()
    leg = next(e["Unique-ID"] for e in evs if e.get("variable_account_id") == "acc1")
    h = make_daemon([switch])
    path = f"/v2/accounts/acc1/channels/{leg}"
    answer = _index(evs, "CHANNEL_ANSWER", leg)
    switch.send_frames(frames[:answer])  # ringing: no remote media, no application yet
    early = wait_until(lambda: h.api.get(path, "admin1").ok and h.api.data(path, "admin1"))
    assert not {"remote_media_ip", "application", "sip_call_id"} & set(early)
    page.driver.set_window_size(1400, 900)
    page.open(base(h))
    page.login(token("admin1"), "acc1")
    page.wait_live()
    page.wait(lambda: leg in page.uuids(), "the SIP leg on the board")
    page.row(leg).find_element(By.CSS_SELECTOR, "button.sel").send_keys(Keys.ENTER)
    page.wait(lambda: field(page, "channel_name") == early["channel_name"], "the single GET")
    assert field(page, "request_uri") == early["request_uri"]
    assert field(page, "endpoint") == "sofia"
    assert field(page, "sip_call_id") == field(page, "remote_media") == ""
    assert "selected" in page.row(leg).get_attribute("class")

    # Answered and parked: the stream says so, the panel asks the single GET again.
    park = _index(evs, "CHANNEL_PARK", leg) + 1
    switch.send_frames(frames[answer:park])
    detail = wait_until(
        lambda: "application" in h.api.data(path, "admin1") and h.api.data(path, "admin1")
    )
    want_media = f"{detail['remote_media_ip']}:{detail['remote_media_port']}"
    page.wait(lambda: field(page, "remote_media") == want_media, "the remote media")
    assert field(page, "sip_call_id") == detail["sip_call_id"]
    assert field(page, "user_agent") == detail["user_agent"]
    assert field(page, "application") == detail["application"]
    assert field(page, "read_codec").startswith(detail["read_codec"])
    assert field(page, "request_uri") == detail["request_uri"]
    assert field(page, "answered") == "yes"
    page.shot("14-details-sip-call")

    # Hold, then a recording: badges on the row, and the panel follows.
    hold = _index(evs, "CHANNEL_HOLD", leg) + 1
    switch.send_frames(frames[park:hold])
    page.wait(lambda: page.cells(leg)["flags"] == "on hold", "the hold badge")
    page.wait(lambda: field(page, "is_onhold") == "yes", "on hold in the panel")
    record = _index(evs, "RECORD_START", leg) + 1
    switch.send_frames(frames[hold:record])
    page.wait(lambda: "rec" in page.cells(leg)["flags"].split(), "the recording badge")
    page.wait(lambda: field(page, "is_recording") == "yes", "recording in the panel")
    page.shot("15-badges-recording")

    # The rest of the capture: the switch sends the BYE.
    switch.send_frames(frames[record:])
    ended = wait_until(
        lambda: h.api.data("/v2/accounts/acc1/channels?ended=true", "admin1"), what="ended"
    )[0]
    assert ended["hangup_disposition"] == "send_bye"
    page.wait(lambda: leg not in page.uuids(), "the call gone from the board")
    entry = page.find(f'#ended-list li[data-uuid="{leg}"]')
    minutes, seconds = divmod(ended["duration_seconds"], 60)
    assert ended["hangup_cause"] in entry.text
    assert "· hung up by the switch ·" in entry.text
    assert f"{minutes}:{seconds:02d}" in entry.text
    status = page.find("#details-status")
    page.wait(lambda: "has ended" in status.text, "the panel says the call ended")
    assert status.text.startswith(f"This channel has ended: {ended['hangup_cause']} · hung up by")
    assert "hung up by the switch" in status.text
    assert field(page, "sip_call_id") == detail["sip_call_id"], "what it was stays in view"
    assert field(page, "hung_up_by") == "hung up by the switch"
    assert field(page, "duration_seconds") == f"{minutes}:{seconds:02d}"
    assert field(page, "is_recording") == field(page, "state") == "", "no stale live state"
    page.shot("16-ended-sip-call")
    assert page.problems(allow=("status of 403",)) == []


def test_encrypted_badge_and_recently_ended_from_load_and_stream(
    switch: Any, make_daemon: Any, page: Page
) -> None:
    h = make_daemon([switch])
    srtp = {
        **ACME,
        "rtp_secure_media_confirmed_audio": "true",
        "rtp_has_crypto": "AES_CM_128_HMAC_SHA1_80",
    }
    sa, sb = switch.bridged_call(
        variables_a=srtp,
        variables_b=ACME,
        caller=("Secure Sam", "1001"),
        callee=("Bob Baker", "1002"),
    )
    old, _ = call(switch, ACME, ("Old Caller", "1009"), ("Someone", "1010"))
    busy, busy_b = call(switch, ACME, ("Carol Cruz", "1003"), ("Dan Dorsey", "1004"))
    elsewhere, _ = call(switch, OTHER, ("Other Tenant", "2001"), ("Someone Else", "2002"))
    oa, ob = call(switch, OTHER, ("Still Up", "2003"), ("Someone Else", "2004"))
    wait_until(lambda: len(h.table.all()) == 10, what="the calls in the table")
    switch.hangup(old, "CALL_REJECTED")
    switch.hangup(elsewhere, "NORMAL_CLEARING")
    wait_until(lambda: len(h.api.data("/v2/channels?ended=true")) == 4, what="ended calls")

    page.driver.set_window_size(1400, 900)
    page.open(base(h))
    page.login(token("super"))
    page.wait_live()
    page.wait(lambda: set(page.uuids()) == {sa, sb, busy, busy_b, oa, ob}, "the live calls")
    # Ended before the page was opened: from ?ended=true.
    page.wait(lambda: len(page.finds("#ended-list li")) == 4, "the calls ended before")
    assert "CALL_REJECTED" in page.find(f'#ended-list li[data-uuid="{old}"]').text
    assert page.cells(sa)["flags"] == "encrypted" and page.cells(sb)["flags"] == ""
    page.row(sa).find_element(By.CSS_SELECTOR, "button.sel").click()
    page.wait(lambda: field(page, "encrypted") == "srtp · AES_CM_128_HMAC_SHA1_80", "encryption")

    # Ended while watching: from the stream's destroy, newest first.
    switch.hangup(busy, "USER_BUSY")
    page.wait(lambda: busy not in page.uuids(), "the call gone from the board")
    page.wait(
        lambda: page.finds("#ended-list li")[0].get_attribute("data-uuid") in (busy, busy_b),
        "the new ended call on top",
    )
    assert "USER_BUSY" in page.find(f'#ended-list li[data-uuid="{busy}"]').text
    assert "0:0" in page.find(f'#ended-list li[data-uuid="{busy}"]').text  # its duration
    page.shot("17-encrypted-and-ended")

    # The account selector and the filter box narrow recently ended calls too.
    select = Select(page.find("#account-select"))
    select.select_by_visible_text(next(o.text for o in select.options if "acc2" in o.text))
    page.wait(
        lambda: (
            {li.get_attribute("data-uuid") for li in page.finds("#ended-list li")}
            == {elsewhere, h.api.data("/v2/channels?ended=true&filter_account_id=acc2")[1]["uuid"]}
        ),
        "only acc2's ended calls",
    )
    select.select_by_index(0)
    page.find("#filter").send_keys("rejected")
    rejected = {
        i["uuid"]
        for i in h.api.data("/v2/channels?ended=true")
        if i["hangup_cause"] == "CALL_REJECTED"
    }
    assert old in rejected
    page.wait(
        lambda: {li.get_attribute("data-uuid") for li in page.finds("#ended-list li")} == rejected,
        "only the rejected call",
    )
    # An ended entry opens its details, with how it ended.
    page.find(f'#ended-list li[data-uuid="{old}"] button').click()
    status = page.find("#details-status")
    page.wait(lambda: "CALL_REJECTED" in status.text, "the ended call's details")
    assert field(page, "caller") == "Old Caller (1009)"
    assert page.problems() == []


# -- switch values that try to reorder the page, and channels named by node and uuid -----------

# The characters of an element's text, in text order, with where each is drawn.
CHAR_BOXES = """
const el = arguments[0];
const out = [];
const walker = document.createTreeWalker(el, NodeFilter.SHOW_TEXT);
for (let n = walker.nextNode(); n; n = walker.nextNode()) {
  for (let i = 0; i < n.length; i++) {
    const r = document.createRange();
    r.setStart(n, i);
    r.setEnd(n, i + 1);
    const b = r.getBoundingClientRect();
    out.push([n.data[i], b.left, b.right, b.top]);
  }
}
return out;
"""


def reads_in_order(page: Page, element: Any, after: str) -> None:
    """`after` (our own words that follow a switch value) is drawn left to right, line by
    line, right of everything before it on its line: the value reordered nothing around it."""
    boxes = page.driver.execute_script(CHAR_BOXES, element)
    text = "".join(b[0] for b in boxes)
    start = text.rindex(after)
    shown = [b for b in boxes[start : start + len(after)] if b[0].strip()]
    lines: dict[int, list[float]] = {}
    for _, left, _, top in shown:
        lines.setdefault(round(top), []).append(left)
    for lefts in lines.values():
        assert lefts == sorted(lefts), (text, after, shown)
    first = round(shown[0][3])
    before = [b for b in boxes[:start] if b[2] > b[1] and round(b[3]) == first]
    edge = max((b[2] for b in before), default=0)
    assert all(left >= edge - 0.5 for left in lines[first]), (text, after, edge, shown)


BIDI_NAMES = {
    "override": "\u202eevil",  # right-to-left override, never closed
    "stray_pdi": "\u2069\u202eevil",  # closes an isolate it is not in, then overrides
    "isolate": "\u2067evil\u202e",  # an isolate and an override left open
    "attack": "\u202eevil\u202c",  # the attack's own, closed
    "hebrew": "שלום",  # no control at all: right-to-left letters before a number
}


def test_bidi_controls_in_names_reorder_nothing_around_them(
    switch: Any, make_daemon: Any, page: Page
) -> None:
    h = make_daemon([switch])
    legs = {
        k: call(switch, ACME, (name, f"10{i:02d}"), ("Bob Baker", "2000"))
        for i, (k, name) in enumerate(BIDI_NAMES.items())
    }
    wait_until(lambda: len(h.table.all()) == 2 * len(legs), what="the calls in the table")
    page.driver.set_window_size(1400, 900)
    page.open(base(h))
    page.login(token("super"))
    page.wait_live()
    page.wait(lambda: len(page.uuids()) == 2 * len(legs), "the calls on the board")
    for i, (k, (a, _)) in enumerate(legs.items()):
        number = f" (10{i:02d})"
        reads_in_order(page, page.row(a).find_element(By.CSS_SELECTOR, ".col-caller"), number)
        # The details: its title and its caller.
        page.row(a).find_element(By.CSS_SELECTOR, "button.sel").click()
        page.wait(lambda a=a: field(page, "uuid") == a, "the details")
        reads_in_order(page, page.find("#details-title"), f"{number} → Bob Baker (2000)")
        reads_in_order(page, page.find('#details-body dd[data-field="caller"]'), number)
        # The actions dialog names the call too.
        page.open_actions(a)
        reads_in_order(page, page.find("#action-subject"), f"{number} → Bob Baker (2000) · ")
        page.driver.switch_to.active_element.send_keys(Keys.ESCAPE)
        page.wait(lambda: not page.find("#action-dialog").is_displayed(), "the dialog closed")
        # And once it has ended, its entry among recently ended calls.
        switch.hangup(a)
        page.wait(lambda a=a: page.finds(f'#ended-list li[data-uuid="{a}"]'), "ended", 10)
        entry = page.find(f'#ended-list li[data-uuid="{a}"] .ended-parties')
        reads_in_order(page, entry, f"{number} → Bob Baker (2000)")
        assert BIDI_NAMES[k].strip("\u202c\u2069") in entry.get_attribute("textContent"), k
    page.shot("18-bidi-names")
    # Text only: nothing the names held became markup.
    assert page.driver.execute_script("return document.querySelectorAll('bdi *').length") == 0
    assert page.problems(allow=("status of 403",)) == []


def test_the_same_uuid_on_two_nodes_is_two_channels(make_switch: Any, make_daemon: Any, page: Page):
    s1, s2 = make_switch(), make_switch()
    h = make_daemon([s1, s2])
    same, b1 = call(s1, ACME, ("On Node One", "1001"), ("Bob Baker", "1002"))
    s2.originate(dest="9003", variables=ACME, uuid=same)
    wait_until(lambda: len(h.api.data("/v2/channels")) == 4, what="4 channels in the API")
    page.driver.set_window_size(1400, 900)
    page.open(base(h))
    page.login(token("super"))
    page.wait_live()
    page.wait(lambda: len(page.uuids()) == 4, "the 4 channels on the board")
    assert page.find("#counts").text == "3 calls, 4 channels"

    def row(node: str) -> Any:
        return page.find(f'#channels tr[data-uuid="{same}"][data-node="{node}"]')

    # Node 1's legs are one call; node 2's channel of that uuid is another.
    together = "return arguments[0].parentElement === arguments[1].parentElement;"
    assert page.driver.execute_script(together, row("fs1"), page.row(b1))
    assert not page.driver.execute_script(together, row("fs2"), page.row(b1))
    assert "On Node One" not in row("fs2").text

    # The details of node 2's channel are node 2's (the single GET, by uuid alone, may answer
    # with node 1's: it is not shown).
    row("fs2").find_element(By.CSS_SELECTOR, "button.sel").click()
    page.wait(lambda: field(page, "node") == "fs2", "node 2's details")
    gevent.sleep(1)  # the single GET came back meanwhile
    assert field(page, "node") == "fs2" and "On Node One" not in page.find("#details").text

    # Node 1's copy hangs up: node 2's stays, on the board and in the panel.
    s1.hangup(same)
    page.wait(lambda: page.find("#counts").text == "2 calls, 2 channels", "node 1's call gone")
    assert page.uuids().count(same) == 1 and row("fs2").is_displayed()
    page.wait(lambda: page.finds(f'#ended-list li[data-uuid="{same}"]'), "node 1's ended call")
    assert page.find(f'#ended-list li[data-uuid="{same}"]').get_attribute("data-node") == "fs1"
    assert page.find("#details-status").is_displayed() is False, "node 2's channel is live"
    assert field(page, "node") == "fs2"
    page.shot("19-same-uuid-two-nodes")
    assert page.problems() == []


def test_how_a_call_ended_reads_right_for_every_disposition(
    switch: Any, make_daemon: Any, page: Page
) -> None:
    h = make_daemon([switch])
    want = {
        "send_bye": "hung up by the switch",
        "recv_bye": "hung up by the far end",
        "send_cancel": "cancelled by the switch",
        "recv_cancel": "cancelled by the far end",
        "send_refuse": "refused by the switch",
        "recv_refuse": "refused by the far end",
        "something_new": "ended: something_new",  # one the page does not know
    }
    ended = {}
    for n, disposition in enumerate(want):
        a, _ = call(switch, ACME, (f"Caller {n}", f"10{n:02d}"), ("Bob Baker", "2000"))
        wait_until(lambda a=a: h.table.get(a), what="the call in the table")
        switch.set_variable(a, "sip_hangup_disposition", disposition)
        switch.hangup(a, "CALL_REJECTED")
        ended[disposition] = a
    wait_until(lambda: len(h.api.data("/v2/channels?ended=true")) == 2 * len(want), what="ended")
    page.driver.set_window_size(1400, 900)
    page.open(base(h))
    page.login(token("super"))
    page.wait_live()
    page.wait(lambda: len(page.finds("#ended-list li")) == 2 * len(want), "the ended calls")
    for disposition, uuid in ended.items():
        entry = page.find(f'#ended-list li[data-uuid="{uuid}"]')
        how = entry.find_element(By.CSS_SELECTOR, '[data-field="hung_up_by"]').text
        assert how == want[disposition], disposition
        assert f"CALL_REJECTED · {want[disposition]} · 0:0" in entry.text, entry.text
        entry.find_element(By.CSS_SELECTOR, "button").click()
        status = page.find("#details-status")
        page.wait(lambda uuid=uuid: field(page, "uuid") == uuid, "its details")
        assert field(page, "hung_up_by") == want[disposition]
        assert status.text.startswith(
            f"This channel has ended: CALL_REJECTED · {want[disposition]} · after 0:0"
        ), status.text
    page.shot("20-how-calls-ended")
    assert page.problems() == []
