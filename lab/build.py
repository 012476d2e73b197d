"""What the lab's image builders share: running build tools, hashing inputs, and cache entries.

A cache entry is a directory that only ever appears complete: it is built in a temp directory
beside its final name and renamed into place (:func:`atomic_dir`). Entries are named by a
content key (:func:`content_key`) over everything that decides their bytes, so a changed input
is a new entry and an old one is never patched. Builds that bootstrap a root filesystem mount
/proc and /dev inside it for a while; nothing here deletes a tree while something is mounted
below it (:func:`remove_tree`), since that would reach into the host's /dev.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

STALE_BUILD_S = 3600  # a temp build dir this old belongs to a build that died
# What build tools see: no PYTHON* or locale settings from the caller's environment (the host's
# PYTHONDONTWRITEBYTECODE=1 would otherwise leak into chroot hooks and maintainer scripts).
CLEAN_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C.UTF-8",
             "HOME": "/root"}


class BuildError(RuntimeError):
    """A build step failed; the message carries the command and its output."""


def run(argv: list[str], *, cwd: Path | None = None, timeout: float = 600, clean_env: bool = False,
        env: Mapping[str, str] | None = None, stdin: bytes | None = None) -> str:
    """Run a build tool and return its standard output (decoded).

    :param clean_env: start from :data:`CLEAN_ENV` (plus ``TMPDIR`` if set) instead of this
        process's environment; use it for anything that runs commands inside a chroot.
    :param env: extra variables on top of either.
    :raises BuildError: on a non-zero exit or after ``timeout`` seconds (the tool is killed).
    """
    base = dict(CLEAN_ENV) if clean_env else {**os.environ, "LC_ALL": "C"}
    if clean_env and os.environ.get("TMPDIR"):
        base["TMPDIR"] = os.environ["TMPDIR"]
    base.update(env or {})
    try:
        proc = subprocess.run(argv, cwd=cwd, env=base, input=stdin, capture_output=True, timeout=timeout,
                              check=False)
    except subprocess.TimeoutExpired as exc:
        raise BuildError(f"{' '.join(argv)} timed out after {timeout:.0f} s") from exc
    except FileNotFoundError as exc:
        raise BuildError(f"{argv[0]} is not installed ({exc})") from exc
    out = proc.stdout.decode(errors="replace")
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace")
        raise BuildError(f"{' '.join(argv)} failed ({proc.returncode}):\n{out[-4000:]}{err[-4000:]}")
    return out


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def tree_hash(root: Path, patterns: Iterable[str] = ("*.py",)) -> str:
    """One hash over the relative names and contents of the files under ``root`` matching
    ``patterns`` (caches and bytecode are never part of it)."""
    h = hashlib.sha256()
    files = sorted({p for pattern in patterns for p in root.rglob(pattern)
                    if p.is_file() and "__pycache__" not in p.parts})
    for path in files:
        h.update(path.relative_to(root).as_posix().encode() + b"\0")
        h.update(sha256_file(path).encode() + b"\0")
    return h.hexdigest()


def content_key(inputs: object, length: int = 16) -> str:
    """A short hex key over JSON-serialisable ``inputs`` (dict keys sorted)."""
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:length]


def atomic_dir(final: Path, build: Callable[[Path], None]) -> Path:
    """Return the complete cache entry ``final``, building it first if needed.

    ``build`` fills a temp dir beside ``final``, which is then renamed into place; if another
    process completed the same entry meanwhile, its result wins and ours is discarded. Temp dirs
    left by killed builds are removed once they are :data:`STALE_BUILD_S` old.
    """
    if (final / "complete").is_file():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    # Builders of the same entry (parallel test workers, two `ingot lab up`) take turns: the second
    # waits for the first and then finds the entry complete, instead of building it a second time.
    with open(final.parent / f".{final.name}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (final / "complete").is_file():
            return final
        return _build_entry(final, build)


def _build_entry(final: Path, build: Callable[[Path], None]) -> Path:
    for stale in final.parent.glob(f".{final.name}.*"):
        if stale.name.endswith(".lock"):
            continue
        with contextlib.suppress(OSError, BuildError):
            if time.time() - stale.stat().st_mtime > STALE_BUILD_S:
                remove_tree(stale)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        build(tmp)
        (tmp / "complete").write_text("ok\n")
        try:
            os.rename(tmp, final)  # entries only ever appear complete, by this rename
        except OSError:
            if not (final / "complete").is_file():
                raise
    finally:
        remove_tree(tmp)
    return final


def mounts_under(path: Path) -> list[Path]:
    """Mount points at or below ``path`` (deepest first), from /proc/self/mountinfo."""
    base = os.path.realpath(path)
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split()[4].encode().decode("unicode_escape")  # octal escapes such as \040
            if point == base or point.startswith(base + "/"):
                found.append(Path(point))
    return sorted(found, key=lambda p: len(p.parts), reverse=True)


def unmount_under(path: Path) -> None:
    """Unmount everything below ``path`` (lazily if busy).

    :raises BuildError: if something is still mounted there, so no caller deletes a tree that
        reaches into /dev or /proc.
    """
    for point in mounts_under(path):
        with contextlib.suppress(BuildError):
            run(["umount", str(point)], timeout=60)
        if point in mounts_under(path):
            with contextlib.suppress(BuildError):
                run(["umount", "-l", str(point)], timeout=60)
    left = mounts_under(path)
    if left:
        raise BuildError(f"still mounted under {path}: {left}")


def remove_tree(path: Path) -> None:
    """``rm -rf path``, after unmounting whatever is mounted below it (and refusing if that fails)."""
    unmount_under(path)
    shutil.rmtree(path, ignore_errors=True)
