"""golden_images.nbd with real qemu-nbd and qemu-io: the export outlives the thread that asked for
it (PDEATHSIG follows the forking thread), takes the next port when one is taken, and reports
qemu-nbd's own reason when it cannot start."""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from golden_images.nbd import NbdError, NbdExports

pytestmark = pytest.mark.slow


def free_port_block(count: int) -> int:
    """The first of ``count`` consecutive free TCP ports on 127.0.0.1 (checked, not reserved)."""
    for base in range(20000, 60000, 97):
        socks = []
        try:
            for port in range(base, base + count):
                sock = socket.socket()
                socks.append(sock)
                sock.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
    raise RuntimeError("no free port block")


def qcow2(path: Path) -> Path:
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), "4M"], check=True, timeout=30)
    return path


def qemu_io_raw(url: str, command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["qemu-io", "-f", "raw", "-c", command, url], capture_output=True, text=True, timeout=30,
                          check=False)


@pytest.fixture
def exports(tmp_path: Path):  # type: ignore[no-untyped-def]
    registry = NbdExports(address="127.0.0.1", ports=range(base := free_port_block(3), base + 3), log_dir=tmp_path)
    yield registry
    registry.close()


def test_export_outlives_the_thread_that_started_it(exports: NbdExports, tmp_path: Path) -> None:
    disk = qcow2(tmp_path / "v1.qcow2")
    box = {}
    starter = threading.Thread(target=lambda: box.update(export=exports.start("v1", disk, "v1")))
    starter.start()
    starter.join(30)
    time.sleep(0.5)  # a child of the exited thread would have had its SIGTERM by now
    export = exports.get("v1")
    assert export is not None and export == box["export"]
    written = qemu_io_raw(export.uri, "write -P 0x11 0 4k")
    assert written.returncode == 0, written.stderr
    assert exports.stop("v1") and exports.get("v1") is None and not exports.stop("v1")
    check = subprocess.run(["qemu-io", "-f", "qcow2", "-c", "read -P 0x11 0 4k", str(disk)], capture_output=True,
                           text=True, timeout=30, check=False)
    assert check.returncode == 0 and "verification failed" not in check.stdout


def test_a_taken_port_is_skipped_and_a_volume_is_exported_once(exports: NbdExports, tmp_path: Path) -> None:
    squatter = socket.socket()
    squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    squatter.bind(("127.0.0.1", exports.ports.start))
    squatter.listen()
    try:
        first = exports.start("a", qcow2(tmp_path / "a.qcow2"), "a")
        assert first.port == exports.ports.start + 1
        with pytest.raises(NbdError, match="already exported"):
            exports.start("a", tmp_path / "a.qcow2", "a")
        second = exports.start("b", qcow2(tmp_path / "b.qcow2"), "b")
        assert second.port == exports.ports.start + 2
        with pytest.raises(NbdError, match=r"no port is free|cannot export"):
            exports.start("c", qcow2(tmp_path / "c.qcow2"), "c")
        assert [e.volume_id for e in exports.all()] == ["a", "b"]
    finally:
        squatter.close()


def test_qemu_nbd_reasons_reach_the_caller(exports: NbdExports, tmp_path: Path) -> None:
    with pytest.raises(NbdError, match="No such file"):
        exports.start("gone", tmp_path / "missing.qcow2", "gone")
    disk = qcow2(tmp_path / "locked.qcow2")
    exports.start("locked", disk, "locked")
    other = NbdExports(address="127.0.0.1", ports=range(exports.ports.start, exports.ports.stop),
                       log_dir=tmp_path / "other")
    (tmp_path / "other").mkdir()
    try:
        with pytest.raises(NbdError, match="lock"):  # QEMU's image locking: one writer per file
            other.start("locked-again", disk, "locked-again")
    finally:
        other.close()
    assert exports.get("locked") is not None
