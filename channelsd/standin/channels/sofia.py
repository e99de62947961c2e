"""SIP legs: what mod_sofia puts on a channel (the s8 capture's ``sofia/...`` legs).

Mirrors mod_sofia's names (``sofia_glue_attach_private``: ``sofia/<profile>/<user>@<host>``;
a leg through a gateway is ``sofia/<the gateway's profile>/<number>`` and carries
``sip_gateway_name``, ``sofia_outgoing_channel``), a subset of the SIP and RTP variables s8 shows
on its two legs, in s8's order, the PCMU codec, and the ``sip_hangup_disposition`` sofia sets
when a leg ends.  The capture switch had no registered phone and no gateway: the addresses,
user agents and call-ids are whatever the caller of :func:`sip_variables` passes; the variable
names and the shape of their values are s8's.
"""

from __future__ import annotations

from dataclasses import dataclass

from .leg import Channel

USER_AGENT = "FreeSWITCH-mod_sofia/1.11.3-dev~64bit"  # s8's legs (the switch called itself)


@dataclass(frozen=True)
class SipEnd:
    """The far end of one SIP dialog, as the switch's leg for it sees it."""

    profile: str  # the sofia profile: "internal" (phones) or "external" (trunks)
    user: str  # the user part: an extension, or a number on a trunk
    host: str  # inbound: the From host; outbound: the contact's host:port
    ip: str  # where its signalling comes from (sip_network_ip)
    port: int = 5060
    media_ip: str = ""  # its RTP address (remote_media_ip); ``ip`` when empty
    media_port: int = 0
    user_agent: str = USER_AGENT
    call_id: str = ""
    gateway: str | None = None  # the gateway an outbound trunk leg goes through
    to_host: str = ""  # inbound: the host its INVITE addressed (request-URI); ``host`` if empty
    codec: str = "PCMU"
    rate: int = 8000

    @property
    def channel_name(self) -> str:
        if self.gateway:
            return f"sofia/{self.profile}/{self.user}"
        return f"sofia/{self.profile}/{self.user}@{self.host}"

    @property
    def dial_string(self) -> str:
        """What a ``bridge`` to this end runs."""
        if self.gateway:
            return f"sofia/gateway/{self.gateway}/{self.user}"
        return f"sofia/{self.profile}/{self.user}@{self.host}"


def sip_variables(
    end: SipEnd,
    direction: str,
    local_ip: str,
    local_media_port: int,
    to_user: str,
    from_user: str,
) -> list[tuple[str, str]]:
    """The sofia variables of a leg towards ``end`` (s8's names and order, inbound leg
    08c2ec5b / outbound leg e70b701b).  ``to_user`` is the number dialled, ``from_user`` the
    caller's number."""
    media_ip = end.media_ip or end.ip
    to_host = end.to_host or end.host
    codec = (end.codec, str(end.rate))
    if direction == "inbound":
        out = [
            ("sip_from_user", from_user),
            ("sip_from_uri", f"{from_user}@{end.host}"),
            ("sip_from_host", end.host),
            ("sip_call_id", end.call_id),
            ("sip_local_network_addr", local_ip),
            ("sip_network_ip", end.ip),
            ("sip_network_port", str(end.port)),
            ("sip_received_ip", end.ip),
            ("sip_received_port", str(end.port)),
            ("sip_via_protocol", "udp"),
            ("sofia_profile_name", end.profile),
            ("sofia_profile_url", f"sip:mod_sofia@{local_ip}:5060"),
            ("recovery_profile_name", end.profile),
            ("sip_req_user", to_user),
            ("sip_req_uri", f"{to_user}@{to_host}"),
            ("sip_req_host", to_host),
            ("sip_to_user", to_user),
            ("sip_to_uri", f"{to_user}@{to_host}"),
            ("sip_to_host", to_host),
            ("sip_user_agent", end.user_agent),
        ]
    else:
        out = [("sip_profile_name", end.profile)]
        if end.gateway:
            out.append(("sip_gateway_name", end.gateway))
        out += [
            ("sip_destination_url", f"sip:{end.user}@{end.host}"),
            ("sofia_profile_name", end.profile),
            ("recovery_profile_name", end.profile),
            ("sip_req_uri", f"{end.user}@{end.host}"),
            ("sip_local_network_addr", local_ip),
            ("sip_network_ip", end.ip),
            ("sip_network_port", str(end.port)),
            ("sip_user_agent", end.user_agent),
            ("sip_call_id", end.call_id),
            ("sip_from_user", from_user),
            ("sip_to_user", end.user),
            ("sip_to_host", end.host),
        ]
    return out + [
        ("rtp_use_codec_name", codec[0]),
        ("rtp_use_codec_rate", codec[1]),
        ("rtp_use_codec_ptime", "20"),
        ("read_codec", codec[0]),
        ("read_rate", codec[1]),
        ("write_codec", codec[0]),
        ("write_rate", codec[1]),
        ("local_media_ip", local_ip),
        ("local_media_port", str(local_media_port)),
        ("remote_media_ip", media_ip),
        ("remote_media_port", str(end.media_port)),
        ("dtmf_type", "rfc2833"),
    ]


def hangup_disposition(ch: Channel) -> str | None:
    """What sofia records as ``sip_hangup_disposition`` for a SIP leg the switch hangs up: a BYE
    on an answered leg, a CANCEL for an outbound one still ringing, a refusal for an inbound one.
    None for a leg whose far end already ended it (a ``recv_*`` set on the leg) or not SIP."""
    if not ch.name.startswith("sofia/") or "sip_hangup_disposition" in ch.variables:
        return None
    if ch.answered:
        return "send_bye"
    return "send_cancel" if ch.direction == "outbound" else "send_refuse"
