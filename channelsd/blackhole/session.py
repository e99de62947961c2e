"""One websocket: the client's requests answered, the hub's events written, within bounds.

Two greenlets per socket: the reader (the HTTP request's own greenlet, which the handshake
handed the socket to) parses frames with wsproto and answers requests; the writer sends
whatever is queued, one write per batch. The hub writes a batch itself when the writer has
nothing queued or in hand (a thousand sockets of one binding were a thousand greenlet
wake-ups a batch); what the socket does not take at once is the writer's. Time is kept
by the service's clock (Websockets.keep_time calls tick() every second or so), never by the
writer: a writer busy with a client that reads as fast as its events come (or blocked by one
that does not read) would otherwise never look at the time.

What a client can and cannot do to it (README, "Kazoo's websocket"):

* every request is answered, matched by its request_id (echoed exactly: protocol.request_id);
  a bad token, another account, a malformed binding, invalid JSON, a binary message, an
  unknown action or a request_id that cannot be echoed is an error reply and the socket stays
  open (monster-ui reconnects on any close, so closing would only make it hammer the server);
* a message larger than websocket.max_message_bytes closes the socket with 1009, and a
  frame wsproto cannot parse (bad opcode, unmasked, invalid UTF-8) with its code (1002, 1007):
  after those the stream cannot be trusted;
* the client need not send anything while idle: after websocket.ping_interval of silence the
  server pings (browsers answer by themselves), and a socket that does not answer within as
  long again is dropped;
* at most websocket.send_queue_bytes wait for one socket (and as much in the kernel's send
  buffer, which is set to that size): a client that reads slower than its events come is
  disconnected, and costs ingest nothing meanwhile;
* a token removed or changed by a reload (channelsd.subscriptions), or past its exp, closes
  the sockets that subscribed with it (1008), on the clock whatever the traffic; what was
  queued for it and not yet handed to the kernel is dropped;
* a subscription that Kazoo granted (a reseller's token on a descendant account) is asked
  again when Kazoo's answer runs out (kazoo.descendants_cache_seconds): a no, or no answer,
  closes the socket (1008); monster-ui reconnects and subscribes again, and what Kazoo still
  grants is granted again;
* a socket holding no subscription for websocket.subscribe_grace (after it opens, or after
  its last subscription goes) is closed (1008): nothing can be had from one, and an idle one
  only holds a place;
* one token subscribes on at most websocket.max_sockets_per_token sockets (an error reply).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import time
from typing import TYPE_CHECKING, Any

import gevent
import gevent.event
import orjson
from gevent.socket import wait_read
from wsproto import ConnectionState, WSConnection
from wsproto.events import (
    BytesMessage,
    CloseConnection,
    Message,
    Ping,
    Pong,
    TextMessage,
)
from wsproto.utilities import LocalProtocolError

from channelsd import strictjson
from channelsd.blackhole import protocol
from channelsd.blackhole.hub import Subscription
from channelsd.blackhole.protocol import Refused
from channelsd.envelope import request_id as loggable_id
from channelsd.sendmany import Line
from channelsd.subscriptions import Refused as NoPlace
from channelsd.tokens import Authenticator, Token, log_failure

if TYPE_CHECKING:
    from channelsd.blackhole.service import Websockets
    from channelsd.subscriptions import Subscription as Registration

log = logging.getLogger("channelsd.websocket")

RECV_BYTES = 65536
SEND_CHUNK = 256 * 1024
# After a close frame, how long the peer has to answer with its own before the socket goes.
CLOSE_LINGER = 2.0
PING_PAYLOAD = b"channelsd"

# Close codes (RFC 6455 §7.4.1).
GOING_AWAY = 1001
POLICY = 1008
TOO_BIG = 1009


class Session:
    """One open websocket."""

    def __init__(
        self, service: Websockets, sock: Any, ws: WSConnection, leftover: bytes, client: str
    ) -> None:
        self.service = service
        self.cfg = service.cfg
        self.sock = sock
        # The kernel's send buffer would otherwise grow to megabytes for a client that does
        # not read: bounded like the queue, so a stuck socket holds about twice its limit.
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.cfg.send_queue_bytes)
        self.ws = ws
        self.client = client
        self._leftover = leftover
        self._out: list[bytes] = []
        self._queued = 0
        self._writing = False  # the writer has bytes in hand: nobody else may write
        # The hub's courier (channelsd.sendmany) writes publishes from a native thread to a
        # descriptor of its own (opened in run()); while a send is on its way
        # (_line.in_flight), nobody else writes.
        self._line = Line()
        self._cut = False  # _out[0] is the rest of a frame the courier cut: never discarded
        self._wake = gevent.event.Event()
        # (account, binding as written) -> its subscription in the hub
        self._subs: dict[tuple[str, str], Subscription] = {}
        # token hash -> (its registration for revocation, how many subscriptions use it)
        self._tokens: dict[str, list[Any]] = {}
        # (token hash, account) -> a grant Kazoo made, to be asked again when it runs out
        self._vouched: dict[tuple[str, str], _Vouched] = {}
        self._rechecking: gevent.Greenlet | None = None
        self._expires: float | None = None
        self.closing: str | None = None
        self.aborted = False
        self._linger_until = 0.0
        self._heard = time.monotonic()
        self._pinged: float | None = None
        self.bare_since: float | None = self._heard  # holding no subscription since then
        self._parts: list[Any] = []
        self._part_size = 0

    # -- running -----------------------------------------------------------------------------

    def run(self) -> None:
        """Serve the socket until it closes (runs in the request's greenlet)."""
        self._line.open(self.sock)  # (out of descriptors: the writer writes everything)
        try:
            self._serve()
        finally:
            self._line.close()

    def _serve(self) -> None:
        writer = gevent.spawn(self._write_loop)
        try:
            if not self._leftover or self._receive(self._leftover):
                self._read_loop()
        except Exception:  # a bug must not take more than this socket down
            log.exception("websocket failed client=%s", self.client)
        finally:
            self._end()
            if self.closing is None:
                self.closing = "gone"
            self._wake.set()
            if self._rechecking is not None:
                self._rechecking.kill(block=False)
            writer.join(timeout=CLOSE_LINGER)
            writer.kill(block=False)
            self._shutdown()

    def _read_loop(self) -> None:
        fileno = self.sock.fileno()
        while not self.aborted:
            timeout = None
            if self.closing is not None:
                timeout = self._linger_until - time.monotonic()
                if timeout <= 0:
                    return
            try:
                wait_read(fileno, timeout=timeout)
                data = self.sock.recv(RECV_BYTES)
            except OSError:  # a timeout included
                return
            if not data:
                return
            self._heard = time.monotonic()
            self._pinged = None
            if not self._receive(data):
                return

    def _receive(self, data: bytes) -> bool:
        """Feed the client's bytes to wsproto and act on what they say; False: stop reading."""
        ws = self.ws
        if ws.state is ConnectionState.CLOSED:
            return False
        try:
            ws.receive_data(data)
        except LocalProtocolError:
            return False
        for event in ws.events():
            if isinstance(event, TextMessage | BytesMessage):
                if self.closing is None:
                    self._fragment(event)
            elif isinstance(event, Ping):
                if ws.state is ConnectionState.OPEN:  # not once our close frame is out
                    self._send(ws.send(event.response()))
            elif isinstance(event, Pong):
                pass  # heard: already noted
            elif isinstance(event, CloseConnection):
                if ws.state is ConnectionState.REMOTE_CLOSING:
                    self._send(ws.send(event.response()))  # the client's close, answered
                    self._closing("closed by client")
                elif ws.state is ConnectionState.CLOSED:
                    pass  # the client answered our close
                else:
                    # wsproto could not parse the client's frames: its code says why.
                    log.info(
                        "websocket protocol error client=%s code=%s reason=%s",
                        self.client,
                        int(event.code),
                        event.reason[:100],
                    )
                    self.close(int(event.code), event.reason[:100])
                return False
        return True

    def _fragment(self, event: TextMessage | BytesMessage) -> None:
        self._parts.append(event.data)
        self._part_size += len(event.data)
        if self._part_size > self.cfg.max_message_bytes:
            self._parts.clear()
            self.close(TOO_BIG, f"messages are limited to {self.cfg.max_message_bytes} bytes")
            return
        if not event.message_finished:
            return
        parts, self._parts, self._part_size = self._parts, [], 0
        if isinstance(event, BytesMessage):
            self._reply(protocol.error(protocol.fresh_id(), "send JSON text messages"))
            return
        self._handle("".join(parts))

    # -- requests ----------------------------------------------------------------------------

    def _handle(self, text: str) -> None:
        try:
            message = strictjson.loads(text)
        except orjson.JSONDecodeError as exc:
            self._reply(protocol.error(protocol.fresh_id(), f"invalid JSON: {exc}"))
            return
        except ValueError as exc:  # a key twice in one object, nesting too deep
            self._reply(protocol.error(protocol.fresh_id(), f"refused JSON: {exc}"))
            return
        if not isinstance(message, dict):
            self._reply(protocol.error(protocol.fresh_id(), "a message is a JSON object"))
            return
        rid, bad_id = protocol.request_id(message, text)
        if bad_id is not None:  # a reply the client could not match: nothing is done
            self._reply(protocol.error(rid, bad_id))
            return
        action = message.get("action")
        try:
            if action == "ping":
                data: dict[str, Any] = {"response": "pong"}
            elif action == "subscribe":
                data = self._subscribe(rid, message)
            elif action == "unsubscribe":
                data = self._unsubscribe(rid, message)
            else:
                raise Refused(f"unknown action: {str(action)[:64]}")
        except Refused as refused:
            self._reply(protocol.error(rid, *refused.errors))
            return
        self._reply(protocol.reply(rid, "success", data))

    def _authenticate(self, presented: Any, rid: Any) -> Token:
        if presented is None:
            raise Refused(protocol.TOKEN_REQUIRED)
        if not isinstance(presented, str) or not presented:
            raise Refused(protocol.TOKEN_FORMAT)
        token, reason = self.service.auth().authenticate(presented)
        if token is None:
            # The client's request_id only when it is a sane token: it goes into a log line.
            shown = loggable_id(rid if isinstance(rid, str) else None)
            log_failure(self.client, shown, self.service.path, reason)
            raise Refused(protocol.AUTH_FAILED)
        return token

    def _subscribe(self, rid: Any, message: dict[str, Any]) -> dict[str, Any]:
        request = protocol.parse_request("subscribe", message, self.cfg.max_bindings)
        token = self._authenticate(request.token, rid)
        account = request.account_id
        assert account is not None  # parse_request requires it for subscribe
        auth = self.service.auth()
        if account == protocol.WILDCARD:
            if token.role != "superduper":
                raise Refused(protocol.UNAUTHORIZED_WILDCARD)
        elif not auth.may_act_on(token, request.token, account):
            raise Refused(protocol.UNAUTHORIZED_ACCOUNT)
        # Kazoo may have been asked: a reload meanwhile is caught where the token is
        # registered (channelsd.subscriptions), a closed socket here.
        if self.closing is not None:
            raise Refused("the socket is closing")
        new = [b for b in request.bindings if (account, b.text) not in self._subs]
        if len(self._subs) + len(new) > self.cfg.max_bindings:
            raise Refused(f"too many bindings: at most {self.cfg.max_bindings} per socket")
        owner = token.owner_id if token.role == "user" else None
        hub = self.service.hub
        # Counted before any old subscription goes: replacing one of the same token must not
        # release the registration these need.
        self._hold(token)[1] += len(request.bindings)
        for binding in request.bindings:
            key = (account, binding.text)
            old = self._subs.get(key)
            if old is not None:  # subscribed again (a new sign-in): the new token counts
                self._unbind(old)
            sub = self._subs[key] = Subscription(
                self, account, binding.text, binding.key, owner, token
            )
            hub.add(sub)
        self.bare_since = None
        self._vouch(auth, token, request.token, account)
        return {"subscribed": self._bound()}

    def _vouch(self, auth: Authenticator, token: Token, presented: str, account: str) -> None:
        """Note a grant Kazoo made, to ask again when its answer runs out."""
        if account == protocol.WILDCARD:
            return
        due = auth.vouched_until(token, account)
        key = (token.sha256, account)
        if due is None:
            self._vouched.pop(key, None)
            return
        self._vouched[key] = _Vouched(token, presented, due)

    def _unsubscribe(self, rid: Any, message: dict[str, Any]) -> dict[str, Any]:
        request = protocol.parse_request("unsubscribe", message, self.cfg.max_bindings)
        self._authenticate(request.token, rid)
        texts = [b.text for b in request.bindings]
        wanted = set(texts)
        for key, sub in list(self._subs.items()):
            if key[1] in wanted and request.account_id in (None, key[0]):
                self._unbind(sub)
        return {"unsubscribed": texts, "subscribed": self._bound()}

    def _bound(self) -> list[str]:
        return list(dict.fromkeys(binding for _, binding in self._subs))

    def _hold(self, token: Token) -> list[Any]:
        """The token's registration (for revocation at a reload) and its use count."""
        held = self._tokens.get(token.sha256)
        if held is None:
            most = self.cfg.max_sockets_per_token
            if self.service.sockets_of(token.sha256) >= most:
                raise Refused(f"too many websockets for this token: at most {most}")
            try:
                registration = self.service.subscriptions.open(
                    token, "websocket", lambda: self.close(POLICY, "token revoked", discard=True)
                )
            except NoPlace:
                raise Refused("too many subscriptions on this server") from None
            if registration.ended:  # a reload revoked it while Kazoo was asked
                log_failure(self.client, "-", self.service.path, "revoked")
                raise Refused(protocol.AUTH_FAILED)
            held = self._tokens[token.sha256] = [registration, 0]
            self.service.claim(token.sha256)
            if token.expires is not None:
                self._expires = min(self._expires or token.expires, token.expires)
        return held

    def _unbind(self, sub: Subscription) -> None:
        self.service.hub.remove(sub)
        self._subs.pop((sub.account, sub.binding), None)
        if not self._subs:
            self.bare_since = time.monotonic()
        sha = sub.token.sha256
        vouched = (sha, sub.account)
        if vouched in self._vouched and not any(
            s.account == sub.account and s.token.sha256 == sha for s in self._subs.values()
        ):
            del self._vouched[vouched]
        held = self._tokens.get(sha)
        if held is not None:
            held[1] -= 1
            if held[1] <= 0:
                self._release(sha)

    def _release(self, sha: str) -> None:
        registration: Registration = self._tokens.pop(sha)[0]
        registration.release()
        self.service.unclaim(sha)

    # -- the hub's side ----------------------------------------------------------------------

    def claim(self, data: bytes) -> int | None:
        """A publish's bytes for this socket, framed already (usually the very bytes object
        every socket with the same binding gets): the descriptor the hub's courier writes them
        to now, or None when the writer has them (it has bytes in hand or queued) or they are
        dropped (closing, or too slow)."""
        if self.closing is not None:
            return None
        line = self._line
        if not self._out and not self._writing and line.in_flight is None and line.fd >= 0:
            return line.take(data)
        self._queue(data)
        return None

    def sent(self, data: bytes, n: int) -> None:
        """The courier wrote `n` bytes of what it claimed (-errno: none, and why)."""
        self._line.landed()  # (closed, if the session ended while the bytes were out)
        if n < 0:
            self.abort("send failed")
        elif n < len(data):
            # The rest goes before anything queued meanwhile (replies, pings, a close frame).
            self._queue(data[n:], first=True)  # (data[0:] is data itself)
            self._cut = n > 0
        elif self._out or self.closing is not None:
            # The writer waited for these bytes to go first (waking it for nothing, a
            # thousand sockets a publish, cost as much as the sends).
            self._wake.set()

    def _queue(self, frames: bytes, first: bool = False) -> None:
        if self.aborted:
            return
        size = len(frames)
        if self._queued + size > self.cfg.send_queue_bytes:
            self.service.dropped_slow += 1
            log.info("websocket too slow client=%s queued=%d", self.client, self._queued)
            self.abort("too slow")
            return
        if first:
            self._out.insert(0, frames)
        else:
            self._out.append(frames)
        self._queued += size
        self._wake.set()

    def _reply(self, message: bytes) -> None:
        if self.ws.state is ConnectionState.OPEN:
            self._send(self.ws.send(Message(data=message.decode("utf-8"))))

    def _send(self, frame: bytes) -> None:
        if self.aborted:
            return
        if self._queued + len(frame) > self.cfg.send_queue_bytes + 4096:
            self.abort("too slow")  # a client that sends requests but never reads
            return
        self._out.append(frame)
        self._queued += len(frame)
        self._wake.set()

    # -- ending ------------------------------------------------------------------------------

    def close(self, code: int, reason: str, discard: bool = False) -> None:
        """Close it: no more events, a close frame with `code`, the socket goes once the
        client answers (or CLOSE_LINGER later). Safe to call from any greenlet. `discard`:
        what is queued and not yet being written is dropped (the client may no longer have
        it: its token was revoked or expired)."""
        if self.closing is not None:
            return
        if discard:
            kept = self._out[:1] if self._cut else []  # a cut frame's rest: whole frames only
            self._out[:] = kept
            self._queued = sum(map(len, kept))
        self._closing(reason)
        if self.ws.state is ConnectionState.OPEN:
            self._send(self.ws.send(CloseConnection(code=code, reason=reason)))

    def _closing(self, reason: str) -> None:
        if self.closing is None:
            self.closing = reason
            self._linger_until = time.monotonic() + CLOSE_LINGER
        self._end()
        self._wake.set()

    def evict(self) -> None:
        """Its place is given to a new socket (it held no subscription, the server is full)."""
        log.info("websocket evicted client=%s", self.client)
        self.abort("evicted")

    def abort(self, reason: str) -> None:
        """Drop it without ceremony (it does not read, or does not answer)."""
        if self.aborted:
            return
        self.aborted = True
        if self.closing is None:
            self.closing = reason
        self._end()
        self._out.clear()
        self._queued = 0
        self._shutdown()
        self._wake.set()

    def _end(self) -> None:
        """No more events: out of the hub and the revocation registry (idempotent)."""
        hub = self.service.hub
        for sub in self._subs.values():
            hub.remove(sub)
        self._subs.clear()
        self._vouched.clear()
        for sha in list(self._tokens):
            self._release(sha)

    def _shutdown(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the reader and the writer

    # -- the writer --------------------------------------------------------------------------

    def _write_loop(self) -> None:
        try:
            while not self.aborted:
                self._wake.clear()
                if self._line.in_flight is not None:  # the courier's bytes go first
                    self._wake.wait()
                    continue
                if self._out:
                    out = self._out
                    data = out[0] if len(out) == 1 else b"".join(out)  # no copy for one batch
                    out.clear()
                    self._queued = 0
                    self._cut = False
                    self._writing = True
                    try:
                        self._sendall(data)
                    finally:
                        self._writing = False
                    continue
                if self.closing is not None:
                    return  # all written, the close frame included
                self._wake.wait()
        except OSError:
            self.abort("send failed")

    def _sendall(self, data: bytes) -> None:
        # The socket's timeout is http.send_timeout: a client that takes nothing that long
        # is gone, however much is queued.
        view = memoryview(data)
        while view:
            view = view[self.sock.send(view[:SEND_CHUNK]) :]

    # -- time (the service's clock calls this) -----------------------------------------------

    def tick(self, now: float, wall: float) -> None:
        """Pings, a token's exp, the grace for a socket without subscriptions, and Kazoo's
        grants due to be asked again. `now` is time.monotonic(), `wall` time.time()."""
        if self.closing is not None:
            # The reader waits for the client's answer to our close only while the client
            # sends something: one that never answers is dropped here, on the clock.
            if not self.aborted and now >= self._linger_until:
                self.abort(self.closing)
            return
        interval = self.cfg.ping_interval
        if self._pinged is not None:
            if now - self._pinged >= interval:
                log.info("websocket ping timeout client=%s", self.client)
                self.abort("ping timeout")
                return
        elif now - self._heard >= interval:
            self._pinged = now
            self._send(self.ws.send(Ping(payload=PING_PAYLOAD)))
        if self._expires is not None and wall >= self._expires:
            self._expire(wall)
            if self.closing is not None:
                return
        if self.bare_since is not None and now - self.bare_since >= self.cfg.subscribe_grace:
            log.info("websocket without subscription closed client=%s", self.client)
            self.close(POLICY, "no subscription")
            return
        if self._rechecking is None and any(v.due <= now for v in self._vouched.values()):
            self._rechecking = gevent.spawn(self._recheck)

    def _expire(self, now: float) -> None:
        """A Kazoo token's exp passed: its sockets close, as its REST requests now fail."""
        if any(sub.token.expired(now) for sub in self._subs.values()):
            self.close(POLICY, "token expired", discard=True)
            return
        left = [sub.token.expires for sub in self._subs.values() if sub.token.expires]
        self._expires = min(left) if left else None

    def _recheck(self) -> None:
        """Ask Kazoo again about the grants whose answer ran out (its own greenlet: Kazoo may
        take kazoo.crossbar_timeout). A no, or no answer, closes the socket."""
        try:
            auth = self.service.auth()
            for key, vouched in list(self._vouched.items()):
                if vouched.due > time.monotonic():
                    continue
                allowed = auth.may_act_on(vouched.token, vouched.presented, key[1])
                if self.closing is not None:
                    return
                if self._vouched.get(key) is not vouched:
                    continue  # unsubscribed, or subscribed again, meanwhile
                if not allowed:
                    log.info("websocket grant withdrawn client=%s account=%s", self.client, key[1])
                    self.close(POLICY, "access to the account not confirmed", discard=True)
                    return
                self._vouch(auth, vouched.token, vouched.presented, key[1])
        finally:
            self._rechecking = None


class _Vouched:
    """A subscription's grant that came from Kazoo: what to ask it again with, and when."""

    __slots__ = ("token", "presented", "due")

    def __init__(self, token: Token, presented: str, due: float) -> None:
        self.token = token
        self.presented = presented
        self.due = due  # time.monotonic()
