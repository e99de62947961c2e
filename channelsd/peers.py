"""Who is at the other end of a request, for the logs (fail2ban reads the address there).

The socket's peer address is the truth unless that peer is a reverse proxy the operator
listed in http.trusted_proxies: only then is X-Forwarded-For read, from the right (the hop
the trusted proxy itself saw) past any further trusted proxies. A client can write anything
into X-Forwarded-For, so without that setting it is ignored.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from typing import Any

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class Peers:
    """Resolves the client address of a WSGI request."""

    def __init__(self, trusted_proxies: Iterable[str] = ()) -> None:
        self.trusted: tuple[_Network, ...] = tuple(
            ipaddress.ip_network(p, strict=False) for p in trusted_proxies
        )

    def _is_trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in net for net in self.trusted)

    def client(self, environ: Mapping[str, Any]) -> str:
        peer = str(environ.get("REMOTE_ADDR") or "-")
        if not self.trusted or not self._is_trusted(peer):
            return peer
        forwarded = str(environ.get("HTTP_X_FORWARDED_FOR") or "")
        client = peer
        for hop in reversed([h.strip() for h in forwarded.split(",")]):
            try:
                ipaddress.ip_address(hop)
            except ValueError:
                break  # a malformed hop: nothing left of it can be believed
            client = hop
            if not self._is_trusted(hop):
                break
        return client
