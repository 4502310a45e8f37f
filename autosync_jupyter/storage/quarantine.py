"""Damaged bytes on disk: cut off or left out, with a copy set aside first.

A file store checks every file chunk by chunk as it reads it. A file with
damaged bytes is repaired in place so that it holds only sound chunks,
after the damaged bytes (or the whole original) were written durably under
``<dir>/.corrupt/<document id>/``, so nothing is ever destroyed:

* damage at the end of a file (a write cut short by a crash) is cut off;
* damage inside a file: the file is replaced by its sound chunks, or
  removed if none are left.

A read-only store repairs nothing and sets nothing aside: it only skips the
damaged bytes. Every function here blocks (the store's I/O thread).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Final

from ..crdt.chunks import scan_chunks
from ..ids import DocumentId
from .base import Damage
from .fileio import BINARY, ensure_dir, fsync_dir, replace_atomically, tmp_name, write_new_file

__all__ = ["CORRUPT_DIR", "keep_sound_chunks", "set_aside"]

logger = logging.getLogger("autosync_jupyter.storage")

#: Where damaged bytes go, under the data directory.
CORRUPT_DIR: Final = ".corrupt"


def keep_sound_chunks(
    root: Path,
    doc_id: DocumentId,
    path: Path,
    data: bytes,
    *,
    name: str,
    tmp_dir: Path,
    damage: Damage,
    read_only: bool,
) -> tuple[bytes, bool]:
    """Return the sound chunks of ``data`` (the file ``path``), and whether the file was rewritten.

    Damaged bytes are counted in ``damage`` and, unless ``read_only``, set
    aside under ``<root>/.corrupt/<doc_id>/`` (their copies are added to
    ``damage.set_aside``, named after ``name``) and removed from the file.
    The file is "rewritten" when it was replaced by its sound chunks or
    removed: it then no longer holds the bytes that were appended to it.
    A cut-off tail leaves the sound prefix in place (not rewritten).
    ``tmp_dir`` takes the temporary file of a replacement.
    """
    scan = scan_chunks(data)
    if not scan.bad:
        return data, False
    damage.damaged_bytes += sum(end - start for start, end in scan.bad)
    damage.files += 1
    if read_only:
        logger.warning(
            "document %s: %s has %d damaged bytes; reading the rest (read-only: not repaired)",
            doc_id,
            path,
            sum(end - start for start, end in scan.bad),
        )
        return scan.good_bytes(data), False
    corrupt_dir = root / CORRUPT_DIR / doc_id
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    label = f"{stamp}-{name}"
    tail_start = scan.bad[0][0]
    if len(scan.bad) == 1 and scan.bad[0][1] == len(data) and tail_start > 0:
        # A write cut short by a crash: keep the sound prefix in place.
        # Never acknowledged (its fsync never returned), so nothing is lost.
        aside = set_aside(corrupt_dir / f"{label}.tail", data[tail_start:])
        damage.set_aside.append(aside)
        fd = os.open(path, os.O_WRONLY | BINARY)
        try:
            os.ftruncate(fd, tail_start)
            os.fsync(fd)
        finally:
            os.close(fd)
        logger.warning(
            "document %s: %s ends in %d damaged bytes (a write cut short?); "
            "cut them off and moved them to %s",
            doc_id,
            path,
            len(data) - tail_start,
            aside,
        )
        return data[:tail_start], False
    # Damage inside the file: keep a copy of the whole file, then replace
    # it by its sound chunks (or remove it). A crash in between leaves the
    # original or the repaired file, both loadable.
    aside = set_aside(corrupt_dir / label, data)
    damage.set_aside.append(aside)
    good = scan.good_bytes(data)
    if good:
        replace_atomically(path, good, tmp_dir)
    else:
        path.unlink()
        fsync_dir(path.parent)
    logger.warning(
        "document %s: %s has %d damaged bytes in %d place(s); kept %d sound bytes, "
        "moved the original to %s",
        doc_id,
        path,
        sum(end - start for start, end in scan.bad),
        len(scan.bad),
        len(good),
        aside,
    )
    return good, True


def set_aside(target: Path, data: bytes) -> Path:
    """Durably write damaged ``data`` to a new file named ``target`` (or a variant)."""
    ensure_dir(target.parent)
    while True:
        try:
            write_new_file(target, data)
        except FileExistsError:
            target = target.with_name(tmp_name(target.name).replace(".tmp-", "-"))
            continue
        fsync_dir(target.parent)
        return target
