"""What the Kazoo drop-in tests share: a Kazoo cluster's keys and tokens made here, a
stand-in crossbar, a websocket client, and a config written as the TOML file a reload reads.

Keys are generated with `cryptography`; tokens are signed with PyJWT as Kazoo signs them
(header alg/typ/kid, claims account_id, owner_id, iss "kazoo", exp, identity_sig); forged ones
are put together by hand, since a careful library refuses to make them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import gevent
import jwt
import websocket
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from gevent.pywsgi import WSGIServer

KID = "96247ed90b4bec8294c09ae6ece923a2"


class Cluster:
    """A Kazoo cluster's signing key pair."""

    def __init__(self, kid: str = KID, bits: int = 2048) -> None:
        self.kid = kid
        self.private = rsa.generate_private_key(public_exponent=65537, key_size=bits)

    def pem(self, form: str = "pkcs1") -> bytes:
        """The public key as Kazoo's /v2/auth/keys/{KEY_ID} gives it (PKCS#1), or SPKI."""
        fmt = {
            "pkcs1": serialization.PublicFormat.PKCS1,
            "spki": serialization.PublicFormat.SubjectPublicKeyInfo,
        }[form]
        return self.private.public_key().public_bytes(serialization.Encoding.PEM, fmt)

    def write(self, directory: Path, form: str = "pkcs1") -> Path:
        path = directory / f"kazoo-{self.kid[:8]}-{form}.pem"
        path.write_bytes(self.pem(form))
        return path

    def token(
        self,
        account_id: str | None = "acc1",
        owner_id: str | None = None,
        exp_in: float | None = 3600,
        alg: str = "RS256",
        kid: str | None = None,
        iss: str | None = "kazoo",
        **claims: Any,
    ) -> str:
        payload: dict[str, Any] = {"identity_sig": "sig-not-checkable-here", **claims}
        if account_id is not None:
            payload["account_id"] = account_id
        if owner_id is not None:
            payload["owner_id"] = owner_id
        if iss is not None:
            payload["iss"] = iss
        if exp_in is not None:
            payload["exp"] = int(time.time() + exp_in)
        return jwt.encode(
            payload, self.private, algorithm=alg, headers={"kid": kid or self.kid, "typ": "JWT"}
        )


@cache
def cluster(name: str = "main") -> Cluster:
    """Key pairs made once per test session (a 2048-bit key takes a while)."""
    return Cluster(KID if name == "main" else f"{name}-kid")


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def compose(header: dict[str, Any], payload: dict[str, Any], signature: bytes = b"") -> str:
    return ".".join(
        (b64(json.dumps(header).encode()), b64(json.dumps(payload).encode()), b64(signature))
    )


def claims(account_id: str = "acc1", exp_in: float = 3600, **more: Any) -> dict[str, Any]:
    return {"account_id": account_id, "iss": "kazoo", "exp": int(time.time() + exp_in), **more}


def hmac_signed(secret: bytes, payload: dict[str, Any], kid: str = KID, alg: str = "HS256") -> str:
    """The classic confusion: a token "signed" with HMAC using the RSA public key (which is
    public) as the secret, hoping the verifier feeds the key it has to HMAC."""
    header = {"alg": alg, "typ": "JWT", "kid": kid}
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"
    digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}[alg]
    signature = hmac.new(secret, signing_input.encode(), digest).digest()
    return f"{signing_input}.{b64(signature)}"


def tamper(token: str, **changes: Any) -> str:
    """The same header and signature over a payload with `changes`."""
    header, payload, signature = token.split(".")
    data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    data.update(changes)
    return f"{header}.{b64(json.dumps(data).encode())}.{signature}"


