"""Ingest floor: a bare socket reader that only frames ESL bytes and decodes the JSON bodies.

No gevent, no table, no dispatch: authenticate, subscribe (`event json <names>`), print
`ready`, then read, cut frames by Content-Length and `orjson.loads` every event body until
`expected` events were decoded; print `done <count>`. Started by bench/run.py:

    floor_reader.py PORT EXPECTED TIMEOUT "NAME NAME ..."
"""

from __future__ import annotations

import socket
import sys
import time

import orjson


def main() -> int:
    port, expected = int(sys.argv[1]), int(sys.argv[2])
    timeout, names = float(sys.argv[3]), sys.argv[4]
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    deadline = time.monotonic() + timeout
    buf = b""
    pos = 0
    replies = 0
    count = 0
    while count < expected and time.monotonic() < deadline:
        end = buf.find(b"\n\n", pos)
        if end >= 0:
            head = buf[pos:end]
            i = head.find(b"Content-Length: ")
            n = int(head[i + 16 :].split(b"\n", 1)[0]) if i >= 0 else 0
            start = end + 2
            if len(buf) >= start + n:
                pos = start + n
                if b"text/event-json" in head:
                    orjson.loads(buf[start:pos])
                    count += 1
                elif b"auth/request" in head:
                    sock.sendall(b"auth ClueCon\n\n")
                elif b"command/reply" in head:
                    replies += 1
                    if replies == 1:
                        sock.sendall(f"event json {names}\n\n".encode())
                    elif replies == 2:
                        print("ready", flush=True)
                continue
        try:
            data = sock.recv(1 << 20)
        except TimeoutError:
            break
        if not data:
            break
        buf = buf[pos:] + data
        pos = 0
    print(f"done {count}", flush=True)
    sock.close()
    return 0 if count >= expected else 1


if __name__ == "__main__":
    raise SystemExit(main())
