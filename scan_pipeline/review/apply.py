"""Applying the checked decisions to the ledger, in one change under its lock.

The decisions, `reviewed_by`/`reviewed_at`, deduplication re-run (decided rows kept as decided),
and an audit record (ids and decisions, never names). Importing the same file twice changes nothing.
"""

from __future__ import annotations

import getpass
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from scan_pipeline.core.config import DedupConfig
from scan_pipeline.core.errors import LedgerError, ReviewFileError
from scan_pipeline.core.postcodes import PostalList, load_postal_list
from scan_pipeline.core.text import ledger_text, path_text
from scan_pipeline.ledger import dedup, journal
from scan_pipeline.ledger.audit import stage_audit
from scan_pipeline.ledger.paths import sidecar_paths
from scan_pipeline.ledger.rows import utc_timestamp
from scan_pipeline.ledger.schema import LEDGER_COLUMNS
from scan_pipeline.ledger.sidecars import details_text, read_details
from scan_pipeline.ledger.store import commit, ledger_lock, read_ledger, stage_ledger
from scan_pipeline.review.checks import Decision, Problem, check_review_table, shown_problem
from scan_pipeline.review.readers import MAX_PROBLEMS_SHOWN, read_review_file
from scan_pipeline.review.sheet import row_fingerprint

log = logging.getLogger(__name__)

_TRACKED = tuple(c for c in LEDGER_COLUMNS if c not in ("reviewed_by", "reviewed_at"))


_HELD_STATUSES = ("ok", "corrected", "duplicate", "rejected")


@dataclass(frozen=True)
class RowChange:
    signature_id: str
    sheet_row: int | None  # None: changed by deduplication, not by a line of the file
    decision: str
    changed: tuple[str, ...]  # ledger columns that changed
    status: str  # after


@dataclass
class ImportSummary:
    path: Path
    reviewer: str
    lines: int = 0  # lines read from the file
    blank: int = 0  # lines left empty
    confirmed: int = 0
    corrected: int = 0
    rejected: int = 0
    duplicates: int = 0
    unchanged: int = 0  # filled lines whose decision the ledger already holds
    other_rows: int = 0  # rows not in the file whose deduplication changed
    sent_back: int = 0  # decided rows deduplication flags again (possible duplicate): status review
    invalid: list[Problem] = field(default_factory=list)  # skipped with skip_invalid
    changes: list[RowChange] = field(default_factory=list)
    dry_run: bool = False
    written: bool = False
    seconds: float = 0.0


def _apply(frame: pd.DataFrame, decisions: Sequence[Decision], postal: PostalList) -> pd.DataFrame:
    """The frame with each decision's values and status (before deduplication)."""
    out = frame.copy()
    pos = {s: i for i, s in enumerate(out["signature_id"].tolist())}
    columns = {c: out[c].to_numpy(dtype=object).copy() for c in LEDGER_COLUMNS}
    for d in decisions:
        i = pos[d.signature_id]
        typed = False
        if d.decision != "not a signature":
            if d.name is not None:
                columns["name"][i], typed = d.name, True
            if d.postal_code is not None:
                columns["postal_code"][i], typed = d.postal_code, True
                columns["postal_valid"][i] = "true"
                columns["commune"][i] = postal.commune_label(d.postal_code)
            if d.signature is not None:
                columns["signature"][i], typed = d.signature, True
        if d.decision == "not a signature":
            columns["status"][i], columns["duplicate_of"][i] = "rejected", ""
            columns["flags"][i] = ";".join(f for f in columns["flags"][i].split(";") if f and f != dedup.POSSIBLE_FLAG)
        elif d.decision == "duplicate":
            columns["status"][i], columns["duplicate_of"][i], columns["flags"][i] = "duplicate", d.duplicate_of, ""
        else:
            # ok on a line shown with a possible duplicate says 'not the same signer': corrected is the
            # status deduplication never changes, so the next run does not ask again
            held = typed or d.candidate_shown or columns["status"][i] == "corrected"
            columns["status"][i] = "corrected" if held else "ok"
            columns["duplicate_of"][i], columns["flags"][i] = "", ""
    for c in LEDGER_COLUMNS:
        out[c] = pd.Series(columns[c], index=out.index, dtype=str)
    return out


