"""Erasure everywhere the tool wrote: the ledger and its sidecars, and the files listed as its outputs.

`erase_rows` removes the rows, crops and details in one change (journal.py); `erase`
adds to that same change what becomes of each output (`L.outputs.jsonl`) that shows an erased
signature: a review workbook has those lines blanked in place by `redact` (the volunteers' other
lines kept; the review layer, above this one, knows the workbook: the CLI passes its redactor),
or is deleted when no redactor is given; a run report or a grid overlay, which show whole pages,
is deleted. Each is said. A copy made elsewhere (a workbook sent by e-mail, a re-scan of the same
sheet, which is a new file) is out of reach: docs/ledger.md says so.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from scan_pipeline.core.config import DedupConfig
from scan_pipeline.core.errors import LedgerError, PipelineError
from scan_pipeline.ledger import dedup, journal
from scan_pipeline.ledger.audit import audit_records, stage_audit
from scan_pipeline.ledger.find import near_signers, select_signer
from scan_pipeline.ledger.outputs import read_outputs
from scan_pipeline.ledger.paths import sidecar_paths
from scan_pipeline.ledger.rows import utc_timestamp
from scan_pipeline.ledger.sidecars import details_text, jsonl_text, read_details_lines
from scan_pipeline.ledger.store import commit, ledger_lock, read_ledger, stage_ledger

log = logging.getLogger(__name__)

# a workbook's path and the erased ids -> the workbook's new bytes, and how many lines were blanked
Redactor = Callable[[Path, set[str]], tuple[bytes, int]]


def erased_pairs(ledger: Path) -> set[tuple[str, int]]:
    """(page_sha256, row_number) of every signature erased from this ledger (from L.audit.jsonl)."""
    pairs: set[tuple[str, int]] = set()
    for record in audit_records(ledger):
        if record.get("action") == "erase":
            for item in record.get("rows", ()):
                with contextlib.suppress(KeyError, TypeError, ValueError):
                    pairs.add((str(item["page_sha256"]), int(item["row_number"])))
    return pairs


def erased_mask(df: pd.DataFrame, erased: set[tuple[str, int]]) -> np.ndarray:
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
# and says, per file, what it did (`erase` below, with the review layer's redactor).
OutputsHook = Callable[[journal.Change, set[str], set[str]], list[tuple[str, str]]]


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
        old_details, old_lines = read_details_lines(paths.details)
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


def erase(ledger: Path, *, ids: tuple[str, ...] = (), name: str | None = None, postal_code: str | None = None,
          dry_run: bool = False, dedup_config: DedupConfig | None = None, now: str | None = None,
          lock_timeout: float = 120.0, redact: Redactor | None = None) -> EraseSummary:
    """`erase_rows`, reaching the ledger's outputs too (see the module doc)."""
    ledger = Path(ledger)

    def outputs(change: journal.Change, gone_ids: set[str], gone_pages: set[str]) -> list[tuple[str, str]]:
        return _stage_outputs(ledger, change, gone_ids, gone_pages, redact)

    return erase_rows(ledger, ids=ids, name=name, postal_code=postal_code, dry_run=dry_run,
                      dedup_config=dedup_config, now=now, lock_timeout=lock_timeout, outputs=outputs)


def _stage_outputs(ledger: Path, change: journal.Change, ids: set[str], pages: set[str],
                   redact: Redactor | None) -> list[tuple[str, str]]:
    said: list[tuple[str, str]] = []
    kept: list[dict[str, Any]] = []
    touched = False
    for record in read_outputs(ledger):
        hit = ids & set(record.get("ids", ())) or pages & set(record.get("pages", ()))
        if not hit:
            kept.append(record)
            continue
        touched = True
        path = Path(record["path"])
        if not path.exists():
            said.append((str(path), "not found (moved or deleted?): if a copy is elsewhere, delete it there"))
            continue
        if record.get("kind") == "review" and redact is not None:
            try:
                data, lines = redact(path, ids)
            except Exception as exc:  # noqa: BLE001 - a workbook someone broke: it still holds the names
                log.debug("%s: cannot be opened", path, exc_info=True)
                change.delete(path)
                said.append((str(path), f"deleted (it could not be opened to blank the lines: {type(exc).__name__})"))
                continue
            change.write(path, data)
            kept.append({**record, "ids": sorted(set(record.get("ids", ())) - ids),
                         "pages": sorted(set(record.get("pages", ())) - pages)})
            said.append((str(path), f"{lines} line(s) blanked"))
        else:
            change.delete(path)
            said.append((str(path), f"deleted (this {record.get('kind', 'file')} showed the signature)"))
    if touched:
        change.write(sidecar_paths(ledger).outputs, jsonl_text(kept).encode("utf-8", errors="backslashreplace"))
    return said
