"""Bench child: the actions scenario's clients in their own process, as any real ESL or HTTP
client is (the stand-in runs in the bench's process: a bare client in that same process would
skip the two process wake-ups every real round trip to a switch pays).

    action_client.py HTTP_PORT ESL_PORT ACCOUNT < work.json > latencies.json

work.json: [[kind, uuid], ...] with kind "bare" (`api uuid_kill` on a raw ESL socket) or
"api" (POST `{"action":"hangup"}` through channelsd); each is timed alone, 5 ms apart.
Prints [[kind, seconds], ...].
"""

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common as bc  # noqa: E402
from load import RawEsl  # noqa: E402


def main() -> int:
    port, esl_port, account = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    work = json.loads(sys.stdin.read())
    http = bc.Http(port)
    esl = RawEsl(esl_port)
    out = []
    body = b'{"action":"hangup"}'
    try:
        for kind, uuid in work:
            time.sleep(0.005)  # let the hang-up events of the last one settle
            t = time.perf_counter()
            if kind == "api":
                status, data = http.request("POST", f"/v2/accounts/{account}/channels/{uuid}", body)
                took = time.perf_counter() - t
                if status != 200:
                    raise RuntimeError(f"POST hangup: {status} {bytes(data[:200])!r}")
            else:
                reply = esl.api(f"uuid_kill {uuid}")
                took = time.perf_counter() - t
                if not reply.startswith("+OK"):
                    raise RuntimeError(f"uuid_kill: {reply!r}")
            out.append((kind, took))
    finally:
        esl.sock.close()
        http.close()
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
