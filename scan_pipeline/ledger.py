"""The ledger: one CSV line per signature row, and its sidecar files.

The CSV is the contract other tools rely on (see schemas/ledger.schema.json): UTF-8 without BOM,
comma-separated, a header row, every value text. It is the commit point of a run: crops and details
are written first, the ledger last, each file atomically, all under an exclusive lock.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import io
import json
import math
import os
import re
import stat
import tempfile
import time
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import pandas as pd
from jsonschema import Draft202012Validator

from .errors import LedgerError, OutputError
from .records import PageResult

LEDGER_COLUMNS: tuple[str, ...] = (
    "signature_id",
    "source_file",
    "page",
    "row_number",
    "name",
    "name_ocr",
    "name_confidence",
    "postal_code",
    "postal_code_ocr",
    "postal_confidence",
    "postal_valid",
    "commune",
    "signature",
    "status",
    "flags",
    "duplicate_of",
    "page_sha256",
    "processed_at",
    "reviewed_by",
    "reviewed_at",
)

# Columns that hold personal or free text: their values are never echoed in error messages.
_FREE_TEXT = frozenset({"source_file", "name", "name_ocr", "postal_code_ocr", "commune", "reviewed_by"})

# Short wording of what a column must look like, for error messages (the schema holds the rules).
_EXPECTED = {
    "signature_id": "16 lower-case hex digits, a dash and the row number (e.g. 3f2a9c0d11e4b5a7-07)",
    "page": "a page number from 1, without leading zeros",
    "row_number": "a whole number without leading zeros",
    "name_confidence": "a number from 0.000 to 1.000 with three decimals",
    "postal_confidence": "a number from 0.000 to 1.000 with three decimals",
    "postal_code": "five digits (e.g. 01000) or empty",
    "flags": "codes starting with name_, postal_, signature_ or row_ (a-z, 0-9, _), separated by ';'",
    "duplicate_of": "a signature_id or empty",
    "page_sha256": "64 lower-case hex digits",
    "processed_at": "UTC time like 2026-11-23T15:00:00Z",
    "reviewed_at": "ISO 8601 time like 2026-11-24T09:30:00Z, or empty",
}

_READ_HINT = ("the ledger was probably edited by hand or saved by a spreadsheet program; fix the listed "
              "cells (every value is text: keep leading zeros of postal codes, save as UTF-8 CSV without "
              "BOM, comma-separated) or restore the previous copy from a backup")
_BUG_HINT = ("this is a bug in scan-pipeline; please report it with the input file "
             "(the ledger was not changed)")
_WRITE_HINT = ("check that the folder exists and is writable and that the disk is not full, "
               "or choose another ledger path")

_UTF8_BOM = b"\xef\xbb\xbf"
_POSTAL_RE = re.compile(r"[0-9]{5}")
_DIGITS_RE = re.compile(r"[0-9]+")


# --- identities and paths -----------------------------------------------------------------------


def signature_id(page_sha256: str, row_number: int) -> str:
    """Stable id of a signature row: the same page and row always give the same id."""
    return f"{page_sha256[:16]}-{row_number:02d}"


@dataclass(frozen=True)
class SidecarPaths:
    crops: Path  # L.crops/ : per-row crop images for review
    details: Path  # L.details.jsonl : what does not fit a column, one object per signature_id
    lock: Path  # L.lock : flock target; never deleted, deleting lock files races
    audit: Path  # L.audit.jsonl : review history (written by the review tools)
    pages: Path  # L.pages.jsonl : one record per page processed: quality figures and issues, no names


def sidecar_paths(ledger: Path) -> SidecarPaths:
    ledger = Path(ledger)
    return SidecarPaths(
        crops=ledger.with_suffix(".crops"),
        details=ledger.with_suffix(".details.jsonl"),
        lock=ledger.with_suffix(".lock"),
        audit=ledger.with_suffix(".audit.jsonl"),
        pages=ledger.with_suffix(".pages.jsonl"),
    )


# --- schema and validation ----------------------------------------------------------------------


@lru_cache(maxsize=1)
def load_schema() -> dict[str, Any]:
    """The ledger row schema, shipped as package data."""
    text = resources.files("scan_pipeline").joinpath("schemas", "ledger.schema.json").read_text("utf-8")
    return json.loads(text)


@lru_cache(maxsize=1)
def _validator() -> Draft202012Validator:
    return Draft202012Validator(load_schema())


_SIMPLE_KEYWORDS = frozenset({"type", "pattern", "enum", "minLength", "title", "description", "format"})
_TOP_KEYWORDS = frozenset({"$schema", "$id", "title", "description", "type", "properties", "required",
                           "additionalProperties"})


@lru_cache(maxsize=1)
def _prescreen() -> Callable[[dict[str, Any]], bool] | None:
    """A fast yes/no 'the schema finds no error', derived from the schema itself.

    jsonschema costs ~0.3 ms a row, seconds for a large ledger read on every run; valid rows skip
    it and only failing rows go through iter_errors for the messages. None (always use jsonschema)
    when the schema uses a keyword this does not understand.
    """
    schema = load_schema()
    props: dict[str, dict[str, Any]] = schema.get("properties", {})
    if (set(schema) - _TOP_KEYWORDS or schema.get("type") != "object"
            or schema.get("additionalProperties") is not False
            or set(schema.get("required", ())) != set(props)):
        return None
    checks = []
    for name, prop in props.items():
        if set(prop) - _SIMPLE_KEYWORDS or prop.get("type") != "string":
            return None
        pattern = re.compile(prop["pattern"]) if "pattern" in prop else None  # jsonschema uses re.search too
        enum = frozenset(prop["enum"]) if "enum" in prop else None
        checks.append((name, pattern, enum, int(prop.get("minLength", 0))))
    keys = frozenset(props)

    def passes(row: dict[str, Any]) -> bool:
        if row.keys() != keys:
            return False
        for name, pattern, enum, min_length in checks:
            value = row[name]
            if (not isinstance(value, str) or len(value) < min_length
                    or (pattern is not None and pattern.search(value) is None)
                    or (enum is not None and value not in enum)):
                return False
        return True

    return passes


@lru_cache(maxsize=1)
def _pattern_columns() -> tuple[str, ...]:
    return tuple(n for n, p in load_schema()["properties"].items() if "pattern" in p)


def _header_problems(header: Sequence[str]) -> list[str]:
    header = [str(c) for c in header]
    if header == list(LEDGER_COLUMNS):
        return []
    problems = []
    missing = [c for c in LEDGER_COLUMNS if c not in header]
    extra = [c for c in header if c not in LEDGER_COLUMNS]
    repeated = sorted({c for c in header if header.count(c) > 1})
    if missing:
        problems.append(f"header (line 1): missing column(s): {', '.join(missing)}")
    if extra:
        problems.append(f"header (line 1): unexpected column(s): {', '.join(repr(c) for c in extra)}")
    if repeated:
        problems.append(f"header (line 1): repeated column(s): {', '.join(repeated)}")
    if not problems:
        problems.append("header (line 1): columns are out of order; expected: " + ",".join(LEDGER_COLUMNS))
    return problems


def _describe(error: Any, column: str) -> str:
    """One schema error in words, without echoing personal text."""
    value = error.instance
    kind = error.validator
    if kind == "type":
        if isinstance(value, float) and math.isnan(value):
            return "is missing (every cell must be text, empty text is allowed)"
        return f"must be text, found {type(value).__name__}"
    shown = "value" if column in _FREE_TEXT else repr(value)
    if kind == "minLength":
        return "must not be empty"
    if kind == "enum":
        return f"{shown} is not one of: {', '.join(error.validator_value)}"
    if kind == "pattern":
        return f"{shown} is not valid: expected {_EXPECTED.get(column, error.validator_value)}"
    if kind == "required":
        return "column is missing"
    if kind == "additionalProperties":
        return "unexpected column"
    return error.message if column not in _FREE_TEXT else f"invalid value ({kind})"


def _row_problems(rows: Iterable[tuple[str, dict[str, Any]]]) -> list[str]:
    """Schema errors for (label, row) pairs, then checks across rows that a schema cannot express."""
    validator = _validator()
    passes = _prescreen()
    problems: list[str] = []
    seen: dict[str, str] = {}
    kept: list[tuple[str, dict[str, Any]]] = []
    for label, row in rows:
        if passes is None or not passes(row):
            errors = list(validator.iter_errors(row))
            for error in sorted(errors, key=lambda e: LEDGER_COLUMNS.index(e.path[0]) if e.path else -1):
                column = str(error.path[0]) if error.path else "?"
                problems.append(f"{label}, column {column}: {_describe(error, column)}")
        for column in _pattern_columns():
            # Python's '$' also matches before a final newline, so '01000\n' would pass the pattern.
            value = row.get(column)
            if isinstance(value, str) and value.endswith("\n"):
                problems.append(f"{label}, column {column}: ends with a line break")
        kept.append((label, row))
        sid = row.get("signature_id")
        if isinstance(sid, str) and sid:
            if sid in seen:
                problems.append(f"{label}, column signature_id: {sid!r} repeats {seen[sid]}")
            else:
                seen[sid] = label
    for label, row in kept:
        sid, sha, number = row.get("signature_id"), row.get("page_sha256"), row.get("row_number")
        if (isinstance(sha, str) and re.fullmatch(r"[0-9a-f]{64}", sha) and isinstance(number, str)
                and _DIGITS_RE.fullmatch(number) and isinstance(sid, str)):
            expected = signature_id(sha, int(number))
            if sid != expected:
                problems.append(f"{label}, column signature_id: {sid!r} does not match page_sha256 and "
                                f"row_number (expected {expected!r})")
        dup = row.get("duplicate_of")
        if row.get("status") == "duplicate" and dup == "":
            problems.append(f"{label}, column duplicate_of: must name the earliest row when status is "
                            "duplicate")
        if isinstance(dup, str) and dup:
            if dup == sid:
                problems.append(f"{label}, column duplicate_of: refers to the row itself")
            elif dup not in seen:
                problems.append(f"{label}, column duplicate_of: {dup!r} is not a signature_id in the ledger")
    return problems


def _frame_rows(df: pd.DataFrame) -> Iterator[tuple[int, dict[str, Any]]]:
    values = [df[c].tolist() for c in LEDGER_COLUMNS]
    for i, row in enumerate(zip(*values, strict=True), start=1):
        yield i, dict(zip(LEDGER_COLUMNS, row, strict=True))


def validate_ledger_frame(df: pd.DataFrame) -> list[str]:
    """Every problem of a ledger frame, as 'row N (line N+1), column C: problem'; empty when valid.

    Row N is the N-th data row; line N+1 counts the header as line 1 (a value holding a newline
    spans several physical lines, so an editor may show a higher line number).
    """
    problems = _header_problems(list(df.columns))
    if problems:
        return problems  # per-row errors would only repeat the header problem on every row
    return _row_problems((f"row {i} (line {i + 1})", row) for i, row in _frame_rows(df))


def _problem_list(title: str, problems: Sequence[str]) -> str:
    plural = "s" if len(problems) != 1 else ""
    return f"{title} ({len(problems)} problem{plural}):\n  " + "\n  ".join(problems)


# --- reading and writing ------------------------------------------------------------------------


def empty_ledger() -> pd.DataFrame:
    return pd.DataFrame([], columns=list(LEDGER_COLUMNS), dtype=str)


def _frame(rows: Sequence[Sequence[str]]) -> pd.DataFrame:
    if not rows:
        return empty_ledger()
    return pd.DataFrame([list(r) for r in rows], columns=list(LEDGER_COLUMNS), dtype=str)


def read_ledger(path: Path) -> pd.DataFrame:
    """The ledger as a frame of text; an empty frame when the file does not exist yet."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return empty_ledger()
    except OSError as exc:
        raise LedgerError(f"cannot read the ledger: {exc.strerror or exc}", file=str(path),
                          hint="check that the path is a readable file") from exc

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
        raise LedgerError(_problem_list("invalid ledger", problems), file=str(path), hint=_READ_HINT) from exc

    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        records = list(reader)
    except csv.Error as exc:
        problems.append(f"line {reader.line_num}: not readable as CSV ({exc})")
        raise LedgerError(_problem_list("invalid ledger", problems), file=str(path), hint=_READ_HINT) from exc
    if not records:
        problems.append("the file is empty: the header line is missing")
        raise LedgerError(_problem_list("invalid ledger", problems), file=str(path),
                          hint="delete the empty file to start a new ledger, or restore it from a backup")

    header, body = records[0], records[1:]
    header_problems = _header_problems(header)
    problems += header_problems
    if not header_problems:  # otherwise every row would only repeat the header problem
        labelled = []
        for i, record in enumerate(body, start=1):
            if len(record) != len(LEDGER_COLUMNS):
                problems.append(f"row {i} (line {i + 1}): has {len(record)} values, expected "
                                f"{len(LEDGER_COLUMNS)}")
                continue
            labelled.append((f"row {i} (line {i + 1})", dict(zip(LEDGER_COLUMNS, record, strict=True))))
        problems += _row_problems(labelled)
    if problems:
        raise LedgerError(_problem_list("invalid ledger", problems), file=str(path), hint=_READ_HINT)
    return _frame(body)


