"""`channelsd run -c FILE`: the real-deployment path, as a process, against a stand-in node."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import requests

from channelsd.tokens import digest

from conftest import wait_until

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_run_serves_the_nodes_in_its_config_and_stops_on_sigterm(
    switch: Any, tmp_path: Path
) -> None:
    a, b = switch.bridged_call(
        variables_a={"account_id": "acc9"}, variables_b={"account_id": "acc9"}
    )
    port = free_port()
    conf = tmp_path / "channelsd.toml"
    conf.write_text(
        f"""
[http]
port = {port}

[[nodes]]
name = "edge1"
host = "127.0.0.1"
port = {switch.port}
password = "ClueCon"

[[tokens]]
sha256 = "{digest("run-test-token")}"
account_id = "acc9"
role = "admin"
"""
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "channelsd", "run", "-c", str(conf)],
        cwd=ROOT,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        url = f"http://127.0.0.1:{port}/v2/accounts/acc9/channels"

        def listed() -> set[str]:
            try:
                resp = requests.get(url, headers={"X-Auth-Token": "run-test-token"}, timeout=2)
            except requests.ConnectionError:
                return set()
            return {c["uuid"] for c in resp.json()["data"]} if resp.status_code == 200 else set()

        wait_until(lambda: listed() == {a, b}, timeout=30, what="channels listed")
        items = requests.get(url, headers={"X-Auth-Token": "run-test-token"}, timeout=2).json()
        assert {c["node"] for c in items["data"]} == {"edge1"}
    finally:
        began = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=20)
    assert code == 0 and time.monotonic() - began < 10
    stderr = proc.stderr.read()
    assert "Traceback" not in stderr
    assert "run-test-token" not in stderr and "ClueCon" not in stderr
