"""API tokens: stored as SHA-256 hashes, each bound to an account and a role (spec §6)."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field

ROLES = ("superduper", "admin", "user")


@dataclass(frozen=True)
class Token:
    sha256: str
    account_id: str
    role: str
    owner_id: str | None = None
    descendants: frozenset[str] = field(default_factory=frozenset)
    name: str = ""

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