class Crossbar:
    """A stand-in for Kazoo's crossbar answering `GET /v2/accounts/{A}`: 200 when the token
    may act on A, 403 otherwise; `delay` makes it slow, `status` forces an answer."""

    def __init__(self) -> None:
        self.allowed: set[tuple[str, str]] = set()
        self.asked: list[tuple[str, str]] = []
        self.delay = 0.0
        self.status: int | None = None
        self.in_flight = 0
        self.most_in_flight = 0  # questions answered at once, at most
        self.server = WSGIServer(("127.0.0.1", 0), self._app, log=None, error_log=None)
        self.server.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}"

    def _app(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        path = environ["PATH_INFO"]
        token = environ.get("HTTP_X_AUTH_TOKEN", "")
        account = path.rsplit("/", 1)[-1]
        self.asked.append((token, path))
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            if self.delay:
                gevent.sleep(self.delay)
        finally:
            self.in_flight -= 1
        status = self.status or (200 if (token, account) in self.allowed else 403)
        body = json.dumps({"data": {"id": account}, "status": "success"}).encode()
        start_response(f"{status} X", [("Content-Type", "application/json")])
        return [body]

    def stop(self) -> None:
        self.server.stop(timeout=1)


class WsClient:
    """A websocket client over a real socket (websocket-client), reading in a greenlet."""

    def __init__(self, url: str, **options: Any) -> None:
        self.ws = websocket.create_connection(url, timeout=10, **options)
        self.messages: list[dict[str, Any]] = []
        self.raw: list[tuple[int, bytes]] = []
        self.closed: tuple[int, str] | None = None
        self._seq = 0
        self.greenlet = gevent.spawn(self._read)

    def _read(self) -> None:
        while True:
            try:
                opcode, data = self.ws.recv_data(control_frame=False)
            except websocket.WebSocketTimeoutException:
                continue
            except Exception:
                self.closed = self.closed or (1006, "")
                return
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                code = int.from_bytes(data[:2], "big") if len(data) >= 2 else 1005
                self.closed = (code, data[2:].decode("utf-8", "replace"))
                return
            self.raw.append((opcode, data))
            self.messages.append(json.loads(data))

    def send(self, message: dict[str, Any] | str | bytes) -> None:
        if isinstance(message, dict):
            message = json.dumps(message)
        if isinstance(message, bytes):
            self.ws.send_binary(message)
        else:
            self.ws.send(message)

    def request(self, action: str, token: str | None = None, **data: Any) -> dict[str, Any]:
        """Send a request with a fresh request_id and wait for the reply that echoes it."""
        self._seq += 1
        rid = f"req-{self._seq}-{time.monotonic_ns()}"
        message: dict[str, Any] = {"action": action, "request_id": rid}
        if token is not None:
            message["auth_token"] = token
        if data:
            message["data"] = data
        self.send(message)
        return self.reply_to(rid)

    def subscribe(self, token: str, account_id: str, binding: Any) -> dict[str, Any]:
        key = "bindings" if isinstance(binding, list) else "binding"
        return self.request("subscribe", token, account_id=account_id, **{key: binding})

    def reply_to(self, rid: Any, timeout: float = 10.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for m in self.messages:
                if m.get("action") == "reply" and m.get("request_id") == rid:
                    return m
            if self.closed:
                raise AssertionError(f"closed {self.closed} before the reply to {rid}")
            gevent.sleep(0.01)
        raise AssertionError(f"no reply to {rid}: {self.messages[-5:]}")

    def events(self, name: str | None = None, key: str | None = None) -> list[dict[str, Any]]:
        return [
            m
            for m in self.messages
            if m.get("action") == "event"
            and (name is None or m["name"] == name)
            and (key is None or m["subscribed_key"] == key)
        ]

    def close(self) -> None:
        self.greenlet.kill(block=False)
        try:
            self.ws.close(timeout=1)
        except Exception:
            self.ws.shutdown()


def toml_text(data: dict[str, Any]) -> str:
    """A config dict (conftest.config_dict's shape) as the TOML file `load` reads."""

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int | float):
            return repr(v)
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{ " + ", ".join(f"{json.dumps(k)} = {value(x)}" for k, x in v.items()) + " }"
        raise TypeError(v)

    lines: list[str] = []
    for section, body in data.items():
        if isinstance(body, list) and body and isinstance(body[0], dict):
            for entry in body:
                lines.append(f"[[{section}]]")
                lines += [f"{k} = {value(v)}" for k, v in entry.items()]
        else:
            lines.append(f"[{section}]")
            lines += [f"{k} = {value(v)}" for k, v in body.items()]
    return "\n".join(lines) + "\n"


class SseReader:
    """A channel_events stream for a token given as its text, read in a greenlet."""

    def __init__(self, base: str, path: str, text: str) -> None:
        import requests

        headers = {"X-Auth-Token": text, "Accept": "text/event-stream"}
        self.resp = requests.get(base + path, headers=headers, stream=True, timeout=30)
        self.events: list[tuple[str, Any]] = []
        self.greenlet = gevent.spawn(self._read)

    def _read(self) -> None:
        event: dict[str, str] = {}
        for line in self.resp.iter_lines(decode_unicode=True):
            if line == "":
                if "event" in event:
                    self.events.append((event["event"], json.loads(event.get("data", "null"))))
                event = {}
            elif not line.startswith(":"):
                key, _, value = line.partition(": ")
                event[key] = value

    def kinds(self) -> list[str]:
        return [kind for kind, _ in self.events]

    def close(self) -> None:
        self.greenlet.kill()
        self.resp.close()
