"""Deduplication across a whole ledger: the same signer signing twice is counted once.

Rows are blocked by postal code (and, for a row whose code the reader corrected, flag
`postal_corrected`, also by département), and names are compared only within a block:

1. every name gets a comparison key (`name_tokens`): accents dropped, upper case, the usual OCR
   confusions folded onto one letter (0/O, 1/I/L, 5/S, 8/B, rn/m, vv/w, cl/d...), words split;
2. within a block, `rapidfuzz.process.cdist` compares the keys (words sorted, so word order does
   not matter) and keeps pairs above a loose cutoff; names given with an initial ("DUPONT M.") are
   also looked up against every name reduced to that initial;
3. each kept pair is scored word by word (`name_score`): the best pairing of their words (swapped
   surname and given name), Levenshtein similarity per word weighted by length, an initial matching
   the first letter of a word.

A pair at or above `[dedup] certain_score` is the same signer; at or above `possible_score` it is a
possible duplicate a person decides on. A pair whose words differ only by an ending (Louis /
Louise, Jean / Jeanne) is at most possible; so is an initial that fits more than one signer of the
block, and a pair in different postal codes more than one digit apart. Certain pairs join into
signers (union-find); each signer's earliest row (processed_at, then source_file, page, row_number
as integers) is never a duplicate, the others become `duplicate` of it. Rows a person handled keep
their status (`corrected` can still be the earliest one; `rejected` rows are left out).
"""

from __future__ import annotations

import itertools
import re
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import pandas as pd
from rapidfuzz import fuzz, process
from rapidfuzz.distance import Levenshtein

from .config import DedupConfig, default_config

POSSIBLE_FLAG = "row_possible_duplicate"
CORRECTED_FLAG = "postal_corrected"
HANDLED = ("corrected", "rejected")  # statuses a person set: never changed here

# Characters OCR (and handwriting) confuse, folded onto one letter before comparing. Applied to the
# upper-cased, accent-free name, pairs first.
_OCR_PAIRS = (("RN", "M"), ("VV", "W"), ("CL", "D"))  # compared as look-alikes (see _coarse)
_OCR_CHARS = str.maketrans({"0": "O", "Q": "O", "1": "I", "L": "I", "|": "I", "!": "I", "5": "S", "8": "B",
                            "2": "Z", "6": "G", "9": "G", "4": "A", "7": "T", "3": "E", "$": "S"})
# Letters handwriting recognisers often take for one another (beyond those folded above): a
# substitution within a class costs half an edit. Classes are written on the folded letters.
_LOOKALIKE = str.maketrans({"F": "E", "C": "E", "G": "E", "O": "A", "V": "U", "H": "N", "K": "R", "T": "I"})
LOOKALIKE_COST = 0.5
_SPECIAL = {"Œ": "OE", "Æ": "AE", "ß": "SS", "Ø": "O", "Đ": "D", "Ł": "I"}


_NON_LETTERS = re.compile(r"[^A-Z]+")


@lru_cache(maxsize=65536)
def _fold_char(c: str) -> str:
    text = "".join(x for x in unicodedata.normalize("NFKD", c) if not unicodedata.combining(x)).upper()
    text = "".join(_SPECIAL.get(x, x) for x in text)
    return text.translate(_OCR_CHARS)


class _FoldTable(dict):
    """str.translate table built lazily: each character folded once (accents, case, OCR digits)."""

    def __missing__(self, code: int) -> str:
        value = _fold_char(chr(code))
        self[code] = value
        return value


_FOLD = _FoldTable()


@lru_cache(maxsize=200_000)
def name_tokens(name: str) -> tuple[str, ...]:
    """The comparison words of a name: accents off, upper case, OCR digits read as letters, in written order.

    'Hélène DUP0NT' and 'helene dupont' give ('HEIENE', 'DUPONT'). Cached: a ledger repeats names.
    """
    return tuple(_NON_LETTERS.sub(" ", name.translate(_FOLD)).split())


def name_key(name: str) -> str:
    """Word order ignored: the words of `name_tokens`, sorted and joined by one space."""
    return " ".join(sorted(name_tokens(name)))


