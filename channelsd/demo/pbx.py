"""The small PBX the demo plays: three accounts of desk phones and one carrier trunk.

Who is who (Kazoo-style ids, stable across runs so the printed tokens and curl lines keep
working), what each phone is (address, user agent), and how each of its SIP legs looks on the
switch: a phone's legs are on the ``internal`` profile, calls to and from the outside go through
the ``carrier1`` gateway on the ``external`` profile (mod_sofia's names and variables, as in the
s8 capture; see ``channelsd/standin/channels/sofia.py``).
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

from channelsd.standin.channels.sofia import SipEnd

SWITCH_IP = "10.10.0.5"  # the switch's own address: its SIP profiles and RTP
GATEWAY = "carrier1"
CARRIER_HOST = "sbc.carrier1.example"
CARRIER_IP = "203.0.113.10"
CARRIER_AGENT = "Carrier1-SBC/4.2"

ACCOUNTS = {
    "acme": ["Alice Archer", "Bob Baker", "Carol Cruz"],
    "globex": ["Dan Dorsey", "Eve Ellis"],
    "initech": ["Frank Fox", "Grace Gill", "Heidi Hart"],
}
# Each account's main number (a DID on the trunk); 555-01xx numbers are reserved for fiction.
MAIN_NUMBERS = {"acme": "+12125550100", "globex": "+13125550150", "initech": "+15125550175"}
# Desk phones and softphones as their SIP User-Agent header names them.
PHONE_AGENTS = (
    "Yealink SIP-T46U 108.86.0.45",
    "Polycom/6.4.3.5018 PolycomVVX-450-UA/6.4.3.5018",
    "Grandstream GXP2170 1.0.11.64",
    "Cisco/SPA504G-7.6.2",
    "Linphone-Desktop/5.2.6 (belle-sip/5.2.98)",
    "Zoiper rv2.10.20.3",
)
# What a carrier's caller-name lookup says about callers from outside.
OUTSIDE_NAMES = ("WIRELESS CALLER", "SPRINGFIELD IL", "SHELBYVILLE IL", "OGDENVILLE", "")


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
    phone_ip: str = ""
    user_agent: str = ""


def demo_users() -> list[DemoUser]:
    users = []
    for a, (acc_name, people) in enumerate(ACCOUNTS.items(), 1):
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
                    phone_ip=f"10.10.{a}.{11 + i}",
                    user_agent=PHONE_AGENTS[(3 * a + i) % len(PHONE_AGENTS)],
                )
            )
    return users


def main_number(user: DemoUser) -> str:
    """The number callers from outside dial to reach ``user``'s account."""
    return MAIN_NUMBERS[user.realm.split(".", 1)[0]]


def leg_vars(user: DemoUser) -> dict[str, str]:
    """The Kazoo identity of a phone's leg (ecallmgr_* channel variables)."""
    return {
        "ecallmgr_Account-ID": user.account,
        "ecallmgr_Owner-ID": user.user_id,
        "ecallmgr_Authorizing-ID": user.device_id,
        "ecallmgr_Authorizing-Type": "device",
        "ecallmgr_Username": user.username,
        "ecallmgr_Realm": user.realm,
        "presence_id": f"{user.username}@{user.realm}",
    }


def trunk_vars(user: DemoUser) -> dict[str, str]:
    """A trunk leg belongs to the account of the phone on the other side; no owner."""
    return {
        "ecallmgr_Account-ID": user.account,
        "ecallmgr_Realm": user.realm,
        "ecallmgr_Authorizing-Type": "resource",
    }


def outside_number(rng: random.Random) -> str:
    """A number in the outside world (555-01xx: reserved for fiction)."""
    return f"+1{rng.randint(200, 999)}55501{rng.randint(0, 99):02d}"


def outside_name(rng: random.Random, number: str) -> str:
    return rng.choice(OUTSIDE_NAMES) or number


def _call_id(rng: random.Random, host: str) -> str:
    return f"{rng.getrandbits(64):016x}-{rng.getrandbits(32):08x}@{host}"


def _rtp_port(rng: random.Random) -> int:
    return 2 * rng.randint(5000, 15000)


def phone_calling(user: DemoUser, rng: random.Random) -> SipEnd:
    """The leg of a phone that places a call (its INVITE: From <ext>@<realm>)."""
    return SipEnd(
        profile="internal",
        user=user.extension,
        host=user.realm,
        ip=user.phone_ip,
        media_port=_rtp_port(rng),
        user_agent=user.user_agent,
        call_id=_call_id(rng, user.phone_ip),
    )


def phone_called(user: DemoUser, rng: random.Random) -> SipEnd:
    """The leg the switch opens to a phone it rings (to its registered contact)."""
    return SipEnd(
        profile="internal",
        user=user.extension,
        host=f"{user.phone_ip}:5060",
        ip=user.phone_ip,
        media_port=_rtp_port(rng),
        user_agent=user.user_agent,
        call_id=_call_id(rng, SWITCH_IP),
    )


def trunk_calling(number: str, rng: random.Random) -> SipEnd:
    """A call from the outside arriving from the carrier."""
    return SipEnd(
        profile="external",
        user=number,
        host=CARRIER_IP,
        ip=CARRIER_IP,
        media_ip="203.0.113.20",
        media_port=_rtp_port(rng),
        user_agent=CARRIER_AGENT,
        call_id=_call_id(rng, CARRIER_IP),
        to_host=SWITCH_IP,
    )


def trunk_called(number: str, rng: random.Random) -> SipEnd:
    """A call to the outside through the carrier's gateway."""
    return SipEnd(
        profile="external",
        user=number,
        host=CARRIER_HOST,
        ip=CARRIER_IP,
        media_ip="203.0.113.20",
        media_port=_rtp_port(rng),
        user_agent=CARRIER_AGENT,
        call_id=_call_id(rng, SWITCH_IP),
        gateway=GATEWAY,
    )
