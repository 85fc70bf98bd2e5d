"""The ledger: one CSV line per signature row, and its sidecar files.

The CSV is the contract other tools rely on (see schemas/ledger.schema.json): UTF-8 without BOM,
comma-separated, a header row, every value text. Every command changes the ledger and its sidecars
(crops, details, audit, pages and outputs logs) in one change under the ledger's lock, all or
nothing (journal.py); `process` and `merge` also hold the run lock, so one of them writes a ledger.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import io
import json
import logging
import math
import os
import re
import stat
import tempfile
import time
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from jsonschema import Draft202012Validator
from rapidfuzz import fuzz

from . import dedup, journal
from .config import DedupConfig
from .errors import LedgerError, LedgerLockedError, MissingDependencyError, OutputError, PipelineError
from .records import PageResult
from .text import is_safe_text, ledger_path, ledger_text

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
    **{c: "text without control characters, not starting with a space or = + - @" for c in _FREE_TEXT},
}

_READ_HINT = ("the ledger was probably edited by hand or saved by a spreadsheet program; fix the listed "
              "cells (every value is text: keep leading zeros of postal codes, save as UTF-8 CSV without "
              "BOM, comma-separated) or restore the previous copy from a backup")
_BUG_HINT = ("this is a bug in scan-pipeline; please report it with the input file "
             "(the ledger was not changed)")
_WRITE_HINT = ("check that the folder exists and is writable and that the disk is not full, "
               "or choose another ledger path")

_UTF8_BOM = b"\xef\xbb\xbf"
log = logging.getLogger(__name__)
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
    journal: Path  # L.journal.json : a change being committed (journal.py); gone once it is done
    run: Path  # L.run.lock : held by the one `process` or `merge` writing this ledger, with who it is
    outputs: Path  # L.outputs.jsonl : the other files the tool wrote for this ledger (erasure reaches them)


def sidecar_paths(ledger: Path) -> SidecarPaths:
    ledger = Path(ledger)
    return SidecarPaths(
        crops=ledger.with_suffix(".crops"),
        details=ledger.with_suffix(".details.jsonl"),
        lock=ledger.with_suffix(".lock"),
        audit=ledger.with_suffix(".audit.jsonl"),
        pages=ledger.with_suffix(".pages.jsonl"),
        journal=journal.journal_path(ledger),
        run=ledger.with_suffix(".run.lock"),
        outputs=ledger.with_suffix(".outputs.jsonl"),
    )


def _file_names(ledger: Path) -> tuple[str, ...]:
    """The names of a ledger's own files (their temporary files are named after them)."""
    paths = sidecar_paths(ledger)
    return (Path(ledger).name, paths.details.name, paths.audit.name, paths.pages.name, paths.journal.name,
            paths.outputs.name)


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


def _values_check(prop: dict[str, Any]) -> Callable[[list[str]], bool]:
    """A check of many text values at once (the schema's rules for one column), looping in C."""
    pattern = re.compile(prop["pattern"]) if "pattern" in prop else None
    enum = frozenset(prop["enum"]) if "enum" in prop else None
    min_length = int(prop.get("minLength", 0))

    def ok(values: list[str]) -> bool:
        if not values:
            return True
        if min_length and min(map(len, values)) < min_length:
            return False
        if enum is not None and not enum.issuperset(values):
            return False
        if pattern is not None:
            if None in map(pattern.search, values):
                return False
            if "\n\0" in "\0".join(values) + "\0":  # '$' also matches before a final newline
                return False
        return True

    return ok


@lru_cache(maxsize=1)
def _column_checks() -> dict[str, Callable[[list[str]], bool] | None] | None:
    """Per column, a check of its distinct values; None for a column whose only rule is 'text'."""
    if _prescreen() is None:  # the schema uses keywords the fast path does not know
        return None
    return {name: _values_check(prop) if {"pattern", "enum", "minLength"} & set(prop) else None
            for name, prop in load_schema()["properties"].items()}


# signature_id is page_sha256[:16], a dash and row_number on at least two digits: when those two
# columns pass these patterns and every id is the one they give, the id passes its pattern too.
SIGNATURE_ID_PATTERN = "[0-9a-f]{16}-[0-9]{2,}"  # what signature_id gives (also in schemas/ledger.schema.json)
_ID_PARTS = {"signature_id": f"^{SIGNATURE_ID_PATTERN}$", "page_sha256": "^[0-9a-f]{64}$",
             "row_number": "^(0|[1-9][0-9]*)$"}


@lru_cache(maxsize=1)
def _id_follows_from_parts() -> bool:
    props = load_schema()["properties"]
    return all(props.get(c, {}).get("pattern") == p and not {"enum", "minLength"} & set(props[c])
               for c, p in _ID_PARTS.items())


def _expected_ids(sha: np.ndarray, number: np.ndarray) -> np.ndarray:
    """signature_id(sha, int(number)) of every row, computed once per distinct page and row number."""
    sha_code, shas = pd.factorize(sha)
    number_code, numbers = pd.factorize(number)
    heads = np.array([h[:16] + "-" for h in shas.tolist()], dtype=object)
    tails = np.array([f"{int(r):02d}" for r in numbers.tolist()], dtype=object)
    return heads[sha_code] + tails[number_code]


def _fast_valid(df: pd.DataFrame) -> bool:
    """True when the frame certainly has no problem; False means: ask _row_problems for the list.

    Column-wise (each distinct value checked once, 'every value is text' checked by pandas in C),
    so a million-row ledger takes about a second rather than minutes; it checks exactly what
    _row_problems checks.
    """
    checks = _column_checks()
    if checks is None or list(df.columns) != list(LEDGER_COLUMNS):
        return False
    if not len(df):
        return True
    arrays = {c: df[c].to_numpy(dtype=object) for c in LEDGER_COLUMNS}
    for name, check in checks.items():
        if pd.api.types.infer_dtype(arrays[name], skipna=False) != "string":
            return False  # a value that is not text (a missing cell reads as NaN)
        if check is None or (name == "signature_id" and _id_follows_from_parts()):
            continue  # the id is compared with page_sha256 and row_number below
        if not check(pd.unique(arrays[name]).tolist()):
            return False
    ids = arrays["signature_id"]
    if pd.Series(ids).duplicated().any():
        return False
    if not (ids == _expected_ids(arrays["page_sha256"], arrays["row_number"])).all():
        return False
    dup = arrays["duplicate_of"]
    if ((arrays["status"] == "duplicate") & (dup == "")).any():
        return False
    named = dup != ""
    if named.any():
        if (dup[named] == ids[named]).any() or not pd.Series(dup[named]).isin(pd.Series(ids)).all():
            return False
    return True


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
    if _fast_valid(df):
        return []
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
    if not _holds(path) and journal.pending(path, _file_names(path)):
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
        problems += _row_problems(labelled)
    if problems:
        raise LedgerError(_problem_list("invalid ledger", problems), file=str(path), hint=_READ_HINT)
    df = _frame(body)
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


def _ensure_dir(directory: Path) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create the folder: {exc.strerror or exc}", file=str(directory),
                          hint=_WRITE_HINT) from exc


