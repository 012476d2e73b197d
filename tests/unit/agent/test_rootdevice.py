"""agent.rootdevice: Ironic-style root device hints over the inventory's disks."""

from __future__ import annotations

import pytest

from agent.inventory import Disk
from agent.rootdevice import NoRootDevice, choose_root_device, parse_size

GIB = 1 << 30


def make_disk(name: str, gib: float, *, serial: str | None = None, wwn: str | None = None,
              model: str | None = None, vendor: str | None = None, rotational: bool = False,
              removable: bool = False) -> Disk:
    return {"name": name, "size_bytes": int(gib * GIB), "rotational": rotational, "removable": removable,
            "model": model, "vendor": vendor, "serial": serial, "wwn": wwn}


DISKS = [
    make_disk("nvme0n1", 465.76, serial="S4EVNX0N123456", model="Samsung SSD 970 EVO Plus 500GB",
              wwn="eui.0025385b71b0a1c2"),
    make_disk("sda", 931.5, serial="Z1W0ABCD", model="ST1000NM0033-9ZM", vendor="ATA",
              wwn="0x5000c500a1b2c3d4", rotational=True),
    make_disk("sdb", 223.57, serial="BTYF12345", model="INTEL SSDSC2KB240G8", vendor="ATA",
              wwn="0x55cd2e414f0a1b2c"),
    make_disk("sdc", 14.9, serial="4C530001230607110192", model="Ultra Fit", vendor="SanDisk", removable=True),
    make_disk("sdd", 2, serial="SMALL1", model="Tiny", vendor="ATA"),
]


def chosen(hints: dict[str, object] | None, disks: list[Disk] = DISKS) -> str:
    return choose_root_device(disks, hints)["name"]


@pytest.mark.parametrize(("hints", "name"), [
    ({"name": "/dev/sda"}, "sda"),
    ({"name": "sdb"}, "sdb"),
    ({"name": " /DEV/SDB "}, "sdb"),
    ({"serial": "z1w0abcd"}, "sda"),
    ({"serial": "  S4EVNX0N123456 "}, "nvme0n1"),
    ({"wwn": "0x55CD2E414F0A1B2C"}, "sdb"),
    ({"wwn": "eui.0025385b71b0a1c2"}, "nvme0n1"),
    ({"model": "ultra fit"}, "sdc"),  # a hint may name a removable disk on purpose
    ({"vendor": "sandisk"}, "sdc"),
    ({"vendor": "ATA"}, "sda"),  # several match: the first by name
    ({"vendor": "ATA", "rotational": False}, "sdb"),
    ({"rotational": True}, "sda"),
    ({"rotational": "false"}, "nvme0n1"),
    ({"vendor": "ata", "model": "intel ssdsc2kb240g8", "size": 223}, "sdb"),
    ({}, "sdb"),  # empty hints are no hints: the default
])
def test_each_hint(hints: dict[str, object], name: str) -> None:
    assert chosen(hints) == name


@pytest.mark.parametrize(("size", "name"), [
    (223, "sdb"),  # 223.57 GiB rounds down, as Ironic does
    ("223", "sdb"),
    ("== 465", "nvme0n1"),
    ("==931", "sda"),
    (">= 466", "sda"),
    ("> 465", "sda"),
    ("<= 2", "sdd"),
    ("< 14", "sdd"),
    ("< 15", "sdc"),
    ("!= 465", "sda"),
    ("  >=   900  ", "sda"),
])
def test_size_operators(size: object, name: str) -> None:
    assert chosen({"size": size}) == name


def test_without_hints_the_smallest_fixed_disk_of_4_gib() -> None:
    # sdd (2 GiB) is too small, sdc (14.9 GiB) removable: sdb (223 GiB) it is.
    assert chosen(None) == "sdb"
    assert chosen(None, [make_disk("vdb", 4), make_disk("vda", 4), make_disk("vdc", 3.99)]) == "vda"
    assert chosen(None, [make_disk("vda", 100), make_disk("vdb", 4 - 1 / GIB)]) == "vda"


def test_without_hints_and_no_fitting_disk() -> None:
    with pytest.raises(NoRootDevice) as info:
        choose_root_device([make_disk("sdc", 14.9, serial="USB1", removable=True), make_disk("sdd", 2)])
    message = str(info.value)
    assert "at least 4 GiB" in message
    assert "sdc (14 GiB, serial USB1, removable)" in message
    assert "sdd (2 GiB, serial unknown)" in message


def test_no_match_lists_the_hints_and_the_disks() -> None:
    with pytest.raises(NoRootDevice) as info:
        choose_root_device(DISKS, {"serial": "NOPE", "size": ">= 100"})
    message = str(info.value)
    assert "serial='NOPE'" in message and "size='>= 100'" in message
    assert "nvme0n1 (465 GiB, serial S4EVNX0N123456)" in message
    assert "sda (931 GiB, serial Z1W0ABCD)" in message
    assert "sdc (14 GiB, serial 4C530001230607110192, removable)" in message


def test_every_hint_must_match() -> None:
    with pytest.raises(NoRootDevice):
        choose_root_device(DISKS, {"name": "sda", "rotational": False})


def test_a_disk_without_the_hinted_field_does_not_match() -> None:
    with pytest.raises(NoRootDevice):
        choose_root_device([make_disk("vda", 40)], {"serial": "x"})


def test_no_disks_at_all() -> None:
    with pytest.raises(NoRootDevice, match="disks seen: none"):
        choose_root_device([], {"name": "sda"})


@pytest.mark.parametrize(("hints", "match"), [
    ({"hctl": "0:0:0:0"}, "unknown root device hint 'hctl'"),
    ({"Serial": "X"}, "unknown root device hint 'Serial'"),
    ({"size": ">= big"}, "size='>= big'"),
    ({"size": "=> 100"}, "size='=> 100'"),
    ({"size": "100 GiB"}, "size='100 GiB'"),
    ({"size": 1.5}, "size=1.5"),
    ({"size": True}, "size=True"),
    ({"size": ""}, "size=''"),
    ({"rotational": "maybe"}, "rotational='maybe'"),
    ({"rotational": None}, "rotational=None"),
    ({"serial": None}, "serial=None"),
    ({"model": ["a"]}, "model=\\['a'\\]"),
    ({"name": "  "}, "name is empty"),
])
def test_malformed_hints(hints: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        choose_root_device(DISKS, hints)


def test_a_malformed_hint_fails_even_with_no_disks() -> None:
    with pytest.raises(ValueError, match="unknown root device hint 'nmae'"):
        choose_root_device([], {"nmae": "sda"})


def test_parse_size() -> None:
    assert parse_size(100) == ("==", 100)
    assert parse_size(">= 100") == (">=", 100)
    assert parse_size("< 10") == ("<", 10)