def _umask() -> int:
    # Read without changing it where possible: os.umask() is process-wide and racy in threads.
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _ensure_dir(directory: Path) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create the folder: {exc.strerror or exc}", file=str(directory),
                          hint=_WRITE_HINT) from exc


def _fsync_dir(directory: Path) -> None:
    # Makes the rename itself durable; best effort, some file systems refuse fsync on directories.
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _atomic_write(path: Path, data: bytes, *, durable: bool = True) -> None:
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
        raise OutputError(f"cannot write: {exc.strerror or exc}", file=str(path), hint=_WRITE_HINT) from exc
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


def ledger_csv_text(df: pd.DataFrame) -> str:
    """The exact bytes (as text) write_ledger puts on disk for a valid frame."""
    lines = [",".join(LEDGER_COLUMNS)]
    for _, row in _frame_rows(df):
        lines.append(",".join(_csv_field(row[c]) for c in LEDGER_COLUMNS))
    return "\n".join(lines) + "\n"


def write_ledger(df: pd.DataFrame, path: Path) -> None:
    """Validate, then atomically replace the ledger. Does not lock: callers hold ledger_lock."""
    path = Path(path)
    problems = validate_ledger_frame(df)
    if problems:
        raise LedgerError(_problem_list("refusing to write an invalid ledger", problems), file=str(path),
                          hint="fix the listed values; the ledger on disk was not changed")
    _write_valid(df, path)


