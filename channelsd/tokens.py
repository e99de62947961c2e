"""API tokens and the one authentication function every entry point uses.

channelsd's own tokens are stored as SHA-256 hashes, each bound to an account and a role
(spec §6). Beside them, when [kazoo] is configured, Kazoo-issued JWTs are accepted
(channelsd.kazoo_auth). The REST resource, the fast list path, the event streams and the
websocket all authenticate through Authenticator.authenticate(), so a token means the same
thing everywhere.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from channelsd.kazoo_accounts import KazooAccounts
    from channelsd.kazoo_auth import KazooTokens

ROLES = ("superduper", "admin", "user")
# Kazoo is asked again about a grant at most this often, however briefly it keeps its answer.
RECHECK_SECONDS = 1.0
auth_log = logging.getLogger("channelsd.auth")


@dataclass(frozen=True)
class Token:
    sha256: str
    account_id: str
    role: str
    owner_id: str | None = None
    descendants: frozenset[str] = field(default_factory=frozenset)
    name: str = ""
    # "" for channelsd's own tokens; "kazoo:<kid>:<key fingerprint>" for a Kazoo JWT, whose
    # grants hold only while that key is configured (channelsd.kazoo_auth).
    source: str = ""
    # Unix time after which the token is no longer accepted (a Kazoo JWT's exp plus the
    # leeway); None for channelsd's own tokens, which live until a reload removes them.
    expires: float | None = None

    def expired(self, now: float) -> bool:
        return self.expires is not None and now > self.expires

    def grants(self) -> tuple[str, str, str | None, frozenset[str]]:
        """What the token gives access to; its name is only a label."""
        return (self.account_id, self.role, self.owner_id, self.descendants)

    def may_see_account(self, account_id: str) -> bool:
        return (
            self.role == "superduper"
            or account_id == self.account_id
            or account_id in self.descendants
        )


def digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


class TokenStore:
    """Looks a presented token up among the configured hashes.

    Every configured hash is compared, with hmac.compare_digest, whatever matched: the time
    taken does not tell an attacker how close a guess came.
    """

    def __init__(self, tokens: Iterable[Token]) -> None:
        self._tokens = tuple(tokens)
        self._by_hash = {t.sha256: t for t in self._tokens}

    def __len__(self) -> int:
        return len(self._tokens)

    def by_hash(self, sha256: str) -> Token | None:
        """The configured token with this hash (hashes are not secret: no constant time)."""
        return self._by_hash.get(sha256)

    def find(self, presented: str) -> Token | None:
        wanted = digest(presented).encode("ascii")
        found = None
        for tok in self._tokens:
            if hmac.compare_digest(wanted, tok.sha256.encode("ascii")):
                found = tok
        return found

    def current(self, token: Token) -> Token | None:
        """What `token` grants under this store (after a reload), or None when it is gone."""
        return self.by_hash(token.sha256)


def looks_like_jwt(presented: str) -> bool:
    """Three dot-separated parts: a JWT is never a channelsd token (those are url-safe
    base64 without dots), so only these go to the Kazoo verifier."""
    return presented.count(".") == 2


class Authenticator:
    """Who a presented token is: channelsd's own tokens first, then Kazoo's JWTs.

    `authenticate` answers the token, or None with the reason (for the log, never for the
    client: every refusal is the same 401)."""

    def __init__(
        self,
        tokens: TokenStore,
        kazoo: KazooTokens | None = None,
        accounts: KazooAccounts | None = None,
    ) -> None:
        self.tokens = tokens
        self.kazoo = kazoo
        self.accounts = accounts

    def __len__(self) -> int:
        return len(self.tokens)

    def authenticate(self, presented: str) -> tuple[Token | None, str]:
        token = self.tokens.find(presented)
        if token is not None:
            return token, ""
        if self.kazoo is not None and looks_like_jwt(presented):
            return self.kazoo.verify(presented)
        return None, "unknown token"

    def find(self, presented: str) -> Token | None:
        return self.authenticate(presented)[0]

    def current(self, token: Token) -> Token | None:
        """What `token` grants under this configuration, or None when it no longer counts:
        removed from [[tokens]], or a Kazoo token whose key is gone or was replaced."""
        if token.source:
            return self.kazoo.current(token) if self.kazoo is not None else None
        return self.tokens.current(token)

    def may_act_on(self, token: Token, presented: str, account_id: str) -> bool:
        """Whether the token may see and act on `account_id`. A Kazoo token on another
        account than its own may be a reseller's on a descendant: only Kazoo knows, and
        only when [kazoo] crossbar_url says where to ask (this may wait for its answer, at
        most kazoo.crossbar_timeout)."""
        if token.may_see_account(account_id):
            return True
        if token.source and self.accounts is not None:
            return self.accounts.allows(token, presented, account_id)
        return False

    def vouched_until(self, token: Token, account_id: str) -> float | None:
        """None when the token sees `account_id` by itself (its own account, superduper,
        listed descendants); else the grant is Kazoo's answer, and this is when a live
        subscription (websocket, event stream) asks again (time.monotonic): when that answer
        runs out, and not sooner than RECHECK_SECONDS from now."""
        if token.may_see_account(account_id) or not token.source or self.accounts is None:
            return None
        until = self.accounts.until(token, account_id) or 0.0
        return max(until, time.monotonic() + RECHECK_SECONDS)


def log_failure(client: str, request_id: str, path: str, reason: str) -> None:
    """The one line fail2ban reads: a token was presented and refused. The reason is one of
    ours (unknown token, expired, unknown kid, bad signature, ...), never client text."""
    auth_log.info(
        "auth failure client=%s request_id=%s path=%s reason=%s",
        client,
        request_id,
        path,
        reason.replace(" ", "_"),
    )


def new_token() -> tuple[str, str]:
    """A fresh random token and its SHA-256 hex digest."""
    token = secrets.token_urlsafe(32)
    return token, digest(token)


def toml_lines(
    sha256: str,
    account_id: str,
    role: str,
    owner_id: str | None = None,
    descendants: Iterable[str] = (),
    name: str = "",
) -> str:
    """The [[tokens]] block an operator pastes into channelsd.toml."""

    def q(s: str) -> str:
        return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'

    lines = ["[[tokens]]"]
    if name:
        lines.append(f"name = {q(name)}")
    lines += [f"sha256 = {q(sha256)}", f"account_id = {q(account_id)}", f"role = {q(role)}"]
    if owner_id:
        lines.append(f"owner_id = {q(owner_id)}")
    desc = list(descendants)
    if desc:
        lines.append("descendants = [" + ", ".join(q(d) for d in desc) + "]")
    return "\n".join(lines) + "\n"
