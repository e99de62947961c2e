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
import pytest
from gevent.server import StreamServer

from conftest import Harness, start_demo, token, wait_until

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
        select = Select(page.find("#account-select"))
        page.wait(lambda: any("acme" in o.text for o in select.options), "acme in the selector")
        select.select_by_visible_text(next(o.text for o in select.options if "acme" in o.text))
        page.wait(
            lambda: {page.cells(u)["account"] for u in page.uuids()} == {"acme.demo.example"},
            "only acme's calls",
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
        page.wait(lambda: page.uuids(), "acme's calls for its admin")
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
    page.wait(lambda: page.cells(a2)["hold"] == "on hold", "the hold badge")
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
    page.wait(lambda: page.cells(a)["hold"] == "on hold", "the call on hold")
    assert page.problems(allow=("status of 400",)) == []


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
