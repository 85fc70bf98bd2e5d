"""A signature's id, and the paths of a ledger's sidecar files."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from scan_pipeline.ledger import journal


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


def file_names(ledger: Path) -> tuple[str, ...]:
    """The names of a ledger's own files (their temporary files are named after them)."""
    paths = sidecar_paths(ledger)
    return (Path(ledger).name, paths.details.name, paths.audit.name, paths.pages.name, paths.journal.name,
            paths.outputs.name)
