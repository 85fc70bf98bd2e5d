"""Reading and writing the ledger CSV: atomic, under its lock; the run lock; committing a change."""

from __future__ import annotations

import contextlib
import csv
import fcntl
import io
import json
import logging
import os
import stat
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pandas as pd

from scan_pipeline.core.errors import LedgerError, LedgerLockedError, OutputError
from scan_pipeline.core.text import is_safe_text, ledger_path, ledger_text
from scan_pipeline.ledger import journal
from scan_pipeline.ledger.paths import file_names, sidecar_paths
from scan_pipeline.ledger.rows import utc_timestamp
from scan_pipeline.ledger.schema import (
    _FREE_TEXT,
    _READ_HINT,
    LEDGER_COLUMNS,
    _fast_valid,
    _header_problems,
    column_rules,
    problem_list,
    row_problems,
    validate_ledger_frame,
)

WRITE_HINT = ("check that the folder exists and is writable and that the disk is not full, "
               "or choose another ledger path")


_UTF8_BOM = b"\xef\xbb\xbf"


log = logging.getLogger(__name__)


def empty_ledger() -> pd.DataFrame:
    return pd.DataFrame([], columns=list(LEDGER_COLUMNS), dtype=str)


def frame_of(rows: Sequence[Sequence[str]]) -> pd.DataFrame:
    if not rows:
        return empty_ledger()
    return pd.DataFrame([list(r) for r in rows], columns=list(LEDGER_COLUMNS), dtype=str)


def _read_fast(raw: bytes) -> pd.DataFrame | None:
    """The frame of a canonical, valid ledger (what write_ledger writes), read by pandas' C parser.

    None when anything is off: the careful reader then says what. Exact because the frame must
    serialise back to the very same text.
    """
    if raw.startswith(_UTF8_BOM) or not raw.endswith(b"\n"):
        return None
    # Without quotes, CR or NUL every line splits at its commas alone, and the text is the one
    # write_ledger gives exactly when every line has the columns' number of commas (a line with
    # more fails the parser): counting them is cheaper than writing the frame out again.
    plain = not any(c in raw for c in (b'"', b"\r", b"\0"))
    try:
        text = None if plain else raw.decode("utf-8")
        source = io.BytesIO(raw) if plain else io.StringIO(text, newline="")
        df = pd.read_csv(source, dtype=str, keep_default_na=False, na_filter=False, engine="c",
                         skip_blank_lines=False, quoting=csv.QUOTE_MINIMAL, encoding="utf-8")
    except (UnicodeDecodeError, ValueError, pd.errors.ParserError, csv.Error):
        return None
    if list(df.columns) != list(LEDGER_COLUMNS):
        return None
    if not len(df):
        df = empty_ledger()
    if plain:
        lines = raw.count(b"\n")
        canonical = lines == len(df) + 1 and raw.count(b",") == lines * (len(LEDGER_COLUMNS) - 1)
    else:
        canonical = ledger_csv_text(df) == text
    if not canonical or not _fast_valid(df):
        return None
    return df.reset_index(drop=True)


