"""Appending a batch's pages to the ledger, in one change."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from scan_pipeline.core.config import DedupConfig
from scan_pipeline.core.errors import LedgerError
from scan_pipeline.core.records import PageResult, Retake
from scan_pipeline.ledger import dedup, journal
from scan_pipeline.ledger.decisions import carry_decisions, keep_decided_status, without_dangling_duplicates
from scan_pipeline.ledger.erase import erased_mask, erased_pairs
from scan_pipeline.ledger.outputs import stage_outputs
from scan_pipeline.ledger.paths import sidecar_paths, signature_id
from scan_pipeline.ledger.rows import rows_from_result, utc_timestamp
from scan_pipeline.ledger.schema import BUG_HINT, LEDGER_COLUMNS, problem_list, row_problems, validate_ledger_frame
from scan_pipeline.ledger.sidecars import details_text, jsonl_text, read_details_lines, stage_crops
from scan_pipeline.ledger.store import commit, empty_ledger, frame_of, ledger_csv_text, ledger_lock, read_ledger


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
    retakes: list[Retake] = field(default_factory=list)  # pages of this batch that are a sheet read before


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
            problems = row_problems((f"sheet row {r['row_number']}", r) for r in rows)
            if problems:
                raise LedgerError(problem_list("cannot add this page to the ledger", problems),
                                  file=result.ref.source_file, page=result.ref.page, hint=BUG_HINT)
            accepted.append(result)
            new_rows += rows
            summary.pages_added += 1 if rows else 0
        erased = erased_pairs(ledger)
        if not accepted:  # nothing to add (pages skipped, or failed): the logs only
            change = journal.Change(ledger, "process")
            if page_records:
                change.append_lines(paths.pages, jsonl_text(page_records))
            stage_outputs(change, ledger, outputs)
            commit(change)
            summary.rows_total = len(before)
            return summary
        if erased:  # an erased signature never comes back, even when its page is read again
            wanted = [r for r in new_rows if (r["page_sha256"], int(r["row_number"])) not in erased]
            summary.rows_erased_skipped = len(new_rows) - len(wanted)
            new_rows = wanted
            before_erased = erased_mask(before, erased)
            if before_erased.any():  # finish an erasure a crash interrupted
                before = before[~before_erased].reset_index(drop=True)
        old_details, old_lines = read_details_lines(paths.details)
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
        combined = pd.concat([kept, frame_of([[r[c] for c in LEDGER_COLUMNS] for r in new_rows])],
                             ignore_index=True) if new_rows else kept.reset_index(drop=True)
        deduped = dedup.deduplicate(without_dangling_duplicates(combined), dedup_config)
        after = keep_decided_status(deduped.frame, carried)
        problems = validate_ledger_frame(after)
        if problems:
            raise LedgerError(problem_list("refusing to write an invalid ledger", problems),
                              file=str(ledger), hint=BUG_HINT)
        old_status, old_dup = (combined[c].to_numpy(dtype=object) for c in ("status", "duplicate_of"))
        new_status, new_dup = (after[c].to_numpy(dtype=object) for c in ("status", "duplicate_of"))
        summary.duplicates_marked = int(((new_status == "duplicate")
                                         & ((old_status != new_status) | (old_dup != new_dup))).sum())
        summary.rows_total = len(after)
        summary.retakes = [r for r in deduped.retakes if seen & {r.page_sha256, r.of_page_sha256}]

        change = journal.Change(ledger, "process")
        crop_paths: dict[str, dict[str, str]] = {}
        still = set(zip(after["page_sha256"].tolist(), after["row_number"].tolist()))
        for result in accepted:
            sha = result.ref.page_sha256
            crop_paths.update(stage_crops(change, ledger, result, prune=sha in replaced, erased=erased,
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
            change.append_lines(paths.pages, jsonl_text(page_records))
        stage_outputs(change, ledger, outputs)
        if not ledger.exists() or not _same_rows(before, after):
            change.write(ledger, ledger_csv_text(after).encode("utf-8"))  # validated above
        commit(change)
    return summary
