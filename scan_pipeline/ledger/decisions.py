"""People's decisions (review, merge) are data: carried to the rows a page is read again into."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from scan_pipeline.core.text import fold
from scan_pipeline.ledger import dedup


def normalise_name(name: str) -> str:
    """Comparison key of a name: no accents, upper case, letters only, words sorted.

    So 'DUPONT Marie', 'Marie Dupont' and 'marie  dupont-' give the same key. (The deduplication
    itself compares `dedup.name_tokens`, which also folds OCR confusions.)
    """
    text = "".join(c if c.isalpha() else " " for c in fold(name))
    return " ".join(sorted(text.split()))


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


def without_dangling_duplicates(df: pd.DataFrame) -> pd.DataFrame:
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


def keep_decided_status(df: pd.DataFrame, statuses: dict[str, str]) -> pd.DataFrame:
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
