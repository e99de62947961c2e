"""Operating the daemon: systemd notify and watchdog, health, readiness, metrics, reload."""

import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import gevent
import pytest
import requests
from gevent import monkey

from channelsd import httpserver
from channelsd.config import HttpLimits, WebsocketConfig, parse
from channelsd.daemon import Daemon
from channelsd.health import SystemdNotifier
from channelsd.logs import JsonFormatter
from channelsd.tokens import digest

from conftest import Harness, config_dict, token, wait_until

ROOT = Path(__file__).resolve().parent.parent
real_socket = monkey.get_original("socket", "socket")
real_sleep = monkey.get_original("time", "sleep")
start_os_thread = monkey.get_original("_thread", "start_new_thread")


class NotifySocket:
    """A real AF_UNIX datagram socket standing in for systemd's NOTIFY_SOCKET.

    It is read by an OS thread, so messages are time-stamped when they arrive even while
    the gevent hub of the daemon under test is blocked.
    """

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.sock = real_socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, str]] = []
        self._running = True
        self._done = False
        start_os_thread(self._read, ())

    def _read(self) -> None:
        while self._running:
            try:
                data = self.sock.recv(4096)
            except OSError:
                continue
            self.messages.append((time.monotonic(), data.decode()))
        self._done = True

    def lines(self) -> list[str]:
        return [line for _, m in self.messages for line in m.split("\n")]

    def close(self) -> None:
        self._running = False
        deadline = time.monotonic() + 2
        while not self._done and time.monotonic() < deadline:
            real_sleep(0.05)
        self.sock.close()


def test_notify_ready_status_and_stopping_over_a_real_socket(switch: Any, tmp_path: Path) -> None:
    sock = NotifySocket(tmp_path / "notify")
    try:
        notifier = SystemdNotifier({"NOTIFY_SOCKET": sock.path})
        switch.bridged_call(variables_a={"account_id": "a"}, variables_b={"account_id": "a"})
        daemon = Daemon(parse(config_dict([switch]), "t.toml"), notifier=notifier)
        daemon.start()
        wait_until(lambda: "READY=1" in sock.lines(), what="READY=1")
        ready_msg = next(m for _, m in sock.messages if "READY=1" in m)
        # READY only once the node reconciled: the status already counts its channels.
        assert "STATUS=1/1 nodes ready, 2 channels" in ready_msg
        daemon.stop()
        wait_until(lambda: "STOPPING=1" in sock.lines(), what="STOPPING=1")
    finally:
        sock.close()


def test_ready_after_the_start_timeout_names_the_missing_node(switch: Any, tmp_path: Path) -> None:
    sock = NotifySocket(tmp_path / "notify")
    try:
        switch.pause_accept(True)
        cfg = parse(config_dict([switch], systemd={"ready_timeout": 0.3}), "t.toml")
        daemon = Daemon(cfg, notifier=SystemdNotifier({"NOTIFY_SOCKET": sock.path}))
        daemon.start()
        wait_until(lambda: "READY=1" in sock.lines(), what="READY=1 at the timeout")
        ready_msg = next(m for _, m in sock.messages if "READY=1" in m)
        assert ready_msg.split("\n") == [
            "READY=1",
            "STATUS=0/1 nodes ready, 0 channels, waiting for fs1",
        ]
        daemon.stop()
    finally:
        sock.close()


def test_watchdog_pings_stop_while_the_hub_is_blocked(switch: Any, tmp_path: Path) -> None:
    sock = NotifySocket(tmp_path / "notify")
    try:
        env = {"NOTIFY_SOCKET": sock.path, "WATCHDOG_USEC": "200000"}
        daemon = Daemon(parse(config_dict([switch]), "t.toml"), notifier=SystemdNotifier(env))
        daemon.start()
        wait_until(lambda: "WATCHDOG=1" in sock.lines(), what="first ping")
        gevent.sleep(0.5)
        blocked_at = time.monotonic()
        real_sleep(1.5)  # a wedged hub: nothing else can run
        unblocked_at = time.monotonic()
        gevent.sleep(0.6)
        pings = [t for t, m in sock.messages if "WATCHDOG=1" in m]
        assert not [t for t in pings if blocked_at + 0.05 < t < unblocked_at]
        assert [t for t in pings if t < blocked_at] and [t for t in pings if t > unblocked_at]
        daemon.stop()
    finally:
        sock.close()


