"""Debian root filesystems for the lab's images, made with ``mmdebstrap`` from the host's apt
sources (the same mirrors, suites and so package versions ``apt-get`` sees on this machine).

Theory of operation:

* :func:`host_sources` turns the host's apt index targets for its own release (``bookworm``,
  ``bookworm-updates``, ``bookworm-security``, ...) into one-line ``deb`` entries for the chroot;
  :func:`index_digest` hashes the host's downloaded package indexes for them, which is what
  decides the versions a bootstrap installs today (the cache key of an image includes it).
* :func:`bootstrap` runs ``mmdebstrap`` as root with a clean environment (the host's
  ``PYTHONDONTWRITEBYTECODE`` and friends must not leak into maintainer scripts and hooks) and
  Debian's ``merged-usr`` hook (without it bookworm's essential/minbase pulls ``usrmerge`` and
  perl, 50 MB). Mounts made under the target are checked for and removed before anyone deletes
  the tree (``lab.build.unmount_under``).
* :func:`slim` deletes what a throw-away ramdisk never uses.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path

from lab.build import BuildError, run, unmount_under

MERGED_USR_HOOK = Path("/usr/share/mmdebstrap/hooks/merged-usr")
# Paths dpkg never unpacks into our images: documentation, manuals, translations, time zones.
PATH_EXCLUDES = ("/usr/share/doc/*", "/usr/share/man/*", "/usr/share/info/*", "/usr/share/locale/*",
                 "/usr/share/lintian/*", "/usr/share/zoneinfo/*")
PATH_INCLUDES = ("/usr/share/locale/locale.alias",)
# What every image drops after bootstrapping: apt's downloaded lists and caches, logs, bytecode.
CLEANUP_HOOKS = (
    'rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/* "$1"/var/cache/debconf/*-old "$1"/var/log/*',
    'find "$1"/usr/lib/python3* -name __pycache__ -type d -prune -exec rm -rf {} +',
)
# Removed from a ramdisk (relative globs): charset converters, perl and debconf's perl modules,
# PAM modules, licences, shell completion, keyrings and dpkg's checksums. dpkg and apt no longer
# work inside it, which a ramdisk does not need.
SLIM_GLOBS = (
    "usr/lib/x86_64-linux-gnu/gconv", "usr/bin/perl*", "usr/lib/x86_64-linux-gnu/perl-base", "usr/share/perl5",
    "usr/lib/x86_64-linux-gnu/security", "usr/lib/locale/*", "usr/share/common-licenses",
    "usr/share/bash-completion", "usr/share/keyrings", "etc/apt/trusted.gpg.d/*", "var/lib/dpkg/info/*.md5sums",
    "usr/share/debconf/*", "var/cache/debconf/*",
)
# Terminal descriptions a serial console or VGA text console needs; the rest go.
KEEP_TERMINFO = ("linux", "vt100", "vt102", "vt220", "xterm", "xterm-256color", "dumb", "screen")


def host_codename() -> str:
    """The host's Debian release name (``VERSION_CODENAME`` in /etc/os-release)."""
    text = Path("/etc/os-release").read_text()
    match = re.search(r"^VERSION_CODENAME=\"?([a-z]+)\"?$", text, re.M)
    if not match:
        raise BuildError("no VERSION_CODENAME in /etc/os-release: not a Debian host?")
    return match.group(1)


def _targets(codename: str) -> list[tuple[str, str, str, str]]:
    """(repository URI, release, component, index file) of the host's Packages indexes for
    ``codename`` and its ``-updates``/``-security``/... suites."""
    out = run(["apt-get", "indextargets", "--format", "$(REPO_URI) $(RELEASE) $(COMPONENT) $(FILENAME)",
               "Created-By: Packages"], timeout=60)
    found = []
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 4 and (parts[1] == codename or parts[1].startswith(codename + "-")):
            found.append((parts[0], parts[1], parts[2], parts[3]))
    if not found:
        raise BuildError(f"the host's apt sources have no {codename} suites (apt-get indextargets)")
    return sorted(set(found))


def host_sources(codename: str) -> list[str]:
    """One-line ``deb URI SUITE COMPONENTS`` entries for the host's ``codename`` suites."""
    suites: dict[tuple[str, str], list[str]] = {}
    for uri, release, component, _ in _targets(codename):
        suites.setdefault((uri, release), []).append(component)
    return [f"deb {uri} {release} {' '.join(sorted(set(comps)))}" for (uri, release), comps in sorted(suites.items())]