def _write_valid(df: pd.DataFrame, path: Path) -> None:
    _ensure_dir(path.parent)
    _atomic_write(path, ledger_csv_text(df).encode("utf-8"))


@contextlib.contextmanager
def ledger_lock(path: Path, timeout: float = 30.0) -> Iterator[None]:
    """Exclusive lock on L.lock for the whole read-modify-write of a ledger.

    flock is released by the kernel when the process dies, so a crash never leaves a stale lock.
    Not re-entrant: a second ledger_lock on the same ledger in the same process waits for the first.
    """
    lock_path = sidecar_paths(Path(path)).lock
    _ensure_dir(lock_path.parent)
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
    except OSError as exc:
        raise OutputError(f"cannot create the lock file: {exc.strerror or exc}", file=str(lock_path),
                          hint=_WRITE_HINT) from exc
    try:
        deadline = time.monotonic() + max(timeout, 0.0)
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise LedgerError(
                        "another scan-pipeline run is writing this ledger", file=str(path),
                        hint=f"wait for it to finish and run again; if no other run is going on, look for a "
                             f"stuck process holding {lock_path} (e.g. `fuser {lock_path}`)") from None
                time.sleep(min(0.05, remaining))
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


# --- from page results to rows ------------------------------------------------------------------


def utc_timestamp(value: str | datetime | None = None) -> str:
    """ISO 8601 UTC with seconds and 'Z', the only form processed_at takes (so text order = time order)."""
    if value is None:
        moment = datetime.now(UTC)
    elif isinstance(value, datetime):
        moment = value
    else:
        try:
            moment = datetime.fromisoformat(value.strip())
        except ValueError as exc:
            raise ValueError(f"not an ISO 8601 time: {value!r}") from exc
    if moment.tzinfo is None:
        raise ValueError("processed_at needs a time zone (e.g. a trailing Z for UTC)")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _confidence(value: float) -> str:
    value = float(value)
    if math.isnan(value):  # nothing trustworthy was read
        value = 0.0
    return f"{min(max(value, 0.0), 1.0):.3f}"


