"""The image store on disk: content-addressed golden images and the OS volumes cloned from them.

Layout under the store's root (``INGOT_HOME/images``)::

    golden/<sha256>.qcow2   golden images, canonical qcow2, named by the sha256 of the file, read-only
    volumes/<id>.qcow2      OS volumes: qcow2 overlays backed by a golden image (or full copies)
    incoming/               work in progress; whatever is here at start-up was left by a crash
    logs/<id>.log           what an import or capture did, per golden image (its "archive")
    logs/volume-<id>.log    the last build plan run on an OS volume (masked), served as its archive
    exports/<id>.<fmt>      an OS volume flattened for download (raw or qcow2), with <id>.<fmt>.json:
                            its sha256 and the volume's size and mtime when it was made (stale after)

Nothing half-written is ever visible: every file is made in ``incoming/``, fsynced, and renamed
into place (a rename within one file system is atomic), then the directory is fsynced so the
rename survives a power cut. :meth:`ImageStore.sweep` empties ``incoming/`` when the appliance
starts. Every import is probed and judged (:mod:`golden_images.assess`) before anything else
reads it, converted to qcow2 (which also drops whatever the source format carried besides the
disk's contents), probed again, and only then checksummed and published.

The database records which golden image (by checksum) and which volumes exist; this module
only keeps the files. All calls block: run them in a task or a worker thread.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import shutil
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from golden_images import qemu_img
from golden_images.assess import ImageFacts, ImageRefused, assess
from golden_images.bundle import extract_single_disk, is_zip
from golden_images.flatten import Flattened, NotFlattenable, flatten

CANONICAL = "qcow2"
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")  # volume and image ids; fullmatch: "$" allows a final \n
_SHA256 = re.compile(r"[0-9a-f]{64}")
_HASH_CHUNK = 4 << 20
EXPORT_FORMATS = ("raw", "qcow2")

Progress = Callable[[float], None]  # percent complete, 0-100


@dataclass(frozen=True)
class StoredImage:
    sha256: str
    path: Path
    size: int  # bytes of the stored qcow2 file
    virtual_size: int
    source_format: str  # what it was before conversion: qcow2, raw, vmdk, vpc, vhdx (or "zip+raw")


@dataclass(frozen=True)
class ExportedVolume:
    """An OS volume flattened into one self-contained file for download."""

    volume_id: str
    format: str  # raw or qcow2
    path: Path
    sha256: str
    size: int  # bytes of the file (a raw export's size is the volume's virtual size)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    with path.open("rb") as f:
        os.fsync(f.fileno())


def sha256_of(path: Path, on_progress: Progress | None = None) -> str:
    digest = hashlib.sha256()
    total = path.stat().st_size if on_progress is not None else 0
    done = 0
    with path.open("rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            digest.update(chunk)
            if on_progress is not None and total:
                done += len(chunk)
                on_progress(100.0 * done / total)
    return digest.hexdigest()


def _fsync_and_hash(path: Path, on_progress: Progress | None = None) -> str:
    """Flush a new file to disk and hash it (from the page cache) at once: hashlib and fsync both
    release the GIL, so this costs the longer of the two, not the sum."""
    with ThreadPoolExecutor(max_workers=1) as flusher:
        flushed = flusher.submit(_fsync_file, path)
        digest = sha256_of(path, on_progress)
        flushed.result()
    return digest


def _names(folder: Path, name: re.Pattern[str]) -> set[str]:
    """The names of the store's files in ``folder`` (``<name>.qcow2``); anything else is not ours."""
    return {stem for path in folder.glob(f"*.{CANONICAL}")
            if name.fullmatch(stem := path.name.removesuffix(f".{CANONICAL}"))}


