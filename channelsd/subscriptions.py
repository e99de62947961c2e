"""Live subscriptions (the SSE event streams, and the websockets' tokens), counted and keyed by
the token that opened them.

A request is authorised once, when it arrives; a stream then lives for hours. So the daemon
keeps a registry of what is open, per token hash: a reload that removes a token, or changes
what it may see (role, account, owner, descendants), revokes every subscription opened with
it, and the subscription's own close callback ends it. A Kazoo token is revoked the same way
when its key is removed or replaced. The registry also holds the limits on how many may be open
at once: in all, with one token, and with the tokens of one account, so that one tenant (or one
leaked token) cannot take every place and lock the others out.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from channelsd.tokens import Token

if TYPE_CHECKING:
    from channelsd.config import HttpLimits

log = logging.getLogger("channelsd.subscriptions")


class Grants(Protocol):
    """What tokens grant after a reload: channelsd.tokens' TokenStore or Authenticator."""

    def current(self, token: Token) -> Token | None: ...


class Subscription:
    """One open subscription: who opened it, and how to end it."""

    __slots__ = ("token", "kind", "ended", "_on_end", "_registry")

    def __init__(
        self, registry: Subscriptions, token: Token, kind: str, on_end: Callable[[], None]
    ) -> None:
        self._registry: Subscriptions | None = registry
        self.token = token
        self.kind = kind
        self.ended = False
        self._on_end = on_end

    def end(self) -> None:
        """End it (its token was revoked, or its client left): its owner sees `ended` once
        the callback wakes it."""
        if self.ended:
            return
        self.ended = True
        self.release()
        try:
            self._on_end()
        except Exception:  # one subscriber's failure must not stop a reload
            log.exception("ending a %s subscription failed", self.kind)

    def release(self) -> None:
        """It ended (closed by the client, the server, or revoked); idempotent."""
        if self._registry is not None:
            self._registry._forget(self)
            self._registry = None


class Refused(Exception):
    """No place for another subscription: which limit was reached."""

    def __init__(self, reason: str, key: str, limit: int, whose: str) -> None:
        super().__init__(f"{limit} open{whose}, the limit ({key})")
        self.reason = reason  # the metrics label: stream_limit, stream_token_limit, ...
        self.key = key  # the configuration key
        self.limit = limit
        self.whose = whose  # whose subscriptions counted, as words: " with this token"


class Subscriptions:
    """Open subscriptions by token hash: at most `limit` in all, `per_token` with one token
    and `per_account` with the tokens of one account (the token's own account: a reseller's
    token watching its sub-accounts counts against the reseller)."""

    def __init__(
        self, limit: int, per_token: int | None = None, per_account: int | None = None
    ) -> None:
        self.limit = limit
        self.per_token = per_token or limit
        self.per_account = per_account or limit
        self._by_token: dict[str, dict[int, Subscription]] = {}
        self._by_account: dict[str, int] = {}
        self._count = 0
        # What tokens grant since the last reload: a subscription opened after it by a request
        # authorised before it (one that waited for Kazoo meanwhile) is checked against it.
        self._grants: Grants | None = None

    @classmethod
    def from_limits(cls, limits: HttpLimits) -> Subscriptions:
        return cls(limits.max_streams, limits.max_streams_per_token, limits.max_streams_per_account)

    def __len__(self) -> int:
        return self._count

    def open(self, token: Token, kind: str, on_end: Callable[[], None]) -> Subscription:
        """Register a new subscription, or raise Refused at a limit. `on_end` is called when
        it is ended from outside: it must wake the subscription's owner. A token that a reload
        revoked after it was authenticated gets one that has `ended` already."""
        if self._count >= self.limit:
            raise Refused("stream_limit", "http.max_streams", self.limit, "")
        mine = self._by_token.get(token.sha256)
        if mine is not None and len(mine) >= self.per_token:
            raise Refused(
                "stream_token_limit",
                "http.max_streams_per_token",
                self.per_token,
                " with this token",
            )
        account = token.account_id
        if self._by_account.get(account, 0) >= self.per_account:
            raise Refused(
                "stream_account_limit",
                "http.max_streams_per_account",
                self.per_account,
                f" with the tokens of account {account}",
            )
        sub = Subscription(self, token, kind, on_end)
        if self._grants is not None and not _unchanged(self._grants, token):
            sub._registry = None
            sub.ended = True
            return sub
        self._by_token.setdefault(token.sha256, {})[id(sub)] = sub
        self._by_account[account] = self._by_account.get(account, 0) + 1
        self._count += 1
        return sub

    def _forget(self, sub: Subscription) -> None:
        subs = self._by_token.get(sub.token.sha256)
        if subs is not None and subs.pop(id(sub), None) is not None:
            self._count -= 1
            if not subs:
                del self._by_token[sub.token.sha256]
            account = sub.token.account_id
            left = self._by_account[account] - 1
            if left:
                self._by_account[account] = left
            else:
                del self._by_account[account]

    def revoke_changed(self, tokens: Grants) -> int:
        """After a reload: revoke every subscription whose token is gone from `tokens` or now
        grants something else. Returns how many were revoked."""
        self._grants = tokens
        revoked = 0
        for subs in list(self._by_token.values()):
            for sub in list(subs.values()):
                if not _unchanged(tokens, sub.token):
                    sub.end()
                    revoked += 1
        return revoked


def _unchanged(tokens: Grants, token: Token) -> bool:
    current = tokens.current(token)
    return current is not None and current.grants() == token.grants()
