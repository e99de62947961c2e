"""Stand-in FreeSWITCH: an ESL server that speaks the protocol byte-for-byte as the captures show.

Entry point: ``from channelsd.standin.server import StandinSwitch``.
"""