def rows_from_result(result: PageResult, processed_at: str) -> list[dict[str, str]]:
    """Ledger rows for the non-blank rows of one page, in page order."""
    stamp = utc_timestamp(processed_at)
    ref = result.ref
    out: list[dict[str, str]] = []
    for row in result.rows:
        if row.is_blank:
            continue
        flags = list(dict.fromkeys(row.flags))
        postal, postal_valid = row.postal.value, row.postal_valid
        if postal and not _POSTAL_RE.fullmatch(postal):
            # The column only holds five digits; keep the reading in postal_code_ocr and ask a person.
            flags.append("postal_not_five_digits")
            postal, postal_valid = "", False
        out.append({
            "signature_id": signature_id(ref.page_sha256, row.row_number),
            "source_file": str(ref.source_file),
            "page": str(ref.page),
            "row_number": str(row.row_number),
            "name": row.name.value,
            "name_ocr": row.name.raw,
            "name_confidence": _confidence(row.name.confidence),
            "postal_code": postal,
            "postal_code_ocr": row.postal.raw,
            "postal_confidence": _confidence(row.postal.confidence),
            "postal_valid": "true" if postal_valid else "false",
            "commune": row.commune,
            "signature": row.signature,
            "status": "review" if flags else "ok",
            "flags": ";".join(flags),
            "duplicate_of": "",
            "page_sha256": ref.page_sha256,
            "processed_at": stamp,
            "reviewed_by": "",
            "reviewed_at": "",
        })
    return out