@lru_cache(maxsize=200_000)
def _coarse(token: str) -> str:
    """Look-alike letters onto one; letter pairs read as one letter (RN/M, CL/D, VV/W) too."""
    token = token.translate(_LOOKALIKE)
    for a, b in _OCR_PAIRS:
        token = token.replace(a.translate(_LOOKALIKE).replace("L", "I"), b.translate(_LOOKALIKE))
    return token


def word_similarity(x: str, y: str) -> float:
    """0..1: 1 - edits / longer length, where a substitution between look-alike letters costs half."""
    if x == y:
        return 1.0
    fine = Levenshtein.distance(x, y)
    coarse = Levenshtein.distance(_coarse(x), _coarse(y))
    cost = coarse + LOOKALIKE_COST * max(0, fine - coarse)
    return max(0.0, 1.0 - cost / max(len(x), len(y)))


def _is_suffix_variant(a: str, b: str) -> bool:
    """One word is the other plus an ending (LOUIS/LOUISE, JEAN/JEANNE): a different name, not a misreading."""
    return len(a) != len(b) and min(len(a), len(b)) >= 2 and (a.startswith(b) or b.startswith(a))


@dataclass(frozen=True)
class Match:
    score: float  # 0..100
    initial: bool  # an initial stood for a word
    variant: bool  # two words differ only by an ending


_NO_MATCH = Match(0.0, False, False)


def name_score(a: Sequence[str], b: Sequence[str]) -> Match:
    """How alike two names' words are (`name_tokens`), 0..100, whatever their order.

    The words are paired the best way (every pairing of the shorter list into the longer one, up to
    four words; beyond, in sorted order); a word without a partner scores 0. Each pair scores its
    Levenshtein similarity, or 100 for an initial equal to the other word's first letter; the score
    is the mean weighted by the longer word's length.
    """
    if not a or not b:
        return _NO_MATCH
    short, long_ = (a, b) if len(a) <= len(b) else (b, a)
    best = _score_words(short, long_)
    if len(long_) > len(short):  # 'P.' may stand for 'Pierre-Louis': try joining two neighbouring words
        for k in range(len(long_) - 1):
            joined = (*long_[:k], long_[k] + long_[k + 1], *long_[k + 2:])
            found = _score_words(*sorted((short, joined), key=len))
            if found.score > best.score:
                best = found
    return best


def _score_words(short: Sequence[str], long_: Sequence[str]) -> Match:
    if len(long_) > 4:
        short, long_ = sorted(short), sorted(long_)
        orders: Iterable[Sequence[int]] = [range(len(short))]
    else:
        orders = itertools.permutations(range(len(long_)), len(short))
    best = _NO_MATCH
    for order in orders:
        total = weight = 0.0
        initial = variant = False
        for x, k in zip(short, order):
            y = long_[k]
            w = max(len(x), len(y))
            if len(x) == 1 or len(y) == 1:
                if _coarse(x[0]) != _coarse(y[0]):
                    total = -1.0
                    break
                sim, initial = 1.0, initial or len(x) != len(y)
            else:
                sim = word_similarity(x, y)
                variant = variant or _is_suffix_variant(x, y)
            total += sim * w
            weight += w
        if total < 0:
            continue
        used = set(order)
        weight += sum(len(t) for k, t in enumerate(long_) if k not in used)  # words without a partner
        score = 100.0 * total / weight if weight else 0.0
        if score > best.score:
            best = Match(score, initial, variant)
    return best


# --- the dedup pass -----------------------------------------------------------------------------


@dataclass
class DedupResult:
    frame: pd.DataFrame
    candidates: dict[str, list[str]] = field(default_factory=dict)  # signature_id -> other rows it may repeat
    duplicates: int = 0  # rows with status duplicate after the pass
    possible: int = 0  # rows flagged row_possible_duplicate after the pass


class _UnionFind:
    def __init__(self, n: int):
        self.parent = np.arange(n)

    def find(self, i: int) -> int:
        parent = self.parent
        root = i
        while parent[root] != root:
            root = parent[root]
        while parent[i] != root:
            parent[i], i = root, parent[i]
        return int(root)

    def union(self, i: int, j: int, rank: np.ndarray) -> None:
        ri, rj = self.find(i), self.find(j)
        if ri != rj:  # the earlier row stays the root, so a root is its signer's earliest row
            if rank[ri] < rank[rj]:
                self.parent[rj] = ri
            else:
                self.parent[ri] = rj