_fsync_dir = journal.fsync_dir


def _open_lock_file(path: Path) -> int:
    """A lock file's descriptor (created if need be; never deleted: deleting lock files races)."""
    _ensure_dir(path.parent)
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
    except OSError as exc:
        raise OutputError(f"cannot create the lock file: {exc.strerror or exc}", file=str(path),
                          hint=_WRITE_HINT) from exc


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


def _csv_column(values: list[str], free: bool) -> list[str]:
    if not free:  # a valid value of a pattern or enum column never needs quotes
        return values
    whole = "".join(values)  # one scan of the column in C; most columns need no quotes at all
    if not any(c in whole for c in ',"\n\r'):
        return values
    return [_csv_field(v) if (',' in v or '"' in v or "\n" in v or "\r" in v) else v for v in values]


def ledger_csv_text(df: pd.DataFrame) -> str:
    """The exact bytes (as text) write_ledger puts on disk for a valid frame."""
    checks = _column_checks() or {}
    columns = [_csv_column(df[c].tolist(), c in _FREE_TEXT or c not in checks
                           or not ({"pattern", "enum"} & set(load_schema()["properties"][c])))
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
        raise LedgerError(_problem_list("refusing to write an invalid ledger", problems), file=str(path),
                          hint="fix the listed values; the ledger on disk was not changed")
    _write_valid(df, path)


def _write_valid(df: pd.DataFrame, path: Path) -> None:
    _ensure_dir(path.parent)
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
            journal.recover(Path(path), _file_names(Path(path)))
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
            "source_file": ledger_path(str(ref.source_file)),
            "page": str(ref.page),
            "row_number": str(row.row_number),
            "name": ledger_text(row.name.value),
            "name_ocr": ledger_text(row.name.raw),
            "name_confidence": _confidence(row.name.confidence),
            "postal_code": postal,
            "postal_code_ocr": ledger_text(row.postal.raw),
            "postal_confidence": _confidence(row.postal.confidence),
            "postal_valid": "true" if postal_valid else "false",
            "commune": ledger_text(row.commune),
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

    So 'DUPONT Marie', 'Marie Dupont' and 'marie  dupont-' give the same key. (The deduplication
    itself compares `dedup.name_tokens`, which also folds OCR confusions.)
    """
    text = unicodedata.normalize("NFKD", name)
    text = "".join(c for c in text if not unicodedata.combining(c)).upper()
    text = text.replace("Œ", "OE").replace("Æ", "AE")  # not decomposed by NFKD
    text = "".join(c if c.isalpha() else " " for c in text)
    return " ".join(sorted(text.split()))


def deduplicate(df: pd.DataFrame, cfg: DedupConfig | None = None) -> pd.DataFrame:
    """The ledger with every later row of a signer marked duplicate of the earliest (see dedup.py)."""
    return dedup.deduplicate(df, cfg).frame


# --- people's decisions -------------------------------------------------------------------------

DECIDED_STATUSES = ("ok", "corrected", "duplicate", "rejected")
REREAD_DIFFERS_FLAG = "row_reread_differs"
REREAD_MISSING_FLAG = "row_reread_missing"
# what a person's decision holds: it goes with the row when its page is read again or merged
DECISION_COLUMNS = ("name", "postal_code", "postal_valid", "commune", "signature", "status", "flags",
                    "duplicate_of", "reviewed_by", "reviewed_at")
_DECIDED_VALUES = ("name", "postal_code", "signature")


def decided(df: pd.DataFrame) -> np.ndarray:
    """Rows a person decided on: reviewed, with a final status."""
    return ((df["reviewed_at"].to_numpy(dtype=object) != "")
            & np.isin(df["status"].to_numpy(dtype=object), DECIDED_STATUSES))


@dataclass
class _Carry:
    kept: int = 0
    differ: int = 0
    unmatched: int = 0
    statuses: dict[str, str] = field(default_factory=dict)


def _add_flag(flags: str, flag: str) -> str:
    codes = [f for f in flags.split(";") if f]
    return ";".join(codes if flag in codes else [*codes, flag])


def _differs(machine: dict[str, str], person: dict[str, Any], seen: dict[str, Any]) -> bool:
    """The machine now reads a value the person neither gave nor saw when deciding."""
    for key in _DECIDED_VALUES:
        new, mine, shown = str(machine[key]), str(person[key]), str(seen.get(key, person[key]))
        if key == "name":
            new, mine, shown = normalise_name(new), normalise_name(mine), normalise_name(shown)
        if new not in (mine, shown):
            return True
    return False


def carry_decisions(old: pd.DataFrame, new_rows: list[dict[str, str]], details: dict[str, dict[str, Any]]
                    ) -> tuple[list[dict[str, str]], pd.DataFrame, _Carry]:
    """The rows of pages read again, each with the decision a person made on it before, if any.

    The person's values and status stay (`DECISION_COLUMNS`); the new reading brings the machine's
    columns (readings as read, confidences, processed_at, where the file is now). Where it reads a
    value the person neither gave nor saw (`details[...]["decision"]["read"]`, written by review
    import), the row is flagged row_reread_differs. A decided row not found again is kept as it
    was, flagged row_reread_missing: a person saw writing there. Returns the rows, the decided old
    rows kept, and the counts.
    """
    carry = _Carry()
    if old.empty:
        return new_rows, old, carry
    mine = old[decided(old)]
    people = {r["signature_id"]: r for r in mine.to_dict("records")}
    out = []
    for row in new_rows:
        person = people.pop(row["signature_id"], None)
        if person is None:
            out.append(row)
            continue
        merged = {**row, **{c: person[c] for c in DECISION_COLUMNS}}
        seen = (details.get(row["signature_id"], {}).get("decision") or {}).get("read") or {}
        if person["status"] != "rejected" and _differs(row, person, seen):
            merged["flags"] = _add_flag(merged["flags"], REREAD_DIFFERS_FLAG)
            carry.differ += 1
        carry.kept += 1
        carry.statuses[row["signature_id"]] = person["status"]
        out.append(merged)
    left = mine[mine["signature_id"].isin(list(people))].copy()
    if len(left):
        left["flags"] = [_add_flag(f, REREAD_MISSING_FLAG) for f in left["flags"].tolist()]
        carry.unmatched = len(left)
        carry.statuses.update(zip(left["signature_id"].tolist(), left["status"].tolist(), strict=True))
    return out, left.reset_index(drop=True), carry


def _without_dangling_duplicates(df: pd.DataFrame) -> pd.DataFrame:
    """A row a person marked duplicate of a row that is no longer there goes back to review."""
    dup = df["duplicate_of"].to_numpy(dtype=object)
    gone = (dup != "") & ~pd.Series(dup).isin(df["signature_id"]).to_numpy()
    if not gone.any():
        return df
    out = df.copy()
    status, flags = out["status"].to_numpy(dtype=object).copy(), out["flags"].to_numpy(dtype=object).copy()
    for i in np.flatnonzero(gone).tolist():
        status[i] = "review"
        flags[i] = _add_flag(flags[i], dedup.POSSIBLE_FLAG)
    dup = np.where(gone, "", dup)
    out["status"], out["flags"], out["duplicate_of"] = (pd.Series(v, index=out.index, dtype=str)
                                                        for v in (status, flags, dup))
    return out


def _keep_decided_status(df: pd.DataFrame, statuses: dict[str, str]) -> pd.DataFrame:
    """A person's `ok` kept through deduplication when only the re-read flags are new: the flag says
    the machine reads otherwise now; the decision is still the person's."""
    if not statuses:
        return df
    status = df["status"].to_numpy(dtype=object).copy()
    flags = df["flags"].to_numpy(dtype=object)
    info = {REREAD_DIFFERS_FLAG, REREAD_MISSING_FLAG}
    changed = False
    for i, sid in enumerate(df["signature_id"].tolist()):
        wanted = statuses.get(sid)
        if wanted == "ok" and status[i] == "review" and set(filter(None, flags[i].split(";"))) <= info:
            status[i], changed = "ok", True
    if changed:
        df = df.copy()
        df["status"] = pd.Series(status, index=df.index, dtype=str)
    return df


# --- sidecars -----------------------------------------------------------------------------------


def _crop_name(row_number: int, column: str) -> str:
    if not column or column in (".", "..") or any(c in column for c in "/\\\0"):
        raise OutputError(f"cannot name a crop file after the column {column!r}",
                          hint="use template column names without slashes")
    return f"{row_number:02d}-{column}.png"


def _stage_crops(change: journal.Change, ledger: Path, result: PageResult, *, prune: bool,
                 keep_rows: set[int], erased: set[tuple[str, int]]) -> dict[str, dict[str, str]]:
    """Stage each written row's crops as L.crops/<page_sha256[:16]>/<row:02d>-<column>.png; the
    relative paths, by signature_id. An erased row's crops are never written. prune: the page's
    other crops go (rows gone after a reprocess), but those of `keep_rows` (still in the ledger)."""
    sha = result.ref.page_sha256
    folder = sidecar_paths(Path(ledger)).crops / sha[:16]
    written: set[Path] = set()
    paths: dict[str, dict[str, str]] = {}
    for row in result.rows:
        if row.is_blank or (sha, row.row_number) in erased:
            continue
        listed = {}
        for column, png in row.crops_png:
            target = folder / _crop_name(row.row_number, column)
            change.write(target, bytes(png), durable=False)  # fsynced with the stage folder's rename... or redone
            written.add(target)
            listed[column] = f"{folder.parent.name}/{sha[:16]}/{target.name}"
        paths[signature_id(sha, row.row_number)] = listed
    if prune and folder.is_dir():
        kept = tuple(f"{n:02d}-" for n in keep_rows)
        for old in folder.iterdir():
            if old.suffix == ".png" and old not in written and not (kept and old.name.startswith(kept)):
                change.delete(old)
    return paths


def read_details(path: Path) -> dict[str, dict[str, Any]]:
    return _read_details_lines(path)[0]


_JSON_SCAN = json.JSONDecoder().scan_once  # what json.loads runs, without its per-call wrapping


def _json_line(line: str) -> Any:
    """The JSON value a line holds, when it starts the line and only JSON whitespace follows; else None."""
    try:
        obj, end = _JSON_SCAN(line, 0)
    except (StopIteration, json.JSONDecodeError):
        return None
    return obj if end == len(line) or not line[end:].strip(" \t\r") else None


def _read_details_lines(path: Path) -> tuple[dict[str, dict[str, Any]], dict[str, tuple[dict[str, Any], str]]]:
    """The details by signature_id, and the line each object was read from (see details_text)."""
    try:
        text = path.read_text("utf-8")
    except FileNotFoundError:
        return {}, {}
    except (OSError, UnicodeDecodeError) as exc:
        raise LedgerError(f"cannot read the details file: {exc}", file=str(path),
                          hint="restore it from a backup or move it away (it only holds review extras)",
                          ) from exc
    details: dict[str, dict[str, Any]] = {}
    lines: dict[str, tuple[dict[str, Any], str]] = {}
    # split at '\n' only: JSON escapes it in strings, but not U+2028 and the like, where splitlines cuts
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        obj = _json_line(line)
        if obj is None:  # not one value alone on its line (or null): json.loads says what is wrong
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise LedgerError(f"line {number}: not valid JSON ({exc.msg})", file=str(path),
                                  hint="fix or remove that line; each line is one JSON object") from exc
        if not isinstance(obj, dict) or not isinstance(obj.get("signature_id"), str):
            raise LedgerError(f"line {number}: expected a JSON object with a signature_id", file=str(path),
                              hint="fix or remove that line; each line is one JSON object")
        details[obj["signature_id"]] = obj  # the last line for an id wins
        lines[obj["signature_id"]] = (obj, line.rstrip("\r"))
    return details, lines


# json.dumps(obj, ensure_ascii=False) builds an encoder on every call; one encoder serves them all.
_JSON_LINE = json.JSONEncoder(ensure_ascii=False).encode


def details_text(details: Iterable[dict[str, Any]],
                 read_from: dict[str, tuple[dict[str, Any], str]] | None = None) -> str:
    """One JSON object a line. read_from (from _read_details_lines): an object still the very one read
    keeps its line as it was (the same JSON), so a large ledger's details are not all encoded again."""
    if not read_from:
        return "".join(_JSON_LINE(obj) + "\n" for obj in details)
    out = []
    for obj in details:
        known = read_from.get(obj.get("signature_id"))
        out.append((known[1] if known is not None and known[0] is obj else _JSON_LINE(obj)) + "\n")
    return "".join(out)


# --- appending a batch --------------------------------------------------------------------------


@dataclass
class AppendSummary:
    decisions_kept: int = 0  # rows read again (reprocess) that kept a person's decision
    decisions_differ: int = 0  # ... whose new reading differs from the person's values (flag row_reread_differs)
    decisions_unmatched: int = 0  # ... that were not found again: kept as they were (flag row_reread_missing)
    rows_added: int = 0
    pages_added: int = 0  # pages that added at least one row
    pages_skipped: int = 0  # already in the ledger (by page_sha256) or twice in this batch
    duplicates_marked: int = 0  # rows that became (or now point to another) duplicate in this run
    rows_total: int = 0
    rows_erased_skipped: int = 0  # rows of this batch left out: erased before (see erase_rows)


def _same_rows(a: pd.DataFrame, b: pd.DataFrame) -> bool:
    return len(a) == len(b) and all(
        np.array_equal(a[c].to_numpy(dtype=object), b[c].to_numpy(dtype=object)) for c in LEDGER_COLUMNS)


def append_results(ledger: Path, results: Iterable[PageResult], *, processed_at: str | None = None,
                   reprocess: bool = False, lock_timeout: float = 30.0,
                   dedup_config: DedupConfig | None = None,
                   page_records: Sequence[dict[str, Any]] = (),
                   outputs: Sequence[dict[str, Any]] = ()) -> AppendSummary:
    """Add the pages of a batch to the ledger, under the lock, in one change (journal.py): crops,
    details, the pages log (`page_records`, one per page processed, never a name), the list of
    outputs (`outputs`: output_record of the overlays written) and the ledger.

    A page already in the ledger (same page_sha256) is skipped, or with reprocess its old rows are
    replaced (a failed page, see PageResult.failed, replaces nothing). Nothing is written when a new
    row would make the ledger invalid. An erased row's images are never written again.
    """
    ledger = Path(ledger)
    paths = sidecar_paths(ledger)
    stamp = utc_timestamp(processed_at)
    summary = AppendSummary()
    with ledger_lock(ledger, timeout=lock_timeout), dedup.gc_paused():
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
        erased = erased_pairs(ledger)
        if not accepted:  # nothing to add (pages skipped, or failed): the logs only
            change = journal.Change(ledger, "process")
            if page_records:
                change.append_lines(paths.pages, _jsonl(page_records))
            stage_outputs(change, ledger, outputs)
            commit(change)
            summary.rows_total = len(before)
            return summary
        if erased:  # an erased signature never comes back, even when its page is read again
            wanted = [r for r in new_rows if (r["page_sha256"], int(r["row_number"])) not in erased]
            summary.rows_erased_skipped = len(new_rows) - len(wanted)
            new_rows = wanted
            before_erased = _erased_mask(before, erased)
            if before_erased.any():  # finish an erasure a crash interrupted
                before = before[~before_erased].reset_index(drop=True)
        old_details, old_lines = _read_details_lines(paths.details)
        carried: dict[str, str] = {}  # signature_id -> the status a person gave it, kept through a re-read
        kept_old = empty_ledger()
        if replaced:  # people's decisions on those pages are data: carried to the rows read again
            new_rows, kept_old, carry = carry_decisions(before[before["page_sha256"].isin(replaced)], new_rows,
                                                         old_details)
            summary.decisions_kept, summary.decisions_differ = carry.kept, carry.differ
            summary.decisions_unmatched = carry.unmatched
            carried = carry.statuses
        summary.rows_added = len(new_rows)

        kept = before[~before["page_sha256"].isin(replaced)]
        if len(kept_old):
            kept = pd.concat([kept, kept_old], ignore_index=True)
        combined = pd.concat([kept, _frame([[r[c] for c in LEDGER_COLUMNS] for r in new_rows])],
                             ignore_index=True) if new_rows else kept.reset_index(drop=True)
        deduped = dedup.deduplicate(_without_dangling_duplicates(combined), dedup_config)
        after = _keep_decided_status(deduped.frame, carried)
        problems = validate_ledger_frame(after)
        if problems:
            raise LedgerError(_problem_list("refusing to write an invalid ledger", problems),
                              file=str(ledger), hint=_BUG_HINT)
        old_status, old_dup = (combined[c].to_numpy(dtype=object) for c in ("status", "duplicate_of"))
        new_status, new_dup = (after[c].to_numpy(dtype=object) for c in ("status", "duplicate_of"))
        summary.duplicates_marked = int(((new_status == "duplicate")
                                         & ((old_status != new_status) | (old_dup != new_dup))).sum())
        summary.rows_total = len(after)

        change = journal.Change(ledger, "process")
        crop_paths: dict[str, dict[str, str]] = {}
        still = set(zip(after["page_sha256"].tolist(), after["row_number"].tolist()))
        for result in accepted:
            sha = result.ref.page_sha256
            crop_paths.update(_stage_crops(change, ledger, result, prune=sha in replaced, erased=erased,
                                           keep_rows={int(n) for s_, n in still if s_ == sha}))

        ids = after["signature_id"].tolist()
        candidates = deduped.candidates
        details = {sid: old_details[sid] for sid in ids if sid in old_details}  # drops rows gone
        for sid, obj in details.items():  # candidates follow the ledger's current state
            found = candidates.get(sid, [])
            if obj.get("duplicate_candidates", []) != found:
                details[sid] = {**obj, "duplicate_candidates": found}
        for result in accepted:
            for row in result.rows:
                if row.is_blank:
                    continue
                sid = signature_id(result.ref.page_sha256, row.row_number)
                decision = old_details.get(sid, {}).get("decision") if sid in carried else None
                details[sid] = {
                    "signature_id": sid,
                    **({"decision": decision} if decision else {}),
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
            change.write(paths.details, details_text(ordered, old_lines).encode("utf-8"))
        if page_records:
            change.append_lines(paths.pages, _jsonl(page_records))
        stage_outputs(change, ledger, outputs)
        if not ledger.exists() or not _same_rows(before, after):
            change.write(ledger, ledger_csv_text(after).encode("utf-8"))  # validated above
        commit(change)
    return summary


def commit(change: journal.Change) -> None:
    """Make the change visible (journal.Change.commit), as an OutputError when the disk refuses."""
    try:
        _ensure_dir(change.folder)
        change.commit()
    except OSError as exc:
        if not change.journaled:  # else the journal stands: the next command completes it
            change.abort()
        raise OutputError(f"cannot write: {exc.strerror or exc}", file=str(getattr(exc, "filename", None) or
                                                                            change.ledger), hint=_WRITE_HINT) from exc


def _jsonl(records: Sequence[dict[str, Any]]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in records)


def append_page_records(ledger: Path, records: Sequence[dict[str, Any]]) -> None:
    """Append the run's per-page records (quality figures, issues; never names) to L.pages.jsonl."""
    if not records:
        return
    with ledger_lock(ledger, timeout=600):
        change = journal.Change(ledger, "process")
        change.append_lines(sidecar_paths(ledger).pages, _jsonl(records))
        commit(change)


def read_page_records(ledger: Path) -> list[dict[str, Any]]:
    """The records of L.pages.jsonl; a line cut short by a crash is ignored."""
    path = sidecar_paths(ledger).pages
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise OutputError(f"cannot read {path}: {exc.strerror or exc}", hint="check its permissions") from exc
    records = []
    for line in lines:
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict):
            records.append(obj)
    return records


# --- audit log, erasure -------------------------------------------------------------------------


def stage_audit(change: journal.Change, ledger: Path, records: Sequence[dict[str, Any]]) -> None:
    """Records (never a name) for L.audit.jsonl, written with the change they describe, each with the
    change's id (`op`; a record copied from another ledger keeps its own)."""
    change.append_lines(sidecar_paths(ledger).audit, _jsonl([{"op": change.id, **r} for r in records]))


def _sidecar_text(path: Path, what: str, why: str) -> str:
    """A sidecar log's text ('' when there is none yet)."""
    try:
        return path.read_text("utf-8")
    except FileNotFoundError:
        return ""
    except (OSError, UnicodeDecodeError) as exc:
        raise LedgerError(f"cannot read {what}: {exc}", file=str(path),
                          hint=f"restore it from a backup; it lists {why}") from exc


def audit_records(ledger: Path) -> list[dict[str, Any]]:
    """The audit log's records, oldest first ([] when there is none). A torn last line is ignored."""
    path = sidecar_paths(Path(ledger)).audit
    text = _sidecar_text(path, "the audit log", "erased signatures")
    records = []
    lines = text.split("\n")
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            if number == len(lines):  # a write cut by a crash: the erasure it began was not done
                continue
            raise LedgerError(f"line {number}: not valid JSON ({exc.msg})", file=str(path),
                              hint="fix that line; each line is one JSON object") from exc
        if isinstance(obj, dict):
            records.append(obj)
    return records


def erased_pairs(ledger: Path) -> set[tuple[str, int]]:
    """(page_sha256, row_number) of every signature erased from this ledger (from L.audit.jsonl)."""
    pairs: set[tuple[str, int]] = set()
    for record in audit_records(ledger):
        if record.get("action") == "erase":
            for item in record.get("rows", ()):
                with contextlib.suppress(KeyError, TypeError, ValueError):
                    pairs.add((str(item["page_sha256"]), int(item["row_number"])))
    return pairs


def _erased_mask(df: pd.DataFrame, erased: set[tuple[str, int]]) -> np.ndarray:
    if not erased or df.empty:
        return np.zeros(len(df), dtype=bool)
    shas = {sha for sha, _ in erased}
    candidates = df["page_sha256"].isin(shas).to_numpy()
    mask = np.zeros(len(df), dtype=bool)
    sha_col, row_col = df["page_sha256"].to_numpy(dtype=object), df["row_number"].to_numpy(dtype=object)
    for i in np.flatnonzero(candidates).tolist():
        mask[i] = (sha_col[i], int(row_col[i])) in erased
    return mask


def _stage_crop_removal(change: journal.Change, ledger: Path, rows: pd.DataFrame) -> int:
    """L.crops/<page_sha256[:16]>/<row:02d>-*.png of the rows, to go with the change."""
    crops = sidecar_paths(ledger).crops
    removed = 0
    for sha, number in zip(rows["page_sha256"], rows["row_number"], strict=True):
        folder = crops / sha[:16]
        if folder.is_dir():
            for path in folder.glob(f"{int(number):02d}-*.png"):
                change.delete(path)
                removed += 1
    return removed


@dataclass
class EraseSummary:
    rows_erased: int = 0
    crops_removed: int = 0
    repointed: int = 0  # rows whose duplicate_of changed because the row it named is gone
    rows_total: int = 0
    erased_ids: list[str] = field(default_factory=list)
    already_erased: list[str] = field(default_factory=list)  # ids given that an earlier erasure removed
    near: list[dict[str, str]] = field(default_factory=list)  # close names in the same postal code, kept
    outputs: list[tuple[str, str]] = field(default_factory=list)  # (path, what became of it)
    dry_run: bool = False


# What erasure does to the files the tool wrote beside a ledger (run reports, review workbooks,
# overlays): given the change, the erased ids and their pages, it stages their rewriting or removal
# and says, per file, what it did (`erasure.py`, which knows their formats).
OutputsHook = Callable[[journal.Change, set[str], set[str]], list[tuple[str, str]]]


def select_signer(df: pd.DataFrame, name: str, postal_code: str | None,
                  cfg: DedupConfig | None = None) -> list[int]:
    """Positions of every row of one signer: the dedup's certain name match, and their duplicates."""
    hits = [i for i, _ in dedup.match_rows(df, name, postal_code, cfg=cfg, certain_only=True)]
    if not hits:
        return []
    ids = df["signature_id"].to_numpy(dtype=object)
    dup = df["duplicate_of"].to_numpy(dtype=object)
    chosen = set(hits)
    linked = {ids[i] for i in chosen} | {dup[i] for i in chosen if dup[i]}
    chosen |= {i for i in range(len(df)) if ids[i] in linked or (dup[i] and dup[i] in linked)}
    return sorted(chosen)


def near_signers(df: pd.DataFrame, name: str, postal_code: str, exclude: Iterable[int] = (),
                 cfg: DedupConfig | None = None) -> list[int]:
    """Rows of the same postal code whose name is close without being the signer's for sure (a word
    of it read a little differently: "DURAND Jez" for DURAND Jean): for a person to decide."""
    taken = set(exclude)
    cutoff = (cfg or dedup.default_config().dedup).possible_score  # a word one letter off in six
    possible = {i for i, _ in dedup.match_rows(df, name, postal_code, cfg=cfg)}
    words = [w for w in dedup.name_tokens(name) if len(w) >= 3]
    same_code = np.flatnonzero(df["postal_code"].to_numpy(dtype=object) == postal_code).tolist()
    names = df["name"].to_numpy(dtype=object)
    for i in same_code:
        if i in taken or i in possible:
            continue
        tokens = dedup.name_tokens(str(names[i]))
        if any(fuzz.ratio(w, t) >= cutoff for w in words for t in tokens if len(t) >= 3):
            possible.add(i)
    return sorted(possible - taken)


def _id_parts(sid: str) -> tuple[str, int] | None:
    head, _, row = sid.partition("-")
    return (head, int(row)) if len(head) == 16 and row.isdigit() else None


def erase_rows(ledger: Path, *, ids: Sequence[str] = (), name: str | None = None, postal_code: str | None = None,
               lock_timeout: float = 120.0, dedup_config: DedupConfig | None = None,
               now: str | None = None, dry_run: bool = False, outputs: OutputsHook | None = None) -> EraseSummary:
    """Remove signatures for good, in one change (journal.py): their rows, crops and details, and
    (`outputs`) what the tool wrote for the ledger that shows them.

    ids names rows exactly (an id erased before is skipped and said; one the ledger never held is
    an error, before anything is erased); name (with postal_code) names every row of one signer,
    and close names of that code are listed, not erased. The audit log gets (page_sha256,
    row_number) of each erased row and the time, never a name: re-processing the same scans never
    brings them back. Rows that were duplicates of an erased row point to the signer's next
    earliest row (dedup recomputed). dry_run: the summary of what would be done, nothing written.
    """
    ledger = Path(ledger)
    if not ledger.exists():
        raise LedgerError(f"{ledger} does not exist", hint="give the path of a ledger CSV")
    paths = sidecar_paths(ledger)
    summary = EraseSummary(dry_run=dry_run)
    with ledger_lock(ledger, timeout=lock_timeout), dedup.gc_paused():
        df = read_ledger(ledger)
        sid = df["signature_id"].to_numpy(dtype=object)
        chosen: set[int] = set()
        if ids:
            wanted = list(dict.fromkeys(ids))
            present = set(sid.tolist())
            erased_before = {(sha[:16], n) for sha, n in erased_pairs(ledger)}
            summary.already_erased = [i for i in wanted if i not in present and _id_parts(i) in erased_before]
            unknown = [i for i in wanted if i not in present and i not in summary.already_erased]
            if unknown:
                raise PipelineError(f"no row with signature_id {', '.join(unknown)} in {ledger}",
                                    hint="copy the ids from `scan-pipeline ledger find`; nothing was erased")
            chosen |= set(np.flatnonzero(pd.Series(sid).isin(wanted).to_numpy()).tolist())
        if name is not None:
            signer = select_signer(df, name, postal_code, dedup_config)
            chosen |= set(signer)
            if postal_code:
                near = near_signers(df, name, postal_code, chosen, dedup_config)
                summary.near = [{"signature_id": df.at[i, "signature_id"], "name": df.at[i, "name"],
                                 "postal_code": df.at[i, "postal_code"]} for i in near]
        gone = df.iloc[sorted(chosen)]
        summary.erased_ids = gone["signature_id"].tolist()
        summary.rows_erased = len(gone)
        change = journal.Change(ledger, "erase")
        if gone.empty:
            summary.rows_total = len(df)
            return summary
        summary.crops_removed = _stage_crop_removal(change, ledger, gone)
        if outputs is not None:
            summary.outputs = outputs(change, set(gone["signature_id"]), set(gone["page_sha256"]))
        if dry_run:
            change.abort()
            summary.rows_total = len(df) - len(gone)
            return summary
        rest = df.drop(index=gone.index).reset_index(drop=True)
        old_dup = rest["duplicate_of"].tolist()
        result = dedup.deduplicate(rest, dedup_config)
        after = result.frame
        gone_ids = set(gone["signature_id"].tolist())
        summary.repointed = sum(1 for o, n in zip(old_dup, after["duplicate_of"].tolist(), strict=True)
                                if o in gone_ids and o != n)
        stage_audit(change, ledger, [{
            "action": "erase", "at": utc_timestamp(now),
            "rows": [{"page_sha256": s, "row_number": int(r)}
                     for s, r in zip(gone["page_sha256"], gone["row_number"], strict=True)],
        }])
        old_details, old_lines = _read_details_lines(paths.details)
        if old_details:
            kept = []
            for s in after["signature_id"].tolist():
                obj = old_details.get(s)
                if obj is not None:
                    found = result.candidates.get(s, [])
                    same = "duplicate_candidates" in obj and obj["duplicate_candidates"] == found
                    kept.append(obj if same else {**obj, "duplicate_candidates": found})
            change.write(paths.details, details_text(kept, old_lines).encode("utf-8"))
        stage_ledger(change, after, ledger)
        commit(change)
        summary.rows_total = len(after)
    return summary


def stage_ledger(change: journal.Change, df: pd.DataFrame, path: Path) -> None:
    """The ledger's new rows, validated, for the change."""
    problems = validate_ledger_frame(df)
    if problems:
        raise LedgerError(_problem_list("refusing to write an invalid ledger", problems), file=str(path),
                          hint="fix the listed values; the ledger on disk was not changed")
    change.write(path, ledger_csv_text(df).encode("utf-8"))


# --- the files the tool wrote for a ledger --------------------------------------------------------


def output_record(kind: str, path: Path, *, ids: Iterable[str] = (), pages: Iterable[str] = ()) -> dict[str, Any]:
    """What L.outputs.jsonl keeps of a file written for the ledger: what it is, where, and which
    signatures (ids) and pages (their images) it shows, for erasure to reach it."""
    return {"kind": kind, "path": os.path.abspath(path), "at": utc_timestamp(), "ids": sorted(set(ids)),
            "pages": sorted(set(pages))}


def stage_outputs(change: journal.Change, ledger: Path, records: Sequence[dict[str, Any]]) -> None:
    if records:
        change.append_lines(sidecar_paths(ledger).outputs, _jsonl(records))


def record_outputs(ledger: Path, records: Sequence[dict[str, Any]], lock_timeout: float = 120.0) -> None:
    """Add records to L.outputs.jsonl, in a change of their own."""
    if not records:
        return
    with ledger_lock(ledger, timeout=lock_timeout):
        change = journal.Change(ledger, "outputs")
        stage_outputs(change, ledger, records)
        commit(change)


def read_outputs(ledger: Path) -> list[dict[str, Any]]:
    """The records of L.outputs.jsonl, oldest first; a later record for the same path replaces it."""
    text = _sidecar_text(sidecar_paths(ledger).outputs, "the list of outputs", "the files erasure must reach")
    found: dict[str, dict[str, Any]] = {}
    for line in text.splitlines():
        with contextlib.suppress(ValueError):
            obj = json.loads(line)
            if isinstance(obj, dict) and isinstance(obj.get("path"), str):
                found.pop(obj["path"], None)
                found[obj["path"]] = obj
    return list(found.values())


# --- merging ledgers ----------------------------------------------------------------------------


@dataclass
class MergeSummary:
    inputs: int = 0
    rows_read: int = 0
    rows_total: int = 0
    same_rows: int = 0  # rows present in more than one input (same signature_id), kept once
    erased_skipped: int = 0  # rows an input's audit log says were erased
    duplicates: int = 0
    possible_duplicates: int = 0
    crops_copied: int = 0
    decisions_conflicting: int = 0  # rows two inputs decided differently: the later decision was kept
    seconds: dict[str, float] = field(default_factory=dict)


def _pick_versions(df: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """One row per signature_id: the most recently reviewed version (times compared as times), ties
    broken by the row's text; and how many ids two inputs decided differently (the later won).

    The choice never depends on the order the inputs were given in.
    """
    dup = df["signature_id"].duplicated(keep=False).to_numpy()
    if not dup.any():
        return df, 0
    single = df[~dup]
    multi = df[dup].copy()
    # unreviewed versions (NaT) sort last whatever the order
    multi["_when"] = pd.to_datetime(multi["reviewed_at"].replace("", None), utc=True, format="ISO8601")
    reviewed = multi[multi["reviewed_at"] != ""]
    differing = reviewed.drop_duplicates(["signature_id", "status", "name", "postal_code", "signature",
                                          "duplicate_of"])
    conflicts = int((differing["signature_id"].value_counts() > 1).sum())
    rest = [c for c in LEDGER_COLUMNS if c not in ("signature_id", "reviewed_at")]
    ordered = multi.sort_values(["signature_id", "_when", *rest], ascending=[True, False] + [True] * len(rest),
                                kind="stable")
    chosen = ordered.drop_duplicates("signature_id", keep="first").drop(columns="_when")
    return pd.concat([single, chosen]), conflicts


_OWN = "\0the merged ledger itself"  # the label of `out`'s own rows in a merge into an existing ledger


def _chosen_details(unique: pd.DataFrame, per_input: list[dict[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Each row's details from the input whose version of the row was chosen (its decision goes with
    it), else from the first input that has some."""
    if not any(per_input):
        return {}
    wanted = set().union(*per_input)
    chosen: dict[str, dict[str, Any]] = {}
    ids, origin = unique["signature_id"].to_numpy(dtype=object), unique["_from"].to_numpy()
    for k in np.flatnonzero(pd.Series(ids).isin(wanted).to_numpy()).tolist():
        sid = ids[k]
        obj = per_input[int(origin[k])].get(sid) or next(d[sid] for d in per_input if sid in d)
        chosen[sid] = obj
    return chosen


def merge_ledgers(inputs: Sequence[Path], out: Path, *, lock_timeout: float = 120.0,
                  dedup_config: DedupConfig | None = None, now: str | None = None,
                  wait: bool = False) -> MergeSummary:
    """Merge the ledgers of several groups into `out`, deduplicated across them.

    The same signature_id in two inputs is the same row, kept once. L.details.jsonl of the output
    says per row which input(s) it came from (`merged_from`); crops of the inputs are copied when
    present; erasures recorded in any input's audit log stay erased. `out` may be one of the inputs.
    """
    out = Path(out)
    summary = MergeSummary(inputs=len(inputs))
    if not inputs:
        raise LedgerError("no input ledger to merge", hint="name at least one ledger CSV")
    t0 = time.perf_counter()
    with run_lock(out, "scan-pipeline ledger merge", wait=wait), ledger_lock(out, timeout=lock_timeout), \
            dedup.gc_paused():
        frames: list[pd.DataFrame] = []
        labels: list[str] = []
        input_details: list[dict[str, dict[str, Any]]] = []
        erased: set[tuple[str, int]] = set(erased_pairs(out)) if out.exists() else set()
        erase_records: list[dict[str, Any]] = []
        crop_roots: dict[str, Path] = {}
        seen_inputs: set[Path] = set()
        paths = [Path(p) for p in inputs]
        if out.exists() and out.resolve() not in {p.resolve() for p in paths if p.exists()}:
            paths.append(out)  # merging into a merged ledger: the decisions made there are kept
        for path in paths:
            if path.resolve() in seen_inputs:
                continue
            seen_inputs.add(path.resolve())
            if not path.exists():
                raise LedgerError(f"{path} does not exist", hint="check the input ledger paths; nothing was written")
            df = read_ledger(path)
            label = _OWN if path is out else str(path)
            frames.append(df)
            labels.append(label)
            if label != _OWN:
                summary.rows_read += len(df)
            input_details.append(read_details(sidecar_paths(path).details))
            for record in audit_records(path):
                if record.get("action") == "erase":
                    erase_records.append(record)
            erased |= erased_pairs(path)
            crops = sidecar_paths(path).crops
            if crops.is_dir() and crops.resolve() != sidecar_paths(out).crops.resolve():
                crop_roots[label] = crops
        summary.seconds["read"] = time.perf_counter() - t0
        combined = pd.concat(frames, ignore_index=True) if frames else empty_ledger()
        origin = np.repeat(np.arange(len(frames)), [len(f) for f in frames])
        own = labels.index(_OWN) if _OWN in labels else -1
        sources = _Sources(combined["signature_id"].to_numpy(dtype=object), origin, labels)
        combined["_from"] = origin
        unique, summary.decisions_conflicting = _pick_versions(combined)
        from_inputs = combined.loc[origin != own, "signature_id"]
        summary.same_rows = len(from_inputs) - from_inputs.nunique()
        details = _chosen_details(unique, input_details)
        unique = unique.drop(columns="_from")
        mask = _erased_mask(unique, erased)
        summary.erased_skipped = int(mask.sum())
        unique = unique[~mask]
        # a stable order: earliest first, so the merged file is the same whatever the input order
        by_id = pd.factorize(unique["signature_id"].to_numpy(dtype=object), sort=True)[0]  # ties: by id
        unique = unique.iloc[np.argsort(dedup.order_rank(unique, tie=by_id))].reset_index(drop=True)
        del combined, frames
        t1 = time.perf_counter()
        result = dedup.deduplicate(unique, dedup_config)
        after = result.frame
        summary.seconds["dedup"] = time.perf_counter() - t1
        summary.duplicates, summary.possible_duplicates = result.duplicates, result.possible
        t2 = time.perf_counter()
        problems = validate_ledger_frame(after)
        if problems:
            raise LedgerError(_problem_list("refusing to write an invalid merged ledger", problems),
                              file=str(out), hint=_BUG_HINT)
        _ensure_dir(out.parent)
        change = journal.Change(out, "merge")
        crops = sidecar_paths(out).crops
        have = {f"{crops.name}/{c.parent.name}/{c.name}" for c in crops.glob("*/*.png")} if crops.is_dir() else set()
        if crop_roots:
            copied = _copy_crops(change, after, sources, crop_roots, crops)
            summary.crops_copied = len(copied)
            have |= copied
        text = _merged_details_text(after["signature_id"].tolist(), sources, details, result.candidates, crops, have)
        change.write(sidecar_paths(out).details, text.encode("utf-8"))
        known = {json.dumps(r, sort_keys=True) for r in audit_records(out)} if out.exists() else set()
        audit = []
        for record in erase_records:  # the output remembers every erasure of its inputs
            if json.dumps(record, sort_keys=True) not in known:
                audit.append(record)
                known.add(json.dumps(record, sort_keys=True))
        audit.append({"action": "merge", "at": utc_timestamp(now), "inputs": [str(p) for p in inputs],
                      "rows_read": summary.rows_read, "rows_written": len(after)})
        stage_audit(change, out, audit)
        change.write(out, ledger_csv_text(after).encode("utf-8"))  # validated above
        commit(change)
        summary.rows_total = len(after)
        summary.seconds["write"] = time.perf_counter() - t2
    summary.seconds["total"] = time.perf_counter() - t0
    return summary


class _Sources:
    """Which input ledger(s) each signature_id of a merge came from (most come from exactly one)."""

    def __init__(self, ids: np.ndarray, source: np.ndarray, labels: list[str]):
        code, distinct = pd.factorize(ids)
        self._index = pd.Index(distinct)
        self._first = np.full(len(distinct), -1, dtype=np.int64)
        self._first[code[::-1]] = source[::-1]  # the first input each id appears in
        self._labels = labels
        self._json = ["[]" if label == _OWN else json.dumps([label], ensure_ascii=False) for label in labels]
        self._more: dict[int, list[int]] = {}  # ids in several inputs: those inputs, in input order
        several = np.unique(code[source != self._first[code]])
        rows = np.flatnonzero(np.isin(code, several))
        for k, i in zip(code[rows].tolist(), source[rows].tolist(), strict=True):
            found = self._more.setdefault(k, [])
            if i not in found:
                found.append(i)

    def codes(self, ids: Sequence[str]) -> np.ndarray:
        return self._index.get_indexer(ids)

    def inputs(self, code: int) -> list[str]:
        """The inputs of one id (by its code), in the order they were given; [] for an id no input had."""
        if code < 0:
            return []
        found = [self._labels[i] for i in self._more.get(code, [int(self._first[code])])]
        return [label for label in found if label != _OWN]  # the merged ledger's own rows: see their details

    def labels_json(self, codes: np.ndarray) -> np.ndarray:
        """json.dumps of the sorted inputs of each id (by code), as an object array."""
        texts = np.array(self._json + ["[]"], dtype=object)[np.where(codes < 0, -1, self._first[codes])]
        for k in np.flatnonzero(np.isin(codes, list(self._more))).tolist():
            texts[k] = json.dumps(sorted(self.inputs(int(codes[k]))), ensure_ascii=False)
        return texts


def _merged_details_text(ids: list[str], sources: _Sources, details: dict[str, dict[str, Any]],
                         candidates: dict[str, list[str]], crops: Path | None = None,
                         have: set[str] = frozenset()) -> str:
    """L.details.jsonl of a merge: each row's details, where it came from and its duplicate candidates.

    The text json.dumps(obj, ensure_ascii=False) gives, line by line; rows without details of their
    own (most of a large merge) are formatted on arrays: their ids and candidates are signature ids
    (hex digits, a dash, digits: nothing to escape).
    """
    if not ids:
        return ""
    codes = sources.codes(ids)
    found = [candidates.get(s) for s in ids]
    listed = np.array(['["' + '", "'.join(c) + '"]' if c else "[]" for c in found], dtype=object)
    lines = ('{"signature_id": "' + np.array(ids, dtype=object) + '", "merged_from": ' + sources.labels_json(codes)
             + ', "duplicate_candidates": ' + listed + "}\n")
    if details:
        for k, s in enumerate(ids):
            obj = details.get(s)
            if obj is not None:
                came = sorted(sources.inputs(int(codes[k]))) or obj.get("merged_from", [])
                obj = {**obj, "merged_from": came, "duplicate_candidates": found[k] or []}
                if obj.get("crops") and crops is not None:  # the input's paths, as the merged ledger has them
                    moved = {c: f"{crops.name}/{Path(rel).parent.name}/{Path(rel).name}"
                             for c, rel in obj["crops"].items() if isinstance(rel, str)}
                    obj["crops"] = {c: rel for c, rel in moved.items() if rel in have}
                lines[k] = json.dumps(obj, ensure_ascii=False) + "\n"
    return "".join(lines.tolist())


def _copy_crops(change: journal.Change, df: pd.DataFrame, sources: _Sources, roots: dict[str, Path],
                target: Path) -> set[str]:
    """The crops of the merged rows, from the input they came from; their paths as details name them."""
    copied: set[str] = set()
    codes = sources.codes(df["signature_id"].tolist()).tolist()
    for code, sha, number in zip(codes, df["page_sha256"], df["row_number"], strict=True):
        for label in sources.inputs(code):
            root = roots.get(label)
            folder = root / sha[:16] if root else None
            if folder is None or not folder.is_dir():
                continue
            files = list(folder.glob(f"{int(number):02d}-*.png"))
            if not files:
                continue
            for f in files:
                change.write(target / sha[:16] / f.name, f.read_bytes(), durable=False)
                copied.add(f"{target.name}/{sha[:16]}/{f.name}")
            break
    return copied


# --- statistics ---------------------------------------------------------------------------------


def counts_as_signer(df: pd.DataFrame) -> np.ndarray:
    """Rows that count as one signer each: not a duplicate, not rejected, not struck out."""
    return ((~df["status"].isin(["duplicate", "rejected"])) & (df["signature"] != "struck")).to_numpy()


def ledger_stats(df: pd.DataFrame, departement: Callable[[str], str] | None = None) -> dict[str, Any]:
    """Counts of a ledger: rows, unique signers, duplicates, flagged, by département and by source."""
    if departement is None:
        from .postal import load_postal_list

        departement = load_postal_list().departement
    unique = counts_as_signer(df)
    codes = df["postal_code"].to_numpy(dtype=object)
    dep_of = {c: (departement(c) or "?") if c else "?" for c in pd.unique(codes)}
    deps = np.array([dep_of[c] for c in codes], dtype=object)
    status = df["status"].to_numpy(dtype=object)
    frame = pd.DataFrame({"dep": deps, "src": df["source_file"].to_numpy(dtype=object), "unique": unique,
                          "dup": status == "duplicate"})
    by_dep = frame.groupby("dep").agg(signatures=("unique", "size"), unique_signers=("unique", "sum"),
                                      duplicates=("dup", "sum"))
    by_src = frame.groupby("src").agg(signatures=("unique", "size"), unique_signers=("unique", "sum"),
                                      duplicates=("dup", "sum"))

    def table(t: pd.DataFrame) -> dict[str, dict[str, int]]:
        return {str(k): {c: int(v) for c, v in row.items()} for k, row in t.iterrows()}

    return {
        "signatures": len(df),
        "unique_signers": int(unique.sum()),
        "duplicates": int((status == "duplicate").sum()),
        "flagged": int((df["flags"] != "").sum()),
        "review": int((status == "review").sum()),
        "rejected": int((status == "rejected").sum()),
        "struck": int((df["signature"] == "struck").sum()),
        "possible_duplicates": int(df["flags"].str.contains(dedup.POSSIBLE_FLAG, regex=False).sum()),
        "by_departement": table(by_dep),
        "by_source": table(by_src),
    }


def departement_chart(stats: dict[str, Any], path: Path) -> None:
    """A PNG bar chart of unique signers by département (matplotlib, an optional dependency)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise MissingDependencyError("the chart needs matplotlib, which is not installed",
                                     hint="pip install matplotlib") from None
    items = sorted(stats["by_departement"].items(), key=lambda kv: -kv[1]["unique_signers"])
    labels = [k for k, _ in items]
    values = [v["unique_signers"] for _, v in items]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.3 * len(labels) + 2), 4))
    ax.bar(labels, values, color="#3b6ea8")
    ax.set_xlabel("département")
    ax.set_ylabel("unique signers")
    ax.set_title(f"Unique signers by département ({stats['unique_signers']} in all)")
    ax.tick_params(axis="x", labelrotation=90, labelsize=7)
    fig.tight_layout()
    _ensure_dir(Path(path).parent)
    try:
        fig.savefig(path, dpi=120)
    except OSError as exc:
        raise OutputError(f"cannot write the chart: {exc.strerror or exc}", file=str(path), hint=_WRITE_HINT) from exc
    finally:
        plt.close(fig)


def find_rows(df: pd.DataFrame, name: str | None, postal_code: str | None = None,
              cfg: DedupConfig | None = None) -> pd.DataFrame:
    """Rows whose name matches `name` (at least the dedup's possible_score), best first, with a score
    column. A name of one word (a surname alone) matches any word of a row's name; no name: every
    row of the postal code (score 100)."""
    cfg = cfg or dedup.default_config().dedup
    if not name:
        codes = df["postal_code"].to_numpy(dtype=object)
        hits = [(int(i), 100.0) for i in np.flatnonzero(codes == postal_code).tolist()] if postal_code else []
    elif len(dedup.name_tokens(name)) == 1:
        hits = _word_hits(df, dedup.name_tokens(name)[0], postal_code, cfg.possible_score)
    else:
        hits = dedup.match_rows(df, name, postal_code, cfg=cfg)
    found = df.iloc[[i for i, _ in hits]].copy()
    found.insert(0, "score", [s for _, s in hits])
    return found.reset_index(drop=True)


def _word_hits(df: pd.DataFrame, word: str, postal_code: str | None, cutoff: float) -> list[tuple[int, float]]:
    """Rows with a word of their name close to `word` (fuzzy ratio), best first."""
    names = df["name"].to_numpy(dtype=object)
    pool = np.arange(len(df))
    if postal_code:
        pool = np.flatnonzero(df["postal_code"].to_numpy(dtype=object) == postal_code)
    code, distinct = pd.factorize(names[pool]) if pool.size else (np.zeros(0, np.int64), [])
    best = {k: max((fuzz.ratio(word, t) for t in dedup.name_tokens(str(n))), default=0.0)
            for k, n in enumerate(list(distinct))}
    hits = [(int(pool[r]), float(best[c])) for r, c in enumerate(code.tolist()) if best[c] >= cutoff]
    hits.sort(key=lambda h: (-h[1], h[0]))
    return hits
