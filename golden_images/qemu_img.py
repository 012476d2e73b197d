"""``qemu-img``, run as a child of this process: the only place the library executes it.

Blocking calls: run them in a worker thread or a task, never on the event loop.

Probing an untrusted file is itself a risk (a crafted header can make ``qemu-img info`` allocate
or spin without end), so :func:`info` runs under an address-space and CPU-time limit as well as a
wall-clock timeout, the limits OpenStack settled on for the same job (1 GiB, 30 s).
"""

from __future__ import annotations

import codecs
import ctypes
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

PROBE_ADDRESS_SPACE = 1 << 30
PROBE_CPU_S = 30
PROBE_TIMEOUT_S = 60
# A conversion or check of a big image may take long; it still must not hang for ever.
WORK_TIMEOUT_S = 6 * 3600
_PROGRESS = re.compile(r"\((\d+(?:\.\d+)?)/100%\)")


class QemuImgError(Exception):
    """qemu-img failed, could not be run, or ran out of time; the message says which, with its stderr."""


_PR_SET_PDEATHSIG = 1
# Looked up once, here: a child between fork and exec must not dlopen (another thread of the
# appliance may have held the loader's lock when it forked).
_prctl = ctypes.CDLL(None, use_errno=True).prctl


def die_with_parent() -> Callable[[], None]:
    """A ``preexec_fn`` that gives the child SIGTERM when the thread that forked it ends (even by
    SIGKILL of the whole appliance). Otherwise a conversion would run on, orphaned, into a store that
    the next start has swept. If the parent died before the signal was asked for, the child
    exits at once instead of running unwatched."""
    parent = os.getpid()

    def preexec() -> None:  # runs in the child between fork and exec
        _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:
            os._exit(1)

    return preexec


def _probe_limits() -> Callable[[], None]:
    watch = die_with_parent()

    def preexec() -> None:  # runs in the child between fork and exec
        watch()
        resource.setrlimit(resource.RLIMIT_AS, (PROBE_ADDRESS_SPACE, PROBE_ADDRESS_SPACE))
        resource.setrlimit(resource.RLIMIT_CPU, (PROBE_CPU_S, PROBE_CPU_S))

    return preexec


def _run(args: list[str], *, timeout: float, ok_codes: tuple[int, ...] = (0,),
         preexec: Callable[[], None] | None = None,
         on_output: Callable[[str], None] | None = None) -> tuple[int, str]:
    """Run ``qemu-img args``; return (exit code, stdout). Every failure becomes QemuImgError.

    qemu-img is this process's own child, so that PR_SET_PDEATHSIG is on qemu-img itself: through
    coreutils timeout(1), a SIGTERM that reached timeout between its fork and its bookkeeping made
    it exit without passing the signal on (coreutils 9.1), and qemu-img ran on. The wall-clock
    limit is a timer that kills qemu-img; ``on_output`` gets stdout as it comes.
    """
    if shutil.which("qemu-img") is None:
        raise QemuImgError("qemu-img is not installed (Debian package qemu-utils)")
    with tempfile.TemporaryFile() as stderr:
        proc = subprocess.Popen(["qemu-img", *args], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr,
                                bufsize=0, preexec_fn=preexec or die_with_parent())
        timed_out = threading.Event()

        def expire() -> None:
            timed_out.set()
            proc.kill()

        timer = threading.Timer(timeout, expire)
        timer.daemon = True
        timer.start()
        try:
            assert proc.stdout is not None
            decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
            out: list[str] = []
            while chunk := os.read(proc.stdout.fileno(), 65536):
                text = decoder.decode(chunk)
                if on_output is not None:
                    on_output(text)
                else:
                    out.append(text)
            code = proc.wait()
        finally:
            timer.cancel()
            if proc.poll() is None:  # on_output raised: do not leave qemu-img running
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
        if timed_out.is_set():
            raise QemuImgError(f"qemu-img {args[0]} did not finish within {timeout:.0f} s")
        if code < 0:
            raise QemuImgError(f"qemu-img {args[0]} was stopped by signal {-code} (a resource limit)")
        if code not in ok_codes:
            stderr.seek(0)
            lines = stderr.read().decode(errors="replace").strip().splitlines()
            last = lines[-1] if lines else f"exit code {code}"
            raise QemuImgError(f"qemu-img {args[0]} failed: {last.removeprefix('qemu-img: ')}")
    return code, "".join(out)


