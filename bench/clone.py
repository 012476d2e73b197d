"""OS volume creation and capture: Ingot's image store (golden_images.store) versus plain ``qemu-img``, one run.

    .venv/bin/python -m bench.clone [--clones 5] [--copies 1] [--capture-repeats 5] [--small-data-mib 512]
        [--capture-mib 256] [--timeout 600] [--tmpdir DIR]

Needs ``qemu-img`` and ``qemu-io`` (Debian package qemu-utils); no root. Takes about 20 s on two
cores and an ext4 disk. Everything is made in one temporary directory (``--tmpdir``, default the
system's), removed at the end, on Ctrl-C or on SIGTERM; with the defaults it never holds more
than ~1.4 GiB of real data (the 1 GiB image's 512 MiB, for a moment as raw and as qcow2; then
the golden image, the capture volume's 256 MiB and one capture of ~560 MiB at a time).

The golden images, ingested into a fresh ``ImageStore`` (``store.ingest``, raw converted to qcow2):
- "1 GiB": a raw file of 1 GiB whose ``--small-data-mib`` (512 MiB) are random data in four extents
  spread across the disk, the rest holes;
- "100 GiB": a sparse raw file of 100 GiB with 4 MiB of random data at five offsets (start,
  quarter, middle, three quarters, end), 20 MiB in all.

Clone: Ingot's ``store.create_volume(sha256, id)`` (a qcow2 overlay backed by the golden image:
``qemu-img info`` of the image, ``qemu-img create -b``, fsync of the file, rename, fsync of the
directory) ``--clones`` times per image after one untimed warm-up run; the table shows min and
median seconds and all runs. Peer: what a tool without linked clones does, a full copy
``qemu-img convert -f qcow2 -O qcow2 GOLDEN COPY`` (run directly, not through Ingot's wrapper),
``--copies`` times per image, the copy deleted after each; "+fsync" is the same copy followed by
an fsync of it (Ingot's clone is fsynced). The ratio is the copy's best time over Ingot's median,
without and with that fsync. Goals (from Ingot's medians): the 100 GiB clone within 1.5x of the
1 GiB clone, and under 1 s.

Capture: a volume cloned from the 1 GiB image gets ``--capture-mib`` (256 MiB) of new random
data in four pieces (``qemu-io write -s``), then, ``--capture-repeats`` times, in an order that
rotates every round so that none always runs first on a warm page cache, each after an untimed
``sync`` so that none pays for the previous run's writeback:
- Ingot: ``store.capture(volume)`` (golden_images.flatten: ``qemu-img map`` of the volume, the new
  qcow2 written front to back from the chain's files with its sha256 computed on the way and
  writeback started behind the writer, fsync; then ``qemu-img info`` of the result, rename, fsync
  of the directory); the new golden image is deleted afterwards, untimed, so every round publishes;
- "qemu-img convert + fsync": ``qemu-img convert -f qcow2 -O qcow2 VOLUME OUT`` then fsync of OUT,
  the fair peer (Ingot's capture is durable);
- "qemu-img convert": the same without the fsync (OUT is fsynced untimed afterwards, so its
  dirty pages do not slow the next run down).
MB/s is 10^6 bytes of the resulting qcow2 file per second of wall time, best round of each. The
data is random (compression is off anyway). Goal: Ingot's capture throughput at least 0.9x the
plain ``qemu-img convert`` with fsync (the ratio against the one without fsync is printed too).

Where the time goes: a separate pass of ``--clones`` clones per image with the store's calls to
``qemu_img.info``, ``qemu_img.create_overlay``, its file and directory fsyncs (and for capture,
measured in the timed rounds, ``flatten`` and the publication) wrapped in timers (a few
microseconds each); "rest" is the remainder (Python, workspace directory, rename). For scale, a
bare ``qemu-img info`` and ``qemu-img create`` run with ``subprocess.run`` are timed the same
number of times (golden_images.qemu_img runs them as children with a parent-death signal and a
timer thread, so the difference is what that costs). golden_images is not modified: the
wrappers are put in place and taken away by this process.

The machine's facts (CPUs, kernel, qemu-img version, file system of the temporary directory, load
average) are printed first and the load average again at the end. Timings are reported, never
asserted. Exit status 1 if a step fails or the run passes ``--timeout`` (checked between steps).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shutil
import signal
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import Deadline, OutOfTime, Terminated, file_system, load_average
from golden_images import qemu_img
from golden_images import store as store_module
from golden_images.assess import ImageRefused
from golden_images.store import ImageStore, StoredImage

MiB = 1 << 20
GiB = 1 << 30
SMALL_VIRTUAL = 1 * GiB
BIG_VIRTUAL = 100 * GiB
BIG_PIECE = 4 * MiB
MAX_VIRTUAL = 128 * GiB  # the store's limit here: above the 100 GiB image
NEED_FREE = 4 * GiB  # refuse to start with less free in the temporary directory
CHUNK = 4 * MiB
CLONE_GOAL_RATIO = 1.5
CLONE_GOAL_S = 1.0
CAPTURE_GOAL_RATIO = 0.9





# -- making the images ------------------------------------------------------------------------------


def write_random(path: Path, offset: int, size: int) -> None:
    """Random bytes at ``offset`` of ``path`` (created sparse if missing), written in place."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        done = 0
        while done < size:
            n = min(CHUNK, size - done)
            os.pwrite(fd, os.urandom(n), offset + done)
            done += n
    finally:
        os.close(fd)


