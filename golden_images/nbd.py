"""OS volumes exported over NBD: one ``qemu-nbd`` per exported volume, read-write, one client.

This is Image Streamer's network-booted mode: the server's disk stays on the appliance and the
server reads and writes it over the network (Linux ``nbd-client``, iPXE's ``sanboot``, QEMU).
``qemu-nbd`` speaks the protocol; this module only starts, watches and stops it.

- One client at a time (``--shared=1``): two writers on one file system would destroy it. The
  export survives its client's disconnect (``--persistent``), so a server that reboots reconnects.
- QEMU's image locking backs this up: while ``qemu-nbd`` holds the volume open for writing, no
  ``qemu-img`` can open it, so a capture or export of a volume in use fails instead of reading a
  disk that changes under it. The service refuses those earlier with a clear 409.
- Readiness is qemu-nbd's pid file, which it writes once the image is open, not the listening
  socket: qemu-nbd listens *before* it opens the image, so a volume it cannot open (locked by
  another writer) would look exported for a moment. A probe connection would take the one
  client slot.
- ``qemu-nbd`` dies with the appliance (PR_SET_PDEATHSIG), so no export outlives the process
  that knows about it; after a restart nothing is exported. The "parent" of PDEATHSIG is the
  *thread* that forked the child, and the web layer's worker threads are pruned when idle, so
  every ``qemu-nbd`` is started from one launcher thread that lives as long as this registry.
"""

from __future__ import annotations

import errno
import ipaddress
import shutil
import socket
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from golden_images.qemu_img import die_with_parent

STOP_TIMEOUT_S = 30.0  # qemu-nbd flushes its cache to the file on SIGTERM


class NbdError(Exception):
    """qemu-nbd could not be started or is not installed; the message says why."""


@dataclass(frozen=True)
class NbdExport:
    volume_id: str
    name: str  # the NBD export name clients ask for
    address: str
    port: int
    pid: int

    @property
    def uri(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"nbd://{host}:{self.port}/{self.name}"


def _port_free(address: str, port: int) -> bool:
    family = socket.AF_INET6 if ipaddress.ip_address(address).version == 6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((address, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise NbdError(f"cannot listen on {address}: {exc.strerror}") from exc
    return True


class NbdExports:
    """The volumes this appliance exports right now. Thread-safe; calls block for as long as one
    ``qemu-nbd`` takes to start or stop."""

    def __init__(self, *, address: str, ports: range, log_dir: Path, start_timeout: float = 10.0) -> None:
        self.address = address
        self.ports = ports
        self.log_dir = log_dir
        self.start_timeout = start_timeout
        self._running: dict[str, tuple[NbdExport, subprocess.Popen[bytes]]] = {}
        self._lock = threading.Lock()
        self._launcher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="qemu-nbd-launcher")

    def get(self, volume_id: str) -> NbdExport | None:
        """The volume's export, or None (also when its qemu-nbd has died since)."""
        with self._lock:
            entry = self._running.get(volume_id)
            if entry is None:
                return None
            if entry[1].poll() is not None:
                del self._running[volume_id]
                return None
            return entry[0]

    def all(self) -> list[NbdExport]:
        with self._lock:
            ids = list(self._running)
        return [export for volume_id in ids if (export := self.get(volume_id)) is not None]

    def start(self, volume_id: str, path: Path, name: str) -> NbdExport:
        """Export the qcow2 at ``path`` read-write as ``name`` on the first free port."""
        if shutil.which("qemu-nbd") is None:
            raise NbdError("qemu-nbd is not installed (Debian package qemu-utils)")
        with self._lock:
            if volume_id in self._running and self._running[volume_id][1].poll() is None:
                raise NbdError(f"volume {volume_id} is already exported")
            taken = {export.port for export, _ in self._running.values()}
            last_error = "no port is free"
            for port in self.ports:
                if port in taken or not _port_free(self.address, port):
                    continue
                try:
                    export, proc = self._launch(volume_id, path, name, port)
                except _PortLost as exc:  # taken between the check and qemu-nbd's bind
                    last_error = str(exc)
                    continue
                self._running[volume_id] = (export, proc)
                return export
            raise NbdError(f"cannot export on {self.address} ports {self.ports.start}-{self.ports.stop - 1}: "
                           f"{last_error}")

    def _launch(self, volume_id: str, path: Path, name: str, port: int) -> tuple[NbdExport, subprocess.Popen[bytes]]:
        log_path = self.log_dir / f"nbd-{volume_id}.log"
        pid_path = self.log_dir / f"nbd-{volume_id}.pid"
        pid_path.unlink(missing_ok=True)
        argv = ["qemu-nbd", "--format=qcow2", f"--bind={self.address}", f"--port={port}",
                f"--export-name={name}", "--shared=1", "--persistent", "--cache=writeback",
                "--discard=unmap", f"--pid-file={pid_path}", str(path)]
        with log_path.open("ab") as log:
            proc = self._launcher.submit(subprocess.Popen, argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                         preexec_fn=die_with_parent()).result()
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                reason = _last_line(log_path) or f"exit code {proc.returncode}"
                if "Address already in use" in reason:
                    raise _PortLost(reason)
                raise NbdError(f"qemu-nbd could not export the volume: {reason.removeprefix('qemu-nbd: ')}")
            if _pid_in(pid_path) == proc.pid:  # written after the image is open and the port bound
                return NbdExport(volume_id, name, self.address, port, proc.pid), proc
            time.sleep(0.02)
        _stop(proc)
        raise NbdError(f"qemu-nbd did not start listening within {self.start_timeout:.0f} s")

    def stop(self, volume_id: str) -> bool:
        """End the export (its client is cut off; what it wrote is flushed). False if none ran."""
        with self._lock:
            entry = self._running.pop(volume_id, None)
        if entry is None:
            return False
        _stop(entry[1])
        return True

    def close(self) -> None:
        """End every export (at shutdown); the registry exports nothing after this."""
        with self._lock:
            entries = list(self._running.values())
            self._running.clear()
        for _, proc in entries:
            _stop(proc)
        self._launcher.shutdown(wait=False)


class _PortLost(NbdError):
    pass


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(STOP_TIMEOUT_S)


def _pid_in(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _last_line(path: Path) -> str:
    try:
        lines = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return lines[-1] if lines else ""