def deduplicate_keeping_decisions(frame: pd.DataFrame, decisions: Sequence[Decision],
                                  cfg: DedupConfig | None = None) -> dedup.DedupResult:
    """Deduplication that keeps what people decided.

    dedup.deduplicate keeps only `corrected` and `rejected`; a person's `ok` or `duplicate` would be
    recomputed. So rows reviewed before (reviewed_at set, a final status) and rows whose line here
    settled the duplicate question (not a signature, duplicate, or ok with a candidate shown) go
    through it as corrected (or as rejected, left out, for duplicates) and get their status back.
    A row confirmed or corrected here with no candidate shown is compared freely: a corrected name
    may reveal a duplicate, which it then becomes (or it is flagged possible duplicate, for review).
    """
    decided = {d.signature_id: d for d in decisions}
    ids = frame["signature_id"].tolist()
    status = frame["status"].to_numpy(dtype=object)
    reviewed = frame["reviewed_at"].to_numpy(dtype=object) != ""
    temp_status = status.copy()
    held: list[int] = []
    free: list[int] = []
    for i, sid in enumerate(ids):
        d = decided.get(sid)
        if d is None:
            if reviewed[i] and status[i] in _HELD_STATUSES:
                held.append(i)
        elif d.decision in ("ok", "correct") and not d.candidate_shown:
            free.append(i)
        else:
            held.append(i)
    for i in held:
        temp_status[i] = "rejected" if status[i] in ("duplicate", "rejected") else "corrected"
    for i in free:
        temp_status[i] = "ok"
    temp = frame.copy()
    temp["status"] = pd.Series(temp_status, index=frame.index, dtype=str)
    result = dedup.deduplicate(temp, cfg)
    out = result.frame
    new_status = out["status"].to_numpy(dtype=object).copy()
    new_dup = out["duplicate_of"].to_numpy(dtype=object).copy()
    new_flags = out["flags"].to_numpy(dtype=object).copy()
    old_dup = frame["duplicate_of"].to_numpy(dtype=object)
    old_flags = frame["flags"].to_numpy(dtype=object)
    for i in held:
        new_status[i], new_dup[i], new_flags[i] = status[i], old_dup[i], old_flags[i]
    for i in free:
        if new_status[i] == "ok":
            new_status[i] = status[i]
    # a duplicate points to its signer's first row, never to another duplicate
    pos = {s: i for i, s in enumerate(ids)}
    for i in np.flatnonzero(new_status == "duplicate").tolist():
        target, hops = new_dup[i], 0
        while target in pos and new_status[pos[target]] == "duplicate" and new_dup[pos[target]] and hops < len(ids):
            target, hops = new_dup[pos[target]], hops + 1
        new_dup[i] = target
    out["status"] = pd.Series(new_status, index=out.index, dtype=str)
    out["duplicate_of"] = pd.Series(new_dup, index=out.index, dtype=str)
    out["flags"] = pd.Series(new_flags, index=out.index, dtype=str)
    return dedup.DedupResult(out, result.candidates, duplicates=int((new_status == "duplicate").sum()),
                             possible=int(sum(dedup.POSSIBLE_FLAG in f.split(";") for f in new_flags)))


def _changed_columns(before: pd.DataFrame, after: pd.DataFrame) -> list[tuple[str, ...]]:
    changed = [np.asarray(before[c].to_numpy(dtype=object) != after[c].to_numpy(dtype=object)) for c in _TRACKED]
    stack = np.vstack(changed) if changed else np.zeros((0, len(before)), dtype=bool)
    return [tuple(c for c, hit in zip(_TRACKED, stack[:, i]) if hit) for i in range(len(before))]


def plan_import(df: pd.DataFrame, decisions: Sequence[Decision], *, reviewer: str, at: str,
                postal: PostalList | None = None,
                cfg: DedupConfig | None = None) -> tuple[dedup.DedupResult, list[RowChange], list[Problem]]:
    """The ledger after the decisions (deduplicated), what changed per row, and the conflicts.

    A conflict is a line whose row changed in the ledger since the export (its check fingerprint
    differs) and that would change it again: the volunteer decided on something else.
    """
    postal = postal or load_postal_list()
    result = deduplicate_keeping_decisions(_apply(df, decisions, postal), decisions, cfg)
    after = result.frame
    changed = _changed_columns(df, after)
    by_id = {d.signature_id: d for d in decisions}
    reviewed_by = after["reviewed_by"].to_numpy(dtype=object).copy()
    reviewed_at = after["reviewed_at"].to_numpy(dtype=object).copy()
    changes: list[RowChange] = []
    conflicts: list[Problem] = []
    for i, row in enumerate(df.to_dict("records")):
        d = by_id.get(row["signature_id"])
        if not changed[i]:
            continue
        if d is None:
            changes.append(RowChange(row["signature_id"], None, "", changed[i], after["status"].iat[i]))
            continue
        if d.fingerprint and d.fingerprint != row_fingerprint(row):
            conflicts.append(Problem(d.sheet_row, "this signature changed in the ledger since the file was "
                                                  "exported (someone reviewed it, or it was processed again): "
                                                  "export it again to review what it holds now", d.signature_id))
            continue
        reviewed_by[i], reviewed_at[i] = reviewer, at
        changes.append(RowChange(row["signature_id"], d.sheet_row, d.decision, changed[i], after["status"].iat[i]))
    after["reviewed_by"] = pd.Series(reviewed_by, index=after.index, dtype=str)
    after["reviewed_at"] = pd.Series(reviewed_at, index=after.index, dtype=str)
    return result, changes, conflicts


def _count(summary: ImportSummary, decisions: Sequence[Decision], changes: Sequence[RowChange]) -> None:
    by_id = {c.signature_id: c for c in changes}
    for d in decisions:
        change = by_id.get(d.signature_id)
        if change is None:
            summary.unchanged += 1
            continue
        if change.status == "review":
            summary.sent_back += 1
        if d.decision == "not a signature":
            summary.rejected += 1
        elif d.decision == "duplicate" or change.status == "duplicate":
            summary.duplicates += 1
        elif {"name", "postal_code", "signature"} & set(change.changed):
            summary.corrected += 1
        else:
            summary.confirmed += 1
    summary.other_rows = sum(1 for c in changes if c.sheet_row is None)