def sparse_raw(path: Path, virtual: int, extents: list[tuple[int, int]]) -> int:
    """A raw image of ``virtual`` bytes, holes except the (offset, size) extents of random data."""
    with path.open("wb") as f:
        f.truncate(virtual)
    for offset, size in extents:
        write_random(path, offset, size)
    return sum(size for _, size in extents)


def small_extents(data: int) -> list[tuple[int, int]]:
    """Four equal extents of random data spread over the 1 GiB disk (the last ends at its end)."""
    piece = data // 4 // MiB * MiB
    stride = (SMALL_VIRTUAL - piece) // 3 // MiB * MiB
    return [(i * stride, piece) for i in range(3)] + [(SMALL_VIRTUAL - piece, piece)]


def big_extents() -> list[tuple[int, int]]:
    quarter = BIG_VIRTUAL // 4
    return [(0, BIG_PIECE), (quarter, BIG_PIECE), (2 * quarter, BIG_PIECE), (3 * quarter, BIG_PIECE),
            (BIG_VIRTUAL - BIG_PIECE, BIG_PIECE)]


def fsync_path(path: Path) -> None:
    with path.open("rb") as f:
        os.fsync(f.fileno())


def run_tool(argv: list[str], deadline: Deadline) -> None:
    timeout = max(deadline.left(), 1.0)
    try:
        subprocess.run(argv, check=True, capture_output=True, timeout=timeout)
    except subprocess.CalledProcessError as exc:
        raise RuntimeError(f"{' '.join(argv[:2])} failed: {exc.stderr.decode(errors='replace').strip()}") from exc
    except subprocess.TimeoutExpired as exc:
        raise OutOfTime(f"{' '.join(argv[:2])} was still running at --timeout") from exc


def peer_convert(src: Path, dst: Path, deadline: Deadline) -> None:
    run_tool(["qemu-img", "convert", "-f", "qcow2", "-O", "qcow2", str(src), str(dst)], deadline)


# -- timing the store's parts -----------------------------------------------------------------------