class ImageStore:
    def __init__(self, root: Path, *, max_virtual_size: int) -> None:
        self.root = root
        self.golden_dir = root / "golden"
        self.volumes_dir = root / "volumes"
        self.incoming_dir = root / "incoming"
        self.logs_dir = root / "logs"
        self.exports_dir = root / "exports"
        self.max_virtual_size = max_virtual_size
        for folder in (self.golden_dir, self.volumes_dir, self.incoming_dir, self.logs_dir, self.exports_dir):
            folder.mkdir(parents=True, exist_ok=True, mode=0o750)

    # -- housekeeping --------------------------------------------------------------------------

    def sweep(self) -> list[str]:
        """Remove what a crashed import, clone or capture left in ``incoming/``; return the names."""
        removed = []
        for leftover in sorted(self.incoming_dir.iterdir()):
            if leftover.is_dir() and not leftover.is_symlink():
                shutil.rmtree(leftover)
            else:
                leftover.unlink()
            removed.append(leftover.name)
        return removed

    @contextlib.contextmanager
    def workspace(self) -> Iterator[Path]:
        """A private directory in ``incoming/``, removed afterwards whatever happens."""
        path = self.incoming_dir / f"work-{secrets.token_hex(8)}"
        path.mkdir(mode=0o700)
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)

    def free_bytes(self) -> int:
        return shutil.disk_usage(self.root).free

    # -- golden images -------------------------------------------------------------------------

    def golden_path(self, sha256: str) -> Path:
        if not _SHA256.fullmatch(sha256):
            raise ValueError(f"not a sha256 checksum: {sha256!r}")
        return self.golden_dir / f"{sha256}.{CANONICAL}"

    def probe(self, source: Path, claimed: str | None) -> ImageFacts:
        """Judge an untrusted file (ImageRefused says why not); nothing else has read it yet."""
        try:
            info = qemu_img.info(source)
        except qemu_img.QemuImgError as exc:
            raise ImageRefused(f"the file is not a readable disk image ({exc})") from exc
        return assess(info, claimed=claimed, max_virtual_size=self.max_virtual_size)

    def ingest(self, source: Path, *, claimed: str | None = None, on_progress: Progress | None = None,
               max_bundle_bytes: int | None = None) -> StoredImage:
        """Add an untrusted image file (qcow2, raw, vmdk, vhd, vhdx, or HPE's zip of one raw disk).

        ``source`` itself is never modified. ``claimed`` is the uploader's format (qemu-img name) or
        None to accept what the contents are. Raises ImageRefused with the reason.
        """
        with self.workspace() as work:
            label = None
            if is_zip(source):
                if claimed not in (None, "raw"):
                    raise ImageRefused(f"the image was given as {claimed} but the file is a zip archive")
                disk = work / "bundle.raw"
                extract_single_disk(source, disk, max_bytes=max_bundle_bytes or self.max_virtual_size)
                source, claimed, label = disk, "raw", "zip+raw"
            facts = self.probe(source, claimed)
            converted = work / f"image.{CANONICAL}"
            try:
                qemu_img.convert(source, converted, src_format=facts.format, on_progress=on_progress)
            except qemu_img.QemuImgError as exc:  # a header that passed, over data that does not
                raise ImageRefused(f"the image could not be read to its end ({exc})") from exc
            return self._publish(converted, label or facts.format)

    def capture(self, volume: Path, *, compress: bool = False, on_progress: Progress | None = None) -> StoredImage:
        """A new golden image from an OS volume: flattened (its golden image folded in), optionally
        compressed, checksummed and published like an import."""
        with self.workspace() as work:
            converted = work / f"image.{CANONICAL}"
            return self._publish(converted, CANONICAL, self._flatten(volume, converted, compress, on_progress))

    @staticmethod
    def _flatten(chain: Path, target: Path, compress: bool, on_progress: Progress | None) -> Flattened | None:
        """Write ``chain`` flattened into the qcow2 ``target``: in one pass with its sha256 and probe
        (golden_images.flatten), or None when qemu-img converted it (compression, or a chain with
        compressed clusters) and the file still has to be probed and read for its checksum."""
        if not compress:
            try:
                return flatten(chain, target, on_progress=on_progress)
            except NotFlattenable:
                target.unlink(missing_ok=True)
        qemu_img.convert(chain, target, src_format=CANONICAL, compress=compress, on_progress=on_progress)
        return None

    def _publish(self, converted: Path, source_format: str, flattened: Flattened | None = None) -> StoredImage:
        """Check, checksum (unless ``flattened`` already did both: the file is then fsynced too)
        and publish a qcow2 made in the workspace."""
        # What was written is ours, but check it as strictly as an upload before it is kept.
        info = flattened.info if flattened is not None else qemu_img.info(converted, CANONICAL)
        facts = assess(info, claimed=CANONICAL, max_virtual_size=self.max_virtual_size)
        digest = flattened.sha256 if flattened is not None else _fsync_and_hash(converted)
        target = self.golden_path(digest)
        if target.exists():  # the same image again: keep the one already published
            converted.unlink()
        else:
            converted.chmod(0o444)
            os.replace(converted, target)
            _fsync_dir(self.golden_dir)
        return StoredImage(digest, target, target.stat().st_size, facts.virtual_size, source_format)

    def golden_checksums(self) -> set[str]:
        """The checksums of the golden images on disk."""
        return _names(self.golden_dir, _SHA256)

    def verify(self, sha256: str, on_progress: Progress | None = None) -> bool:
        """Whether a golden image's file still has the checksum it is named by (read in full)."""
        return sha256_of(self.golden_path(sha256), on_progress) == sha256

    def delete_golden(self, sha256: str) -> None:
        self.golden_path(sha256).unlink(missing_ok=True)
        _fsync_dir(self.golden_dir)

    # -- logs ----------------------------------------------------------------------------------

    def log_path(self, image_id: str) -> Path:
        if not _ID.fullmatch(image_id):
            raise ValueError(f"not an image id: {image_id!r}")
        return self.logs_dir / f"{image_id}.log"

    def write_log(self, image_id: str, text: str) -> None:
        """Keep an operation's log for a golden image (written whole, then renamed into place)."""
        self._write_log(self.log_path(image_id), text)

    def volume_log_path(self, volume_id: str) -> Path:
        self.volume_path(volume_id)  # checks the id
        return self.logs_dir / f"volume-{volume_id}.log"

    def write_volume_log(self, volume_id: str, text: str) -> None:
        """Keep the log of the last build plan run on an OS volume (replacing the one before)."""
        self._write_log(self.volume_log_path(volume_id), text)

    def _write_log(self, target: Path, text: str) -> None:
        with self.workspace() as work:
            made = work / "log"
            made.write_text(text, encoding="utf-8")
            _fsync_file(made)
            os.replace(made, target)
        _fsync_dir(self.logs_dir)

    def delete_log(self, image_id: str) -> None:
        self.log_path(image_id).unlink(missing_ok=True)

    # -- OS volumes ----------------------------------------------------------------------------

    def volume_path(self, volume_id: str) -> Path:
        if not _ID.fullmatch(volume_id):
            raise ValueError(f"not a volume id: {volume_id!r}")
        return self.volumes_dir / f"{volume_id}.{CANONICAL}"

    def create_volume(self, sha256: str, volume_id: str, *, full: bool = False, size: int | None = None,
                      on_progress: Progress | None = None) -> Path:
        """An OS volume from a golden image: a copy-on-write overlay (constant time whatever the
        image's size) or, with ``full``, an independent copy. ``size`` grows it (never shrinks)."""
        golden = self.golden_path(sha256)
        target = self.volume_path(volume_id)
        if not golden.exists():
            raise FileNotFoundError(f"golden image {sha256} is not in the store")
        if target.exists():
            raise FileExistsError(f"volume {volume_id} exists")
        image_size = int(qemu_img.info(golden, CANONICAL)["virtual-size"])
        if size is not None and size < image_size:
            raise ValueError(f"a volume cannot be smaller than its image ({image_size} bytes)")
        with self.workspace() as work:
            made = work / f"volume.{CANONICAL}"
            if full:
                qemu_img.convert(golden, made, src_format=CANONICAL, on_progress=on_progress)
                if size is not None and size > image_size:
                    qemu_img.resize(made, size)
            else:
                # The image is named relative to volumes/, so the store can move (or be copied to
                # the standby appliance) without breaking every volume's link to its image.
                qemu_img.create_overlay(f"../{golden.parent.name}/{golden.name}", made, size or image_size)
            _fsync_file(made)
            os.replace(made, target)
            _fsync_dir(self.volumes_dir)
        return target

    def volume_ids(self) -> set[str]:
        """The ids of the OS volumes on disk."""
        return _names(self.volumes_dir, _ID)

    def delete_volume(self, volume_id: str) -> None:
        self.delete_exports(volume_id)
        self.volume_log_path(volume_id).unlink(missing_ok=True)
        self.volume_path(volume_id).unlink(missing_ok=True)
        _fsync_dir(self.volumes_dir)

    # -- exports of OS volumes -----------------------------------------------------------------

    def _export_paths(self, volume_id: str, fmt: str) -> tuple[Path, Path]:
        if fmt not in EXPORT_FORMATS:
            raise ValueError(f"an OS volume is exported as {' or '.join(EXPORT_FORMATS)}, not {fmt!r}")
        self.volume_path(volume_id)  # checks the id
        data = self.exports_dir / f"{volume_id}.{fmt}"
        return data, data.with_name(data.name + ".json")

    def _volume_stamp(self, volume_id: str) -> list[int]:
        """What changes when the volume is written (by qemu-nbd, a build plan, a resize)."""
        stat = self.volume_path(volume_id).stat()
        return [stat.st_size, stat.st_mtime_ns]

    def export_volume(self, volume_id: str, fmt: str, on_progress: Progress | None = None) -> ExportedVolume:
        """Flatten an OS volume (its golden image folded in) into one file of format ``fmt`` and
        checksum it, replacing an older export. A qcow2 is written and hashed in one pass where it
        can be (golden_images.flatten); otherwise the conversion is 0-60 % of ``on_progress`` and
        the checksum 60-100 %. The volume must not be written meanwhile: a volume exported over NBD
        is locked by qemu-nbd, and qemu-img refuses to open it."""
        data, meta = self._export_paths(volume_id, fmt)
        stamp = self._volume_stamp(volume_id)
        convert_progress = (lambda pct: on_progress(0.6 * pct)) if on_progress is not None else None
        hash_progress = (lambda pct: on_progress(60 + 0.4 * pct)) if on_progress is not None else None
        with self.workspace() as work:
            made = work / f"export.{fmt}"
            volume = self.volume_path(volume_id)
            flattened = self._flatten(volume, made, False, convert_progress) if fmt == CANONICAL else None
            if flattened is None and fmt != CANONICAL:
                qemu_img.convert(volume, made, src_format=CANONICAL, dst_format=fmt, on_progress=convert_progress)
            digest = flattened.sha256 if flattened is not None else _fsync_and_hash(made, hash_progress)
            exported = ExportedVolume(volume_id, fmt, data, digest, made.stat().st_size)
            record = work / "export.json"
            record.write_text(json.dumps({"sha256": digest, "size": exported.size, "volume": stamp}))
            _fsync_file(record)
            meta.unlink(missing_ok=True)  # no window where an old record describes the new file
            os.replace(made, data)
            os.replace(record, meta)
            _fsync_dir(self.exports_dir)
        return exported

    def exported(self, volume_id: str, fmt: str) -> ExportedVolume | None:
        """The volume's current export in ``fmt``; None when there is none or the volume has been
        written since it was made."""
        data, meta = self._export_paths(volume_id, fmt)
        try:
            record = json.loads(meta.read_text())
            current = self._volume_stamp(volume_id) == record["volume"] and data.stat().st_size == record["size"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return ExportedVolume(volume_id, fmt, data, str(record["sha256"]), int(record["size"])) if current else None

    def delete_exports(self, volume_id: str) -> None:
        for fmt in EXPORT_FORMATS:
            for path in self._export_paths(volume_id, fmt):
                path.unlink(missing_ok=True)

    def exported_volume_ids(self) -> set[str]:
        """The volumes that have export files (current or stale)."""
        return {path.name.split(".", 1)[0] for path in self.exports_dir.iterdir()
                if _ID.fullmatch(path.name.split(".", 1)[0])}
