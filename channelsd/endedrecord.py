"""One ended call as one bytes object: when it ended, its account, what its item is made of.

The ended-calls store keeps up to 10,000 calls. Kept as a Python object holding its item JSON
(~1.4 KB, a block of glibc's heap) and the channel's id strings, each call cost ~3.2 KB of
resident memory in the benchmark although its objects were ~2.1 KB: the items, allocated
between the transient blocks of the events that ended their calls, pinned the heap's pages
(malloc_trim gives back only whole free pages). As one record of ~370 B the call lives in
CPython's small-object arenas, packed by size class, and nothing of the channel is referenced.

The payload (the channel's fields as JSON: channelsd.ended.record_of) is compressed by zstd
(python-zstandard) with a dictionary (`ZDICT`) prepared once for its level: the keys of its
nested objects, its booleans and the values most calls share (states, causes, codecs) are
found there, and what is left is mostly the call's own ids and times. zlib with a
preset dictionary did the same ~10 B tighter, but set the dictionary up again for every call
(deflate has no prepared form of one): 16 µs per ended call, against 3 µs here, on the ingest
path (BENCHMARKS.md, issue #16). A record is decompressed only when an answer lists it, or
narrows an account's calls to a user's or a device's: the account, which every listing scopes
by, is kept as it is; the owner and device ids are read from the payload (kept a second time
as they were with zlib, which found them in its dictionary, they cost zstd ~70 B a call).

Layout: float64 `at` (when it ended), the uint32 length of the account id (0xFFFFFFFF: none;
little-endian), the id as UTF-8, then the payload as a zstd frame (with its size, without a
checksum or the dictionary's id: only this process reads its records).
"""

from __future__ import annotations

import struct

import orjson
import zstandard

_HEAD = struct.Struct("<dI")  # at, and the length of the account id
_ACCOUNT_LEN = struct.Struct("<I")  # at 8
_NONE = 0xFFFFFFFF
# One of zstd's fast levels: measured when a record held the item (a capture's, ~730 B of
# JSON), it took 3.1 µs and ~223 B at -1, 5.4 µs and ~199 B at 1 (a tenth of the ended-calls
# store's cost on the ingest path); lower levels gave bytes without saving time, higher ones
# took longer for 1 B less. The payloads are smaller now (~440 B), and take ~3 µs still: a
# frame's own setup is most of it.
_LEVEL = -1

# What a typical Kazoo call's record holds (channelsd.ended.record_of: the channel's fields in
# ended.KEPT's order, whether it recorded, then its ending's): zstd finds the ccvs' and
# details' keys, the shared values and the id-shaped runs here. Only this process reads its
# records, so the dictionary may change between versions (a test holds its shape to
# ended.KEPT's).
_ID = "00000000000000000000000000000000"
_UUID = "00000000-0000-4000-8000-000000000000"
ZDICT = orjson.dumps(
    [
        [
            _UUID,
            "freeswitch@",
            "sofia/sipinterface_1/user@.sip.",
            1795847542705117,
            True,
            False,
            False,
            {
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
            },
            _UUID,
            {
                "Account-ID": _ID,
                "Realm": ".sip.",
                "Username": "user",
                "Owner-ID": _ID,
                "Authorizing-ID": _ID,
                "Authorizing-Type": "device",
                "Channel-Authorized": "true",
                "Reseller-ID": _ID,
                "Application-Name": "callflow",
                "Call-Interaction-ID": "63900000000-",
            },
            "inbound",
            "+1",
            _UUID,
            "user@",
            _ID,
            _ID,
            _ID,
            "device",
            "user",
            ".sip.",
            "User ",
            "",
            "Outbound Call",
            "0000000000",
            "CS_REPORTING",
            "HANGUP",
            "63900000000-",
            None,
        ],
        False,
        ["NORMAL_CLEARING", "recv_bye", 0, 0, 4.5, 1795847542705117, True],
    ]
)
_DICT = zstandard.ZstdCompressionDict(ZDICT, dict_type=zstandard.DICT_TYPE_RAWCONTENT)
_DICT.precompute_compress(level=_LEVEL)
_COMPRESSOR = zstandard.ZstdCompressor(
    level=_LEVEL,
    dict_data=_DICT,
    write_checksum=False,
    write_content_size=True,
    write_dict_id=False,
)
_DECOMPRESSOR = zstandard.ZstdDecompressor(dict_data=_DICT)


def encoded(value: str) -> bytes:
    """A key as a record holds it, to find records by without decoding them (of_account)."""
    # surrogatepass: a value is kept whatever it holds; it is only compared and given back
    return value.encode("utf-8", "surrogatepass")


def pack(at: float, account_id: str | None, payload: bytes) -> bytes:
    """The record of one ended call; `payload` is the JSON ended.record_of writes."""
    if account_id is None:
        return b"".join((_HEAD.pack(at, _NONE), _COMPRESSOR.compress(payload)))
    account = encoded(account_id)
    return b"".join((_HEAD.pack(at, len(account)), account, _COMPRESSOR.compress(payload)))


def at(record: bytes) -> float:
    """When the call ended."""
    return _HEAD.unpack_from(record)[0]  # type: ignore[no-any-return]


def of_account(record: bytes, account: bytes) -> bool:
    """Whether the call's account is `account` (as encoded() gives it)."""
    return _ACCOUNT_LEN.unpack_from(record, 8)[0] == len(account) and record.startswith(
        account, _HEAD.size
    )


def account(record: bytes) -> tuple[str | None, int]:
    """The account id, and where the compressed payload starts (for payload())."""
    n = _ACCOUNT_LEN.unpack_from(record, 8)[0]
    if n == _NONE:
        return None, _HEAD.size
    stop = _HEAD.size + n
    return record[_HEAD.size : stop].decode("utf-8", "surrogatepass"), stop


def payload(record: bytes, start: int | None = None) -> bytes:
    """The payload, as it was packed; `start` as account() found it, if it was called."""
    if start is None:
        start = account(record)[1]
    return _DECOMPRESSOR.decompress(memoryview(record)[start:])  # type: ignore[no-any-return]
