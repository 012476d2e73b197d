"""agent.client against a fake appliance on 127.0.0.1 (tests/unit/agent/conftest.py)."""

from __future__ import annotations

import hashlib
import os
import socket
from collections.abc import Iterator

import pytest

from agent import client as client_module
from agent.client import AgentApiError, AgentClient, AgentUnreachable, Command, LookupResult, open_range
from tests.unit.agent.conftest import MACS, NODE, FakeAppliance

IMAGE = os.urandom(300_000)


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on (bound, then closed: connecting is refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A loopback port that accepts connections (the kernel's backlog) and never answers."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(4)
        yield sock.getsockname()[1]


def looked_up(appliance: FakeAppliance) -> AgentClient:
    client = AgentClient(appliance.url, timeout=5)
    client.lookup(appliance.boot_token, MACS)
    return client


def test_lookup_trades_the_boot_token_for_the_agent_token(appliance: FakeAppliance) -> None:
    client = AgentClient(appliance.url + "/", timeout=5)
    assert not client.node_known
    found = client.lookup(appliance.boot_token, MACS)
    assert found == LookupResult(node=NODE, agent_token=appliance.agent_token, heartbeat_interval_s=0.05)
    assert client.node_known
    assert appliance.lookups == [{"token": appliance.boot_token, "macs": MACS, "agentVersion": "1"}]


def test_the_calls_after_lookup_send_the_agent_token(appliance: FakeAppliance) -> None:
    client = looked_up(appliance)
    client.post_inventory({"cpu": {"count": 2}, "disks": []})
    appliance.batches.append([{"id": "c1", "name": "write_image", "params": {"url": "/x"}},
                              {"id": "c2", "name": "reboot"},
                              {"name": "no id: dropped"}, "not even an object",
                              {"id": "c3", "params": ["not", "an", "object"]}])
    reply = client.heartbeat(42.456, "10.78.0.23/24", None)
    assert reply.interval_s == 0.05
    assert reply.commands == [Command("c1", "write_image", {"url": "/x"}), Command("c2", "reboot", {}),
                              Command("c3", "", {})]
    client.report("c1", "running", 140, "Wrote 4 of 10 MiB.")
    client.report("c1", "succeeded", 100, "Done.", result={"device": "/dev/vda"})
    assert appliance.inventories == [{"cpu": {"count": 2}, "disks": []}]
    assert appliance.heartbeats == [{"uptimeS": 42.46, "address": "10.78.0.23/24", "busy": None}]
    assert appliance.reports == [
        ("c1", {"state": "running", "percent": 100, "message": "Wrote 4 of 10 MiB.", "result": None, "error": None}),
        ("c1", {"state": "succeeded", "percent": 100, "message": "Done.", "result": {"device": "/dev/vda"},
                "error": None}),
    ]


def test_a_report_after_the_end_is_409(appliance: FakeAppliance) -> None:
    client = looked_up(appliance)
    appliance.ended.add("c9")
    with pytest.raises(AgentApiError) as info:
        client.report("c9", "running", 1, "x")
    assert (info.value.status, info.value.error_code) == (409, "AGENT_COMMAND_ENDED")


def test_a_wrong_agent_token_is_401(appliance: FakeAppliance) -> None:
    client = looked_up(appliance)
    appliance.agent_token = "agent-replaced-by-a-new-lookup"
    with pytest.raises(AgentApiError) as info:
        client.heartbeat(1.0, None, None)
    assert info.value.status == 401
    assert info.value.error_code == "AUTHENTICATION_FAILED"
    assert str(info.value) == "HTTP 401 AUTHENTICATION_FAILED: a missing or wrong agent token"


def test_an_unknown_boot_token_is_404_and_other_macs_409(appliance: FakeAppliance) -> None:
    client = AgentClient(appliance.url, timeout=5)
    with pytest.raises(AgentApiError) as info:
        client.lookup("not-the-token", MACS)
    assert (info.value.status, info.value.error_code) == (404, "RESOURCE_NOT_FOUND")
    with pytest.raises(AgentApiError) as info:
        client.lookup(appliance.boot_token, ["52:54:00:99:99:99"])
    assert (info.value.status, info.value.error_code) == (409, "AGENT_LOOKUP_MISMATCH")
    assert not client.node_known
    with pytest.raises(RuntimeError, match="no lookup yet"):
        client.heartbeat(1.0, None, None)


def test_tokens_never_show_in_reprs_or_errors(appliance: FakeAppliance) -> None:
    appliance.echo_tokens = True  # an appliance that quotes the token back in its error messages
    client = AgentClient(appliance.url, timeout=5)
    with pytest.raises(AgentApiError) as lookup_error:
        client.lookup(appliance.boot_token + "-wrong", MACS)
    found = client.lookup(appliance.boot_token, MACS)
    sent = appliance.agent_token
    appliance.agent_token = "agent-other"
    with pytest.raises(AgentApiError) as auth_error:
        client.heartbeat(1.0, None, None)
    texts = [repr(client), str(client), repr(found), str(found), str(lookup_error.value), repr(lookup_error.value),
             str(auth_error.value), repr(auth_error.value)]
    for text in texts:
        assert appliance.boot_token not in text and sent not in text, text
    assert f"<masked:{len(sent)}>" in repr(found) and f"<masked:{len(sent)}>" in repr(client)
    assert f"<masked:{len(sent)}>" in str(auth_error.value)  # what was quoted shows by its length


def test_a_refused_connection_is_unreachable(closed_port: int) -> None:
    client = AgentClient(f"http://127.0.0.1:{closed_port}", timeout=2)
    with pytest.raises(AgentUnreachable, match="POST /agent/v1/lookup: ConnectionRefusedError") as info:
        client.lookup("secret-boot-token", MACS)
    assert isinstance(info.value, ConnectionError)
    assert "secret-boot-token" not in str(info.value)


def test_a_silent_appliance_times_out(silent_port: int) -> None:
    client = AgentClient(f"http://127.0.0.1:{silent_port}", timeout=0.2)
    with pytest.raises(AgentUnreachable, match="timed out"):
        client.lookup("secret-boot-token", MACS)


def test_server_errors_and_a_wrong_path(appliance: FakeAppliance) -> None:
    client = AgentClient(appliance.url, timeout=5)
    appliance.lookup_statuses.append(503)
    with pytest.raises(AgentApiError) as info:
        client.lookup(appliance.boot_token, MACS)
    assert (info.value.status, info.value.error_code) == (503, "INTERNAL_ERROR")
    wrong = AgentClient(appliance.url + "/nope", timeout=5)
    with pytest.raises(AgentApiError) as info:
        wrong.lookup(appliance.boot_token, MACS)
    assert info.value.status == 404


@pytest.mark.parametrize("url", ["ftp://10.0.0.1/", "10.0.0.1:8080", "http://"])
def test_the_base_url_must_be_http(url: str) -> None:
    with pytest.raises(ValueError, match="is not an http"):
        AgentClient(url)


# -- ranged image streams --------------------------------------------------------------------

def test_open_range_from_zero_and_from_an_offset(appliance: FakeAppliance) -> None:
    appliance.images["/exports/img"] = IMAGE
    with open_range(appliance.url + "/exports/img", 0, timeout=5) as stream:
        assert b"".join(stream) == IMAGE
    with open_range(appliance.url + "/exports/img", 123_456, timeout=5) as stream:
        assert stream.length == len(IMAGE) - 123_456
        assert b"".join(stream) == IMAGE[123_456:]
    assert [(path, offset) for path, offset, _ in appliance.image_gets] == [("/exports/img", 0),
                                                                            ("/exports/img", 123_456)]


def test_open_range_needs_206_past_zero(appliance: FakeAppliance) -> None:
    appliance.images["/exports/img"] = IMAGE
    appliance.ignore_range = True
    with pytest.raises(AgentApiError, match="ignored the Range request") as info:
        open_range(appliance.url + "/exports/img", 10, timeout=5)
    assert info.value.error_code == "RANGE_NOT_SUPPORTED"
    with open_range(appliance.url + "/exports/img", 0, timeout=5) as stream:  # 200 is right from 0
        assert hashlib.sha256(b"".join(stream)).digest() == hashlib.sha256(IMAGE).digest()


def test_a_dropped_download_is_a_connection_error(appliance: FakeAppliance, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(client_module, "CHUNK", 64 << 10)
    appliance.images["/exports/img"] = IMAGE
    appliance.drop_after = 100_000
    received = bytearray()
    with pytest.raises(ConnectionError, match=r"ended at byte 100000, 200000 bytes short"):
        for chunk in open_range(appliance.url + "/exports/img", 0, timeout=5):
            received += chunk
    assert bytes(received) == IMAGE[:100_000]


def test_image_errors(appliance: FakeAppliance) -> None:
    with pytest.raises(AgentApiError, match="no image /exports/missing") as info:
        open_range(appliance.url + "/exports/missing?sig=secret", 0, timeout=5)
    assert info.value.status == 404 and "secret" not in str(info.value)  # no query string in messages
    appliance.images["/exports/img"] = IMAGE
    appliance.image_status = 503
    with pytest.raises(ConnectionError, match="HTTP 503"):  # worth a retry: imagewrite retries OSError
        open_range(appliance.url + "/exports/img", 0, timeout=5)


def test_the_client_sends_the_agent_token_to_the_appliance_only(appliance: FakeAppliance) -> None:
    client = looked_up(appliance)
    appliance.images["/exports/img"] = IMAGE
    with client.open_range("/exports/img", 0) as stream:  # relative: the appliance's own
        assert b"".join(stream) == IMAGE
    other_origin = appliance.url.replace("127.0.0.1", "localhost")
    with client.open_range(other_origin + "/exports/img", 299_000) as stream:
        assert b"".join(stream) == IMAGE[299_000:]
    assert [token for _, _, token in appliance.image_gets] == [appliance.agent_token, None]


def test_the_client_maps_a_refused_image_connection_to_unreachable(closed_port: int) -> None:
    client = AgentClient(f"http://127.0.0.1:{closed_port}", timeout=2)
    with pytest.raises(AgentUnreachable, match="Connection refused"):
        client.open_range("/exports/img", 0)


# -- disk uploads (read_disk) ----------------------------------------------------------------

def test_a_disk_upload_range_by_range_then_its_end(appliance: FakeAppliance) -> None:
    client = looked_up(appliance)
    assert client.upload_status("c1") == {"committed": 0, "total": None, "complete": False}
    first, last = os.urandom(1000), os.urandom(24)
    assert client.upload_range("c1", 0, first, 5000) == {"committed": 1000, "total": 5000, "complete": False}
    assert client.upload_range("c1", 4976, last, 5000) == {"committed": 5000, "total": 5000, "complete": False}
    assert client.finish_upload("c1", 5000) == {"committed": 5000, "total": 5000, "complete": True}
    assert client.upload_status("c1") == {"committed": 5000, "total": 5000, "complete": True}
    token = appliance.agent_token
    assert appliance.disk_puts == [("c1", "bytes 0-999/5000", 1000, "application/octet-stream", token),
                                   ("c1", "bytes 4976-4999/5000", 24, "application/octet-stream", token),
                                   ("c1", "bytes */5000", 0, "application/octet-stream", token)]
    assert appliance.disk_gets == [("c1", token), ("c1", token)]
    assert bytes(appliance.disks["c1"]) == first + bytes(3976) + last


def test_the_command_id_is_quoted_in_the_upload_path(appliance: FakeAppliance) -> None:
    client = looked_up(appliance)
    client.upload_range("a/b c", 0, b"x", 1)
    assert appliance.disk_puts[0][0] == "a%2Fb%20c"


@pytest.mark.parametrize(("start", "data", "total"), [(0, b"", 10), (-1, b"x", 10), (5, b"123456", 10)])
def test_an_upload_range_must_be_inside_the_disk(appliance: FakeAppliance, start: int, data: bytes,
                                                 total: int) -> None:
    client = looked_up(appliance)
    with pytest.raises(ValueError, match="are not a range of 10 bytes"):
        client.upload_range("c1", start, data, total)
    assert appliance.disk_puts == []


def test_upload_errors_are_api_errors_without_the_token(appliance: FakeAppliance) -> None:
    client = looked_up(appliance)
    appliance.ended.add("c9")
    with pytest.raises(AgentApiError) as info:
        client.upload_range("c9", 0, b"x", 1)
    assert (info.value.status, info.value.error_code) == (409, "AGENT_COMMAND_ENDED")
    appliance.put_faults.append(503)
    with pytest.raises(AgentApiError) as info:
        client.upload_range("c1", 0, b"x", 1)
    assert info.value.status == 503
    sent = appliance.agent_token
    appliance.echo_tokens = True
    appliance.agent_token = "agent-other"
    for call in (lambda: client.upload_range("c1", 0, b"x", 1), lambda: client.finish_upload("c1", 1),
                 lambda: client.upload_status("c1")):
        with pytest.raises(AgentApiError) as info:
            call()
        assert info.value.status == 401
        assert sent not in str(info.value) and f"<masked:{len(sent)}>" in str(info.value)


def test_a_cut_upload_is_unreachable(appliance: FakeAppliance) -> None:
    client = looked_up(appliance)
    appliance.put_faults.append("cut")
    with pytest.raises(AgentUnreachable, match=r"^PUT /agent/v1/nodes/.*/disk/c1: ") as info:
        client.upload_range("c1", 0, os.urandom(1 << 20), 1 << 20)
    assert appliance.agent_token not in str(info.value)
    assert appliance.disk_puts == [] and "c1" not in appliance.disks  # nothing arrived in full


def test_a_refused_upload_connection_is_unreachable(closed_port: int, appliance: FakeAppliance) -> None:
    client = looked_up(appliance)
    client.base_url = f"http://127.0.0.1:{closed_port}"
    with pytest.raises(AgentUnreachable, match=f"GET /agent/v1/nodes/{NODE}/disk/c1: ConnectionRefusedError"):
        client.upload_status("c1")


def test_uploads_need_a_lookup_first() -> None:
    client = AgentClient("http://127.0.0.1:9", timeout=1)
    with pytest.raises(RuntimeError, match="no lookup yet"):
        client.upload_status("c1")
