"""What a request presents in its headers and query: its token, and the forms it asks for.

Shared by the Flask resource (channelsd.api) and the plain-list fast path (channelsd.fastlists),
so that both read a request the same way.
"""

from __future__ import annotations

# What Kazoo's clients send in Accept when they want a list as CSV.
CSV_TYPES = ("text/csv", "text/comma-separated-values", "application/octet-stream")


def truthy(value: str | None) -> bool:
    return (value or "").lower() in ("true", "1", "yes")


def wants_csv(accept_param: str | None, accept_header: str | None) -> bool:
    """?accept=csv, or an Accept header naming one of Kazoo's CSV types."""
    if (accept_param or "").lower() == "csv":
        return True
    accept = (accept_header or "").lower()
    return any(accept.startswith(t) for t in CSV_TYPES)


def header_token(x_auth_token: str | None, authorization: str | None) -> str | None:
    """The token of X-Auth-Token, else of `Authorization: Bearer <token>` (or a bare one);
    "" when a header is there but empty (then no other place counts), None without one."""
    if x_auth_token:
        return x_auth_token.strip()
    if authorization:
        scheme, _, rest = authorization.strip().partition(" ")
        if scheme.lower() == "bearer":
            return rest.strip()
        if not rest:
            return scheme
    return None
