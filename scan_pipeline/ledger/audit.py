"""The audit log: who changed what and when, by signature id, never a name."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from scan_pipeline.core.errors import LedgerError
from scan_pipeline.ledger import journal
from scan_pipeline.ledger.paths import sidecar_paths
from scan_pipeline.ledger.sidecars import jsonl_text


def stage_audit(change: journal.Change, ledger: Path, records: Sequence[dict[str, Any]]) -> None:
    """Records (never a name) for L.audit.jsonl, written with the change they describe, each with the
    change's id (`op`; a record copied from another ledger keeps its own)."""
    change.append_lines(sidecar_paths(ledger).audit, jsonl_text([{"op": change.id, **r} for r in records]))


def sidecar_text(path: Path, what: str, why: str) -> str:
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
    text = sidecar_text(path, "the audit log", "erased signatures")
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