@dataclass
class Parts:
    """Seconds spent in each wrapped call, one dict per measured operation."""

    runs: list[dict[str, float]] = field(default_factory=list)

    def new_run(self) -> None:
        self.runs.append({})

    def wrap(self, label: str, original: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                if self.runs:
                    run = self.runs[-1]
                    run[label] = run.get(label, 0.0) + time.perf_counter() - started
        return timed

    def median(self, label: str) -> float:
        return statistics.median(run.get(label, 0.0) for run in self.runs)


@contextlib.contextmanager
def instrumented(parts: Parts, targets: list[tuple[Any, str, str]]) -> Iterator[None]:
    """Replace ``owner.attr`` by a timed wrapper for the duration; (owner, attr, label) each."""
    saved = []
    try:
        for owner, attr, label in targets:
            original = getattr(owner, attr)
            saved.append((owner, attr, original))
            setattr(owner, attr, parts.wrap(label, original))
        yield
    finally:
        for owner, attr, original in reversed(saved):
            setattr(owner, attr, original)


CLONE_PARTS = [(qemu_img, "info", "qemu-img info"),
               (qemu_img, "create_overlay", "qemu-img create -b"),
               (store_module, "_fsync_file", "fsync of the volume file"),
               (store_module, "_fsync_dir", "fsync of volumes/")]
CAPTURE_PARTS = [(store_module, "flatten", "one pass: map, copy + sha256, fsync"),
                 (store_module.ImageStore, "_publish", "probe of the result, rename, fsync")]


def print_parts(title: str, parts: Parts, totals: list[float], labels: list[str]) -> None:
    total = statistics.median(totals)
    print(f"  {title}: median of {len(totals)}, total {total * 1e3:.2f} ms")
    for label in labels:
        seconds = parts.median(label)
        print(f"    {label:<34} {seconds * 1e3:9.2f} ms  {seconds / total * 100:5.1f}%")
    # Per run, then the median; noise can make it a hair below zero.
    rest = max(statistics.median(t - sum(run.values()) for t, run in zip(totals, parts.runs, strict=True)), 0.0)
    print(f"    {'rest (Python, workspace, rename)':<34} {rest * 1e3:9.2f} ms  {rest / total * 100:5.1f}%")


# -- measuring --------------------------------------------------------------------------------------


@dataclass
class CloneRow:
    label: str
    image: StoredImage
    data: int
    ingot: list[float] = field(default_factory=list)
    copy: list[float] = field(default_factory=list)
    copy_fsync: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.ingot)


def time_clones(store: ImageStore, row: CloneRow, count: int, tag: str, deadline: Deadline,
                parts: Parts | None = None) -> list[float]:
    times = []
    for i in range(count + 1):  # run 0 is the warm-up
        deadline.check(f"clone {i} of {row.label}")
        volume_id = f"{tag}-{row.label.replace(' ', '')}-{i}"
        if parts is not None and i:
            parts.new_run()
        started = time.perf_counter()
        store.create_volume(row.image.sha256, volume_id)
        elapsed = time.perf_counter() - started
        store.delete_volume(volume_id)
        if i:
            times.append(elapsed)
    return times


def time_copies(row: CloneRow, peer_dir: Path, count: int, deadline: Deadline) -> None:
    copy = peer_dir / "copy.qcow2"
    for i in range(count):
        for synced in (False, True):
            deadline.check(f"full copy {i} of {row.label}")
            started = time.perf_counter()
            peer_convert(row.image.path, copy, deadline)
            if synced:
                fsync_path(copy)
            elapsed = time.perf_counter() - started
            if not synced:
                fsync_path(copy)  # untimed: no dirty pages left to slow the next run
            (row.copy_fsync if synced else row.copy).append(elapsed)
            copy.unlink()


def time_bare(argv: list[str], count: int, deadline: Deadline) -> list[float]:
    times = []
    for _ in range(count):
        started = time.perf_counter()
        run_tool(argv, deadline)
        times.append(time.perf_counter() - started)
    return times


@dataclass
class CaptureRow:
    label: str
    seconds: list[float] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)

    @property
    def best(self) -> int:
        return min(range(len(self.seconds)), key=self.seconds.__getitem__)

    @property
    def mbps(self) -> float:
        return self.sizes[self.best] / self.seconds[self.best] / 1e6