def order_rank(df: pd.DataFrame) -> np.ndarray:
    """Each row's place in 'earliest' order: processed_at, source_file, page, row_number (as integers)."""
    n = len(df)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    at = pd.factorize(df["processed_at"].to_numpy(dtype=object), sort=True)[0]
    src = pd.factorize(df["source_file"].to_numpy(dtype=object), sort=True)[0]
    page = pd.to_numeric(df["page"], errors="coerce").fillna(0).to_numpy(dtype=np.int64)
    row = pd.to_numeric(df["row_number"], errors="coerce").fillna(0).to_numpy(dtype=np.int64)
    order = np.lexsort((np.arange(n), row, page, src, at))
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    return rank


def _departement_of() -> Callable[[str], str]:
    from .postal import load_postal_list

    try:
        postal = load_postal_list()
    except Exception:  # noqa: BLE001 - without the list, the first two digits are a fair département
        return lambda code: code[:2]
    return lambda code: postal.departement(code) or code[:2]


def _pairs_in(keys: list[str], cutoff: float, chunk: int = 2048) -> Iterable[tuple[int, int]]:
    """Index pairs (i < j) of keys whose sorted-word ratio reaches cutoff."""
    n = len(keys)
    for start in range(0, n, chunk):
        queries = keys[start:start + chunk]
        scores = process.cdist(queries, keys, scorer=fuzz.ratio, score_cutoff=cutoff, dtype=np.uint8, workers=-1)
        qi, ci = np.nonzero(scores)
        qi = qi + start
        keep = ci > qi
        yield from zip(qi[keep].tolist(), ci[keep].tolist())


def _cross_pairs(q_keys: list[str], c_keys: list[str], cutoff: float) -> Iterable[tuple[int, int]]:
    if not q_keys or not c_keys:
        return
    scores = process.cdist(q_keys, c_keys, scorer=fuzz.ratio, score_cutoff=cutoff, dtype=np.uint8, workers=-1)
    qi, ci = np.nonzero(scores)
    yield from zip(qi.tolist(), ci.tolist())


def _initial_forms(tokens: tuple[str, ...]) -> list[str]:
    """The name with each one of its words reduced to its initial (sorted-word keys)."""
    forms = []
    for i, t in enumerate(tokens):
        if len(t) > 1:
            forms.append(" ".join(sorted(_coarse(w) for w in tokens[:i] + (t[0],) + tokens[i + 1:])))
    return forms


def find_edges(df: pd.DataFrame, cfg: DedupConfig, eligible: np.ndarray,
               tokens: list[tuple[str, ...]]) -> list[tuple[int, int, Match, bool]]:
    """Scored pairs of rows (i, j, match, same_code) above possible_score, from blocked comparisons."""
    postal = df["postal_code"].to_numpy(dtype=object)
    flags = df["flags"].to_numpy(dtype=object)
    keys = [" ".join(sorted(t)) for t in tokens]
    cutoff = max(0.0, cfg.possible_score - cfg.prefilter_margin)
    seen: set[tuple[int, int]] = set()
    edges: list[tuple[int, int, Match, bool]] = []

    def consider(i: int, j: int) -> None:
        pair = (i, j) if i < j else (j, i)
        if i == j or pair in seen:
            return
        seen.add(pair)
        if keys[i] == keys[j]:
            match = Match(100.0, False, False)
        else:
            match = name_score(tokens[i], tokens[j])
        if match.score >= cfg.possible_score:
            edges.append((pair[0], pair[1], match, postal[i] == postal[j]))

    idx = np.flatnonzero(eligible)
    if idx.size == 0:
        return edges
    blocks = pd.Series(idx).groupby(postal[idx], sort=False).indices
    for positions in blocks.values():
        if len(positions) < 2:
            continue
        rows = idx[positions]
        # identical keys are the same name: compare each distinct key once
        by_key: dict[str, list[int]] = {}
        for r in rows.tolist():
            by_key.setdefault(keys[r], []).append(r)
        distinct = list(by_key)
        for members in by_key.values():
            first = members[0]
            for other in members[1:]:
                consider(first, other)
        if len(distinct) > 1:
            for a, b in _pairs_in(distinct, cutoff):
                consider(by_key[distinct[a]][0], by_key[distinct[b]][0])
            # names with an initial: look them up among every name reduced to an initial
            with_initial = [k for k in distinct if any(len(t) == 1 for t in tokens[by_key[k][0]])]
            if with_initial:
                reduced: dict[str, list[str]] = {}
                for k in distinct:
                    for form in _initial_forms(tokens[by_key[k][0]]):
                        reduced.setdefault(form, []).append(k)
                for k in with_initial:
                    for other in reduced.get(" ".join(sorted(_coarse(w) for w in tokens[by_key[k][0]])), ()):
                        consider(by_key[k][0], by_key[other][0])
    # rows whose postal code was corrected: also compared with their département's other codes
    corrected = [i for i in idx.tolist() if CORRECTED_FLAG in flags[i].split(";")]
    if corrected:
        dep = _departement_of()
        dep_of_row = {i: dep(postal[i]) for i in idx.tolist()}
        by_dep: dict[str, list[int]] = {}
        for i in idx.tolist():
            by_dep.setdefault(dep_of_row[i], []).append(i)
        q_by_dep: dict[str, list[int]] = {}
        for i in corrected:
            q_by_dep.setdefault(dep_of_row[i], []).append(i)
        for d, queries in q_by_dep.items():
            pool = by_dep.get(d, [])
            for a, b in _cross_pairs([keys[i] for i in queries], [keys[j] for j in pool], cutoff):
                i, j = queries[a], pool[b]
                if postal[i] != postal[j]:
                    consider(i, j)
    return edges


