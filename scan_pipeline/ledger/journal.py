"""The commit protocol: every change of a ledger and its sidecars happens whole, or not at all.

A command that changes a ledger (`process`, `review import`, `ledger erase`, `ledger merge`)
builds a `Change` under the ledger's lock:

1. every new file is written, whole and fsynced, into a staging folder beside the ledger
   (`.L.csv.tx-ID/`): the new ledger, details, audit log, pages log, crops, outputs rewritten;
2. the intent record `L.journal.json` is written atomically: which staged file replaces which
   file, which files go. This is the commit point;
3. the staged files are renamed into place, the files to go are deleted, then the journal and
   the staging folder are removed.

Whoever takes the lock next (any command, reading or writing) finds a journal left by a kill and
completes it (`recover`): every step is a rename of a file that is still staged, or the deletion of
a file, so doing it twice changes nothing, and no record is ever appended twice. A staging folder
or temporary file without a journal is the debris of a change that never committed: removed.
Appending to a log is a replacement by its old lines and the new ones, so it is a rename too.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from scan_pipeline.core import faults
from scan_pipeline.core.errors import OutputError

JOURNAL_SUFFIX = ".journal.json"
_STAGE_MARK = ".tx-"


def journal_path(ledger: Path) -> Path:
    return Path(ledger).with_suffix(JOURNAL_SUFFIX)


def fsync_dir(folder: Path) -> None:
    """Make the renames in a folder durable; best effort: some file systems refuse fsync on folders."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _inside(path: Path, folder: Path) -> bool:
    return Path(os.path.abspath(path)).is_relative_to(os.path.abspath(folder))


def _rel(folder: Path, path: Path) -> str:
    """A path as the journal keeps it: relative to the ledger's folder when inside it (the folder may move)."""
    path = Path(os.path.abspath(path))
    try:
        return str(path.relative_to(os.path.abspath(folder)))
    except ValueError:
        return str(path)


class Change:
    """The files one command changes for a ledger; nothing is visible until `commit`."""

    def __init__(self, ledger: Path, op: str):
        self.ledger = Path(ledger)
        self.folder = self.ledger.parent
        self.op = op
        self.id = uuid.uuid4().hex[:16]
        self.stage = self.folder / f".{self.ledger.name}{_STAGE_MARK}{self.id}"
        self.replaces: list[tuple[Path, Path]] = []  # (target, staged), applied in this order
        self.deletes: list[Path] = []
        self._staged: dict[Path, Path] = {}
        self.journaled = False

    def write(self, target: Path, data: bytes, *, durable: bool = True) -> None:
        """`target` will hold `data` (written again if written twice in this change: the last wins)."""
        target = Path(target)
        staged = self._staged.get(target)
        if staged is None:
            if _inside(target, self.folder):
                staged = self.stage / f"{len(self._staged):06d}-{target.name}"
            else:  # beside its target: a rename never crosses file systems
                staged = target.parent / f".{target.name}{_STAGE_MARK}{self.id}"
            self._staged[target] = staged
            self.replaces.append((target, staged))
        try:
            staged.parent.mkdir(parents=True, exist_ok=True)
            with open(staged, "wb") as fh:
                fh.write(data)
                if durable:
                    fh.flush()
                    os.fsync(fh.fileno())
        except OSError as exc:
            self.abort()
            raise OutputError(f"cannot write: {exc.strerror or exc}", file=str(target),
                              hint="check that the folder is writable and the disk not full") from exc

    def append_lines(self, target: Path, text: str) -> None:
        """`target` (a log of JSON lines) gets `text` at its end; a line a crash left torn is dropped."""
        target = Path(target)
        staged = self._staged.get(target)
        try:
            old = staged.read_bytes() if staged is not None else target.read_bytes()
        except FileNotFoundError:
            old = b""
        if old and not old.endswith(b"\n"):
            old = old[: old.rfind(b"\n") + 1]  # a torn last line: the write it began never finished
        self.write(target, old + text.encode("utf-8", errors="backslashreplace"))

    def delete(self, target: Path) -> None:
        self.deletes.append(Path(target))

    @property
    def empty(self) -> bool:
        return not self.replaces and not self.deletes

    def commit(self) -> None:
        """Make every change visible: the journal first (the commit point), then the renames."""
        if self.empty:
            self.abort()
            return
        for folder in {staged.parent for _, staged in self.replaces}:
            fsync_dir(folder)
        faults.point(f"tx.{self.op}.staged")
        self.journaled = False
        record = {"op": self.op, "id": self.id, "pid": os.getpid(), "at": time.time(),
                  "stage": _rel(self.folder, self.stage),
                  "replace": [[_rel(self.folder, t), _rel(self.folder, s)] for t, s in self.replaces],
                  "delete": [_rel(self.folder, d) for d in self.deletes]}
        _write_journal(journal_path(self.ledger), record)
        self.journaled = True  # from here on, the change is made: by us now, or by whoever comes next
        faults.point(f"tx.{self.op}.journaled")
        apply(self.ledger, record)

    def abort(self) -> None:
        shutil.rmtree(self.stage, ignore_errors=True)
        for _, staged in self.replaces:
            with contextlib.suppress(FileNotFoundError):
                staged.unlink()


