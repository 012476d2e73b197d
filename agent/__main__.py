"""``python3 -m agent``: the deploy agent, as the ramdisk's /init starts it.

It first reports on the serial console with one line the lab's tests and an operator at the
console can read::

    INGOT-AGENT started mac=<boot NIC> ip=<a.b.c.d/len> uptime=<s> python=<x.y.z> url=<ingot.url> token=<masked:N>

``ingot.url`` and ``ingot.token`` come from the kernel command line (see :mod:`agent.bootparams`);
the token is shown by its length only. Fields that are not known read ``none``. The line goes to
standard output, which the ramdisk's /init points at the first serial port.

Then, when it knows the appliance (``ingot.url``, else the DHCP server: :mod:`agent.appliance_url`)
and has a boot token, it runs :class:`agent.runner.Runner` against it (``docs/agent-api.md``) and
exits with its status. Without either there is nothing to talk to: it says so and exits 0, as a
machine booted by hand from the ramdisk should stay up for a look at its console.

Runs on the target under Debian's ``python3-minimal`` plus ``libpython3-stdlib``: standard
library modules from those packages only.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TextIO

from agent.appliance_url import DHCP_ENV, appliance_url
from agent.bootparams import BootParams, mask_token, printable
from agent.client import AgentClient
from agent.nic import SYS_CLASS_NET, boot_interface, interfaces, ipv4_address
from agent.runner import Runner, RunnerConfig

STARTED = "INGOT-AGENT started"
IDLE = "INGOT-AGENT no appliance URL or token; idle"
PROC_CMDLINE = "/proc/cmdline"
PROC_UPTIME = "/proc/uptime"


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def python_version() -> str:
    major, minor, micro = sys.version_info[:3]
    return f"{major}.{minor}.{micro}"


def started_line(params: BootParams, mac: str | None, address: str | None, uptime: str | None,
                 python: str) -> str:
    """The report line (no newline); every value is reduced to one printable field."""
    fields = (("mac", mac), ("ip", address), ("uptime", uptime), ("python", python), ("url", params.url))
    text = " ".join(f"{key}={printable(value)}" for key, value in fields)
    return f"{STARTED} {text} token={mask_token(params.token)}"


def main(argv: list[str] | None = None, *, out: TextIO | None = None, cmdline_path: str = PROC_CMDLINE,
         uptime_path: str = PROC_UPTIME, sys_class_net: str = SYS_CLASS_NET, dhcp_env_path: str = DHCP_ENV,
         run: Callable[[Runner], int] = Runner.run) -> int:
    """Report that the agent started, then serve the appliance if there is one; returns the exit
    status. ``run`` is how the runner is run (tests replace it; the real one never returns
    unless the lookup gives up)."""
    stream = out if out is not None else sys.stdout
    params = BootParams.from_cmdline(_read(cmdline_path))
    nic = boot_interface(params.bootif, sys_class_net)
    address = ipv4_address(nic[0]) if nic else None
    uptime = next(iter(_read(uptime_path).split()), None)
    stream.write(started_line(params, nic[1] if nic else None, address, uptime, python_version()) + "\n")
    stream.flush()
    url = appliance_url(params.url, dhcp_env_path)
    if not url or not params.token:
        stream.write(IDLE + "\n")
        stream.flush()
        return 0
    try:
        client = AgentClient(url)
    except ValueError as exc:
        stream.write(f"INGOT-AGENT {exc}; idle\n")
        stream.flush()
        return 1
    # The boot NIC's MAC first: it is the one the boot token was issued to.
    macs = [nic[1]] if nic else []
    macs += [mac for _name, mac, _up in interfaces(sys_class_net) if mac and mac not in macs]
    name = nic[0] if nic else None
    runner = Runner(client, params.token, macs=macs, address=lambda: ipv4_address(name) if name else None,
                    out=stream, config=RunnerConfig(lldp_wait_s=params.lldp_s))
    return run(runner)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
