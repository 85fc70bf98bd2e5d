"""The sidecars beside the CSV: cell crops, details (alternatives, provenance), the pages log."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from scan_pipeline.core.errors import LedgerError, OutputError
from scan_pipeline.core.records import PageResult
from scan_pipeline.ledger import journal
from scan_pipeline.ledger.paths import sidecar_paths, signature_id


def _crop_name(row_number: int, column: str) -> str:
    if not column or column in (".", "..") or any(c in column for c in "/\\\0"):
        raise OutputError(f"cannot name a crop file after the column {column!r}",
                          hint="use template column names without slashes")
    return f"{row_number:02d}-{column}.png"


def stage_crops(change: journal.Change, ledger: Path, result: PageResult, *, prune: bool,
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
    return read_details_lines(path)[0]


_JSON_SCAN = json.JSONDecoder().scan_once  # type: ignore[attr-defined]  # json.loads's scanner, without its wrapping


def _json_line(line: str) -> Any:
    """The JSON value a line holds, when it starts the line and only JSON whitespace follows; else None."""
    try:
        obj, end = _JSON_SCAN(line, 0)
    except (StopIteration, json.JSONDecodeError):
        return None
    return obj if end == len(line) or not line[end:].strip(" \t\r") else None


def read_details_lines(path: Path) -> tuple[dict[str, dict[str, Any]], dict[str, tuple[dict[str, Any], str]]]:
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
    """One JSON object a line. read_from (from read_details_lines): an object still the very one read
    keeps its line as it was (the same JSON), so a large ledger's details are not all encoded again."""
    if not read_from:
        return "".join(_JSON_LINE(obj) + "\n" for obj in details)
    out = []
    for obj in details:
        known = read_from.get(obj.get("signature_id", ""))
        out.append((known[1] if known is not None and known[0] is obj else _JSON_LINE(obj)) + "\n")
    return "".join(out)


def jsonl_text(records: Sequence[dict[str, Any]]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in records)


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
