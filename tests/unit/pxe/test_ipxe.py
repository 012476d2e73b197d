"""iPXE script rendering: the three outcomes, and values that would change a script's meaning refused."""

from __future__ import annotations

import pytest

from pxe.ipxe import ScriptError, local_disk_script, netboot_script, refusal_script


def test_netboot_script_lines() -> None:
    text = netboot_script(kernel_url="http://10.0.0.1:8080/k", initrd_url="http://10.0.0.1:8080/i",
                          kernel_args=["console=ttyS0", "ingot.token=abc-_1"], comment="for rack1")
    assert text.splitlines() == [
        "#!ipxe", "# for rack1",
        "kernel http://10.0.0.1:8080/k initrd=initrd.img console=ttyS0 ingot.token=abc-_1",
        "initrd --name initrd.img http://10.0.0.1:8080/i", "boot",
    ]


@pytest.mark.parametrize("arg", ["a b", "${net0/mac}", "x\nchain http://evil/", "", "quote\"d", "tab\tx", "é"])
def test_unsafe_kernel_arguments_are_refused(arg: str) -> None:
    with pytest.raises(ScriptError):
        netboot_script(kernel_url="http://h/k", initrd_url="http://h/i", kernel_args=[arg])


@pytest.mark.parametrize("url", ["http://h/k ${x}", "http://h/k\nshell", "http://h/ k"])
def test_unsafe_urls_are_refused(url: str) -> None:
    with pytest.raises(ScriptError):
        netboot_script(kernel_url=url, initrd_url="http://h/i", kernel_args=[])


def test_local_disk_falls_back_to_the_next_boot_device() -> None:
    assert local_disk_script().splitlines() == ["#!ipxe", "sanboot --no-describe --drive 0x80 || exit 0"]


def test_refusal_cannot_inject_commands_or_expansions() -> None:
    text = refusal_script("bad ${x}\nchain http://evil/ \x07é", pause_s=3)
    lines = text.splitlines()
    assert lines[0] == "#!ipxe" and lines[-2:] == ["sleep 3", "exit 1"] and len(lines) == 4
    assert "$" not in lines[1] and lines[1].startswith("echo Ingot: bad")