def make_capture_volume(store: ImageStore, image: StoredImage, work: Path, new_data: int,
                        deadline: Deadline) -> Path:
    volume = store.create_volume(image.sha256, "capture-source")
    piece = new_data // 4 // MiB * MiB
    # Four pieces: two over the image's data (rewritten blocks), two over its holes.
    offsets = [64 * MiB, 300 * MiB, 600 * MiB, 850 * MiB]
    commands = []
    for i, offset in enumerate(offsets):
        source = work / f"new-data-{i}.bin"
        write_random(source, 0, piece)
        commands += ["-c", f"write -q -s {source} {offset} {piece}"]
    run_tool(["qemu-io", "-f", "qcow2", *commands, str(volume)], deadline)
    for i in range(len(offsets)):
        (work / f"new-data-{i}.bin").unlink()
    return volume


def time_captures(store: ImageStore, volume: Path, peer_dir: Path, repeats: int, deadline: Deadline,
                  parts: Parts) -> list[CaptureRow]:
    ingot = CaptureRow("Ingot store.capture")
    synced = CaptureRow("qemu-img convert + fsync")
    plain = CaptureRow("qemu-img convert")
    out = peer_dir / "capture.qcow2"

    def run_ingot() -> None:
        parts.new_run()
        started = time.perf_counter()
        with instrumented(parts, CAPTURE_PARTS):
            image = store.capture(volume)
        ingot.seconds.append(time.perf_counter() - started)
        ingot.sizes.append(image.size)
        store.delete_golden(image.sha256)

    def run_peer(fsync: bool) -> None:
        row = synced if fsync else plain
        started = time.perf_counter()
        peer_convert(volume, out, deadline)
        if fsync:
            fsync_path(out)
        row.seconds.append(time.perf_counter() - started)
        if not fsync:
            fsync_path(out)  # untimed: no dirty pages left to slow the next run
        row.sizes.append(out.stat().st_size)
        out.unlink()

    steps: list[tuple[str, Callable[[], None]]] = [
        ("Ingot", run_ingot), ("convert + fsync", lambda: run_peer(True)), ("convert", lambda: run_peer(False))]
    for round_ in range(repeats):
        shift = round_ % len(steps)
        for name, step in steps[shift:] + steps[:shift]:
            deadline.check(f"capture round {round_ + 1} ({name})")
            os.sync()  # untimed: every run starts with nothing left to write back from the one before
            step()
    return [ingot, synced, plain]


# -- reporting --------------------------------------------------------------------------------------


def verdict(met: bool) -> str:
    return "met" if met else "NOT met"



def machine_facts(where: Path) -> str:
    version = subprocess.run(["qemu-img", "--version"], capture_output=True, text=True, timeout=30,
                             check=False).stdout.splitlines()
    return (f"{os.cpu_count()} CPUs, Linux {platform.release()}, Python {platform.python_version()}, "
            f"{version[0] if version else 'qemu-img version unknown'}; {where} on {file_system(where)}; "
            f"load average {load_average()}")


def seconds_list(values: list[float]) -> str:
    return ", ".join(f"{v:.4f}" if v < 1 else f"{v:.2f}" for v in values)


def mib(n: int) -> str:
    return f"{n / MiB:.0f}"