def read_ledger(path: Path) -> pd.DataFrame:
    """The ledger as a frame of text; an empty frame when the file does not exist yet. A change a
    kill left half done is completed first (under the ledger's lock), so the frame tells one story."""
    path = Path(path)
    if not _holds(path) and journal.pending(path, file_names(path)):
        with ledger_lock(path):
            return read_ledger(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return empty_ledger()
    except OSError as exc:  # the path itself (a file where a folder should be, permissions): not its content
        raise OutputError(f"cannot read the ledger: {exc.strerror or exc}", file=str(path),
                          hint="check that the path is a readable file in a folder you can write to") from exc

    fast = _read_fast(raw)
    if fast is not None:
        return fast
    problems: list[str] = []
    if raw.startswith(_UTF8_BOM):
        # Spreadsheet programs add it; other tools would then see a column named '\ufeffsignature_id'.
        problems.append("line 1: the file starts with a byte order mark (BOM); save it as UTF-8 without BOM")
        raw = raw[len(_UTF8_BOM):]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        problems.append(f"line {line}: not valid UTF-8 (byte {exc.start}); the file was probably saved in "
                        "another encoding such as Windows-1252")
        raise LedgerError(problem_list("invalid ledger", problems), file=str(path), hint=_READ_HINT) from exc

    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        records = list(reader)
    except csv.Error as exc:
        problems.append(f"line {reader.line_num}: not readable as CSV ({exc})")
        raise LedgerError(problem_list("invalid ledger", problems), file=str(path), hint=_READ_HINT) from exc
    if not records:
        problems.append("the file is empty: the header line is missing")
        raise LedgerError(problem_list("invalid ledger", problems), file=str(path),
                          hint="delete the empty file to start a new ledger, or restore it from a backup")

    header, body = records[0], records[1:]
    header_problems = _header_problems(header)
    problems += header_problems
    neutralised = 0
    if not header_problems:  # otherwise every row would only repeat the header problem
        body, neutralised = _to_contract_2(body)
        labelled = []
        for i, record in enumerate(body, start=1):
            if len(record) != len(LEDGER_COLUMNS):
                problems.append(f"row {i} (line {i + 1}): has {len(record)} values, expected "
                                f"{len(LEDGER_COLUMNS)}")
                continue
            labelled.append((f"row {i} (line {i + 1})", dict(zip(LEDGER_COLUMNS, record, strict=True))))
        problems += row_problems(labelled)
    if problems:
        raise LedgerError(problem_list("invalid ledger", problems), file=str(path), hint=_READ_HINT)
    df = frame_of(body)
    if neutralised:
        df.attrs["neutralised"] = neutralised
        log.warning("%s: %d value(s) held a control character or started like a formula (a ledger of contract "
                    "1): read neutralised; the next write keeps them so", path, neutralised)
    return df


_FREE_COLUMNS = tuple(i for i, c in enumerate(LEDGER_COLUMNS) if c in _FREE_TEXT)


_SOURCE_COLUMN = LEDGER_COLUMNS.index("source_file")


def _to_contract_2(body: list[list[str]]) -> tuple[list[list[str]], int]:
    """Rows of a contract-1 ledger with their free-text values as contract 2 holds them, and how many
    changed: control characters escaped (source_file) or dropped, formula leads neutralised."""
    changed = 0
    for record in body:
        if len(record) != len(LEDGER_COLUMNS):
            continue
        for i in _FREE_COLUMNS:
            value = record[i]
            if not is_safe_text(value):
                record[i] = ledger_path(value) if i == _SOURCE_COLUMN else ledger_text(value)
                changed += record[i] != value
    return body, changed


def _umask() -> int:
    # Read without changing it where possible: os.umask() is process-wide and racy in threads.
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def ensure_dir(directory: Path) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create the folder: {exc.strerror or exc}", file=str(directory),
                          hint=WRITE_HINT) from exc


_fsync_dir = journal.fsync_dir


def _open_lock_file(path: Path) -> int:
    """A lock file's descriptor (created if need be; never deleted: deleting lock files races)."""
    ensure_dir(path.parent)
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
    except OSError as exc:
        raise OutputError(f"cannot create the lock file: {exc.strerror or exc}", file=str(path),
                          hint=WRITE_HINT) from exc


def atomic_write(path: Path, data: bytes, *, durable: bool = True) -> None:
    """Replace path with data so that readers see the old or the new file, never a partial one."""
    tmp: str | None = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            if durable:
                os.fsync(fh.fileno())
        try:
            mode = stat.S_IMODE(os.stat(path).st_mode)  # keep the permissions someone chose
        except FileNotFoundError:
            mode = 0o666 & ~_umask()  # mkstemp makes 0600; follow the umask like a normal open()
        os.chmod(tmp, mode)
        os.replace(tmp, path)
        tmp = None
    except OSError as exc:
        raise OutputError(f"cannot write: {exc.strerror or exc}", file=str(path), hint=WRITE_HINT) from exc
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
    if durable:
        _fsync_dir(path.parent)


def _csv_field(value: str) -> str:
    # QUOTE_MINIMAL, but a lone '\r' is quoted too: Python's csv writer leaves it bare when the line
    # terminator is '\n', and a reader would then split the row there.
    if any(c in value for c in ',"\n\r'):
        return '"' + value.replace('"', '""') + '"'
    return value


def _csv_column(values: list[str], free: bool) -> list[str]:
    if not free:  # a valid value of a pattern or enum column never needs quotes
        return values
    whole = "".join(values)  # one scan of the column in C; most columns need no quotes at all
    if not any(c in whole for c in ',"\n\r'):
        return values
    return [_csv_field(v) if (',' in v or '"' in v or "\n" in v or "\r" in v) else v for v in values]


