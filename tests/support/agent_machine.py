"""A machine for the real deploy agent without a VM: ``python -m tests.support.agent_machine CONFIG``
runs :class:`agent.runner.Runner` (the code the ramdisk runs) in its own process against a fake
``/proc`` + ``/sys`` tree and a plain file as its disk, so a test can kill it as a power cut would
and start a new one as a reboot would.

CONFIG is a JSON file: ``{"url", "token", "root", "mac", "disk_bytes"}``. The tree is built at
``root`` (one virtio disk ``vda`` of ``disk_bytes``, one NIC with ``mac``); ``root/dev/vda`` is the
disk. Reboot and power-off requests are only printed: the test decides what the machine does next.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from agent.client import AgentClient
from agent.runner import Runner, RunnerConfig

SECTOR = 512


def build_machine(root: Path, mac: str, disk_bytes: int) -> None:
    """The fake tree (idempotent: a rebooted machine keeps its disk)."""
    files = {
        "proc/uptime": "12.50 20.00\n",
        "proc/meminfo": "MemTotal:  1000000 kB\n",
        "proc/cpuinfo": "processor\t: 0\nmodel name\t: Test CPU\n",
        "sys/block/vda/size": f"{disk_bytes // SECTOR}\n",
        "sys/block/vda/removable": "0\n",
        "sys/block/vda/queue/rotational": "1\n",
        "sys/block/vda/serial": "test-disk-0\n",
        "sys/class/net/eth0/address": f"{mac}\n",
        "sys/class/net/eth0/type": "1\n",
        "sys/class/net/eth0/operstate": "up\n",
        "sys/class/net/eth0/carrier": "1\n",
    }
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    (root / "sys/block/vda/device").mkdir(exist_ok=True)
    (root / "sys/class/net/eth0/device").mkdir(exist_ok=True)
    disk = root / "dev" / "vda"
    disk.parent.mkdir(exist_ok=True)
    disk.touch()


class PrintingSystem:
    def sync(self) -> None:
        print("MACHINE sync", flush=True)

    def reboot(self) -> None:
        print("MACHINE reboot", flush=True)

    def poweroff(self) -> None:
        print("MACHINE poweroff", flush=True)


def main(argv: list[str]) -> int:
    config = json.loads(Path(argv[0]).read_text())
    root = Path(config["root"])
    build_machine(root, config["mac"], int(config["disk_bytes"]))
    runner = Runner(AgentClient(config["url"], timeout=10), config["token"], macs=[config["mac"]],
                    address=lambda: "127.0.0.1/8", system=PrintingSystem(), out=sys.stdout, root=str(root),
                    dev_dir=str(root / "dev"),
                    config=RunnerConfig(lookup_deadline_s=120, backoff_initial_s=0.2, backoff_max_s=1.0,
                                        write_backoff_s=0.2, progress_interval_s=0.2, deadline_s=600))
    return runner.run()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