# --- deduplication ------------------------------------------------------------------------------


def normalise_name(name: str) -> str:
    """Comparison key of a name: no accents, upper case, letters only, words sorted.

    So 'DUPONT Marie', 'Marie Dupont' and 'marie  dupont-' give the same key.
    """
    text = unicodedata.normalize("NFKD", name)
    text = "".join(c for c in text if not unicodedata.combining(c)).upper()
    text = text.replace("Œ", "OE").replace("Æ", "AE")  # not decomposed by NFKD
    text = "".join(c if c.isalpha() else " " for c in text)
    return " ".join(sorted(text.split()))


def _order_key(processed_at: str, source_file: str, page: str, row_number: str) -> tuple[str, str, int, int]:
    """'Earliest' order: processed_at, then source_file, page, row_number (numbers as integers)."""
    return processed_at, source_file, int(page), int(row_number)


def _dedup_groups(df: pd.DataFrame) -> list[list[int]]:
    """Positions of rows of the same signer, earliest first; only groups of two or more."""
    groups: dict[tuple[str, str], list[int]] = {}
    cols = {c: df[c].tolist() for c in ("status", "postal_code", "name")}
    for i, (status, postal, name) in enumerate(zip(cols["status"], cols["postal_code"], cols["name"],
                                                   strict=True)):
        if status == "rejected" or not postal or not name:
            continue
        key = normalise_name(name)
        if key:  # a name of only punctuation says nothing about the signer
            groups.setdefault((postal, key), []).append(i)
    keys = list(zip(df["processed_at"], df["source_file"], df["page"], df["row_number"], strict=True))
    return [sorted(m, key=lambda i: _order_key(*keys[i])) for m in groups.values() if len(m) > 1]