def _hamming(a: str, b: str) -> int:
    return sum(x != y for x, y in zip(a, b)) + abs(len(a) - len(b))


def deduplicate(df: pd.DataFrame, cfg: DedupConfig | None = None) -> DedupResult:
    """Mark every later row of a signer `duplicate` of the earliest one; flag possible duplicates.

    Recomputed from scratch (idempotent): former duplicates and possible-duplicate flags are cleared
    first, then set again from what the ledger holds now. Rows with status corrected or rejected keep
    their status and flags; a rejected row is never compared.
    """
    cfg = cfg or default_config().dedup
    out = df.copy()
    n = len(out)
    if n == 0:
        return DedupResult(out)
    status = out["status"].to_numpy(dtype=object).copy()
    flags_in = out["flags"].to_numpy(dtype=object)
    names = out["name"].to_numpy(dtype=object)
    postal = out["postal_code"].to_numpy(dtype=object)
    ids = out["signature_id"].to_numpy(dtype=object)
    handled = np.isin(status, HANDLED)

    flags = flags_in.copy()
    for i in np.flatnonzero(~handled & np.array([POSSIBLE_FLAG in f for f in flags_in], dtype=bool)).tolist():
        flags[i] = ";".join(x for x in flags_in[i].split(";") if x != POSSIBLE_FLAG)
    tokens = [name_tokens(x) if x else () for x in names.tolist()]
    eligible = (status != "rejected") & (postal != "") & np.array([bool(t) for t in tokens], dtype=bool)
    rank = order_rank(out)

    edges = find_edges(out, cfg, eligible, tokens)
    uf = _UnionFind(n)
    possible: list[tuple[int, int]] = []
    initial_links: dict[int, set[int]] = {}
    for i, j, match, same_code in edges:
        certain = (match.score >= cfg.certain_score and not match.variant
                   and (same_code or _hamming(postal[i], postal[j]) <= cfg.max_code_digits))
        if certain and match.initial:
            # the row written with an initial: the one whose name has fewer full words
            short = i if sum(len(t) > 1 for t in tokens[i]) < sum(len(t) > 1 for t in tokens[j]) else j
            initial_links.setdefault(short, set()).add(j if short == i else i)
        elif certain:
            uf.union(i, j, rank)
        else:
            possible.append((i, j))
    for short, others in initial_links.items():
        # an initial is certain only when it fits one signer of the block
        full = {uf.find(o) for o in others if not any(len(t) == 1 for t in tokens[o])}
        signers = full or {uf.find(o) for o in others}
        if len(signers) == 1:
            uf.union(short, next(iter(others)), rank)
        else:
            possible += [(short, o) for o in others]

    roots = np.array([uf.find(i) for i in range(n)])
    # a signer's first row: earliest by rank (the union kept the earliest as root)
    new_status = status.copy()
    new_dup = np.where(handled, out["duplicate_of"].to_numpy(dtype=object), "").astype(object)
    for i in np.flatnonzero(~handled).tolist():
        new_status[i] = "review" if flags[i] else "ok"
    members: dict[int, list[int]] = {}
    for i in np.flatnonzero(roots != np.arange(n)).tolist():
        members.setdefault(int(roots[i]), []).append(i)
    candidates: dict[str, list[str]] = {}
    for root, rest in members.items():
        group = sorted([root, *rest], key=lambda k: rank[k])
        for i in group:
            candidates[ids[i]] = [ids[k] for k in group if k != i][: cfg.max_candidates_listed]
        for i in group[1:]:
            if not handled[i]:
                new_status[i], new_dup[i] = "duplicate", ids[root]
    flagged: set[int] = set()
    for i, j in possible:
        ri, rj = roots[i], roots[j]
        if ri == rj:
            continue
        # the later signer is the one in doubt; its earliest row gets the flag
        later, earlier = (ri, rj) if rank[ri] > rank[rj] else (rj, ri)
        target = i if roots[i] == later else j
        target = int(later) if new_status[target] == "duplicate" else target
        if handled[target] or new_status[target] == "duplicate":
            continue
        flagged.add(target)
        listed = candidates.setdefault(ids[target], [])
        if ids[earlier] not in listed and len(listed) < cfg.max_candidates_listed:
            listed.append(ids[earlier])
    for i in flagged:
        flags[i] = f"{flags[i]};{POSSIBLE_FLAG}" if flags[i] else POSSIBLE_FLAG
        new_status[i] = "review"
    out["status"] = pd.Series(new_status, index=out.index, dtype=str)
    out["duplicate_of"] = pd.Series(new_dup, index=out.index, dtype=str)
    out["flags"] = pd.Series(flags, index=out.index, dtype=str)
    return DedupResult(out, candidates, duplicates=int((new_status == "duplicate").sum()), possible=len(flagged))


