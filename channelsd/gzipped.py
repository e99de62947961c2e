"""Large list answers in gzip, for the clients that ask for it (browsers, portals' backends).

The system list of 10,000 channels is ~12 MB of JSON. Sixteen dashboards polling it moved
2 GB/s over loopback and each waited for the others' copies (p99 ~300 ms on two cores); in
gzip it is ~8x smaller. Compressing costs ~11 ms per 12 MB, more than sending it raw once,
so only a list answered again from ListCache (unchanged within its second, several clients
asking) is compressed, once, and a list that changes under every request goes raw.

The compressor is ISA-L's deflate (python-isal): at its level 1 a 12 MB list takes ~11 ms
where zlib's level 1 took ~52 ms, and comes out ~10 % smaller. It runs on the hub in slices
of COMPRESS_SLICE, pausing between them, not in a thread: both compressors let go of the
interpreter only between blocks of output and take it back for the next, so beside a busy
hub a 12 MB list took 70-85 ms in a thread, and each time it asked for the interpreter back
the hub was stopped for it (the 16 dashboards' p99 went past 50 ms while it ran).

An answer is the envelope's head, the list, and a tail that differs per request (its
request_id, the time). The head and list are compressed once, ended with a sync flush (the
deflate stream byte-aligned, not final) and kept with their CRC-32 and length; each answer
appends its tail as stored deflate blocks, the last one final, and the gzip trailer, the CRC-32
continued over the tail. Nothing per request is compressed.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from isal import isal_zlib
from werkzeug.http import parse_accept_header

# Smaller answers go as they are: an account's list of a hundred channels (~120 KB) takes
# longer to compress than to send on a LAN, and 16 portals polling such lists while the
# switch was busy waited on the compressor (p99 6.4 -> 13.5 ms). The lists this is for are
# the system-wide ones, megabytes each.
GZIP_ABOVE = 1024 * 1024
LEVEL = 1  # ~1.1 GB/s here; ISA-L's levels 2 and 3 gain 1 % for the same time or more
# Input compressed between two pauses: ~0.1 ms of a channel list's JSON, under 1 ms of any
# (hex-like text compresses ~10x slower than a list's repeated keys).
COMPRESS_SLICE = 256 << 10
_STORED_MAX = 0xFFFF
# A browser's Accept-Encoding is a few dozen bytes. pywsgi joins repeated lines into one
# value: a client's hundred 64 KB lines made 6 MB, which werkzeug's parser read on the hub
# for ~4 s, every client and the switch's events waiting. A longer one is not read: the
# answer goes as it is (identity is always acceptable).
MAX_ACCEPT_ENCODING = 1024


def accepts_gzip(header: str | None) -> bool:
    """Whether an Accept-Encoding header takes gzip (q-values and `*` as RFC 9110 reads
    them: `gzip;q=0` refuses it); False for one longer than MAX_ACCEPT_ENCODING."""
    if not header or len(header) > MAX_ACCEPT_ENCODING:
        return False
    return parse_accept_header(header).quality("gzip") > 0


class Compressed:
    """A list answer's head and list in gzip: the part every answer of it shares."""

    __slots__ = ("start", "crc", "size")

    def __init__(self, start: bytes, crc: int, size: int) -> None:
        self.start = start  # the gzip header and the deflated head and list, sync-flushed
        self.crc = crc  # CRC-32 of the head and list
        self.size = size  # their length

    def answer(self, tail: bytes) -> tuple[bytes, bytes, bytes]:
        """The whole gzip body with `tail` after the list, in three pieces."""
        blocks = bytearray()
        for at in range(0, len(tail) or 1, _STORED_MAX):  # (an empty tail: one empty block)
            piece = tail[at : at + _STORED_MAX]
            final = at + _STORED_MAX >= len(tail)
            n = len(piece)
            blocks += struct.pack("<BHH", 1 if final else 0, n, n ^ 0xFFFF)
            blocks += piece
        trailer = struct.pack(
            "<II", isal_zlib.crc32(tail, self.crc), (self.size + len(tail)) & 0xFFFFFFFF
        )
        return self.start, bytes(blocks), trailer


def compress(head: bytes, data: bytes, pause: Callable[[], None]) -> Compressed:
    """`head` and `data` in gzip, calling `pause` between slices of COMPRESS_SLICE bytes (the
    hub runs meanwhile: see the module's doc)."""
    c = isal_zlib.compressobj(LEVEL, isal_zlib.DEFLATED, 31)  # 31: the gzip container
    pieces = [c.compress(head)]
    view = memoryview(data)
    for at in range(0, len(data), COMPRESS_SLICE):
        if at:
            pause()
        pieces.append(c.compress(view[at : at + COMPRESS_SLICE]))
    pieces.append(c.flush(isal_zlib.Z_SYNC_FLUSH))
    crc = isal_zlib.crc32(data, isal_zlib.crc32(head))
    return Compressed(b"".join(pieces), crc, len(head) + len(data))