def ledger_csv_text(df: pd.DataFrame) -> str:
    """The exact bytes (as text) write_ledger puts on disk for a valid frame."""
    rules = column_rules() or {}
    # a column whose values a pattern or a list fixes needs no quoting check, value by value
    columns = [_csv_column(df[c].tolist(), c in _FREE_TEXT or c not in rules
                           or (rules[c].pattern is None and rules[c].enum is None))
               for c in LEDGER_COLUMNS]
    header = ",".join(LEDGER_COLUMNS) + "\n"
    if not len(df):
        return header
    return header + "\n".join(map(",".join, zip(*columns))) + "\n"


def write_ledger(df: pd.DataFrame, path: Path) -> None:
    """Validate, then atomically replace the ledger. Does not lock: callers hold ledger_lock."""
    path = Path(path)
    problems = validate_ledger_frame(df)
    if problems:
        raise LedgerError(problem_list("refusing to write an invalid ledger", problems), file=str(path),
                          hint="fix the listed values; the ledger on disk was not changed")
    _write_valid(df, path)


def _write_valid(df: pd.DataFrame, path: Path) -> None:
    ensure_dir(path.parent)
    atomic_write(path, ledger_csv_text(df).encode("utf-8"))


_HELD: set[Path] = set()  # ledgers whose lock this process holds (ledger_lock is not re-entrant)


def _holds(path: Path) -> bool:
    return Path(os.path.abspath(path)) in _HELD


@contextlib.contextmanager
def ledger_lock(path: Path, timeout: float = 30.0) -> Iterator[None]:
    """Exclusive lock on L.lock for the whole read-modify-write of a ledger; once taken, a change a
    kill interrupted is completed first (journal.recover), so the holder sees one story.

    flock is released by the kernel when the process dies, so a crash never leaves a stale lock.
    Not re-entrant: a second ledger_lock on the same ledger in the same process waits for the first.
    """
    key = Path(os.path.abspath(path))
    lock_path = sidecar_paths(Path(path)).lock
    fd = _open_lock_file(lock_path)
    try:
        deadline = time.monotonic() + max(timeout, 0.0)
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise LedgerLockedError(
                        "another scan-pipeline run is writing this ledger", file=str(path),
                        hint=f"wait for it to finish and run again; if no other run is going on, look for a "
                             f"stuck process holding {lock_path} (e.g. `fuser {lock_path}`)") from None
                time.sleep(min(0.05, remaining))
        _HELD.add(key)
        try:
            journal.recover(Path(path), file_names(Path(path)))
            yield
        finally:
            _HELD.discard(key)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


@contextlib.contextmanager
def run_lock(ledger: Path, what: str, *, wait: bool = False) -> Iterator[None]:
    """One long writer per ledger (`process`, `merge`): held for the whole run, with who holds it.

    A second one is refused at once, naming the first (exit 6), or with `wait` waits for it. Short
    writers (review import, erase) only take `ledger_lock`, which the long one holds while it writes."""
    path = sidecar_paths(Path(ledger)).run
    fd = _open_lock_file(path)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _run_holder(path)
            if not wait:
                raise LedgerLockedError(
                    f"another run is writing this ledger ({holder})", file=str(ledger),
                    hint="wait for it to finish, or run again with --wait to wait for it; two runs on one "
                         "ledger would each read every page") from None
            log.warning("%s: waiting for the other run to finish (%s)", ledger, holder)
            fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "started_at": utc_timestamp(), "command": what}).encode(), 0)
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _run_holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text("utf-8") or "{}")
    except (OSError, ValueError):
        info = {}
    if not isinstance(info, dict) or "pid" not in info:
        return "its process id is not known yet"
    return f"{info.get('command', 'scan-pipeline')}, process {info['pid']}, started {info.get('started_at', '?')}"


def commit(change: journal.Change) -> None:
    """Make the change visible (journal.Change.commit), as an OutputError when the disk refuses."""
    try:
        ensure_dir(change.folder)
        change.commit()
    except OSError as exc:
        if not change.journaled:  # else the journal stands: the next command completes it
            change.abort()
        raise OutputError(f"cannot write: {exc.strerror or exc}", file=str(getattr(exc, "filename", None) or
                                                                            change.ledger), hint=WRITE_HINT) from exc


def stage_ledger(change: journal.Change, df: pd.DataFrame, path: Path) -> None:
    """The ledger's new rows, validated, for the change."""
    problems = validate_ledger_frame(df)
    if problems:
        raise LedgerError(problem_list("refusing to write an invalid ledger", problems), file=str(path),
                          hint="fix the listed values; the ledger on disk was not changed")
    change.write(path, ledger_csv_text(df).encode("utf-8"))
