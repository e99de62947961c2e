"""`channelsd demo`, the README's first command, as a user runs it: a real process."""

import re
import signal
import subprocess
import time
from pathlib import Path

import requests

from channelsd.demo.traffic import TRUNK_TIMEOUT

from conftest import start_demo

ROOT = Path(__file__).resolve().parent.parent


def test_demo_serves_changing_calls_and_stops_on_sigterm() -> None:
    proc, text = start_demo(calls=4)
    try:
        super_token = re.search(r"superduper .*:\s+(\S+)", text).group(1)
        base = re.search(r"(http://127\.0\.0\.1:\d+)/v2", text).group(1)
        admin_line = re.search(
            r"curl -s -H 'X-Auth-Token: (\S+)' '(\S+/accounts/\w+/channels)'", text
        )
        assert admin_line, text

        def channels() -> list:
            resp = requests.get(
                f"{base}/v2/channels", headers={"X-Auth-Token": super_token}, timeout=5
            )
            assert resp.status_code == 200
            return resp.json()["data"]

        deadline = time.monotonic() + 30
        first = channels()
        while not first and time.monotonic() < deadline:
            time.sleep(0.2)
            first = channels()
        assert len(first) >= 2
        assert len({c["account_id"] for c in first}) >= 1
        # a small PBX's calls: SIP legs (no loopback), none ringing past its ring timeout
        for c in first:
            assert c["endpoint"] == "sofia" and not c["is_loopback"], c
            if not c["answered"]:
                assert c["elapsed_s"] <= TRUNK_TIMEOUT + 1, c
        # The demo's calls come and go: the set changes while we watch.
        seen = {c["uuid"] for c in first}
        while time.monotonic() < deadline and {c["uuid"] for c in channels()} == seen:
            time.sleep(0.3)
        assert {c["uuid"] for c in channels()} != seen
        # The printed admin line works as printed.
        token, url = admin_line.groups()
        resp = requests.get(url, headers={"X-Auth-Token": token}, timeout=5)
        assert resp.status_code == 200 and all(
            c["account_id"] == url.split("/accounts/")[1].split("/")[0] for c in resp.json()["data"]
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert code == 0
    assert "Traceback" not in proc.stderr.read()
