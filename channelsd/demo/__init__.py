"""`channelsd demo`: the daemon against the built-in stand-in switch, with calls coming and going.

The daemon connects to the stand-in over TCP exactly as it would to a real node; nothing in
the daemon knows it is a demo.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
from typing import Any

import gevent

from channelsd.config import parse
from channelsd.daemon import Daemon
from channelsd.tokens import new_token

from .pbx import SWITCH_IP, DemoUser, demo_users
from .traffic import Traffic

__all__ = ["DemoUser", "Traffic", "demo_actions", "demo_media", "demo_users", "run_demo"]

log = logging.getLogger("channelsd.demo")

# Where the demo's media ids are (as Kazoo keeps media per account): [actions].media_template.
MEDIA_TEMPLATE = "/var/lib/channelsd-demo/media/{account_id}/{media_id}.wav"


def demo_media(users: list[DemoUser]) -> dict[str, str]:
    """Each demo account's hold music, a Kazoo-style media id: account id -> media id."""
    return {
        u.account: hashlib.md5(
            f"demo-media-{u.realm}-hold".encode(), usedforsecurity=False
        ).hexdigest()
        for u in users
    }


def demo_actions(users: list[DemoUser], switch: Any = None) -> dict[str, Any]:
    """The demo's [actions]: targets of intercept and eavesdrop the stand-in can ring, and
    Kazoo media ids that play (with `switch`, the stand-in is told which files there are).

    The stand-in dials loopback/ only (a switch without the user/ endpoint answers -ERR
    CHAN_NOT_IMPLEMENTED): every device, user or number target rings loopback/<id>, which its
    dialplan answers at once, so a pickup or a listen-in can be tried from the API."""
    media = demo_media(users)
    if switch is not None:
        for account, media_id in media.items():
            folder = MEDIA_TEMPLATE.format(account_id=account, media_id="x").rpartition("/")[0]
            switch.model.media_files[folder + "/"] = {f"{media_id}.wav"}
    ring = "loopback/{target_id}/{context}"
    return {
        "intercept_endpoints": {"device": ring, "user": ring, "number": ring},
        "media_template": MEDIA_TEMPLATE,
    }


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
            "actions": demo_actions(users, switch),
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
    bob = next(u for u in users if u.account == acme.account and u is not acme)
    acme_api = f"{base}/v2/accounts/{acme.account}/channels"
    hold_music = demo_media(users)[acme.account]
    pickup = json.dumps(
        {"data": {"action": "intercept", "target_type": "device", "target_id": bob.device_id}}
    )
    kazoo_transfer = json.dumps(
        {"data": {"action": "transfer", "target": "1003", "takeback_dtmf": "*1", "moh": hold_music}}
    )
    print(
        f"""
channelsd demo is running: a stand-in FreeSWITCH on 127.0.0.1:{switch.port} playing a small
PBX, about {calls} calls coming and going (SIP phones in three accounts, a carrier trunk).
The API:

  {base}/v2
  ws://{h}:{p}{cfg.websocket.path}   (Kazoo's websocket: call events for monster-ui)

Live calls board in the browser (sign in with the superduper token alone, or with an admin
or user token and its account id, printed beside it):

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

Act on a call as an operator would (the stand-in rings every device, user or number target
as a phone that answers at once). Take a channel's uuid from the lists above:
  pick up a ringing phone (a leg with "direction": "outbound" and "answered": false, the
  phone's side) on {bob.name}'s device:
    curl -s -X POST -H 'X-Auth-Token: {admin_token}' -H 'Content-Type: application/json' \\
         -d '{pickup}' \\
         '{acme_api}/<uuid>'
  listen in on an answered call: the same with "action": "eavesdrop" (and "mode": "whisper"
    or "barge" to be heard);
  Kazoo's attended transfer, with acme's hold music (media id {hold_music}):
    curl -s -X POST -H 'X-Auth-Token: {admin_token}' -H 'Content-Type: application/json' \\
         -d '{kazoo_transfer}' \\
         '{acme_api}/<uuid>'

Stop with Ctrl-C.
""",
        flush=True,
    )
    daemon.wait()
    switch.stop()
    return 0
