"""One ended call as one bytes object: when it ended, the keys the API scopes it by, its item.

The ended-calls store keeps up to 10,000 calls. Kept as a Python object holding its item JSON
(~1.4 KB, a block of glibc's heap) and the channel's id strings, each call cost ~3.2 KB of
resident memory in the benchmark although its objects were ~2.1 KB: the items, allocated
between the transient blocks of the events that ended their calls, pinned the heap's pages
(malloc_trim gives back only whole free pages). As one record of ~330 B the call lives in
CPython's small-object arenas, packed by size class, and nothing of the channel is referenced.

The item is deflated with a preset dictionary (`ZDICT`): an item's keys, its booleans and the
values most calls share (states, causes, codecs) are found there, its keys (the account, owner
and device ids, which the item names again) after it, and what is left is mostly the call's
own uuid and times. A record is inflated only when an answer lists it (~2 µs).

Layout: float64 `at` (when it ended), the uint32 lengths of the account, owner and device ids
(0xFFFFFFFF: none; little-endian), the ids as UTF-8, then the raw-deflated item.
"""

from __future__ import annotations

import struct
import zlib

import orjson

_HEAD = struct.Struct("<dIII")  # at, and the lengths of the three keys
_ACCOUNT_LEN = struct.Struct("<I")  # at 8
_NONE = 0xFFFFFFFF
_WBITS = -12  # raw deflate, 4 KiB window: room for the dictionary and a typical item
_LEVEL = 6
# Deflate's fixed Huffman codes: a record ~25 B longer than with codes of its own, but a list
# inflates each in half the time (no code tables to build: ~1.7 µs, not ~3.3).
_STRATEGY = zlib.Z_FIXED

# A typical Kazoo call's ended item, its keys in the order Channel._build_item() writes them:
# deflate finds the keys, the shared values and the id-shaped runs here. Only this process
# reads its records, so the dictionary may change between versions.
ZDICT = orjson.dumps(
    {
        "uuid": "00000000-0000-4000-8000-000000000000",
        "answered": True,
        "is_onhold": False,
        "is_loopback": False,
        "is_recording": False,
        "is_secure": False,
        "node": "freeswitch@",
        "timestamp": 63900000000,
        "bridge_id": "00000000-0000-4000-8000-000000000000",
        "custom_channel_vars": {
            "Account-ID": "00000000000000000000000000000000",
            "Realm": ".sip.",
            "Username": "user",
            "Owner-ID": "00000000000000000000000000000000",
            "Authorizing-ID": "00000000000000000000000000000000",
            "Authorizing-Type": "device",
            "Channel-Authorized": "true",
            "Reseller-ID": "00000000000000000000000000000000",
            "Application-Name": "callflow",
            "Call-Interaction-ID": "63900000000-",
        },
        "direction": "inbound",
        "destination": "+1",
        "other_leg": "00000000-0000-4000-8000-000000000000",
        "presence_id": "user@",
        "account_id": "00000000000000000000000000000000",
        "owner_id": "00000000000000000000000000000000",
        "authorizing_id": "00000000000000000000000000000000",
        "authorizing_type": "device",
        "username": "user",
        "realm": ".sip.",
        "caller_id_name": "User ",
        "caller_id_number": "",
        "callee_id_name": "Outbound Call",
        "callee_id_number": "0000000000",
        "state": "CS_REPORTING",
        "call_state": "HANGUP",
        "interaction_id": "63900000000-",
        "endpoint": "sofia",
        "read_codec": "PCMU",
        "read_rate": 8000,
        "write_codec": "PCMU",
        "write_rate": 8000,
        "remote_media_ip": "",
        "remote_media_port": 0,
        "sip_call_id": "",
        "user_agent": "",
        "network_ip": "",
        "network_port": 5060,
        "request_uri": "sip:",
        "transport": "udp",
        "application": "",
        "hangup_cause": "NORMAL_CLEARING",
        "hangup_disposition": "recv_bye",
        "duration_seconds": 0,
        "billing_seconds": 0,
        "mos": 4.5,
        "ended_timestamp": 63900000000,
    }
)


def encoded(value: str) -> bytes:
    """A key as a record holds it, to find records by without decoding them (of_account)."""
    # surrogatepass: a value is kept whatever it holds; it is only compared and given back
    return value.encode("utf-8", "surrogatepass")


def pack(
    at: float, account_id: str | None, owner_id: str | None, device_id: str | None, item: bytes
) -> bytes:
    """The record of one ended call; `item` is its list item as JSON."""
    values = (account_id, owner_id, device_id)
    raw = [b"" if v is None else encoded(v) for v in values]
    lengths = [_NONE if v is None else len(r) for v, r in zip(values, raw, strict=True)]
    keys = b"".join(raw)
    # the item names its keys again (twice, in a Kazoo call): deflate finds them in the keys
    deflate = zlib.compressobj(
        _LEVEL, zlib.DEFLATED, _WBITS, zlib.DEF_MEM_LEVEL, _STRATEGY, zdict=ZDICT + keys
    )
    body = deflate.compress(item) + deflate.flush()
    return b"".join((_HEAD.pack(at, *lengths), keys, body))


def at(record: bytes) -> float:
    """When the call ended."""
    return _HEAD.unpack_from(record)[0]  # type: ignore[no-any-return]


def of_account(record: bytes, account: bytes) -> bool:
    """Whether the call's account is `account` (as encoded() gives it)."""
    return _ACCOUNT_LEN.unpack_from(record, 8)[0] == len(account) and record.startswith(
        account, _HEAD.size
    )


Keys = tuple[str | None, str | None, str | None]


def split(record: bytes) -> tuple[Keys, int]:
    """(account id, owner id, device id), and where the deflated item starts (for item())."""
    _, *lengths = _HEAD.unpack_from(record)
    pos = _HEAD.size
    keys: list[str | None] = []
    for n in lengths:
        if n == _NONE:
            keys.append(None)
        else:
            keys.append(record[pos : pos + n].decode("utf-8", "surrogatepass"))
            pos += n
    return (keys[0], keys[1], keys[2]), pos


def keys(record: bytes) -> Keys:
    """(account id, owner id, device id)."""
    return split(record)[0]


def item(record: bytes, start: int | None = None) -> bytes:
    """The item's JSON, as it was packed; `start` as split() found it, if it was called."""
    if start is None:
        start = split(record)[1]
    inflate = zlib.decompressobj(_WBITS, zdict=ZDICT + record[_HEAD.size : start])
    return inflate.decompress(memoryview(record)[start:]) + inflate.flush()