def info(path: Path, fmt: str | None = None) -> dict[str, Any]:
    """``qemu-img info --output=json`` of one file (no backing chain), under the probe limits.

    Without ``fmt`` qemu-img detects the format from the contents, which is what a probe of an
    untrusted file wants; with it, the file is opened as that format.
    """
    args = ["info", "--output=json"]
    if fmt:
        args += ["-f", fmt]
    _, out = _run([*args, str(path)], timeout=PROBE_TIMEOUT_S, preexec=_probe_limits())
    try:
        parsed = json.loads(out)
    except ValueError as exc:
        raise QemuImgError("qemu-img info printed something that is not JSON") from exc
    if not isinstance(parsed, dict):
        raise QemuImgError("qemu-img info printed JSON that is not an object")
    return parsed


def backing_chain(path: Path, fmt: str = "qcow2") -> list[Path]:
    """The files of ``path``'s backing chain, ``path`` first (the index is ``qemu-img map``'s depth)."""
    _, out = _run(["info", "--backing-chain", "--output=json", "-f", fmt, str(path)], timeout=PROBE_TIMEOUT_S,
                  preexec=_probe_limits())
    try:
        layers = json.loads(out)
        return [Path(str(layer["filename"])) for layer in layers]
    except (ValueError, TypeError, KeyError) as exc:
        raise QemuImgError("qemu-img info --backing-chain printed something unexpected") from exc


def map_extents(path: Path, fmt: str = "qcow2") -> list[dict[str, Any]]:
    """``qemu-img map --output=json``: the guest's extents through the whole backing chain, each
    with ``start``, ``length``, ``data`` and ``zero`` (metadata only; nothing is read)."""
    _, out = _run(["map", "--output=json", "-f", fmt, str(path)], timeout=WORK_TIMEOUT_S)
    try:
        parsed = json.loads(out)
    except ValueError as exc:
        raise QemuImgError("qemu-img map printed something that is not JSON") from exc
    if not isinstance(parsed, list):
        raise QemuImgError("qemu-img map printed JSON that is not a list")
    return parsed


def convert(src: Path, dst: Path, *, src_format: str, dst_format: str = "qcow2", compress: bool = False,
            on_progress: Callable[[float], None] | None = None, timeout: float = WORK_TIMEOUT_S) -> None:
    """Write ``src`` as a new, self-contained ``dst`` (backing chains flattened).

    ``on_progress`` gets qemu-img's percent complete (0-100) as it goes, from its ``-p`` output.
    """
    args = ["convert", "-f", src_format, "-O", dst_format]
    if compress:
        args.append("-c")
    if on_progress is None:
        _run([*args, str(src), str(dst)], timeout=timeout)
        return

    pending = [""]  # output not yet matched: it comes in pieces of any size

    def parse(chunk: str) -> None:
        text = pending[0] + chunk
        end = 0
        for match in _PROGRESS.finditer(text):
            on_progress(float(match.group(1)))
            end = match.end()
        pending[0] = text[end:][-64:]

    _run([*args, "-p", str(src), str(dst)], timeout=timeout, on_output=parse)


def create_overlay(backing_name: str, dst: Path, size: int) -> None:
    """A qcow2 ``dst`` of ``size`` bytes whose unwritten clusters read from the qcow2 named
    ``backing_name`` (its format given, so qemu never probes it). The backing file is not opened
    (``-u``): the name may be relative to where ``dst`` will live. Constant time whatever its size."""
    _run(["create", "-q", "-u", "-f", "qcow2", "-b", backing_name, "-F", "qcow2", str(dst), str(size)],
         timeout=PROBE_TIMEOUT_S)


def resize(path: Path, size: int) -> None:
    """Grow a qcow2 image to ``size`` bytes (the guest's file systems are not touched)."""
    _run(["resize", "-q", "-f", "qcow2", str(path), str(size)], timeout=PROBE_TIMEOUT_S)


def check(path: Path, fmt: str = "qcow2") -> dict[str, Any]:
    """``qemu-img check --output=json``; its exit codes 2 (corruptions) and 3 (leaks) still answer."""
    _, out = _run(["check", "--output=json", "-f", fmt, str(path)], timeout=WORK_TIMEOUT_S, ok_codes=(0, 2, 3))
    try:
        parsed = json.loads(out)
    except ValueError as exc:
        raise QemuImgError("qemu-img check printed something that is not JSON") from exc
    return parsed if isinstance(parsed, dict) else {}


def identical(a: Path, b: Path, *, a_format: str = "qcow2", b_format: str = "qcow2") -> bool:
    """Whether two images show the guest the same bytes and are the same size (``qemu-img
    compare``, which on its own calls a larger image equal when its extra part reads as zeros;
    without ``-s``, which would also require the same allocation)."""
    if info(a, a_format)["virtual-size"] != info(b, b_format)["virtual-size"]:
        return False
    code, _ = _run(["compare", "-q", "-f", a_format, "-F", b_format, str(a), str(b)],
                   timeout=WORK_TIMEOUT_S, ok_codes=(0, 1))
    return code == 0