def _write_journal(path: Path, record: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(record, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def _path(folder: Path, text: str) -> Path:
    path = Path(text)
    return path if path.is_absolute() else folder / path


def apply(ledger: Path, record: dict[str, Any]) -> None:
    """Carry out a journal's steps; each may already be done (a second run changes nothing)."""
    folder = Path(ledger).parent
    op = record.get("op", "change")
    touched: set[Path] = set()
    for target, staged in record.get("replace", []):
        src, dst = _path(folder, staged), _path(folder, target)
        if src.exists():
            dst.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileNotFoundError):  # keep the permissions someone chose
                os.chmod(src, os.stat(dst).st_mode & 0o7777)
            os.replace(src, dst)
            touched.add(dst.parent)
            faults.point(f"tx.{op}.replaced")
    for target in record.get("delete", []):
        path = _path(folder, target)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        touched.add(path.parent)
        with contextlib.suppress(OSError):  # a crops folder left empty
            if path.parent != folder and not any(path.parent.iterdir()):
                path.parent.rmdir()
    for directory in touched:
        fsync_dir(directory)
    faults.point(f"tx.{op}.applied")
    journal = journal_path(ledger)
    with contextlib.suppress(FileNotFoundError):
        journal.unlink()
    fsync_dir(folder)
    shutil.rmtree(_path(folder, record.get("stage", "")), ignore_errors=True) if record.get("stage") else None


def _debris(ledger: Path, names: Iterable[str]) -> list[Path]:
    """Staging folders and temporary files of this ledger's changes that never committed (`names`:
    the ledger's own files, whose temporary files are `.NAME.XXXX.tmp`)."""
    ledger = Path(ledger)
    prefixes = tuple(f".{name}." for name in names)
    try:
        entries = list(ledger.parent.iterdir())
    except OSError:
        return []
    return [e for e in entries if e.name.startswith(f".{ledger.name}{_STAGE_MARK}")
            or (e.name.startswith(prefixes) and e.name.endswith(".tmp"))]


def recover(ledger: Path, names: Iterable[str]) -> bool:
    """Complete a change a kill interrupted, and remove what a change that never committed left.
    The caller holds the ledger's lock. True when a journal was found and completed."""
    journal = journal_path(ledger)
    names = tuple(names)
    done = False
    try:
        text = journal.read_text("utf-8")
    except FileNotFoundError:
        text = None
    if text is not None:
        try:
            record = json.loads(text)
        except json.JSONDecodeError:
            record = None  # written by rename only, never torn: someone edited it
        if isinstance(record, dict):
            apply(ledger, record)
            done = True
        else:
            journal.unlink()
    for path in _debris(ledger, names):
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
    return done


def pending(ledger: Path, names: Iterable[str]) -> bool:
    """A change left half done (a journal), or debris of one that never committed, is there."""
    return journal_path(ledger).exists() or bool(_debris(ledger, names))
