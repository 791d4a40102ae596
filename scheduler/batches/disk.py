"""File bodies on disk, each written atomically: a temp file, fsync, rename, directory fsync.

A body is visible under ``files/<id>`` only once complete and durable, so a crash at any
point leaves either the whole file or none of it (the store commits the file's row only after
the rename). Temp files live in ``tmp/`` beside ``files/`` (same filesystem: rename is atomic).
"""

from __future__ import annotations

import os
import re
import secrets
import time
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

from scheduler.errors import RequestTooLarge

CHUNK_BYTES = 1_048_576
STALE_TEMP_S = 3600.0
"""A temp file this old belongs to no live upload (uploads stream in well under an hour)."""

_ID = re.compile(r"^file-[0-9a-f]{24}$")


class FileBodies:
    """The ``files/`` and ``tmp/`` directories of a batch store."""

    def __init__(self, root: Path) -> None:
        self.files = root / "files"
        self.tmp = root / "tmp"
        for folder in (self.files, self.tmp):
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)

    def path(self, file_id: str) -> Path:
        if not _ID.match(file_id):  # ids come from the store, never from a client's path
            raise ValueError(f"not a file id: {file_id!r}")
        return self.files / file_id

    def write_stream(self, file_id: str, source: BinaryIO, limit: int) -> int:
        """Copy ``source`` into the body of ``file_id``; its size. ``RequestTooLarge`` (and
        nothing written) when it holds more than ``limit`` bytes."""

        def chunks() -> Iterable[bytes]:
            size = 0
            while chunk := source.read(CHUNK_BYTES):
                size += len(chunk)
                if size > limit:
                    raise RequestTooLarge(
                        f"The file exceeds the limit of {limit} bytes.", code="file_too_large"
                    )
                yield chunk

        return self.write(file_id, chunks())

    def write(self, file_id: str, chunks: Iterable[bytes]) -> int:
        """Write the body of ``file_id`` atomically (replacing any earlier one); its size."""
        target = self.path(file_id)
        temp = self.tmp / f"{file_id}.{secrets.token_hex(4)}.part"
        size = 0
        try:
            with open(temp, "xb") as out:
                for chunk in chunks:
                    out.write(chunk)
                    size += len(chunk)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temp, target)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        _fsync_directory(self.files)
        return size

    def open(self, file_id: str) -> BinaryIO:
        """The body for reading (an open handle survives a later ``remove``)."""
        return open(self.path(file_id), "rb")

    def remove(self, file_id: str) -> None:
        self.path(file_id).unlink(missing_ok=True)

    def sweep(self, live: set[str]) -> int:
        """Remove stale temp files and bodies whose file is not ``live``; how many went.

        Only bodies older than ``STALE_TEMP_S`` go, so an upload between its rename and the
        commit of its row (in another process) is left alone.
        """
        cutoff = time.time() - STALE_TEMP_S
        removed = 0
        for path in [*self.tmp.iterdir(), *self.files.iterdir()]:
            if path.parent == self.files and path.name in live:
                continue
            try:
                if path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed += 1
            except FileNotFoundError:
                continue
        return removed


def _fsync_directory(folder: Path) -> None:
    """Make a rename in ``folder`` durable."""
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def filesystem_type(path: Path, mounts: str) -> str | None:
    """The filesystem type of the mount holding ``path``, from ``/proc/self/mounts`` text."""
    best: tuple[int, str] | None = None
    resolved = str(path.resolve())
    for line in mounts.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        point = fields[1].replace("\\040", " ")
        inside = resolved == point or resolved.startswith(point.rstrip("/") + "/")
        if inside and (best is None or len(point) > best[0]):
            best = (len(point), fields[2])
    return best[1] if best else None


NETWORK_FILESYSTEMS = frozenset(
    {"nfs", "nfs4", "cifs", "smb3", "smbfs", "afs", "ncpfs", "fuse.sshfs", "glusterfs", "ceph"}
)
"""SQLite's WAL needs shared memory and POSIX locks that these do not provide reliably."""
