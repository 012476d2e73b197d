"""pxe.dns.server without sockets: argument checks. (The transport itself is tested on loopback in
tests/integration/test_dns_server.py.)"""

from __future__ import annotations

from typing import Any

import pytest

from pxe.dns.server import STAT_KEYS, DnsServer
from pxe.dns.zone import Zone


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"port": 70000}, "port"),
        ({"port": -1}, "port"),
        ({"upstreams": [("127.0.0.1", 0)]}, "upstream"),
        ({"upstreams": [("127.0.0.1",)]}, "upstream"),
        ({"forward_timeout": 0}, "forward_timeout"),
        ({"tcp_idle_timeout": -1}, "tcp_idle_timeout"),
        ({"max_tcp_clients": 0}, "max_tcp_clients"),
        ({"max_forwards": 0}, "max_forwards"),
    ],
)
def test_rejects_bad_arguments(kwargs: dict[str, Any], message: str) -> None:
    kwargs = {"host": "127.0.0.1", "port": 0, **kwargs}
    with pytest.raises(ValueError, match=message):
        DnsServer(Zone("lab.example"), **kwargs)


def test_initial_state() -> None:
    server = DnsServer(Zone("lab.example"), host="127.0.0.1", port=0, upstreams=[("192.0.2.1", 53)])
    assert server.stats == dict.fromkeys(STAT_KEYS, 0)
    assert server.forwarding and server.upstreams == (("192.0.2.1", 53),)
    assert server.tcp_clients == 0 and server.forwards_running == 0
    assert not DnsServer(Zone("lab.example"), host="127.0.0.1", port=0).forwarding
