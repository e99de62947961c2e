"""channelsd: a live channel table for FreeSWITCH behind a Kazoo-compatible REST API."""

__version__ = "0.1.0"
