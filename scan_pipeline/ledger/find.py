"""Finding a signer's rows by name and postal code (erasure, `ledger find`)."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd
from rapidfuzz import fuzz

from scan_pipeline.core.config import DedupConfig
from scan_pipeline.ledger import dedup


def select_signer(df: pd.DataFrame, name: str, postal_code: str | None,
                  cfg: DedupConfig | None = None) -> list[int]:
    """Positions of every row of one signer: the dedup's certain name match, and their duplicates."""
    hits = [i for i, _ in dedup.match_rows(df, name, postal_code, cfg=cfg, certain_only=True)]
    if not hits:
        return []
    ids = df["signature_id"].to_numpy(dtype=object)
    dup = df["duplicate_of"].to_numpy(dtype=object)
    chosen = set(hits)
    linked = {ids[i] for i in chosen} | {dup[i] for i in chosen if dup[i]}
    chosen |= {i for i in range(len(df)) if ids[i] in linked or (dup[i] and dup[i] in linked)}
    return sorted(chosen)


def near_signers(df: pd.DataFrame, name: str, postal_code: str, exclude: Iterable[int] = (),
                 cfg: DedupConfig | None = None) -> list[int]:
    """Rows of the same postal code whose name is close without being the signer's for sure (a word
    of it read a little differently: "DURAND Jez" for DURAND Jean): for a person to decide."""
    taken = set(exclude)
    cutoff = (cfg or dedup.default_config().dedup).possible_score  # a word one letter off in six
    possible = {i for i, _ in dedup.match_rows(df, name, postal_code, cfg=cfg)}
    words = [w for w in dedup.name_tokens(name) if len(w) >= 3]
    same_code = np.flatnonzero(df["postal_code"].to_numpy(dtype=object) == postal_code).tolist()
    names = df["name"].to_numpy(dtype=object)
    for i in same_code:
        if i in taken or i in possible:
            continue
        tokens = dedup.name_tokens(str(names[i]))
        if any(fuzz.ratio(w, t) >= cutoff for w in words for t in tokens if len(t) >= 3):
            possible.add(i)
    return sorted(possible - taken)


def find_rows(df: pd.DataFrame, name: str | None, postal_code: str | None = None,
              cfg: DedupConfig | None = None) -> pd.DataFrame:
    """Rows whose name matches `name` (at least the dedup's possible_score), best first, with a score
    column. A name of one word (a surname alone) matches any word of a row's name; no name: every
    row of the postal code (score 100)."""
    cfg = cfg or dedup.default_config().dedup
    if not name:
        codes = df["postal_code"].to_numpy(dtype=object)
        hits = [(int(i), 100.0) for i in np.flatnonzero(codes == postal_code).tolist()] if postal_code else []
    elif len(dedup.name_tokens(name)) == 1:
        hits = _word_hits(df, dedup.name_tokens(name)[0], postal_code, cfg.possible_score)
    else:
        hits = dedup.match_rows(df, name, postal_code, cfg=cfg)
    found = df.iloc[[i for i, _ in hits]].copy()
    found.insert(0, "score", [s for _, s in hits])
    return found.reset_index(drop=True)


def _word_hits(df: pd.DataFrame, word: str, postal_code: str | None, cutoff: float) -> list[tuple[int, float]]:
    """Rows with a word of their name close to `word` (fuzzy ratio), best first."""
    names = df["name"].to_numpy(dtype=object)
    pool = np.arange(len(df))
    if postal_code:
        pool = np.flatnonzero(df["postal_code"].to_numpy(dtype=object) == postal_code)
    code, distinct = pd.factorize(names[pool]) if pool.size else (np.zeros(0, np.int64), [])
    best = {k: max((fuzz.ratio(word, t) for t in dedup.name_tokens(str(n))), default=0.0)
            for k, n in enumerate(list(distinct))}
    hits = [(int(pool[r]), float(best[c])) for r, c in enumerate(code.tolist()) if best[c] >= cutoff]
    hits.sort(key=lambda h: (-h[1], h[0]))
    return hits