def test_abstract_notify_socket_address_is_understood() -> None:
    n = SystemdNotifier({"NOTIFY_SOCKET": "@/org/freedesktop/systemd1/notify/x"})
    assert n.address == "\0/org/freedesktop/systemd1/notify/x"
    assert SystemdNotifier({}).enabled is False
    assert (
        SystemdNotifier({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}).watchdog_interval
        is None
    )


def test_healthz_readyz_without_token_and_without_secrets(daemon: Harness, switch: Any) -> None:
    resp = daemon.api.get("/healthz", tok=None)
    assert resp.status_code == 200 and resp.json()["status"] == "ok"
    resp = daemon.api.get("/readyz", tok=None)
    assert resp.status_code == 200
    assert resp.json()["nodes"] == [
        {"node": "fs1", "state": "ready", "connected": True, "synced": True}
    ]
    assert "ClueCon" not in resp.text and str(switch.port) not in resp.text
    switch.pause_accept(True)
    switch.drop_connections()
    wait_until(lambda: daemon.api.get("/readyz", tok=None).status_code == 503, what="not ready")


def test_metrics_in_prometheus_format(daemon: Harness, switch: Any) -> None:
    a, b = switch.bridged_call(
        variables_a={"account_id": "acc1"}, variables_b={"account_id": "acc1"}
    )
    wait_until(lambda: daemon.table.get(b) is not None)
    daemon.api.get("/v2/accounts/acc1/channels", "admin1")
    daemon.api.get("/v2/accounts/acc1/channels", None)
    resp = daemon.api.get("/metrics", tok=None)
    assert resp.status_code == 200 and resp.headers["Content-Type"].startswith("text/plain")
    text = resp.text
    assert 'channelsd_channels{node="fs1"} 2.0' in text
    assert "channelsd_accounts 1.0" in text
    assert 'channelsd_node_connected{node="fs1"} 1.0' in text
    assert 'channelsd_node_synced{node="fs1"} 1.0' in text
    assert 'channelsd_esl_events_total{event="CHANNEL_CREATE",node="fs1"} 2.0' in text
    assert 'channelsd_reconciles_total{node="fs1",result="ok"} 1.0' in text
    assert 'channelsd_esl_command_duration_seconds_count{command="show",node="fs1"}' in text
    route = "/v2/accounts/<account_id>/channels"
    assert f'channelsd_http_requests_total{{method="GET",route="{route}",status="200"}} 1.0' in text
    assert f'channelsd_http_requests_total{{method="GET",route="{route}",status="401"}} 1.0' in text
    assert "channelsd_http_request_duration_seconds_bucket" in text
    assert token("admin1") not in text
    assert "channelsd_ended_calls 0.0" in text
    switch.hangup(a)
    wait_until(lambda: daemon.table.get(b) is None)
    wait_until(lambda: "channelsd_ended_calls 2.0" in daemon.api.get("/metrics", tok=None).text)


def test_json_logs_carry_the_key_value_pairs() -> None:
    import logging

    record = logging.LogRecord(
        "channelsd.node", logging.INFO, "", 0, "node=%s reconciled added=%d", ("fs1", 3), None
    )
    entry = json.loads(JsonFormatter().format(record))
    assert entry["msg"] == "node=fs1 reconciled added=3"
    assert entry["node"] == "fs1" and entry["added"] == "3" and entry["level"] == "info"


