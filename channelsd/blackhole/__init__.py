"""Kazoo's websocket (blackhole) for call events, as monster-ui's socket client speaks it.

events: a channel as a Kazoo call event; protocol: the client's messages and the replies;
hub: table changes fanned out to subscriptions; session: one socket; service: the endpoint.
"""
