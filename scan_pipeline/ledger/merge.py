"""Merging ledgers of several groups or batches into one, keeping where each row came from."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from scan_pipeline.core.config import DedupConfig
from scan_pipeline.core.errors import LedgerError
from scan_pipeline.core.records import Retake
from scan_pipeline.ledger import dedup, journal
from scan_pipeline.ledger.audit import audit_records, stage_audit
from scan_pipeline.ledger.erase import erased_mask, erased_pairs
from scan_pipeline.ledger.paths import sidecar_paths
from scan_pipeline.ledger.rows import utc_timestamp
from scan_pipeline.ledger.schema import BUG_HINT, LEDGER_COLUMNS, problem_list, validate_ledger_frame
from scan_pipeline.ledger.sidecars import read_details
from scan_pipeline.ledger.store import (
    commit,
    empty_ledger,
    ensure_dir,
    ledger_csv_text,
    ledger_lock,
    read_ledger,
    run_lock,
)


@dataclass
class MergeSummary:
    inputs: int = 0
    rows_read: int = 0
    rows_total: int = 0
    same_rows: int = 0  # rows present in more than one input (same signature_id), kept once
    erased_skipped: int = 0  # rows an input's audit log says were erased
    duplicates: int = 0
    possible_duplicates: int = 0
    retakes: list[Retake] = field(default_factory=list)  # pages that are the same sheet as another input's
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
        mask = erased_mask(unique, erased)
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
        summary.retakes = result.retakes
        t2 = time.perf_counter()
        problems = validate_ledger_frame(after)
        if problems:
            raise LedgerError(problem_list("refusing to write an invalid merged ledger", problems),
                              file=str(out), hint=BUG_HINT)
        ensure_dir(out.parent)
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
                         have: AbstractSet[str] = frozenset()) -> str:
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
