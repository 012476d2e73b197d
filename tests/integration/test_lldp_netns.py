"""The deploy agent hears its switch port: a real LLDP speaker (lldpd, as a switch or a hypervisor
runs it) on one end of a veth pair in a namespace of its own, and the agent's listener
(agent/lldp.py) on the other end in another namespace. Nothing leaves the two namespaces."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.lldp import listen
from lab.netns import in_namespace, ip
from tests.support.requirements import require_lab, require_tools


@pytest.fixture
def cabled(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """Two namespaces joined by a veth pair: (switch side namespace, server side namespace)."""
    require_lab()
    require_tools("lldpd", "ip")
    tag = uuid.uuid4().hex[:6]
    switch, server = f"ingot-sw-{tag}", f"ingot-srv-{tag}"
    ip("netns", "add", switch)
    ip("netns", "add", server)
    try:
        ip("link", "add", f"sw{tag}", "type", "veth", "peer", "name", f"srv{tag}")
        ip("link", "set", f"sw{tag}", "netns", switch)
        ip("link", "set", f"srv{tag}", "netns", server)
        ip("link", "set", f"sw{tag}", "up", netns=switch)
        ip("link", "set", f"srv{tag}", "up", netns=server)
        yield switch, server
    finally:
        ip("netns", "del", switch, check=False)
        ip("netns", "del", server, check=False)


def start_lldpd(namespace: str, interface: str, work: Path) -> subprocess.Popen[bytes]:
    """lldpd on ``interface`` only, sending every second, with its control socket in ``work`` (never the
    machine's own lldpd's)."""
    config = work / "lldpd.conf"
    config.write_text("configure system hostname tor-a.rack3\n"
                      "configure system description \"Ingot test switch\"\n"
                      "configure lldp tx-interval 1\n")
    os.makedirs("/run/lldpd", exist_ok=True)  # its privilege-separation chroot; the package leaves it to systemd
    with (work / "lldpd.log").open("wb") as log:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(["ip", "netns", "exec", namespace, "lldpd", "-d", "-I", interface,
                                 "-u", str(work / "lldpd.socket"), "-O", str(config)], stdout=log, stderr=log)


@pytest.fixture
def work() -> Iterator[Path]:
    """lldpd's files: a directory its unprivileged half can reach (pytest's tmp_path is root's alone)."""
    path = Path(tempfile.mkdtemp(prefix="ingot-lldpd-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_the_agent_hears_its_switch_port_from_a_real_lldp_speaker(cabled: tuple[str, str], work: Path) -> None:
    switch, server = cabled
    tag = switch.rsplit("-", 1)[1]
    speaker = start_lldpd(switch, f"sw{tag}", work)
    try:
        started = time.monotonic()
        heard, problems = in_namespace(server, lambda: listen([f"srv{tag}", "nosuch0"], 20.0), timeout=30)
        waited = time.monotonic() - started
    finally:
        speaker.terminate()
        speaker.wait(10)
    assert problems == {"nosuch0": problems["nosuch0"]} and problems["nosuch0"], problems
    neighbour = heard.get(f"srv{tag}")
    assert neighbour is not None, (work / "lldpd.log").read_text()
    switch_mac = re.search(r"link/ether (\S+)", ip("link", "show", f"sw{tag}", netns=switch))
    assert switch_mac, "the switch side has a MAC"
    assert neighbour["chassis_id"] == switch_mac.group(1) and neighbour["system_name"] == "tor-a.rack3"
    assert neighbour["system_description"] == "Ingot test switch" and neighbour["port_description"] == f"sw{tag}"
    assert neighbour["ttl_s"] > 0
    assert waited < 20, "it stops listening once every NIC has heard its neighbour"


def test_a_silent_port_is_listened_to_for_the_time_given_only(cabled: tuple[str, str]) -> None:
    _, server = cabled
    tag = server.rsplit("-", 1)[1]
    started = time.monotonic()
    heard, problems = in_namespace(server, lambda: listen([f"srv{tag}"], 1.5), timeout=30)
    assert heard == {} and problems == {}
    assert time.monotonic() - started >= 1.5