def _decision_records(before: pd.DataFrame, after: pd.DataFrame, changes: Sequence[RowChange]
                      ) -> dict[str, dict[str, Any]]:
    """Per row a person decided on in this file: the decision, with what the row held when they saw
    it (`read`): a re-read (`process --reprocess`) that reads the same again is no news
    (ledger.carry_decisions)."""
    lines = {c.signature_id for c in changes if c.sheet_row is not None}
    if not lines:
        return {}
    seen = before[before["signature_id"].isin(lines)].set_index("signature_id")
    now = after[after["signature_id"].isin(lines)].set_index("signature_id")
    return {sid: {"status": now.at[sid, "status"], "by": now.at[sid, "reviewed_by"], "at": now.at[sid, "reviewed_at"],
                  **{k: now.at[sid, k] for k in ("name", "postal_code", "signature", "duplicate_of")},
                  "read": {k: seen.at[sid, k] for k in ("name", "postal_code", "signature")}}
            for sid in sorted(lines)}


def import_review(path: Path, ledger: Path, *, reviewer: str | None = None, dry_run: bool = False,
                  skip_invalid: bool = False, now: str | None = None, dedup_config: DedupConfig | None = None,
                  lock_timeout: float = 30.0) -> ImportSummary:
    """Apply a returned review file to the ledger; nothing at all when a line is invalid (see module doc)."""
    start = time.perf_counter()
    path, ledger = Path(path), Path(ledger)
    table = read_review_file(path)
    if not ledger.exists():
        raise LedgerError(f"{ledger} does not exist", hint="give the ledger the review file was exported from")
    who = ledger_text(" ".join((reviewer or table.reviewer or getpass.getuser() or "reviewer").split())) or "reviewer"
    summary = ImportSummary(path, who, lines=len(table.rows), dry_run=dry_run)
    at = utc_timestamp(now)
    postal = load_postal_list()
    paths = sidecar_paths(ledger)
    with ledger_lock(ledger, timeout=lock_timeout):
        df = read_ledger(ledger)
        decisions, problems = check_review_table(table, df, postal)
        result, changes, conflicts = plan_import(df, decisions, reviewer=who, at=at, postal=postal, cfg=dedup_config)
        problems += conflicts
        if problems and not skip_invalid:
            shown = sorted(problems, key=lambda p: (p.sheet_row or 0, p.message))
            more = f"\n  ... and {len(shown) - MAX_PROBLEMS_SHOWN} more" if len(shown) > MAX_PROBLEMS_SHOWN else ""
            raise ReviewFileError(
                f"{len(problems)} line(s) cannot be applied, so nothing was changed:\n  "
                + "\n  ".join(map(shown_problem, shown[:MAX_PROBLEMS_SHOWN])) + more, file=path_text(str(path)),
                hint="fix these lines in the spreadsheet and import it again, or pass --skip-invalid to apply "
                     "the other lines now")
        if conflicts:  # skip_invalid: plan again without the lines in conflict
            gone = {p.signature_id for p in conflicts}
            decisions = [d for d in decisions if d.signature_id not in gone]
            result, changes, still = plan_import(df, decisions, reviewer=who, at=at, postal=postal, cfg=dedup_config)
            problems += still
        summary.invalid = sorted(problems, key=lambda p: (p.sheet_row or 0, p.message))
        summary.blank = summary.lines - len(decisions) - len({p.sheet_row for p in problems})
        summary.changes = changes
        _count(summary, decisions, changes)
        for row_change in changes:
            log.debug("review: %s (row %s) %s -> %s: %s", row_change.signature_id, row_change.sheet_row,
                      row_change.decision, row_change.status, ", ".join(row_change.changed))
        if changes and not dry_run:
            after = result.frame
            details = read_details(paths.details)
            records = _decision_records(df, after, changes)
            updated = []
            for s in after["signature_id"]:
                obj = details.get(s)
                if obj is None and s not in records:
                    continue
                obj = dict(obj or {"signature_id": s})
                if obj.get("duplicate_candidates", []) != result.candidates.get(s, []):
                    obj["duplicate_candidates"] = result.candidates.get(s, [])
                if s in records:
                    obj["decision"] = records[s]
                updated.append(obj)
            change = journal.Change(ledger, "review")
            if updated != list(details.values()):
                change.write(paths.details, details_text(updated).encode("utf-8"))
            stage_audit(change, ledger, [{
                "action": "review_import", "at": at, "by": who, "file": path.name,
                "rows": [{"signature_id": c.signature_id, "sheet_row": c.sheet_row, "decision": c.decision,
                          "changed": list(c.changed), "status": c.status} for c in changes if c.sheet_row],
                "deduplication": [c.signature_id for c in changes if c.sheet_row is None],
            }])
            stage_ledger(change, after, ledger)
            commit(change)
            summary.written = True
    summary.seconds = time.perf_counter() - start
    return summary
