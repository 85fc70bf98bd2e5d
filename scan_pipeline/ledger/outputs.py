"""The files the tool wrote for a ledger (L.outputs.jsonl), so that erasure reaches them all."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from scan_pipeline.ledger import journal
from scan_pipeline.ledger.audit import sidecar_text
from scan_pipeline.ledger.paths import sidecar_paths
from scan_pipeline.ledger.rows import utc_timestamp
from scan_pipeline.ledger.sidecars import jsonl_text
from scan_pipeline.ledger.store import commit, ledger_lock


def output_record(kind: str, path: Path, *, ids: Iterable[str] = (), pages: Iterable[str] = ()) -> dict[str, Any]:
    """What L.outputs.jsonl keeps of a file written for the ledger: what it is, where, and which
    signatures (ids) and pages (their images) it shows, for erasure to reach it."""
    return {"kind": kind, "path": os.path.abspath(path), "at": utc_timestamp(), "ids": sorted(set(ids)),
            "pages": sorted(set(pages))}


def stage_outputs(change: journal.Change, ledger: Path, records: Sequence[dict[str, Any]]) -> None:
    if records:
        change.append_lines(sidecar_paths(ledger).outputs, jsonl_text(records))


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
    text = sidecar_text(sidecar_paths(ledger).outputs, "the list of outputs", "the files erasure must reach")
    found: dict[str, dict[str, Any]] = {}
    for line in text.splitlines():
        with contextlib.suppress(ValueError):
            obj = json.loads(line)
            if isinstance(obj, dict) and isinstance(obj.get("path"), str):
                found.pop(obj["path"], None)
                found[obj["path"]] = obj
    return list(found.values())
