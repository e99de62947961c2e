"""Loaded with `-p` before any other plugin: gevent must patch the standard library before
anything imports ssl or sockets (schemathesis' pytest plugin imports requests early)."""

from gevent import monkey

monkey.patch_all()
