"""Kazoo's websocket from a browser, as monster-ui uses it (reference §3), in Debian's chromium.

The page is our own small client, written to the rules monster-ui's monster.socket.js follows
(no copy of it): the token inside each subscribe, listeners registered only on a success
reply matched by request_id, `forEach` over `data.errors` and `data.subscribed` without a
guard, events dispatched on the exact `subscribed_key`, sign-in asked again only for "failed
to authenticate token", `JSON.parse` of every frame without a guard, and on any close a
reconnect with back-off and every binding subscribed again. It is served from another origin
than the daemon's, as a portal is.
"""

import os
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest
from gevent.pywsgi import WSGIServer

from channelsd.blackhole.session import GOING_AWAY

from conftest import Harness, token, wait_until

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
    if os.environ.get("CI"):
        raise RuntimeError("chromium and chromium-driver are needed: .ci/run installs them")
    pytest.skip("Debian's chromium and chromium-driver are not installed", allow_module_level=True)

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>socket client</title></head><body><script>
"use strict";
const state = {opens: 0, closes: 0, errors: [], subscribed: [], needSignIn: false,
               others: [], creates: [], destroys: []};
const listeners = {};   // binding -> callbacks, only once the server said success
const pending = {};     // request_id -> what to do with its reply
const wanted = [];      // what the app asked for: subscribed again after every reconnect
let socket = null;
let seq = 0;

function request(action, tok, account, binding, onReply) {
  const rid = "r" + (++seq) + "-" + Date.now();
  pending[rid] = onReply;
  socket.send(JSON.stringify({action: action, auth_token: tok, request_id: rid,
                              data: {account_id: account, binding: binding}}));
}

function subscribe(binding, account, tok, callback) {
  request("subscribe", tok, account, binding, function (reply) {
    if (reply.status === "success") {
      (listeners[binding] = listeners[binding] || []).push(callback);
      reply.data.subscribed.forEach(function (b) { state.subscribed.push(b); });
    } else {
      reply.data.errors.forEach(function (e) {
        state.errors.push(e);
        if (e.indexOf("failed to authenticate token") === 0) { state.needSignIn = true; }
      });
    }
  });
}

window.bind = function (binding, account, tok, kind) {
  const callback = function (data) {
    state[kind].push(data.call_id + "|" + data.custom_channel_vars.account_id);
  };
  wanted.push([binding, account, tok, callback]);
  if (socket) { subscribe(binding, account, tok, callback); }
};

window.connect = function (url, delay) {
  const ws = new WebSocket(url);
  ws.onopen = function () {
    state.opens += 1;
    socket = ws;
    Object.keys(listeners).forEach(function (k) { delete listeners[k]; });
    wanted.forEach(function (w) { subscribe(w[0], w[1], w[2], w[3]); });
  };
  ws.onmessage = function (frame) {
    const data = JSON.parse(frame.data);
    if (data.action === "reply") {
      const onReply = pending[data.request_id];
      if (onReply) { delete pending[data.request_id]; onReply(data); }
    } else if (data.action === "event") {
      (listeners[data.subscribed_key] || []).forEach(function (cb) { cb(data.data); });
    } else {
      state.others.push(data);
    }
  };
  ws.onclose = function () {
    state.closes += 1;
    socket = null;
    const next = Math.min((delay || 125) * 2, 60000);
    setTimeout(function () { window.connect(url, next); }, next);
  };
};
window.state = state;
</script></body></html>
"""


@pytest.fixture(scope="module")
def driver() -> Iterator[Any]:
    profile = tempfile.mkdtemp(prefix="channelsd-ws-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"):
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    drv = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    drv.set_page_load_timeout(20)
    try:
        yield drv
    finally:
        drv.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def portal() -> Iterator[str]:
    """The page, from a server of its own: another origin than the daemon's."""

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/html; charset=utf-8")])
        return [PAGE.encode()]

    server = WSGIServer(("127.0.0.1", 0), app, log=None, error_log=None)
    server.start()
    yield f"http://127.0.0.1:{server.server_port}/"
    server.stop(timeout=1)


def test_a_browser_client_following_monster_uis_rules(
    switch: Any, daemon: Harness, driver: Any, portal: str
) -> None:
    host, port = daemon.daemon.http_address
    driver.get(portal)
    state = lambda: driver.execute_script("return window.state")  # noqa: E731
    url = f"ws://{host}:{port}/websocket"
    admin = token("admin1")
    driver.execute_script(
        "bind('call.CHANNEL_CREATE.*', 'acc1', arguments[0], 'creates');"
        "bind('call.CHANNEL_DESTROY.*', 'acc1', arguments[0], 'destroys');"
        "bind('call.CHANNEL_ANSWER.*', 'acc2', arguments[0], 'creates');"
        "bind('call.*.*', 'acc1', 'an-expired-token', 'creates');"
        "connect(arguments[1], 0);",
        admin,
        url,
    )
    wait_until(lambda: len(state()["subscribed"]) >= 2 and len(state()["errors"]) == 2)
    s = state()
    assert s["needSignIn"] is True
    assert sorted(s["errors"]) == ["failed to authenticate token", "unauthorized account id"]
    acc1, acc2 = {"account_id": "acc1"}, {"account_id": "acc2"}
    mine, _ = switch.bridged_call(variables_a=acc1, variables_b=acc1)
    theirs, _ = switch.bridged_call(variables_a=acc2, variables_b=acc2)
    wait_until(lambda: len(state()["creates"]) >= 2, what="both legs' creates in the page")
    switch.hangup(mine)
    wait_until(lambda: len(state()["destroys"]) >= 2, what="both legs' ends in the page")
    s = state()
    assert f"{mine}|acc1" in s["creates"] and f"{mine}|acc1" in s["destroys"]
    assert all(entry.endswith("|acc1") for entry in s["creates"] + s["destroys"])
    assert not any(theirs in entry for entry in s["creates"])
    assert s["others"] == [] and s["opens"] == 1
    # The server closes (a restart, a proxy): the page reconnects and subscribes again.
    for session in list(daemon.daemon.ctx.websockets.sessions):
        session.close(GOING_AWAY, "going away")
    wait_until(lambda: state()["opens"] == 2, what="the page reconnected")
    wait_until(lambda: len(daemon.daemon.ctx.websockets.hub._index.get("acc1", {})) == 2)
    again, _ = switch.bridged_call(variables_a=acc1, variables_b=acc1)
    wait_until(lambda: f"{again}|acc1" in state()["creates"], what="events after reconnecting")
    assert state()["closes"] == 1
