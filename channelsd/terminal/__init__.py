"""`channelsd ls`: the live calls for an operator at a shell, from the running daemon's API.

It is a client like any other: it reads `/v2` over HTTP with a token, never the daemon's
memory, so it sees what the token may see. `options` parses the command line and picks the
URL and token, `client` speaks HTTP, `sse` reads the event stream, `calls` groups legs into
calls and words their fields, `tables` draws them with rich, `watch` follows the stream.
"""
