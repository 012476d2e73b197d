"""``python3 -m agent``: the deploy agent, as the ramdisk's /init starts it.

This is its first form: until the agent API lands it reports on the serial console only, with
one line the lab's tests and an operator at the console can read::

    INGOT-AGENT started mac=<boot NIC> ip=<a.b.c.d/len> uptime=<s> python=<x.y.z> url=<ingot.url> token=<masked:N>

``ingot.url`` and ``ingot.token`` come from the kernel command line (see :mod:`agent.bootparams`);
the token is shown by its length only. Fields that are not known read ``none``. The line goes to
standard output, which the ramdisk's /init points at the first serial port.

Runs on the target under Debian's ``python3-minimal``: standard library modules from that
package only.
"""

from __future__ import annotations

import sys
from typing import TextIO

from agent.bootparams import BootParams, mask_token, printable
from agent.nic import SYS_CLASS_NET, boot_interface, ipv4_address

STARTED = "INGOT-AGENT started"
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
         uptime_path: str = PROC_UPTIME, sys_class_net: str = SYS_CLASS_NET) -> int:
    """Report that the agent started; returns the exit status (0)."""
    stream = out if out is not None else sys.stdout
    params = BootParams.from_cmdline(_read(cmdline_path))
    nic = boot_interface(params.bootif, sys_class_net)
    address = ipv4_address(nic[0]) if nic else None
    uptime = next(iter(_read(uptime_path).split()), None)
    stream.write(started_line(params, nic[1] if nic else None, address, uptime, python_version()) + "\n")
    stream.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
