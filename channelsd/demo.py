"""`channelsd demo`: the daemon against the built-in stand-in switch, with calls coming and going.

The daemon connects to the stand-in over TCP exactly as it would to a real node; nothing in
the daemon knows it is a demo.
"""

from __future__ import annotations

import hashlib
import logging
import random
import sys
from dataclasses import dataclass
from typing import Any

import gevent

from channelsd.config import parse
from channelsd.daemon import Daemon
from channelsd.tokens import new_token

log = logging.getLogger("channelsd.demo")

HEARTBEAT_SECONDS = 20.0


def _id(label: str) -> str:
    """Kazoo-style 32-hex ids, stable across runs so curl lines keep working."""
    return hashlib.md5(label.encode(), usedforsecurity=False).hexdigest()


@dataclass(frozen=True)
class DemoUser:
    account: str
    realm: str
    user_id: str
    device_id: str
    username: str
    name: str
    extension: str


ACCOUNTS = {
    "acme": ["Alice Archer", "Bob Baker", "Carol Cruz"],
    "globex": ["Dan Dorsey", "Eve Ellis"],
    "initech": ["Frank Fox", "Grace Gill", "Heidi Hart"],
}


def demo_users() -> list[DemoUser]:
    users = []
    for acc_name, people in ACCOUNTS.items():
        for i, person in enumerate(people):
            first = person.split()[0].lower()
            users.append(
                DemoUser(
                    account=_id(f"demo-account-{acc_name}"),
                    realm=f"{acc_name}.demo.example",
                    user_id=_id(f"demo-user-{acc_name}-{first}"),
                    device_id=_id(f"demo-device-{acc_name}-{first}"),
                    username=f"{first}_{acc_name}",
                    name=person,
                    extension=str(1001 + i),
                )
            )
    return users


def _leg_vars(user: DemoUser) -> dict[str, str]:
    return {
        "ecallmgr_Account-ID": user.account,
        "ecallmgr_Owner-ID": user.user_id,
        "ecallmgr_Authorizing-ID": user.device_id,
        "ecallmgr_Authorizing-Type": "device",
        "ecallmgr_Username": user.username,
        "ecallmgr_Realm": user.realm,
        "presence_id": f"{user.username}@{user.realm}",
    }


class Traffic:
    """Keeps a realistic, changing set of calls up on the stand-in switch."""

    def __init__(self, switch: Any, target_calls: int, seed: int | None = None) -> None:
        self.switch = switch
        self.target = max(1, target_calls)
        self.rng = random.Random(seed)
        self.users = demo_users()
        self.calls: list[tuple[str, str]] = []

    def _alive(self) -> list[tuple[str, str]]:
        self.calls = [(a, b) for a, b in self.calls if a in self.switch.channels]
        return self.calls

    def new_call(self) -> None:
        caller = self.rng.choice(self.users)
        colleagues = [u for u in self.users if u.account == caller.account and u != caller]
        if colleagues and self.rng.random() < 0.6:
            callee = self.rng.choice(colleagues)
            vars_b = _leg_vars(callee)
            callee_id = (callee.name, callee.extension)
        else:  # an external number: the b-leg belongs to the account too, no owner
            number = f"+1555{self.rng.randint(1000000, 9999999)}"
            vars_b = {
                "ecallmgr_Account-ID": caller.account,
                "ecallmgr_Realm": caller.realm,
                "ecallmgr_Authorizing-Type": "resource",
            }
            callee_id = ("", number)
        a, b = self.switch.bridged_call(
            variables_a=_leg_vars(caller),
            variables_b=vars_b,
            caller=(caller.name, caller.extension),
            callee=callee_id,
            answer=self.rng.random() < 0.85,
        )
        self.calls.append((a, b))

    def step(self) -> None:
        calls = self._alive()
        roll = self.rng.random()
        if len(calls) < self.target * 0.7 or (len(calls) < self.target * 1.3 and roll < 0.45):
            self.new_call()
        elif calls and roll < 0.85:
            a, _ = self.rng.choice(calls)
            self.switch.hangup(a, self.rng.choice(["NORMAL_CLEARING"] * 4 + ["USER_BUSY"]))
        elif calls:
            a, _ = self.rng.choice(calls)
            channel = self.switch.channels.get(a)
            if channel is not None and channel.answered:
                if getattr(channel, "held", False) or getattr(channel, "is_onhold", False):
                    self.switch.unhold(a)
                else:
                    self.switch.hold(a)

    def run(self) -> None:
        for _ in range(self.target):
            self.new_call()
        last_beat = 0.0
        while True:
            gevent.sleep(self.rng.uniform(0.5, 3.0))
            try:
                self.step()
                now = gevent.get_hub().loop.now()
                if now - last_beat > HEARTBEAT_SECONDS:
                    self.switch.heartbeat()
                    last_beat = now
            except Exception:  # the demo must keep going; say what broke
                log.exception("demo traffic step failed")


def run_demo(host: str, port: int, calls: int) -> int:
    from channelsd.standin.server import StandinSwitch

    switch = StandinSwitch(host="127.0.0.1", port=0, hostname="demo-fs1")
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
    traffic = Traffic(switch, calls)
    gevent.spawn(traffic.run).link_exception(
        lambda g: log.error("demo traffic stopped: %r", g.exception)
    )

    h, p = daemon.http_address
    base = f"http://{h}:{p}"
    print(
        f"""
channelsd demo is running: a stand-in FreeSWITCH on 127.0.0.1:{switch.port}, about {calls}
calls in three accounts coming and going. The API:

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