def test_the_unit_file_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is needed to check the unit (Debian package systemd)"
    unit = (ROOT / "systemd" / "channelsd.service").read_text()
    assert "Type=notify" in unit and "WatchdogSec=" in unit
    exe = shutil.which("channelsd") or str(Path(sys.executable).parent / "channelsd")
    path = tmp_path / "channelsd.service"
    path.write_text(unit.replace("/usr/local/bin/channelsd", exe))
    proc = subprocess.run(
        [analyze, "verify", str(path)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert "channelsd.service" not in proc.stderr, proc.stderr


def unit_directives(text: str) -> dict[str, list[str]]:
    """A systemd unit's directives (every section), each key's values in order."""
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        found.setdefault(key.strip(), []).append(value.strip())
    return found


UNIT = ROOT / "systemd" / "channelsd.service"
EDITED = "/etc/channelsd/channelsd.toml"  # the file README tells operators to edit


def test_the_unit_runs_on_the_file_operators_edit_and_its_user_may_read_it() -> None:
    unit = unit_directives(UNIT.read_text())
    for key in ("ExecStartPre", "ExecStart"):
        argv = unit[key][0].split()
        assert argv[argv.index("-c") + 1] == EDITED, key
    # A credential is a copy taken once at start: a reload could never see an edit.
    assert "LoadCredential" not in unit and "CREDENTIALS_DIRECTORY" not in UNIT.read_text()
    # A static user and group, so that the file can belong to the group: root writes it,
    # the service only reads it (a DynamicUser could not be a file's group).
    assert unit["User"] == ["channelsd"] and unit["Group"] == ["channelsd"]
    assert "DynamicUser" not in unit
    sysusers = (ROOT / "systemd" / "channelsd.sysusers").read_text()
    assert re.search(r"^u channelsd ", sysusers, re.M)
    readme = (ROOT / "README.md").read_text()
    install = next(line for line in readme.splitlines() if f"conf/channelsd.toml {EDITED}" in line)
    assert "-m 0640" in install and "-g channelsd" in install and "-o root" in install
    # The hardening stays.
    for key, value in (
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("CapabilityBoundingSet", ""),
    ):
        assert unit[key] == [value], key
    # Enough descriptors for the default connection limit and websockets (a second
    # descriptor each), which the daemon would otherwise lower
    # (channelsd.httpserver.connection_budget).
    nofile = int(unit["LimitNOFILE"][0])
    most = HttpLimits().max_connections
    sockets = WebsocketConfig().max_sockets
    assert (nofile - httpserver.FD_RESERVE - 4 - sockets) * 8 // 9 >= most


def test_systemd_sysusers_accepts_the_user_file() -> None:
    sysusers = shutil.which("systemd-sysusers")
    assert sysusers, "systemd-sysusers is needed to check the file (Debian package systemd)"
    path = ROOT / "systemd" / "channelsd.sysusers"
    proc = subprocess.run(
        [sysusers, "--dry-run", str(path)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout + proc.stderr
    try:
        pwd.getpwnam("channelsd")  # already there: nothing to create
    except KeyError:
        assert "Creating group 'channelsd'" in out and "Creating user 'channelsd'" in out, out


def test_the_units_reload_path_rereads_the_file(switch: Any, tmp_path: Path) -> None:
    """What `systemctl reload` does under the shipped unit, done for real: the process the
    unit's ExecStart starts, on the file its -c names (here in a temporary directory), gets
    the signal ExecReload sends, after an edit of that file."""
    unit = unit_directives(UNIT.read_text())
    reload_argv = unit["ExecReload"][0].split()
    assert reload_argv[0].endswith("/kill") and reload_argv[-1] == "$MAINPID"
    signum = getattr(signal, "SIG" + reload_argv[1].lstrip("-").removeprefix("s ").upper())
    a, b = switch.bridged_call(
        variables_a={"account_id": "acc1"}, variables_b={"account_id": "acc1"}
    )
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    conf = tmp_path / "channelsd.toml"

    def write(tokens: str) -> None:
        conf.write_text(
            f'[http]\nport = {port}\n[[nodes]]\nname = "fs1"\nhost = "127.0.0.1"\n'
            f'port = {switch.port}\npassword = "ClueCon"\n{tokens}'
        )

    old = f'[[tokens]]\nsha256 = "{digest("old-token")}"\naccount_id = "acc1"\nrole = "admin"\n'
    new = f'[[tokens]]\nsha256 = "{digest("new-token")}"\naccount_id = "acc1"\nrole = "admin"\n'
    write(old)
    argv = unit["ExecStart"][0].split()
    argv = [sys.executable, "-m", "channelsd", *argv[1:]]  # the installed script, in place
    argv[argv.index("-c") + 1] = str(conf)
    proc = subprocess.Popen(
        argv,
        cwd=ROOT,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    base = f"http://127.0.0.1:{port}"
    url = base + "/v2/accounts/acc1/channels"

    def status(tok: str) -> int:
        try:
            return requests.get(url, headers={"X-Auth-Token": tok}, timeout=2).status_code
        except requests.ConnectionError:
            return 0

    stream = None
    try:
        wait_until(lambda: status("old-token") == 200, timeout=30, what="daemon up")
        wait_until(lambda: len(switch.connections) == 2, what="both ESL connections up")
        connections = list(switch.connections)
        stream = requests.get(
            base + "/v2/accounts/acc1/channel_events",
            headers={"X-Auth-Token": "old-token"},
            stream=True,
            timeout=10,
        )
        lines = stream.iter_lines()
        assert next(lines).startswith(b"id: ")
        write(new)
        os.kill(proc.pid, signum)  # $MAINPID: `channelsd run` is the main process
        wait_until(lambda: status("new-token") == 200, what="new token accepted")
        assert status("old-token") == 401
        # The old token's stream was closed by the reload: it ends (the read would time
        # out otherwise), with nothing sent after the snapshot it had.
        rest = list(lines)
        assert not [x for x in rest if x.startswith((b"event: create", b"event: update"))]
        write("[[tokens]]\nsha256 = 'broken'\n")  # a bad file is refused, the old config stays
        os.kill(proc.pid, signum)
        gevent.sleep(0.5)
        assert status("new-token") == 200
        assert switch.connections == connections  # the same two: no reconnect happened
        assert {
            c["uuid"]
            for c in requests.get(url, headers={"X-Auth-Token": "new-token"}, timeout=2).json()[
                "data"
            ]
        } == {a, b}
    finally:
        if stream is not None:
            stream.close()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
    err = proc.stderr.read()
    assert "reload refused" in err and "Traceback" not in err
    assert "streams_revoked=1" in err


def test_gevent_plugins_are_called_with_the_entry_points_read_once(tmp_path: Path) -> None:
    """`channelsd run` patches with gevent's entry points read once a group (issue #16's
    start-up): a plugin registered by an installed distribution still hears every
    announcement, and importlib.metadata is as it was afterwards."""
    info = tmp_path / "plugin_probe-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: plugin-probe\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[gevent.plugins.monkey.will_patch_module]\nprobe = plugin_probe:module\n\n"
        "[gevent.plugins.monkey.did_patch_all]\nprobe = plugin_probe:done\n"
    )
    (tmp_path / "plugin_probe.py").write_text(
        "heard = []\n"
        "def module(event):\n    heard.append(event.module_name)\n"
        "def done(event):\n    heard.append('all')\n"
    )
    script = """
import json
from importlib import metadata
asked = []
real = metadata.entry_points
def counting(**kw):
    asked.append(kw.get("group"))
    return real(**kw)
metadata.entry_points = counting
from channelsd.cli import _patch_all
_patch_all()
import socket, gevent.socket, plugin_probe
print(json.dumps({
    "heard": plugin_probe.heard, "asked": asked, "restored": metadata.entry_points is counting,
    "patched": socket.socket is gevent.socket.socket,
}))
"""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["patched"] and out["restored"]
    assert out["heard"][-1] == "all"
    assert {"socket", "ssl", "time"} <= set(out["heard"])  # every module announced
    assert len(out["asked"]) == len(set(out["asked"])) >= 2  # one scan a group


def test_a_failed_patch_all_leaves_importlib_metadata_as_it_was(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from importlib import metadata

    from channelsd.cli import _patch_all

    before = metadata.entry_points
    during: list[bool] = []

    def failing(*a: Any, **kw: Any) -> None:
        during.append(metadata.entry_points is not before)
        raise RuntimeError("patching failed")

    monkeypatch.setattr(monkey, "patch_all", failing)
    with pytest.raises(RuntimeError):
        _patch_all()
    assert during == [True]
    assert metadata.entry_points is before
