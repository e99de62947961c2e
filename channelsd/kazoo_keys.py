"""The Kazoo cluster's public keys and the [kazoo] section, as the config reads them.

Kept apart from the verifier (channelsd.kazoo_auth): the config is read before gevent patches
the standard library, and PyJWT imports ssl; reading PEM files needs only `cryptography`.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

MIN_KEY_BITS = 2048
# Kazoo's ids are 32 hex digits; the config's own account id pattern admits those and more.
KAZOO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


@dataclass(frozen=True)
class KazooKey:
    """One of the cluster's public keys, as configured."""

    kid: str
    path: str
    key: RSAPublicKey
    fingerprint: str  # of its DER form: a reload that changes the key revokes its tokens


def load_key(kid: str, path: str) -> KazooKey:
    """The RSA public key in the PEM file at `path`: PKCS#1 (`RSA PUBLIC KEY`, what Kazoo's
    /v2/auth/keys/{KEY_ID} returns as application/x-pem-file) or SPKI (`PUBLIC KEY`).
    Raises ValueError with a message naming what is wrong."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{path} is not a PEM public key ({exc})") from None
    if not isinstance(key, RSAPublicKey):
        raise ValueError(f"{path} is not an RSA public key (Kazoo signs with RSA)")
    if key.key_size < MIN_KEY_BITS:
        raise ValueError(f"{path}: a {key.key_size}-bit RSA key is too short (at least 2048)")
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return KazooKey(kid, path, key, hashlib.sha256(der).hexdigest()[:32])


@dataclass(frozen=True)
class KazooConfig:
    """[kazoo]: which keys sign the cluster's tokens, and what a token may do here."""

    keys: Mapping[str, KazooKey]
    default_role: str = "admin"
    superduper_accounts: frozenset[str] = frozenset()
    # Where to ask whether a token may act on another account (a reseller's descendants).
    crossbar_url: str = ""
    crossbar_timeout: float = 2.0
    descendants_cache_seconds: float = 300.0
    descendants_cache_size: int = 10_000
