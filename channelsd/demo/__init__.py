"""`channelsd demo`: the daemon against the built-in stand-in switch, with calls coming and going.

The daemon connects to the stand-in over TCP exactly as it would to a real node; nothing in
the daemon knows it is a demo.
"""

from __future__ import annotations

import logging
import sys

import gevent

from channelsd.config import parse
from channelsd.daemon import Daemon
from channelsd.tokens import new_token

from .pbx import SWITCH_IP, DemoUser, demo_users
from .traffic import Traffic

__all__ = ["DemoUser", "Traffic", "demo_users", "run_demo"]

log = logging.getLogger("channelsd.demo")


def run_demo(host: str, port: int, calls: int, seed: int | None = None) -> int:
    from channelsd.standin.server import StandinSwitch

    switch = StandinSwitch(host="127.0.0.1", port=0, hostname="demo-fs1", ipv4=SWITCH_IP)
    switch.start()

    users = demo_users()
    acme = users[0]
    super_token, super_hash = new_token()
    admin_token, admin_hash = new_token()
    user_token, user_hash = new_token()
    tokens = [
        {"name": "demo-super", "sha256": super_hash, "account_id": "demo", "role": "superduper"},
        {"name": "demo-acme", "sha256": admin_hash, "account_id": acme.account, "role": "admin"},
        {
            "name": "demo-alice",
            "sha256": user_hash,
            "account_id": acme.account,
            "role": "user",
            "owner_id": acme.user_id,
        },
    ]
    cfg = parse(
        {
            "http": {"host": host, "port": port},
            "nodes": [
                {
                    "name": "demo-fs1",
                    "host": "127.0.0.1",
                    "port": switch.port,
                    "password": "ClueCon",
                }
            ],
            "api": {"system_wide_channels_list": True},
            "identity": {"device_owners": {u.device_id: u.user_id for u in users}},
            "tokens": tokens,
        },
        "<demo>",
    )
    daemon = Daemon(cfg)
    try:
        daemon.start()
    except OSError as exc:
        print(f"channelsd: cannot listen on {host}:{port}: {exc} (try --port 0)", file=sys.stderr)
        switch.stop()
        return 1
    traffic = Traffic(switch, calls, seed)
    gevent.spawn(traffic.run).link_exception(
        lambda g: log.error("demo traffic stopped: %r", g.exception)
    )

    h, p = daemon.http_address
    base = f"http://{h}:{p}"
    print(
        f"""
channelsd demo is running: a stand-in FreeSWITCH on 127.0.0.1:{switch.port} playing a small
PBX, about {calls} calls coming and going (SIP phones in three accounts, a carrier trunk).
The API:

  {base}/v2
  ws://{h}:{p}{cfg.websocket.path}   (Kazoo's websocket: call events for monster-ui)

Live calls board in the browser (paste a token when asked):

  {base}/console/

Tokens (valid for this run only):
  superduper (every account, /v2/channels):  {super_token}
  admin of account "acme" ({acme.account}):  {admin_token}
  user Alice Archer of "acme" (her calls):   {user_token}

Try:
  curl -s -H 'X-Auth-Token: {super_token}' '{base}/v2/channels?pretty_print=true'
  curl -s -H 'X-Auth-Token: {admin_token}' '{base}/v2/accounts/{acme.account}/channels'
  curl -s -H 'X-Auth-Token: {admin_token}' -H 'Accept: text/csv' \\
       '{base}/v2/accounts/{acme.account}/channels'

Stop with Ctrl-C.
""",
        flush=True,
    )
    daemon.wait()
    switch.stop()
    return 0