def index_digest(codename: str) -> str:
    """A hash of the host's downloaded Packages indexes for ``codename``: it changes exactly
    when ``apt-get update`` brought new package versions."""
    h = hashlib.sha256()
    for uri, release, component, filename in _targets(codename):
        path = Path(filename)
        if not path.is_file():
            raise BuildError(f"{filename} is missing: run apt-get update")
        h.update(f"{uri} {release} {component}\0".encode())
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def candidate_versions(packages: Iterable[str]) -> dict[str, str]:
    """The versions apt would install for ``packages`` and their dependencies (recursively)."""
    out = run(["apt-cache", "depends", "--recurse", "--no-recommends", "--no-suggests", "--no-conflicts",
               "--no-breaks", "--no-replaces", "--no-enhances", *packages], timeout=120)
    names = sorted({line for line in out.splitlines() if line and not line[0].isspace() and not line.startswith("<")})
    policy = run(["apt-cache", "policy", *names], timeout=120)
    versions: dict[str, str] = {}
    current = ""
    for line in policy.splitlines():
        if line and not line[0].isspace() and line.endswith(":"):
            current = line[:-1]
        elif (match := re.match(r"\s+Candidate:\s*(\S+)", line)) and current:
            versions[current.split(":")[0]] = match.group(1)
    return versions


def apt_options() -> list[str]:
    """apt settings of the host that the chroot's apt must share to reach the same mirrors."""
    options = []
    out = run(["apt-config", "dump", "Acquire"], timeout=30)
    for key in ("Acquire::Check-Valid-Until", "Acquire::http::Proxy", "Acquire::https::Proxy"):
        match = re.search(rf'^{re.escape(key)} "([^"]*)";$', out, re.M)
        if match:
            options.append(f'{key} "{match.group(1)}"')
    return options


def mmdebstrap_argv(*, variant: str, include: Sequence[str], hooks: Sequence[str], codename: str) -> list[str]:
    """The ``mmdebstrap`` options for a recipe, without the target and mirrors (part of cache keys)."""
    argv = ["mmdebstrap", "--mode=root", f"--variant={variant}", f"--hook-dir={MERGED_USR_HOOK}",
            f"--include={','.join(include)}"]
    argv += [f"--dpkgopt=path-exclude={p}" for p in PATH_EXCLUDES]
    argv += [f"--dpkgopt=path-include={p}" for p in PATH_INCLUDES]
    argv += [f"--customize-hook={h}" for h in (*hooks, *CLEANUP_HOOKS)]
    return [*argv, codename]


def bootstrap(target: Path, argv: list[str], *, timeout: float = 900) -> None:
    """Run ``argv`` (from :func:`mmdebstrap_argv`) into the new directory ``target``.

    :raises BuildError: if mmdebstrap fails or a mount is left under ``target``.
    """
    if not MERGED_USR_HOOK.is_dir():
        raise BuildError(f"{MERGED_USR_HOOK} is missing (Debian package mmdebstrap)")
    codename = argv[-1]
    full = [*argv[:-1], *(f"--aptopt={o}" for o in apt_options()), codename, str(target),
            *host_sources(codename)]
    try:
        run(full, clean_env=True, timeout=timeout)
    finally:
        unmount_under(target)


def slim(rootfs: Path) -> int:
    """Delete :data:`SLIM_GLOBS` and most terminfo from ``rootfs``; returns the bytes freed."""
    before = tree_size(rootfs)
    for pattern in SLIM_GLOBS:
        for path in rootfs.glob(pattern):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
    for base in ("usr/share/terminfo", "usr/lib/terminfo"):
        for entry in (rootfs / base).glob("*/*"):
            if entry.name not in KEEP_TERMINFO and (entry.is_file() or entry.is_symlink()):
                entry.unlink()
    return before - tree_size(rootfs)


def tree_size(root: Path) -> int:
    """Bytes in the regular files under ``root`` (symlinks not followed)."""
    total = 0
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            st = os.lstat(os.path.join(dirpath, name))
            if not os.path.islink(os.path.join(dirpath, name)):
                total += st.st_size
    return total


def installed_packages(rootfs: Path) -> dict[str, str]:
    """{package: version} from the image's dpkg status file."""
    status = rootfs / "var/lib/dpkg/status"
    packages: dict[str, str] = {}
    for stanza in status.read_text().split("\n\n"):
        fields = dict(re.findall(r"^([A-Za-z-]+): (.*)$", stanza, re.M))
        if "Package" in fields and "installed" in fields.get("Status", "").split():
            packages[fields["Package"]] = fields.get("Version", "")
    return dict(sorted(packages.items()))
