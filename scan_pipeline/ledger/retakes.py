"""Retakes: the same sheet read twice (photographed again, scanned again), recognised by its rows.

A retake has new bytes, so its page_sha256 is new and the ledger cannot tell it from another sheet
by the file. Its rows can: the same signers at the same printed row numbers. Two pages are the same
sheet when at least `[dedup] retake_min_rows` row numbers, and at least `retake_share` of the row
numbers both pages hold, have rows whose names the dedup already matched (the same words, or a
pair scored at least possible_score within a postal code). Every row of the later page is then the
same signer as the earlier page's row at its row number, even where the two readings differ (a
name read otherwise on a blurred photo is still that row's signer): it becomes its duplicate, so a
retake's rows are never counted twice, and the rows only the retake holds (those cut off or
unreadable on the first photo) are kept.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from scan_pipeline.core.config import DedupConfig
from scan_pipeline.core.records import Retake


def same_sheets(df: pd.DataFrame, i: np.ndarray, j: np.ndarray, usable: np.ndarray, rank: np.ndarray,
                cfg: DedupConfig) -> tuple[list[Retake], np.ndarray, np.ndarray]:
    """The retakes among the pages of `df`, and the row pairs (u, v) they join into one signer.

    `i`, `j`: pairs of rows whose names matched; `usable`: rows that may be joined (not rejected,
    not a person's duplicate); `rank`: each row's place in earliest order (dedup.order_rank).
    """
    none = np.zeros(0, dtype=np.int64)
    pages = pd.factorize(df["page_sha256"].to_numpy(dtype=object))[0].astype(np.int64)
    number = pd.to_numeric(df["row_number"], errors="coerce").fillna(-1).to_numpy(dtype=np.int64)
    keep = (pages[i] != pages[j]) & (number[i] == number[j]) & usable[i] & usable[j]
    i, j = i[keep], j[keep]
    if i.size < cfg.retake_min_rows:
        return [], none, none
    # each page pair once, the earlier page first; how many distinct row numbers agree
    first = np.where(rank[i] < rank[j], pages[i], pages[j])
    second = np.where(rank[i] < rank[j], pages[j], pages[i])
    alike = pd.DataFrame({"a": first, "b": second, "n": number[i]}).drop_duplicates()
    counts = alike.groupby(["a", "b"]).size()
    counts = counts[counts >= cfg.retake_min_rows]
    if counts.empty:
        return [], none, none
    shas = df["page_sha256"].to_numpy(dtype=object)
    files, page_numbers = df["source_file"].to_numpy(dtype=object), df["page"].to_numpy(dtype=object)

    def where(k: int) -> str:
        return f"{files[k]}:page {page_numbers[k]}"

    rows_of: dict[int, dict[int, int]] = {}  # page -> row number -> its earliest row
    wanted = np.unique(np.concatenate([counts.index.get_level_values(0), counts.index.get_level_values(1)]))
    at = np.flatnonzero(np.isin(pages, wanted) & usable)
    for k in at[np.argsort(-rank[at])].tolist():  # latest first: the earliest row of a number stays
        rows_of.setdefault(int(pages[k]), {})[int(number[k])] = k
    taken: set[int] = set()  # a page is the retake of one sheet only: its best match
    retakes: list[Retake] = []
    u: list[int] = []
    v: list[int] = []
    for (a, b), n in sorted(counts.items(), key=lambda item: (-item[1], item[0])):
        if b in taken:
            continue
        both = sorted(rows_of[a].keys() & rows_of[b].keys())
        if n < cfg.retake_share * len(both):
            continue
        taken.add(b)
        later, earlier = _first(rows_of[b]), _first(rows_of[a])
        retakes.append(Retake(shas[later], shas[earlier], int(n), len(both), where(later), where(earlier)))
        u += [rows_of[a][k] for k in both]
        v += [rows_of[b][k] for k in both]
    return retakes, np.array(u, dtype=np.int64), np.array(v, dtype=np.int64)


def _first(rows: dict[int, int]) -> int:
    return next(iter(rows.values()))
