"""What every part of the call model shares: the channels of the switch and their lookups.

Mirrors FreeSWITCH's session hash in ``switch_core_session.c``: channels by uuid, and
``switch_core_session_locate``, which finds a session only while it is up -- a leg that has hung
up is gone for every ``uuid_*`` command even while its events are still being fired.

The concept files (``fire.py``, ``bridge.py``, ...) are mixins over :class:`ModelBase`;
``model.py`` composes them into ``CallModel``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..events import EventBuilder
from ..protocol import Event
from .leg import Channel, SwitchError

if TYPE_CHECKING:
    from .att_xfer import AttXfer


class ModelBase:
    """The state the concept mixins share, and the channel lookups they all use."""

    def __init__(self, builder: EventBuilder, emit: Callable[[Event], None]) -> None:
        self.b = builder
        self.emit = emit
        self.channels: dict[str, Channel] = {}
        self._session_ids = itertools.count(1)
        self.sessions_since_startup = 0
        self.peak = 0
        # work that must wait until the current transition has fired all its events
        self._deferred: list[Callable[[], None]] = []
        self._answer_waiters: dict[str, list[Callable[[], None]]] = {}
        # att_xfer consultations by transferor uuid, and zombie transferors (reference §2.6)
        # -> the (target, transferee) bridge whose end finally tears them down
        self.attxfers: dict[str, AttXfer] = {}
        self.zombies: dict[str, AttXfer] = {}
        # None: a Bridge-A transferor turns zombie unless the transferee had playable hold
        # music (what the reference saw); True/False forces it either way for tests
        self.attxfer_zombie: bool | None = None

    def locate(self, uid: str | None) -> Channel | None:
        """The channel while it is up (switch_core_session_locate), else None."""
        ch = self.channels.get(uid or "")
        return ch if ch is not None and ch.alive else None

    def get(self, uid: str, reply: str = "-ERR No such channel!\n") -> Channel:
        """The channel while it is up; else the command fails with ``reply``."""
        ch = self.locate(uid)
        if ch is None:
            raise SwitchError(reply)
        return ch

    def live(self) -> list[Channel]:
        """Every channel not yet destroyed (what the core's SQL table still lists)."""
        return [ch for ch in self.channels.values() if not ch.destroyed]

    def _peer(self, ch: Channel, alive_only: bool = True) -> Channel | None:
        """The loopback twin (the other end of a loopback pair)."""
        peer = self.channels.get(ch.loopback_peer or "")
        if peer is None or (alive_only and not peer.alive):
            return None
        return peer

    def _partner(self, ch: Channel) -> Channel | None:
        """The bridge partner (what ``bridge_to`` names)."""
        return self.locate(ch.bridge_peer)
