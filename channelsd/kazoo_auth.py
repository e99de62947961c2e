"""Kazoo-issued tokens: JWTs verified offline with the cluster's public keys.

Since Kazoo 4 the auth_token crossbar hands out (`PUT /v2/user_auth`, `PUT /v2/api_auth`) is a
JWT signed with the cluster's RSA key; its public half is `GET /v2/auth/keys/{KEY_ID}`. What is
checked here, with PyJWT:

* the header names a `kid` configured under [kazoo] public_keys and an `alg` of RS256, RS384
  or RS512 (Kazoo's own list). Nothing else is tried: no `none`, no HMAC (an RSA public key
  is public, so "HS256 with the public key as the secret" would let anyone sign), no key the
  token itself points to (`jku`, `jwk`, `x5u`, `x5c` are never read), and the algorithm is
  pinned to the one the header names before the signature is checked;
* the signature, with that kid's key;
* `exp` (required), with LEEWAY_SECONDS for clocks that disagree a little; `iss` is "kazoo";
* `account_id` (and `owner_id` when present) look like Kazoo ids.

What cannot be checked without Kazoo's database (README): `identity_sig` (the user's secret:
a user whose password or secret was reset keeps a valid-looking token until `exp`), and the
user's `priv_level` and the account's superduper flag, which are not in the claims: the role
comes from [kazoo] default_role, superduper from [kazoo] superduper_accounts.

A verified token is kept by its text for VERIFIED_CACHE_SECONDS (never past its exp), so the
fast list path pays one dictionary lookup, not an RSA verification, per request.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import jwt

from channelsd.kazoo_keys import KAZOO_ID, KazooConfig, KazooKey
from channelsd.tokens import Token, digest

ALGORITHMS = ("RS256", "RS384", "RS512")
ISSUER = "kazoo"
LEEWAY_SECONDS = 10
VERIFIED_CACHE_SECONDS = 60.0
VERIFIED_CACHE_MAX = 10_000
# A JWT longer than this is not one Kazoo made (theirs are under 1 KiB).
MAX_TOKEN_CHARS = 8192


class KazooTokens:
    """Verifies Kazoo JWTs against the configured keys, and keeps the verified ones a while."""

    def __init__(self, cfg: KazooConfig, clock: Callable[[], float] = time.time) -> None:
        self.cfg = cfg
        self._clock = clock
        # token text -> (the Token, until when it may be served from here)
        self._verified: dict[str, tuple[Token, float]] = {}

    def verify(self, presented: str) -> tuple[Token | None, str]:
        """The token's identity, or None and why (for the log)."""
        now = self._clock()
        hit = self._verified.get(presented)
        if hit is not None:
            if now <= hit[1]:
                return hit[0], ""
            del self._verified[presented]
        token, reason = self._verify(presented, now)
        if token is not None:
            self._keep(presented, token, now)
        return token, reason

    def _keep(self, presented: str, token: Token, now: float) -> None:
        verified = self._verified
        if len(verified) >= VERIFIED_CACHE_MAX:
            # Oldest first out: each entry lives a minute at most anyway.
            del verified[next(iter(verified))]
        until = now + VERIFIED_CACHE_SECONDS
        if token.expires is not None:
            until = min(until, token.expires)
        verified[presented] = (token, until)

    def _verify(self, presented: str, now: float) -> tuple[Token | None, str]:
        if len(presented) > MAX_TOKEN_CHARS:
            return None, "malformed token"
        try:
            header = jwt.get_unverified_header(presented)
        except jwt.PyJWTError:
            return None, "malformed token"
        alg = header.get("alg")
        if alg not in ALGORITHMS:
            return None, "algorithm not allowed"
        kid = header.get("kid")
        key = self.cfg.keys.get(kid) if isinstance(kid, str) else None
        if key is None:
            return None, "unknown kid"
        try:
            claims = jwt.decode(
                presented,
                key.key,
                algorithms=[alg],
                issuer=ISSUER,
                leeway=LEEWAY_SECONDS,
                options={"require": ["exp", "iss"], "verify_aud": False},
            )
        except jwt.ExpiredSignatureError:
            return None, "expired"
        except jwt.InvalidSignatureError:
            return None, "bad signature"
        except jwt.InvalidIssuerError:
            return None, "wrong issuer"
        except jwt.MissingRequiredClaimError as exc:
            return None, f"missing {exc.claim}"
        except (jwt.PyJWTError, ValueError, TypeError):
            return None, "invalid token"
        return self._identity(presented, key, claims, now)

    def _identity(
        self, presented: str, key: KazooKey, claims: dict[str, Any], now: float
    ) -> tuple[Token | None, str]:
        account = claims.get("account_id")
        owner = claims.get("owner_id")
        exp = claims.get("exp")
        if not (isinstance(account, str) and KAZOO_ID.fullmatch(account)):
            return None, "bad account_id claim"
        if owner is not None and not (isinstance(owner, str) and KAZOO_ID.fullmatch(owner)):
            return None, "bad owner_id claim"
        if not isinstance(exp, int | float) or isinstance(exp, bool):
            return None, "bad exp claim"
        role = self.role_of(account)
        if role == "user" and owner is None:
            # An api_auth token has no owner: a `user` role would have no channels to show.
            return None, "no owner_id for a user role"
        token = Token(
            sha256=digest(presented),
            account_id=account,
            role=role,
            owner_id=owner,
            name=f"kazoo:{key.kid}",
            source=f"kazoo:{key.kid}:{key.fingerprint}",
            expires=float(exp) + LEEWAY_SECONDS,
        )
        if token.expired(now):
            return None, "expired"
        return token, ""

    def role_of(self, account_id: str) -> str:
        if account_id in self.cfg.superduper_accounts:
            return "superduper"
        return self.cfg.default_role

    def current(self, token: Token) -> Token | None:
        """What a token verified before a reload grants now: None when its key is no longer
        configured under its kid (removed or replaced), else its role under this config."""
        _, kid, fingerprint = (token.source.split(":", 2) + ["", ""])[:3]
        key = self.cfg.keys.get(kid)
        if key is None or key.fingerprint != fingerprint:
            return None
        role = self.role_of(token.account_id)
        if role == "user" and token.owner_id is None:
            return None
        return replace(token, role=role)
