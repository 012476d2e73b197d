"""The deploy agent's API on the boot listener (docs/agent-api.md), in-process on both backends:
lookup by boot token and MACs, the per-node agent token, inventory, heartbeats handing out
commands once, progress and outcome reports, and every refusal an agent (or an impostor on the
provisioning network) can run into."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from appliance.context import AppContext
from appliance.db.session import unit_of_work
from appliance.models import AgentCommand, ServerHardware
from appliance.services.agents import AgentService
from tests.support.agent_play import boot_token, stub_ramdisk
from web.boot import create_boot_app

MAC = "52:54:00:aa:bb:01"
OTHER_MAC = "52:54:00:aa:bb:02"
INVENTORY: dict[str, Any] = {
    "cpu": {"model": "QEMU Virtual CPU", "count": 2, "architecture": "x86_64"},
    "memory_bytes": 700 << 20, "physical_memory_bytes": 768 << 20,
    "disks": [{"name": "vda", "size_bytes": 8 << 30, "rotational": True, "removable": False, "model": None,
               "vendor": "0x1af4", "serial": "node-1-disk", "wwn": None, "extra": "dropped"}],
    "nics": [{"name": "eth0", "mac": MAC.upper(), "link": True, "speed_mbps": None, "driver": "virtio_net",
              "lldp": {"chassis_id": "0c:42:a1:00:10:07", "port_id": "Ethernet1/7", "ttl_s": 120, "vlan_id": 9999,
                       "system_name": "tor-a", "port_description": None, "system_description": "x" * 5000,
                       "management_address": "10.0.3.1", "extra": "dropped"}},
             {"name": "eth1", "mac": None, "link": False, "lldp": {"chassis_id": "", "port_id": "p"}},
             {"name": "eth2", "mac": None, "link": False, "lldp": "tor-b Ethernet1/8"}],
    "system": {"sys_vendor": "QEMU", "product_name": "Standard PC", "product_serial": "S1",
               "product_uuid": "u", "bios_version": "1.16"},
    "surprise": {"not": "kept"},
}


@pytest.fixture
def boot(ctx: AppContext) -> Iterator[TestClient]:
    stub_ramdisk(ctx.settings.home)
    with TestClient(create_boot_app(ctx), base_url="http://10.0.0.1:8080") as client:
        yield client


@pytest.fixture
def server_id(ctx: AppContext) -> str:
    with unit_of_work(ctx.session_factory) as db:
        server = ServerHardware(name="rack1-u07", driver="ipmi", address="127.0.0.1", port=623, username="u",
                                password_sealed="x", state="NoProfileApplied", mac_addresses=[MAC.upper()])
        db.add(server)
        db.flush()
        return server.id


def lookup(client: TestClient, macs: list[str] | None = None, mac: str = MAC) -> dict[str, Any]:
    r = client.post("/agent/v1/lookup", json={"token": boot_token(client, mac), "macs": macs or [OTHER_MAC, MAC],
                                              "agentVersion": "1"})
    assert r.status_code == 200, r.text
    return r.json()


def headers(found: dict[str, Any]) -> dict[str, str]:
    return {"X-Ingot-Agent-Token": found["agentToken"]}


def queue(ctx: AppContext, node: str, name: str, params: dict[str, Any] | None = None) -> str:
    with unit_of_work(ctx.session_factory) as db:
        return AgentService(db, ctx.clock).queue(node, name, params).id


def command(ctx: AppContext, command_id: str) -> AgentCommand:
    with unit_of_work(ctx.session_factory) as db:
        row = db.get(AgentCommand, command_id)
        assert row is not None
        return row


def test_lookup_inventory_heartbeat_and_a_command_to_its_end(boot: TestClient, ctx: AppContext,
                                                            server_id: str) -> None:
    found = lookup(boot)
    assert found["node"] == server_id and found["heartbeatIntervalS"] == ctx.settings.boot.agent_heartbeat_s
    node = found["node"]
    r = boot.post(f"/agent/v1/nodes/{node}/inventory", json=INVENTORY, headers=headers(found))
    assert r.status_code == 200 and r.json() == {"status": "OK"}
    with unit_of_work(ctx.session_factory) as db:
        stored = db.get(ServerHardware, server_id)
        assert stored is not None and stored.inspected is not None
        inventory = stored.hardware_inventory
    assert inventory is not None and "surprise" not in inventory and "extra" not in inventory["disks"][0]
    assert inventory["disks"][0]["serial"] == "node-1-disk" and inventory["nics"][0]["mac"] == MAC
    assert inventory["physical_memory_bytes"] == 768 << 20
    neighbour = inventory["nics"][0]["lldp"]  # the switch port: known fields only, bounded, a VLAN in range
    assert neighbour["system_name"] == "tor-a" and neighbour["port_id"] == "Ethernet1/7" and "extra" not in neighbour
    assert neighbour["vlan_id"] is None and len(neighbour["system_description"]) < 5000
    assert [nic["lldp"] for nic in inventory["nics"][1:]] == [None, None]  # no chassis ID, or not an object

    first = queue(ctx, node, "write_image", {"url": "http://10.0.0.1:8080/x", "sha256": "0" * 64, "size": 1})
    second = queue(ctx, node, "reboot")
    beat = boot.post(f"/agent/v1/nodes/{node}/heartbeat", json={"uptimeS": 12.5, "address": "10.0.0.23/24"},
                     headers=headers(found)).json()
    assert [c["id"] for c in beat["commands"]] == [first, second]
    assert beat["commands"][0]["params"]["size"] == 1
    again = boot.post(f"/agent/v1/nodes/{node}/heartbeat", json={}, headers=headers(found)).json()
    assert again["commands"] == []  # handed out once

    url = f"/agent/v1/nodes/{node}/commands/{first}"
    assert boot.post(url, json={"state": "running", "percent": 40, "message": "Wrote 40 %."},
                     headers=headers(found)).status_code == 200
    assert (command(ctx, first).state, command(ctx, first).percent) == ("running", 40)
    done = {"state": "succeeded", "result": {"device": "/dev/vda", "bytes": 1, "sha256": "0" * 64}}
    assert boot.post(url, json=done, headers=headers(found)).status_code == 200
    ended = command(ctx, first)
    assert (ended.state, ended.percent, ended.result["device"]) == ("succeeded", 100, "/dev/vda")
    late = boot.post(url, json={"state": "running", "percent": 50}, headers=headers(found))
    assert late.status_code == 409 and late.json()["errorCode"] == "RESOURCE_CONFLICT"
    actions = [e["detail"] for e in ctx.boot_events.take() if e["action"] == "AGENT"]
    assert actions == ["lookup", "inventory", "write_image succeeded"]


def test_a_new_lookup_replaces_the_token_and_fails_what_the_old_agent_ran(boot: TestClient, ctx: AppContext,
                                                                          server_id: str) -> None:
    old = lookup(boot)
    running = queue(ctx, server_id, "write_image", {})
    boot.post(f"/agent/v1/nodes/{server_id}/heartbeat", json={}, headers=headers(old))
    new = lookup(boot)
    assert new["agentToken"] != old["agentToken"]
    r = boot.post(f"/agent/v1/nodes/{server_id}/heartbeat", json={}, headers=headers(old))
    assert r.status_code == 401 and r.json()["errorCode"] == "AGENT_TOKEN_INVALID"
    assert command(ctx, running).state == "failed" and "restarted" in (command(ctx, running).error or "")


@pytest.mark.parametrize(("body", "status", "code"), [
    ({"token": "forged", "macs": [MAC]}, 404, "RESOURCE_NOT_FOUND"),
    ({"macs": [MAC]}, 400, None),
    ({"token": "x", "macs": "52:54:00:aa:bb:01"}, 400, None),
    ({"token": "x", "macs": []}, 400, None),
    ({"token": "x", "macs": ["not-a-mac"]}, 400, None),
    ({"token": "x", "macs": [MAC] * 65}, 400, None),
])
def test_bad_lookups_are_refused(boot: TestClient, server_id: str, body: dict[str, Any], status: int,
                                 code: str | None) -> None:
    r = boot.post("/agent/v1/lookup", json=body)
    assert r.status_code == status, r.text
    if code:
        assert r.json()["errorCode"] == code


def test_a_lookup_without_the_tokens_mac_or_for_an_unknown_server_is_a_mismatch(boot: TestClient,
                                                                               server_id: str) -> None:
    r = boot.post("/agent/v1/lookup", json={"token": boot_token(boot, MAC), "macs": [OTHER_MAC]})
    assert r.status_code == 409 and r.json()["errorCode"] == "AGENT_LOOKUP_MISMATCH"
    stranger = "52:54:00:cc:cc:cc"
    r = boot.post("/agent/v1/lookup", json={"token": boot_token(boot, stranger), "macs": [stranger]})
    assert r.status_code == 409 and "no enrolled server" in r.json()["message"]


def test_calls_need_the_nodes_own_token(boot: TestClient, ctx: AppContext, server_id: str) -> None:
    found = lookup(boot)
    with unit_of_work(ctx.session_factory) as db:
        other = ServerHardware(name="rack1-u08", driver="ipmi", address="127.0.0.2", port=623, username="u",
                               password_sealed="x", state="NoProfileApplied", mac_addresses=[OTHER_MAC])
        db.add(other)
        db.flush()
        other_id = other.id
    for node, hdrs in [(server_id, {}), (server_id, {"X-Ingot-Agent-Token": "guess"}),
                       (other_id, headers(found))]:
        r = boot.post(f"/agent/v1/nodes/{node}/inventory", json=INVENTORY, headers=hdrs)
        assert r.status_code == 401 and r.json()["errorCode"] == "AGENT_TOKEN_INVALID", (node, hdrs)
        assert found["agentToken"] not in r.text


@pytest.mark.parametrize(("content", "ctype"), [
    (b"{not json", "application/json"),
    (b"[1, 2]", "application/json"),
    (b"{\"disks\": 5}", "application/json"),
    (b"{\"a\": \"" + b"x" * (1 << 20) + b"\"}", "application/json"),
])
def test_hostile_inventories_are_refused_and_keep_nothing(boot: TestClient, ctx: AppContext, server_id: str,
                                                          content: bytes, ctype: str) -> None:
    found = lookup(boot)
    r = boot.post(f"/agent/v1/nodes/{server_id}/inventory", content=content,
                  headers={**headers(found), "Content-Type": ctype})
    assert r.status_code == 400, r.text
    with unit_of_work(ctx.session_factory) as db:
        stored = db.get(ServerHardware, server_id)
        assert stored is not None and stored.hardware_inventory is None


def test_bad_reports_are_refused(boot: TestClient, ctx: AppContext, server_id: str) -> None:
    found = lookup(boot)
    cid = queue(ctx, server_id, "reboot")
    url = f"/agent/v1/nodes/{server_id}/commands/{cid}"
    for body in ({"state": "exploded"}, {"state": "running", "percent": "lots"}, {"state": "succeeded", "result": []}):
        assert boot.post(url, json=body, headers=headers(found)).status_code == 400, body
    r = boot.post(f"/agent/v1/nodes/{server_id}/commands/no-such-command", json={"state": "running"},
                  headers=headers(found))
    assert r.status_code == 404
    assert command(ctx, cid).state == "queued"