def deduplicate(df: pd.DataFrame) -> pd.DataFrame:
    """Mark later rows of the same signer (same postal code and name key) as duplicates of the earliest.

    Recomputed from scratch each time, so it is idempotent and a row whose group changed gets its
    status back. Rows a person handled (corrected, rejected) are left as they are.
    """
    out = df.copy()
    if out.empty:
        return out
    status = out["status"].tolist()
    dup_of = out["duplicate_of"].tolist()
    flags = out["flags"].tolist()
    ids = out["signature_id"].tolist()
    new_status, new_dup = list(status), list(dup_of)
    for i, old in enumerate(status):
        if old not in ("corrected", "rejected"):
            new_dup[i] = ""
            if old == "duplicate":
                new_status[i] = "review" if flags[i] else "ok"
    for members in _dedup_groups(out):
        earliest = ids[members[0]]
        for i in members[1:]:
            if status[i] != "corrected":
                new_status[i], new_dup[i] = "duplicate", earliest
    out["status"] = pd.Series(new_status, index=out.index, dtype=str)
    out["duplicate_of"] = pd.Series(new_dup, index=out.index, dtype=str)
    return out


# --- sidecars -----------------------------------------------------------------------------------


def _crop_name(row_number: int, column: str) -> str:
    if not column or column in (".", "..") or any(c in column for c in "/\\\0"):
        raise OutputError(f"cannot name a crop file after the column {column!r}",
                          hint="use template column names without slashes")
    return f"{row_number:02d}-{column}.png"


def write_crops(ledger: Path, result: PageResult, *, prune: bool = False) -> list[Path]:
    """Write each non-blank row's crops to L.crops/<page_sha256[:16]>/<row:02d>-<column>.png.

    prune removes other files of that page folder (crops of rows that are gone after a reprocess).
    """
    folder = sidecar_paths(Path(ledger)).crops / result.ref.page_sha256[:16]
    written: list[Path] = []
    for row in result.rows:
        if row.is_blank:
            continue
        for column, png in row.crops_png:
            target = folder / _crop_name(row.row_number, column)
            if not written:
                _ensure_dir(folder)
            _atomic_write(target, bytes(png), durable=False)  # crops can be redone; skip the fsync cost
            written.append(target)
    if prune and folder.is_dir():
        keep = set(written)
        for old in folder.iterdir():
            if old.is_file() and old not in keep and old.suffix == ".png":
                with contextlib.suppress(OSError):
                    old.unlink()
    return written


def _read_details(path: Path) -> dict[str, dict[str, Any]]:
    try:
        text = path.read_text("utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        raise LedgerError(f"cannot read the details file: {exc}", file=str(path),
                          hint="restore it from a backup or move it away (it only holds review extras)",
                          ) from exc
    details: dict[str, dict[str, Any]] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise LedgerError(f"line {number}: not valid JSON ({exc.msg})", file=str(path),
                              hint="fix or remove that line; each line is one JSON object") from exc
        if not isinstance(obj, dict) or not isinstance(obj.get("signature_id"), str):
            raise LedgerError(f"line {number}: expected a JSON object with a signature_id", file=str(path),
                              hint="fix or remove that line; each line is one JSON object")
        details[obj["signature_id"]] = obj  # the last line for an id wins
    return details


def _details_text(details: Iterable[dict[str, Any]]) -> str:
    return "".join(json.dumps(obj, ensure_ascii=False) + "\n" for obj in details)


# --- appending a batch --------------------------------------------------------------------------


@dataclass
class AppendSummary:
    rows_added: int = 0
    pages_added: int = 0  # pages that added at least one row
    pages_skipped: int = 0  # already in the ledger (by page_sha256) or twice in this batch
    duplicates_marked: int = 0  # rows that became (or now point to another) duplicate in this run
    rows_total: int = 0


def _same_rows(a: pd.DataFrame, b: pd.DataFrame) -> bool:
    return len(a) == len(b) and [r for _, r in _frame_rows(a)] == [r for _, r in _frame_rows(b)]


