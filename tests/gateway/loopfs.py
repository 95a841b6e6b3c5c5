"""A real ext4 file system on a loop device, for storage-fault tests: freeze it, fail it read-only, fill it, bring it
back. Needs root (CI runs as root); where it cannot mount, the test is skipped, or fails under CI=true."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=check)


class LoopFs:
    """One mounted image; every change is undone by `loop_ext4`'s exit, even when the test fails or times out."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.mnt = root / "mnt"
        self.images: list[Path] = []
        self.frozen = False

    @property
    def image(self) -> Path:
        return self.images[-1]

    def device(self) -> str:
        """The loop device mounted on `mnt` now (e.g. `loop3`)."""
        for line in Path("/proc/mounts").read_text().splitlines():
            fields = line.split()
            if fields[1] == str(self.mnt):
                return fields[0].rsplit("/", 1)[-1]
        raise AssertionError(f"{self.mnt} is not mounted")

    def mount(self, image: Path) -> None:
        self.images.append(image)
        _run("mount", "-o", "loop,errors=remount-ro", str(image), str(self.mnt))

    def freeze(self) -> None:
        _run("fsfreeze", "-f", str(self.mnt))
        self.frozen = True

    def thaw(self) -> None:
        if self.frozen:
            _run("fsfreeze", "-u", str(self.mnt), check=False)
            self.frozen = False

    def fail(self) -> None:
        """Make ext4 report an error: mounted with errors=remount-ro, it goes read-only at once (like an SD card)."""
        Path(f"/sys/fs/ext4/{self.device()}/trigger_fs_error").write_text("1")

    def read_only(self) -> bool:
        for line in Path("/proc/mounts").read_text().splitlines():
            fields = line.split()
            if fields[1] == str(self.mnt):
                return "ro" in fields[3].split(",") or "emergency_ro" in fields[3].split(",")
        return False

    def bring_back(self) -> None:
        """The disk comes back writable under the same path, as after `fsck` and a remount: a checked copy of the
        image replaces the failed file system (lazily unmounted: the gateway still holds files on it)."""
        copy = self.root / f"disk{len(self.images)}.img"
        shutil.copyfile(self.image, copy)
        fsck = _run("e2fsck", "-fy", str(copy), check=False)
        assert fsck.returncode in (0, 1, 2), fsck.stdout + fsck.stderr  # 1, 2: errors corrected
        _run("umount", "-l", str(self.mnt))
        self.mount(copy)

    def fill(self) -> Path:
        """Fill the file system to the last block; return the filler file (remove it to free the space)."""
        filler = self.mnt / "filler"
        chunk = b"\0" * (1 << 20)
        with open(filler, "wb", buffering=0) as out:
            while chunk:
                try:
                    out.write(chunk)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    chunk = chunk[: len(chunk) // 2]
        return filler

    def cleanup(self) -> None:
        self.thaw()
        for _ in range(3):
            if not any(line.split()[1] == str(self.mnt) for line in Path("/proc/mounts").read_text().splitlines()):
                break
            if _run("umount", str(self.mnt), check=False).returncode != 0:
                _run("umount", "-l", str(self.mnt), check=False)
        for image in self.images:
            attached = _run("losetup", "-j", str(image), check=False).stdout
            for line in attached.splitlines():
                _run("losetup", "-d", line.split(":", 1)[0], check=False)


def _cannot_mount(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"storage-fault tests need loop mounts (root, mount, fsfreeze): {reason}")
    pytest.skip(f"needs root and loop mounts: {reason}")


@contextmanager
def loop_ext4(tmp_path: Path, *, size_mb: int = 48) -> Iterator[LoopFs]:
    """Mount a fresh ext4 image (no blocks reserved for root, so root fills it too) at `tmp_path/fs/mnt`."""
    if os.geteuid() != 0:
        _cannot_mount("not running as root")
    for tool in ("mount", "umount", "losetup", "mkfs.ext4", "fsfreeze", "e2fsck"):
        if shutil.which(tool) is None:
            _cannot_mount(f"{tool} is not installed")
    fs = LoopFs(tmp_path / "fs")
    fs.mnt.mkdir(parents=True)
    image = fs.root / "disk0.img"
    with open(image, "wb") as out:
        out.truncate(size_mb << 20)
    made = _run("mkfs.ext4", "-q", "-m", "0", str(image), check=False)
    if made.returncode != 0:
        _cannot_mount(made.stderr.strip())
    try:
        try:
            fs.mount(image)
        except subprocess.CalledProcessError as exc:
            _cannot_mount(exc.stderr.strip())
        yield fs
    finally:
        fs.cleanup()