def run(args: argparse.Namespace) -> int:
    deadline = Deadline(args.timeout)
    base = Path(args.tmpdir) if args.tmpdir else Path(tempfile.gettempdir())
    free = shutil.disk_usage(base).free
    if free < NEED_FREE:
        print(f"bench.clone: only {free / GiB:.1f} GiB free in {base}, needs {NEED_FREE / GiB:.0f} GiB")
        return 2
    for tool in ("qemu-img", "qemu-io"):
        if shutil.which(tool) is None:
            print(f"bench.clone needs {tool} (apt-get install qemu-utils)")
            return 2
    print(f"bench.clone: {machine_facts(base)}")
    run_started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="ingot-bench-clone-", dir=base) as tmp:
        work = Path(tmp)
        store = ImageStore(work / "store", max_virtual_size=MAX_VIRTUAL)
        peer_dir = work / "peer"
        peer_dir.mkdir()
        rows: list[CloneRow] = []
        for label, virtual, extents in (("1 GiB", SMALL_VIRTUAL, small_extents(args.small_data_mib * MiB)),
                                        ("100 GiB", BIG_VIRTUAL, big_extents())):
            deadline.check(f"making the {label} image")
            raw = work / f"source-{label.replace(' ', '')}.raw"
            started = time.perf_counter()
            data = sparse_raw(raw, virtual, extents)
            made = time.perf_counter() - started
            started = time.perf_counter()
            image = store.ingest(raw, claimed="raw")
            ingested = time.perf_counter() - started
            raw.unlink()
            rows.append(CloneRow(label, image, data))
            print(f"  ... {label} golden image: {mib(data)} MiB random data in {len(extents)} extents, raw written "
                  f"in {made:.2f} s, ingested (raw -> qcow2, fsync, sha256) in {ingested:.2f} s: "
                  f"qcow2 file {mib(image.size)} MiB, virtual {image.virtual_size / GiB:.0f} GiB", flush=True)

        for row in rows:
            row.ingot = time_clones(store, row, args.clones, "clone", deadline)
            time_copies(row, peer_dir, args.copies, deadline)
            print(f"  ... clone {row.label}: Ingot {seconds_list(row.ingot)} s; full copy {seconds_list(row.copy)} s, "
                  f"with fsync {seconds_list(row.copy_fsync)} s", flush=True)

        clone_parts: dict[str, tuple[Parts, list[float]]] = {}
        for row in rows:
            parts = Parts()
            with instrumented(parts, CLONE_PARTS):
                totals = time_clones(store, row, args.clones, "parts", deadline, parts)
            clone_parts[row.label] = (parts, totals)
        big = rows[-1]
        info_argv = ["qemu-img", "info", "--output=json", "-f", "qcow2", str(big.image.path)]
        bare_info = time_bare(info_argv, args.clones, deadline)
        overlay = peer_dir / "overlay.qcow2"
        create_argv = ["qemu-img", "create", "-q", "-u", "-f", "qcow2", "-b", str(big.image.path), "-F", "qcow2",
                       str(overlay), str(big.image.virtual_size)]
        bare_create = []
        for _ in range(args.clones):
            bare_create += time_bare(create_argv, 1, deadline)
            overlay.unlink()

        deadline.check("making the capture volume")
        started = time.perf_counter()
        volume = make_capture_volume(store, rows[0].image, work, args.capture_mib * MiB, deadline)
        print(f"  ... capture volume: {args.capture_mib} MiB of new random data written with qemu-io in "
              f"{time.perf_counter() - started:.2f} s, volume file {mib(volume.stat().st_size)} MiB", flush=True)
        capture_parts = Parts()
        captures = time_captures(store, volume, peer_dir, args.capture_repeats, deadline, capture_parts)
        for capture in captures:
            print(f"  ... capture {capture.label}: {seconds_list(capture.seconds)} s", flush=True)
        sizes = {size for capture in captures for size in capture.sizes}

    print()
    print(f"  {'clone':<8} {'image data':>10} {'qcow2':>7} {'Ingot min':>10} {'median':>8} {'full copy':>10} "
          f"{'+fsync':>8} {'copy/Ingot':>10} {'+fsync/Ingot':>12}  Ingot runs (s)")
    for row in rows:
        copy, copy_fsync = min(row.copy), min(row.copy_fsync)
        print(f"  {row.label:<8} {mib(row.data) + ' MiB':>10} {mib(row.image.size) + ' MiB':>7} "
              f"{min(row.ingot):9.4f}s {row.median:7.4f}s {copy:9.3f}s {copy_fsync:7.3f}s "
              f"{copy / row.median:9.2f}x {copy_fsync / row.median:11.2f}x  {seconds_list(row.ingot)}")
    print()
    print(f"  {'capture (1 GiB image + ' + str(args.capture_mib) + ' MiB)':<34} {'result':>9} {'best s':>7} "
          f"{'MB/s':>7}  runs (s)")
    for capture in captures:
        print(f"  {capture.label:<34} {mib(capture.sizes[capture.best]) + ' MiB':>9} "
              f"{capture.seconds[capture.best]:7.3f} {capture.mbps:7.1f}  {seconds_list(capture.seconds)}")
    if len(sizes) > 1:
        print(f"  note: the captures' file sizes differ: {sorted(sizes)} bytes")
    print()
    print("  where Ingot's time goes (timed wrappers around the store's calls; separate pass for clones):")
    for label, (parts, totals) in clone_parts.items():
        print_parts(f"clone {label}", parts, totals, [label for _, _, label in CLONE_PARTS])
    print(f"    for scale (median of {args.clones}): qemu-img info {statistics.median(bare_info) * 1e3:.2f} ms and "
          f"qemu-img create -b {statistics.median(bare_create) * 1e3:.2f} ms run with subprocess.run")
    print_parts("capture", capture_parts, captures[0].seconds, [label for _, _, label in CAPTURE_PARTS])
    print()

    small, big = rows
    growth = big.median / small.median
    ingot, synced, plain = captures
    vs_synced, vs_plain = ingot.mbps / synced.mbps, ingot.mbps / plain.mbps
    print(f"  clone: full copy / Ingot median: 1 GiB {min(small.copy) / small.median:.2f}x "
          f"({min(small.copy_fsync) / small.median:.2f}x with fsync), 100 GiB {min(big.copy) / big.median:.2f}x "
          f"({min(big.copy_fsync) / big.median:.2f}x with fsync)")
    print(f"  capture: Ingot / qemu-img convert + fsync {vs_synced:.2f}x, Ingot / qemu-img convert (no fsync) "
          f"{vs_plain:.2f}x")
    print(f"  goal: Ingot 100 GiB clone time within {CLONE_GOAL_RATIO}x of its 1 GiB time: "
          f"{verdict(growth <= CLONE_GOAL_RATIO)} ({growth:.2f}x, medians {big.median:.4f} s / {small.median:.4f} s)")
    print(f"  goal: Ingot 100 GiB clone under {CLONE_GOAL_S:.0f} s: {verdict(big.median < CLONE_GOAL_S)} "
          f"({big.median:.4f} s)")
    print(f"  goal: capture throughput >= {CAPTURE_GOAL_RATIO}x plain qemu-img convert (+ fsync): "
          f"{verdict(vs_synced >= CAPTURE_GOAL_RATIO)} ({vs_synced:.2f}x; {vs_plain:.2f}x against the one without "
          f"fsync)")
    print(f"  run took {time.monotonic() - run_started:.1f} s; load average at the end {load_average()} "
          f"(others' work on the machine slows runs down); temporary files removed")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--clones", type=int, default=5, help="timed Ingot clones per image (1-50)")
    parser.add_argument("--copies", type=int, default=1, help="timed full copies per image, each variant (1-5)")
    parser.add_argument("--capture-repeats", type=int, default=5, help="capture rounds, best shown (1-10)")
    parser.add_argument("--small-data-mib", type=int, default=512, help="random data in the 1 GiB image (16-1024)")
    parser.add_argument("--capture-mib", type=int, default=256, help="new data written before capture (16-512)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds for the whole run (30-3600)")
    parser.add_argument("--tmpdir", help="where the temporary directory goes (default: the system's)")
    args = parser.parse_args(argv)
    if not (1 <= args.clones <= 50 and 1 <= args.copies <= 5 and 1 <= args.capture_repeats <= 10
            and 16 <= args.small_data_mib <= 1024 and 16 <= args.capture_mib <= 512 and 30 <= args.timeout <= 3600):
        parser.error("counts, sizes and the timeout are bounded: see --help")

    def terminated(_sig: int, _frame: object) -> None:
        raise Terminated  # unwinds through the with-block: the temporary directory is removed

    signal.signal(signal.SIGTERM, terminated)
    # Ctrl-C interrupts even when started from a shell that ignores SIGINT for background jobs.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return run(args)
    except (KeyboardInterrupt, Terminated):
        print("\nbench.clone: interrupted; temporary files removed")
        return 130
    except (OutOfTime, RuntimeError, OSError, qemu_img.QemuImgError, ImageRefused) as exc:
        print(f"bench.clone: FAILED: {exc}; temporary files removed")
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