def match_rows(df: pd.DataFrame, name: str, postal_code: str | None = None, *, cfg: DedupConfig | None = None,
               certain_only: bool = False) -> list[tuple[int, float]]:
    """Positions of rows whose name matches `name` (the dedup's comparison), best first, with scores.

    With postal_code, only rows of that code (or flagged postal_corrected in its département).
    certain_only keeps the matches dedup would call the same signer.
    """
    cfg = cfg or default_config().dedup
    query = name_tokens(name)
    if not query or df.empty:
        return []
    names = df["name"].to_numpy(dtype=object)
    pool = np.arange(len(df))
    if postal_code:
        codes = df["postal_code"].to_numpy(dtype=object)
        dep = _departement_of()
        flags = df["flags"].to_numpy(dtype=object)
        same = codes == postal_code
        near = np.array([CORRECTED_FLAG in f.split(";") for f in flags], dtype=bool) & np.array(
            [bool(c) and dep(c) == dep(postal_code) and _hamming(c, postal_code) <= cfg.max_code_digits
             for c in codes], dtype=bool)
        pool = np.flatnonzero(same | near)
    if pool.size == 0:
        return []
    keys = [" ".join(sorted(name_tokens(x))) if x else "" for x in names[pool].tolist()]
    cutoff = max(0.0, cfg.possible_score - cfg.prefilter_margin)
    qkey = " ".join(sorted(query))
    scores = process.cdist([qkey], keys, scorer=fuzz.ratio, score_cutoff=cutoff, dtype=np.uint8, workers=-1)[0]
    hits: list[tuple[int, float]] = []
    reduced_query = any(len(t) == 1 for t in query)
    for k in range(len(keys)):
        if not keys[k]:
            continue
        if scores[k] == 0 and not (reduced_query and " ".join(sorted(_coarse(w) for w in query))
                                   in _initial_forms(name_tokens(names[pool[k]]))):
            continue
        match = name_score(query, name_tokens(names[pool[k]]))
        threshold = cfg.certain_score if certain_only else cfg.possible_score
        if match.score >= threshold and not (certain_only and match.variant):
            hits.append((int(pool[k]), match.score))
    hits.sort(key=lambda h: (-h[1], h[0]))
    return hits


# --- generated signers, for measuring (tests and scripts/bench_ledger.py) -----------------------

