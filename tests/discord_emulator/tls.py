"""A throw-away certificate authority so discord.py reaches the emulator over real TLS on 127.0.0.1.

discord.py always dials `wss://{endpoint}/?v=8` with aiohttp's normal certificate checks (gateway.py), so the
emulator serves TLS and the client's connector trusts this CA only: nothing is switched off for the test.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass

import trustme

HOST = "127.0.0.1"


@dataclass(frozen=True)
class TestTls:
    server: ssl.SSLContext
    client: ssl.SSLContext


def make_tls(host: str = HOST) -> TestTls:
    """A server context holding a certificate for `host` and a client context trusting its CA."""
    authority = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert(host).configure_cert(server)
    client = ssl.create_default_context()
    authority.configure_trust(client)
    return TestTls(server=server, client=client)