def append_results(ledger: Path, results: Iterable[PageResult], *, processed_at: str | None = None,
                   reprocess: bool = False, lock_timeout: float = 30.0) -> AppendSummary:
    """Add the pages of a batch to the ledger (crops, details, then the ledger itself), under the lock.

    A page already in the ledger (same page_sha256) is skipped, or with reprocess its old rows are
    replaced (a failed page, see PageResult.failed, replaces nothing). Nothing is written when a new
    row would make the ledger invalid.
    """
    ledger = Path(ledger)
    paths = sidecar_paths(ledger)
    stamp = utc_timestamp(processed_at)
    summary = AppendSummary()
    with ledger_lock(ledger, timeout=lock_timeout):
        before = read_ledger(ledger)
        present = set(before["page_sha256"].tolist())
        seen: set[str] = set()
        replaced: set[str] = set()
        accepted: list[PageResult] = []
        new_rows: list[dict[str, str]] = []
        for result in results:
            sha = result.ref.page_sha256
            if sha in seen or (sha in present and not reprocess):
                summary.pages_skipped += 1
                continue
            if result.failed:
                continue  # a page that could not be read this time never wipes what an earlier run found
            seen.add(sha)
            if sha in present:
                replaced.add(sha)
            rows = rows_from_result(result, stamp)
            problems = _row_problems((f"sheet row {r['row_number']}", r) for r in rows)
            if problems:
                raise LedgerError(_problem_list("cannot add this page to the ledger", problems),
                                  file=result.ref.source_file, page=result.ref.page, hint=_BUG_HINT)
            accepted.append(result)
            new_rows += rows
            summary.pages_added += 1 if rows else 0
        summary.rows_added = len(new_rows)

        kept = before[~before["page_sha256"].isin(replaced)]
        combined = pd.concat([kept, _frame([[r[c] for c in LEDGER_COLUMNS] for r in new_rows])],
                             ignore_index=True) if new_rows else kept.reset_index(drop=True)
        after = deduplicate(combined)
        problems = validate_ledger_frame(after)
        if problems:
            raise LedgerError(_problem_list("refusing to write an invalid ledger", problems),
                              file=str(ledger), hint=_BUG_HINT)
        old_state = list(zip(combined["status"], combined["duplicate_of"], strict=True))
        new_state = list(zip(after["status"], after["duplicate_of"], strict=True))
        summary.duplicates_marked = sum(1 for o, n in zip(old_state, new_state, strict=True)
                                        if n[0] == "duplicate" and o != n)
        summary.rows_total = len(after)

        # Crops first, details next, ledger last: a row in the ledger always has its sidecars.
        crop_paths: dict[str, dict[str, str]] = {}
        for result in accepted:
            write_crops(ledger, result, prune=result.ref.page_sha256 in replaced)
            for row in result.rows:
                if not row.is_blank:
                    crop_paths[signature_id(result.ref.page_sha256, row.row_number)] = {
                        column: f"{paths.crops.name}/{result.ref.page_sha256[:16]}/"
                                f"{_crop_name(row.row_number, column)}"
                        for column, _ in row.crops_png}

        ids = after["signature_id"].tolist()
        candidates: dict[str, list[str]] = {}
        for members in _dedup_groups(after):
            for i in members:
                candidates[ids[i]] = [ids[j] for j in members if j != i]
        old_details = _read_details(paths.details)
        details = {sid: old_details[sid] for sid in ids if sid in old_details}  # drops rows gone
        for result in accepted:
            for row in result.rows:
                if row.is_blank:
                    continue
                sid = signature_id(result.ref.page_sha256, row.row_number)
                details[sid] = {
                    "signature_id": sid,
                    "name_alternatives": list(row.name.alternatives),
                    "postal_alternatives": list(row.postal.alternatives),
                    "name_band": row.name.band,
                    "postal_band": row.postal.band,
                    "duplicate_candidates": candidates.get(sid, []),
                    "crops": crop_paths.get(sid, {}),
                    # where each cell is in the source page image (pixels), for review and scoring
                    "cells": {column: [b.x0, b.y0, b.x1, b.y1] for column, b in row.boxes},
                }
        ordered = [details[sid] for sid in ids if sid in details]
        if ordered != list(old_details.values()):
            _atomic_write(paths.details, _details_text(ordered).encode("utf-8"))

        if not ledger.exists() or not _same_rows(before, after):
            _write_valid(after, ledger)  # validated above
    return summary


def append_page_records(ledger: Path, records: Sequence[dict[str, Any]]) -> None:
    """Append the run's per-page records (quality figures, issues; never names) to L.pages.jsonl."""
    if not records:
        return
    path = sidecar_paths(ledger).pages
    _ensure_dir(path.parent)
    text = "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in records)
    try:
        with path.open("a", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}",
                          hint="check that the ledger's folder is writable") from exc