# Confusions OCR makes on handwritten capitals: the first ones are folded by name_tokens, the
# others are left for the fuzzy comparison to absorb.
OCR_NOISE = (("O", "0"), ("I", "1"), ("L", "1"), ("I", "L"), ("M", "RN"), ("W", "VV"), ("D", "CL"), ("S", "5"),
             ("B", "8"), ("E", "F"), ("E", "C"), ("A", "O"), ("U", "V"), ("N", "H"), ("R", "K"), ("G", "C"),
             ("T", "I"), ("H", "N"))


def _strip_accents(text: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))


def noisy_spelling(surname: str, given: str, rnd) -> str:
    """How a signer's name may come out of the reader: accents dropped, case, order, OCR confusions,
    an initial for the given name."""
    s, g = surname, given
    if rnd.random() < 0.5:
        s, g = _strip_accents(s), _strip_accents(g)
    s = s.upper() if rnd.random() < 0.8 else s
    g = g.upper() if rnd.random() < 0.3 else g
    if rnd.random() < 0.1:
        g = g[0] + "."
    text = f"{g} {s}" if rnd.random() < 0.3 else f"{s} {g}"
    for _ in range(rnd.choice((0, 1, 1, 2))):
        spots = [(i, a, b) for a, b in OCR_NOISE for i in range(len(text)) if text.upper().startswith(a, i)]
        if spots:
            i, a, b = rnd.choice(spots)
            b = b if text[i].isupper() or not b.isalpha() else b.lower()
            text = text[:i] + b + text[i + len(a):]
    return text


def generated_signers(n_signers: int, repeat_share: float, seed: int, *, codes: Sequence[str],
                      max_repeats: int = 3) -> list[tuple[int, str, str]]:
    """(signer number, name as read, postal code) rows for n_signers invented people.

    A share of them sign again (up to max_repeats more times), with noisy spellings. Two signers of
    the same postal code never share a name (they could not be told apart). Names come from
    scan_pipeline/data/synth_names.json, codes from `codes`.
    """
    import json
    import random
    from importlib import resources

    data = json.loads(resources.files("scan_pipeline").joinpath("data/synth_names.json").read_text("utf-8"))
    rnd = random.Random(seed)
    taken: set[tuple[str, str, str]] = set()
    rows: list[tuple[int, str, str]] = []
    for person in range(n_signers):
        while True:
            surname, given, code = rnd.choice(data["surnames"]), rnd.choice(data["given_names"]), rnd.choice(codes)
            if (surname, given, code) not in taken:
                taken.add((surname, given, code))
                break
        first = f"{surname.upper()} {given}"  # the first row is read as written
        rows.append((person, first, code))
        if rnd.random() < repeat_share:
            for _ in range(rnd.randint(1, max_repeats)):
                rows.append((person, noisy_spelling(surname, given, rnd), code))
    rnd.shuffle(rows)
    return rows


def pair_quality(signers: Sequence[int], result: DedupResult) -> dict[str, float]:
    """Precision and recall of the duplicates found against the true signers (row i is signers[i]).

    A row marked duplicate is right when it points to a row of the same signer. Recall is the share
    of repeated rows (every row of a signer but one) marked duplicate; recall_with_possible also
    counts those flagged as possible duplicates of a row of the same signer.
    """
    df = result.frame
    ids = df["signature_id"].tolist()
    pos = {s: i for i, s in enumerate(ids)}
    status, dup = df["status"].tolist(), df["duplicate_of"].tolist()
    counts: dict[int, int] = {}
    for s in signers:
        counts[s] = counts.get(s, 0) + 1
    repeated = sum(c - 1 for c in counts.values())
    marked = right = possible_right = possible = 0
    for i, st in enumerate(status):
        if st == "duplicate":
            marked += 1
            right += signers[pos[dup[i]]] == signers[i]
        elif POSSIBLE_FLAG in df["flags"].iat[i]:
            possible += 1
            possible_right += any(signers[pos[c]] == signers[i] for c in result.candidates.get(ids[i], []))
    return {
        "rows": len(ids), "signers": len(counts), "repeated_rows": repeated, "marked_duplicate": marked,
        "precision": right / marked if marked else 1.0, "recall": right / repeated if repeated else 1.0,
        "possible_flagged": possible, "possible_right": possible_right,
        "recall_with_possible": min(1.0, (right + possible_right) / repeated) if repeated else 1.0,
    }
