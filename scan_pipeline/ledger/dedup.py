"""Deduplication across a whole ledger: the same signer signing twice is counted once.

Rows are blocked by postal code (and, for a row whose code the reader corrected, flag
`postal_corrected`, also by département), and names are compared only within a block:

1. every distinct name gets its comparison words once (`name_tokens`): accents dropped, upper case,
   the usual OCR confusions folded onto one letter (0/O, 1/I/L, 5/S, 8/B, rn/m, vv/w, cl/d...);
   rows of a block with the same words in any order are the same name and compared once;
2. within a block, `rapidfuzz.process.cdist` compares the keys (words sorted, so word order does
   not matter) and keeps pairs above a loose cutoff; names given with an initial ("DUPONT M.") are
   also looked up against every name reduced to that initial;
3. each kept pair is scored word by word (`name_score`, or `name_scores` for many pairs at once,
   the same figures computed with numpy): the best pairing of their words (swapped surname and
   given name), Levenshtein similarity per word weighted by length, an initial matching the first
   letter of a word.

A pair at or above `[dedup] certain_score` is the same signer; at or above `possible_score` it is a
possible duplicate a person decides on. A pair whose words differ only by an ending (Louis /
Louise, Jean / Jeanne) is at most possible; so is an initial that fits more than one signer of the
block, and a pair in different postal codes more than one digit apart. Certain pairs join into
signers; each signer's earliest row (processed_at, then source_file, page, row_number as integers)
is never a duplicate, the others become `duplicate` of it. Rows a person handled keep their status
(`corrected` can still be the earliest one; `rejected` rows, and rows a person marked `duplicate`, are left out).

Everything that scales with the ledger is done on arrays or on distinct values (a million-row merge
is measured by scripts/bench_ledger.py); per-pair Python is left for the rare cases (names of more
than four words, initials, corrected postal codes).
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import os
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import pandas as pd
from rapidfuzz import fuzz, process
from rapidfuzz.distance import Levenshtein

from scan_pipeline.core.config import DedupConfig, default_config
from scan_pipeline.core.records import Retake
from scan_pipeline.core.text import fold
from scan_pipeline.ledger.retakes import same_sheets

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
MAX_PERMUTED_WORDS = 4  # beyond, words are paired in sorted order (permutations grow too fast)


_NON_LETTERS = re.compile(r"[^A-Z]+")


@lru_cache(maxsize=65536)
def _fold_char(c: str) -> str:
    return fold(c).translate(_OCR_CHARS)


class _FoldTable(dict):
    """str.translate table built lazily: each character folded once (accents, case, OCR digits)."""

    def __missing__(self, code: int) -> str:
        value = _fold_char(chr(code))
        self[code] = value
        return value


_FOLD = _FoldTable()


def _tokens(name: str) -> tuple[str, ...]:
    return tuple(_NON_LETTERS.sub(" ", name.translate(_FOLD)).split())


@lru_cache(maxsize=200_000)
def name_tokens(name: str) -> tuple[str, ...]:
    """The comparison words of a name: accents off, upper case, OCR digits read as letters, in written order.

    'Hélène DUP0NT' and 'helene dupont' give ('HEIENE', 'DUPONT'). Cached: a ledger repeats names.
    """
    return _tokens(name)


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


def _joined_forms(long_: Sequence[str]) -> list[tuple[str, ...]]:
    """'P.' may stand for 'Pierre-Louis': the words with two neighbours joined, each place in turn."""
    return [(*long_[:k], long_[k] + long_[k + 1], *long_[k + 2:]) for k in range(len(long_) - 1)]


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
    if len(long_) > len(short):
        for joined in _joined_forms(long_):
            found = _score_words(*sorted((short, joined), key=len))
            if found.score > best.score:
                best = found
    return best


def _score_words(short: Sequence[str], long_: Sequence[str]) -> Match:
    if len(long_) > MAX_PERMUTED_WORDS:
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


# --- the same scores for many pairs at once -----------------------------------------------------


def _score_words_many(short: np.ndarray, long_: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`_score_words` of P pairs whose word lists all have the same lengths s <= m <= 4 (object arrays
    of shape (P, s) and (P, m)): the same floating-point operations in the same order, on arrays."""
    n_pairs, s = short.shape
    m = long_.shape[1]
    code, words = pd.factorize(np.concatenate([short.ravel(), long_.ravel()]))
    words = np.asarray(words, dtype=object)
    coarse_words = np.array([_coarse(w) for w in words.tolist()], dtype=object)
    first = np.array([_coarse(w[0]) for w in words.tolist()], dtype=object)
    length = np.fromiter(map(len, words.tolist()), dtype=np.int64, count=len(words))
    xs = np.repeat(code[:short.size].reshape(n_pairs, s, 1), m, axis=2).ravel()
    ys = np.repeat(code[short.size:].reshape(n_pairs, 1, m), s, axis=1).ravel()
    fine = process.cpdist(words[xs].tolist(), words[ys].tolist(), scorer=Levenshtein.distance, dtype=np.int64,
                          workers=-1)
    coarse = process.cpdist(coarse_words[xs].tolist(), coarse_words[ys].tolist(), scorer=Levenshtein.distance,
                            dtype=np.int64, workers=-1)
    lx, ly = length[xs], length[ys]
    width = np.maximum(lx, ly)
    cost = coarse + LOOKALIKE_COST * np.maximum(0, fine - coarse)
    sim = np.maximum(0.0, 1.0 - cost / width)
    one = (lx == 1) | (ly == 1)  # an initial: it fits a word with its first letter
    valid = ~one | (first[xs] == first[ys])
    sim[one] = 1.0
    initial = one & (lx != ly)
    variant: np.ndarray = np.zeros(len(xs), dtype=bool)
    where = np.flatnonzero(~one & (lx != ly))  # both at least two letters long: an ending added?
    if where.size:
        x_words, y_words = words[xs[where]].tolist(), words[ys[where]].tolist()
        variant[where] = [x.startswith(y) or y.startswith(x) for x, y in zip(x_words, y_words, strict=True)]
    shape = (n_pairs, s, m)
    sim, width, valid, initial, variant = (a.reshape(shape) for a in (sim, width, valid, initial, variant))
    long_len = ly.reshape(shape)[:, 0, :]
    best = np.zeros(n_pairs)
    best_initial = np.zeros(n_pairs, dtype=bool)
    best_variant = np.zeros(n_pairs, dtype=bool)
    for order in itertools.permutations(range(m), s):
        total = np.zeros(n_pairs)
        weight = np.zeros(n_pairs)
        ok = np.ones(n_pairs, dtype=bool)
        has_initial = np.zeros(n_pairs, dtype=bool)
        has_variant = np.zeros(n_pairs, dtype=bool)
        for i, k in enumerate(order):
            w = width[:, i, k]
            total = total + sim[:, i, k] * w
            weight = weight + w
            ok &= valid[:, i, k]
            has_initial |= initial[:, i, k]
            has_variant |= variant[:, i, k]
        unused = [k for k in range(m) if k not in order]
        if unused:
            weight = weight + long_len[:, unused].sum(axis=1)
        score = 100.0 * total / weight
        better = ok & (score > best)  # the first best order wins, as in _score_words
        best = np.where(better, score, best)
        best_initial = np.where(better, has_initial, best_initial)
        best_variant = np.where(better, has_variant, best_variant)
    return best, best_initial, best_variant


def _word_matrix(names: list[tuple[str, ...]], width: int) -> np.ndarray:
    matrix = np.empty((len(names), width), dtype=object)
    matrix[:] = names
    return matrix


def name_scores(a: Sequence[Sequence[str]], b: Sequence[Sequence[str]]
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`name_score` of many pairs (a[k], b[k]): arrays of scores, initial and variant flags.

    The same figures as name_score, computed a group of pairs at a time (pairs whose names have the
    same numbers of words), with rapidfuzz's pairwise distances; names of more than four words go
    through name_score itself.
    """
    tokens = [tuple(t) for t in a] + [tuple(t) for t in b]
    n = len(a)
    return _pair_scores(tokens, np.arange(n), np.arange(n, 2 * n))


def _pair_scores(tokens: list[tuple[str, ...]], a: np.ndarray, b: np.ndarray,
                 count: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """name_score(tokens[a[k]], tokens[b[k]]) for every k, as arrays (count: the words of each name)."""
    if count is None:
        count = np.fromiter(map(len, tokens), dtype=np.int64, count=len(tokens))
    la, lb = count[a], count[b]
    short_rows, long_rows = np.where(la <= lb, a, b), np.where(la <= lb, b, a)  # as name_score chooses
    s_len, m_len = np.minimum(la, lb), np.maximum(la, lb)
    score = np.zeros(len(a))
    initial = np.zeros(len(a), dtype=bool)
    variant = np.zeros(len(a), dtype=bool)
    for k in np.flatnonzero((s_len > 0) & (m_len > MAX_PERMUTED_WORDS)).tolist():
        match = name_score(tokens[a[k]], tokens[b[k]])
        score[k], initial[k], variant[k] = match.score, match.initial, match.variant
    fast = (s_len > 0) & (m_len <= MAX_PERMUTED_WORDS)
    group = s_len * (MAX_PERMUTED_WORDS + 1) + m_len
    for code in np.unique(group[fast]).tolist():
        where = np.flatnonzero(fast & (group == code))
        s, m = divmod(code, MAX_PERMUTED_WORDS + 1)
        shorts = _word_matrix([tokens[r] for r in short_rows[where].tolist()], s)
        longs = _word_matrix([tokens[r] for r in long_rows[where].tolist()], m)
        best, best_initial, best_variant = _score_words_many(shorts, longs)
        if m > s:  # two neighbouring words joined may fit an initial better
            for j in range(m - 1):
                joined = np.concatenate([longs[:, :j], (longs[:, j] + longs[:, j + 1])[:, None], longs[:, j + 2:]],
                                        axis=1)
                found, found_initial, found_variant = _score_words_many(shorts, joined)
                better = found > best
                best = np.where(better, found, best)
                best_initial = np.where(better, found_initial, best_initial)
                best_variant = np.where(better, found_variant, best_variant)
        score[where], initial[where], variant[where] = best, best_initial, best_variant
    return score, initial, variant


# --- the dedup pass -----------------------------------------------------------------------------


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Python's cycle collector off for a while (then back as it was).

    Work on a million rows creates millions of lists and tuples; every so often the collector walks
    all of them looking for cycles this code never makes (seconds on a large merge). Memory is still
    freed as usual, by reference counting.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


@dataclass
class DedupResult:
    frame: pd.DataFrame
    candidates: dict[str, list[str]] = field(default_factory=dict)  # signature_id -> other rows it may repeat
    duplicates: int = 0  # rows with status duplicate after the pass
    possible: int = 0  # rows flagged row_possible_duplicate after the pass
    retakes: list[Retake] = field(default_factory=list)  # pages that are the same sheet as an earlier one


@dataclass(frozen=True)
class Names:
    """The comparison words of every row, computed once per distinct name."""

    tokens: list[tuple[str, ...]]  # per row: name_tokens of its name
    count: np.ndarray  # per row: how many words
    key: np.ndarray  # per row: an integer, equal for the same words in any order
    key_text: np.ndarray  # per row: the words sorted, joined by a space (object array)
    has_initial: np.ndarray  # per row: a word of one letter
    row_words: np.ndarray  # per row: where its words start in `coarse_words`
    coarse_words: np.ndarray  # each word of each distinct name, as an integer equal for equal `_coarse` forms


def read_names(names: np.ndarray) -> Names:
    """Names of rows (an object array of text), each distinct one folded once."""
    code, distinct = pd.factorize(names)
    distinct_tokens = [_tokens(x) for x in distinct.tolist()]
    distinct_keys = np.array([" ".join(sorted(t)) for t in distinct_tokens], dtype=object)
    key, _ = pd.factorize(distinct_keys)
    count = np.fromiter(map(len, distinct_tokens), dtype=np.int64, count=len(distinct_tokens))
    flat = list(itertools.chain.from_iterable(distinct_tokens))
    word, vocabulary = pd.factorize(np.array(flat, dtype=object))
    coarse, _ = pd.factorize(np.array([_coarse(w) for w in vocabulary.tolist()], dtype=object))
    word_len = np.fromiter(map(len, vocabulary.tolist()), dtype=np.int64, count=len(vocabulary))[word]
    owner = np.repeat(np.arange(len(distinct_tokens)), count)
    has_initial = np.bincount(owner[word_len == 1], minlength=len(distinct_tokens)) > 0
    start = np.cumsum(count) - count
    return Names([distinct_tokens[c] for c in code.tolist()], count[code], key[code].astype(np.int64),
                 distinct_keys[code], has_initial[code], start[code], coarse[word].astype(np.int64))


@dataclass(frozen=True)
class Edges:
    """Scored pairs of rows (i < j) at or above possible_score, as arrays of equal length."""

    i: np.ndarray
    j: np.ndarray
    score: np.ndarray
    initial: np.ndarray
    variant: np.ndarray
    same_code: np.ndarray


def order_rank(df: pd.DataFrame, tie: np.ndarray | None = None) -> np.ndarray:
    """Each row's place in 'earliest' order: processed_at, source_file, page, row_number (as integers).

    Rows equal on all four keep their order in the frame, or the order of `tie` (one number per row).
    """
    n = len(df)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    at = pd.factorize(df["processed_at"].to_numpy(dtype=object), sort=True)[0]
    src = pd.factorize(df["source_file"].to_numpy(dtype=object), sort=True)[0]
    page, row = _as_integers(df["page"]), _as_integers(df["row_number"])
    order = np.lexsort((np.arange(n), *(() if tie is None else (tie,)), row, page, src, at))
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    return rank


def _as_integers(column: pd.Series) -> np.ndarray:
    """Text of whole numbers as integers (0 when not a number), each distinct text converted once."""
    code, distinct = pd.factorize(column.to_numpy(dtype=object))
    values = pd.to_numeric(pd.Series(distinct, dtype=object), errors="coerce").fillna(0).to_numpy(dtype=np.int64)
    return values[code] if len(values) else np.zeros(len(code), dtype=np.int64)


def _departement_of() -> Callable[[str], str]:
    from scan_pipeline.core.postcodes import load_postal_list

    try:
        postal = load_postal_list()
    except Exception:  # noqa: BLE001 - without the list, the first two digits are a fair département
        return lambda code: code[:2]
    return lambda code: postal.departement(code) or code[:2]


def _close_keys(keys: list[str], cutoff: float) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs (a < b) of keys whose sorted-word ratio reaches cutoff."""
    scores = process.cdist(keys, keys, scorer=fuzz.ratio, score_cutoff=cutoff, dtype=np.uint8, workers=1)
    a, b = np.nonzero(np.triu(scores, 1))
    return a, b


def _close_pairs_in_blocks(blocks: list[np.ndarray], keys: np.ndarray, cutoff: float) -> tuple[np.ndarray, np.ndarray]:
    """Row pairs (i, j) within each block (an array of rows with distinct keys) whose keys are close.

    One cdist per block (a block is small: one postal code), spread over the machine's cores by
    threads: rapidfuzz compares without holding the GIL.
    """
    def one(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        a, b = _close_keys(keys[rows].tolist(), cutoff)
        return rows[a], rows[b]

    workers = min(len(blocks), os.cpu_count() or 1)
    if workers > 1:
        with ThreadPoolExecutor(workers) as pool:
            found = list(pool.map(one, blocks))
    else:
        found = [one(rows) for rows in blocks]
    if not found:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    return np.concatenate([f[0] for f in found]), np.concatenate([f[1] for f in found])


def _initial_form(tokens: tuple[str, ...]) -> str:
    return " ".join(sorted(_coarse(w) for w in tokens))


def _initial_forms(tokens: tuple[str, ...]) -> list[str]:
    """The name with each one of its words reduced to its initial (sorted-word keys); in a name of three
    words or more, also two neighbouring words reduced to the first one's initial: "MEUNIER J." is how
    Jean-Pierre Meunier, whose hyphenated given name reads as two words, writes his name in short."""
    forms = []
    for i, t in enumerate(tokens):
        if len(t) > 1:
            forms.append(_initial_form(tokens[:i] + (t[0],) + tokens[i + 1:]))
            if len(tokens) >= 3 and i + 1 < len(tokens) and len(tokens[i + 1]) > 1:
                forms.append(_initial_form(tokens[:i] + (t[0],) + tokens[i + 2:]))
    return forms


def _initial_pairs(block: np.ndarray, reps: np.ndarray, names: Names) -> list[tuple[int, int]]:
    """(row with an initial, row of the same block whose name reduced to that initial is the same)."""
    queries = np.flatnonzero(names.has_initial[reps])
    if queries.size == 0:
        return []
    tokens = names.tokens
    count = names.count[reps]
    # a name that reduces to a query's form has its number of words (or one more) and shares a word
    # with it (or has a single word): only those are reduced, not every name of the ledger
    owner = np.repeat(np.arange(len(reps)), count)
    at = np.repeat(names.row_words[reps] - (np.cumsum(count) - count), count) + np.arange(int(count.sum()))
    code = names.coarse_words[at]
    width = int(code.max()) + 1
    query_words = np.isin(owner, queries)
    shares = np.zeros(len(reps), dtype=bool)
    shares[owner[np.isin(block[owner] * width + code, block[owner[query_words]] * width + code[query_words])]] = True
    one_word = np.isin(block, block[queries[count[queries] == 1]]) & (count == 1)
    longest = int(count.max()) + 1
    query_counts = block[queries] * longest + count[queries]
    same_count = np.isin(block * longest + count, query_counts) | (
        (count >= 3) & np.isin(block * longest + count - 1, query_counts))  # two words to one initial
    wanted: dict[tuple[int, str], list[int]] = {}
    for q, b in zip(reps[queries].tolist(), block[queries].tolist(), strict=True):
        wanted.setdefault((b, _initial_form(tokens[q])), []).append(q)
    pairs = []
    for k in np.flatnonzero((shares | one_word) & same_count).tolist():
        r, b = int(reps[k]), int(block[k])
        for form in _initial_forms(tokens[r]):
            for q in wanted.get((b, form), ()):
                if q != r:
                    pairs.append((q, r))
    return pairs


def find_edges(df: pd.DataFrame, cfg: DedupConfig, eligible: np.ndarray, names: Names) -> tuple[Edges, np.ndarray]:
    """The scored pairs of rows worth a decision, and each row's representative.

    Rows of one postal code with the same key (the same words in any order) are one name: each is
    tied to the first of them (its representative, returned per row; -1 when not eligible), and only
    representatives are compared with each other.
    """
    tokens, keys = names.tokens, names.key
    n = len(df)
    postal = df["postal_code"].to_numpy(dtype=object)
    rep = np.full(n, -1, dtype=np.int64)
    idx = np.flatnonzero(eligible)
    if idx.size == 0:
        return _edges([], [], [], [], [], []), rep
    block = pd.factorize(postal[idx])[0].astype(np.int64)
    combined = block * (int(keys.max()) + 1) + keys[idx]
    _, first, inverse = np.unique(combined, return_index=True, return_inverse=True)
    rep[idx] = idx[first[inverse]]  # idx is ascending: the first row of each (block, key)
    reps = idx[first]  # sorted by (block, key)
    rep_block = block[first]

    cutoff = max(0.0, cfg.possible_score - cfg.prefilter_margin)
    bounds = np.flatnonzero(np.diff(rep_block)) + 1
    blocks = [b for b in np.split(reps, bounds) if len(b) > 1]
    pi, pj = _close_pairs_in_blocks(blocks, names.key_text, cutoff)
    pi, pj = np.minimum(pi, pj), np.maximum(pi, pj)  # the earlier row's name first, as before
    extra = _initial_pairs(rep_block, reps, names)  # (the name with an initial, the other)
    extra += _corrected_pairs(df, idx, names.key_text, cutoff)  # (the corrected row, the other)
    if extra:
        ei, ej = np.array(extra, dtype=np.int64).T
        pi, pj = np.concatenate([pi, ei]), np.concatenate([pj, ej])
    # each pair once, scored in the order it was first found (ties between pairings keep their flags)
    _, first_found = np.unique(np.minimum(pi, pj) * n + np.maximum(pi, pj), return_index=True)
    pi, pj = pi[first_found], pj[first_found]
    score = np.full(len(pi), 100.0)
    initial = np.zeros(len(pi), dtype=bool)
    variant = np.zeros(len(pi), dtype=bool)
    other = np.flatnonzero(keys[pi] != keys[pj])  # the same key: rows of two postal codes, the same name
    if other.size:
        score[other], initial[other], variant[other] = _pair_scores(tokens, pi[other], pj[other], names.count)
    lo, hi = np.minimum(pi, pj), np.maximum(pi, pj)
    keep = score >= cfg.possible_score
    lo, hi = lo[keep], hi[keep]
    edges = _edges(lo, hi, score[keep], initial[keep], variant[keep], postal[lo] == postal[hi])
    return edges, rep


def _edges(i, j, score, initial, variant, same_code) -> Edges:
    return Edges(np.asarray(i, dtype=np.int64), np.asarray(j, dtype=np.int64), np.asarray(score, dtype=float),
                 np.asarray(initial, dtype=bool), np.asarray(variant, dtype=bool), np.asarray(same_code, dtype=bool))


def _corrected_pairs(df: pd.DataFrame, idx: np.ndarray, key_text: np.ndarray, cutoff: float) -> list[tuple[int, int]]:
    """Rows whose postal code was corrected, with close names of their département's other codes."""
    corrected = idx[_has_flag(df["flags"].to_numpy(dtype=object)[idx], CORRECTED_FLAG)]
    if corrected.size == 0:
        return []
    postal = df["postal_code"].to_numpy(dtype=object)
    dep = _departement_of()
    codes, code_of = pd.factorize(postal[idx])
    dep_of_row = np.array([dep(c) for c in code_of], dtype=object)[codes]
    pool_of: dict[str, np.ndarray] = {d: idx[rows] for d, rows in
                                      pd.Series(np.arange(len(idx))).groupby(dep_of_row).indices.items()}
    dep_of = dict(zip(idx.tolist(), dep_of_row.tolist(), strict=True))
    pairs = []
    by_dep: dict[str, list[int]] = {}
    for i in corrected.tolist():
        by_dep.setdefault(dep_of[i], []).append(i)
    for d, queries in by_dep.items():
        pool = pool_of[d]
        scores = process.cdist(key_text[queries].tolist(), key_text[pool].tolist(),
                               scorer=fuzz.ratio, score_cutoff=cutoff, dtype=np.uint8, workers=-1)
        for a, b in zip(*np.nonzero(scores), strict=True):
            i, j = queries[a], int(pool[b])
            if postal[i] != postal[j]:
                pairs.append((i, j))
    return pairs


def _has_flag(flags: np.ndarray, flag: str) -> np.ndarray:
    """Which rows' flags (text, ';'-separated) hold `flag`: each distinct value looked at once."""
    code, distinct = pd.factorize(flags)
    has = np.array([flag in f.split(";") for f in distinct.tolist()] + [False], dtype=bool)
    return has[code]  # (an empty frame gives no codes)


def _hamming(a: str, b: str) -> int:
    return sum(x != y for x, y in zip(a, b)) + abs(len(a) - len(b))


def _components(n: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Connected components of the graph with edges (u, v): each node's label, the smallest node of its part."""
    label = np.arange(n)
    while True:
        lu, lv = label[u], label[v]
        differ = lu != lv
        if not differ.any():
            return label
        low = np.minimum(lu[differ], lv[differ])
        np.minimum.at(label, lu[differ], low)  # hook one root under the other
        np.minimum.at(label, lv[differ], low)
        while True:  # then point every node at its root
            up = label[label]
            if np.array_equal(up, label):
                break
            label = up


class _Signers:
    """Rows joined into signers; each signer's root is its earliest row (lowest rank)."""

    def __init__(self, n: int, rank: np.ndarray, u: np.ndarray, v: np.ndarray):
        label = _components(n, u, v)
        first = np.full(n, n, dtype=np.int64)
        np.minimum.at(first, label, rank)
        by_rank = np.empty(n, dtype=np.int64)
        by_rank[rank] = np.arange(n)
        self.root = by_rank[first[label]]
        self.rank = rank
        self.later: dict[int, int] = {}  # joins made after the components: root -> new root

    def find(self, i: int) -> int:
        r = int(self.root[i])
        while r in self.later:
            r = self.later[r]
        return r

    def union(self, i: int, j: int) -> None:
        ri, rj = self.find(i), self.find(j)
        if ri != rj:  # the earlier row stays the root
            if self.rank[ri] < self.rank[rj]:
                self.later[rj] = ri
            else:
                self.later[ri] = rj

    def roots(self) -> np.ndarray:
        if not self.later:
            return self.root
        remap = np.arange(len(self.root))
        for old in self.later:
            remap[old] = self.find(old)
        return remap[self.root]


def _certain(edges: Edges, postal: np.ndarray, cfg: DedupConfig) -> np.ndarray:
    """Edges that join two rows into one signer (an initial's edge: only if it fits one signer, see _join)."""
    code_ok = edges.same_code.copy()
    for k in np.flatnonzero(~code_ok).tolist():
        code_ok[k] = _hamming(postal[edges.i[k]], postal[edges.j[k]]) <= cfg.max_code_digits
    return (edges.score >= cfg.certain_score) & ~edges.variant & code_ok


def _join(signers: _Signers, edges: Edges, certain: np.ndarray, tokens: list[tuple[str, ...]]) -> list[tuple[int, int]]:
    """Join the rows of certain edges with an initial into signers; return the possible pairs (i, j)."""
    possible = [(int(a), int(b)) for a, b in zip(edges.i[~certain], edges.j[~certain], strict=True)]
    initial_links: dict[int, list[int]] = {}
    for k in np.flatnonzero(certain & edges.initial).tolist():
        i, j = int(edges.i[k]), int(edges.j[k])
        # the row written with an initial: the one whose name has fewer full words
        short = i if sum(len(t) > 1 for t in tokens[i]) < sum(len(t) > 1 for t in tokens[j]) else j
        initial_links.setdefault(short, []).append(j if short == i else i)
    for short, others in initial_links.items():
        # an initial is certain only when it fits one signer of the block
        full = [o for o in others if not any(len(t) == 1 for t in tokens[o])]
        fitting = full or others
        if len({signers.find(o) for o in fitting}) == 1:
            signers.union(short, fitting[0])
        else:
            possible += [(short, o) for o in others]
    return possible


def _group_candidates(roots: np.ndarray, rank: np.ndarray, ids: np.ndarray, limit: int) -> dict[str, list[str]]:
    """For each row of a signer with several rows: the signer's other rows, earliest first (at most limit)."""
    n = len(roots)
    size = np.bincount(roots, minlength=n)
    grouped = np.flatnonzero(size[roots] > 1)
    if grouped.size == 0:
        return {}
    order = grouped[np.lexsort((rank[grouped], roots[grouped]))]
    starts = np.flatnonzero(np.r_[True, np.diff(roots[order]) != 0])
    sizes = np.diff(np.r_[starts, len(order)])
    candidates: dict[str, list[str]] = {}
    for width in np.unique(sizes).tolist():  # signers with the same number of rows: one table
        table = ids[order[starts[sizes == width][:, None] + np.arange(width)]]
        for k in range(width):
            others = [j for j in range(width) if j != k][:max(limit, 0)]
            candidates.update(zip(table[:, k].tolist(), table[:, others].tolist(), strict=True))
    return candidates


def deduplicate(df: pd.DataFrame, cfg: DedupConfig | None = None) -> DedupResult:
    """Mark every later row of a signer `duplicate` of the earliest one; flag possible duplicates.

    Recomputed from scratch (idempotent): former duplicates and possible-duplicate flags are cleared
    first, then set again from what the ledger holds now. Rows with status corrected or rejected, and
    rows a person marked duplicate (reviewed_at set), keep their status, flags and duplicate_of;
    rejected rows and those duplicates are never compared.
    """
    with gc_paused():
        return _deduplicate(df, cfg or default_config().dedup)


def _deduplicate(df: pd.DataFrame, cfg: DedupConfig) -> DedupResult:
    out = df.copy(deep=False)
    n = len(out)
    if n == 0:
        return DedupResult(out.copy())
    status = out["status"].to_numpy(dtype=object)
    flags = out["flags"].to_numpy(dtype=object).copy()
    postal = out["postal_code"].to_numpy(dtype=object)
    ids = out["signature_id"].to_numpy(dtype=object)
    handled = np.isin(status, HANDLED)
    if "reviewed_at" in out.columns:  # a volunteer's "duplicate" (review import) is theirs to undo, not ours
        handled |= (status == "duplicate") & (out["reviewed_at"].to_numpy(dtype=object) != "")

    stale = np.flatnonzero(~handled & _has_flag(flags, POSSIBLE_FLAG))
    for i in stale.tolist():
        flags[i] = ";".join(x for x in flags[i].split(";") if x != POSSIBLE_FLAG)
    names = read_names(out["name"].to_numpy(dtype=object))
    eligible = (status != "rejected") & ~(handled & (status == "duplicate")) & (postal != "") & (names.key_text != "")
    rank = order_rank(out)

    edges, rep = find_edges(out, cfg, eligible, names)
    same_name = np.flatnonzero((rep >= 0) & (rep != np.arange(n)))  # the same words: the same signer
    certain = _certain(edges, postal, cfg)
    plain = certain & ~edges.initial
    # a sheet read twice: its rows joined by row number, however differently they were read
    usable = (status != "rejected") & ~(handled & (status == "duplicate"))
    retakes, ru, rv = same_sheets(out, np.concatenate([same_name, edges.i]), np.concatenate([rep[same_name], edges.j]),
                                  usable, rank, cfg)
    signers = _Signers(n, rank, np.concatenate([same_name, edges.i[plain], ru]),
                       np.concatenate([rep[same_name], edges.j[plain], rv]))
    possible = _join(signers, edges, certain, names.tokens)
    roots = signers.roots()

    new_status = np.where(handled, status, np.where(flags != "", "review", "ok")).astype(object)
    new_dup = np.where(handled, out["duplicate_of"].to_numpy(dtype=object), "").astype(object)
    later = ~handled & (roots != np.arange(n))  # a signer's rows after its earliest one
    new_status[later] = "duplicate"
    new_dup[later] = ids[roots[later]]
    candidates = _group_candidates(roots, rank, ids, cfg.max_candidates_listed)
    flagged: set[int] = set()
    for i, j in sorted(possible):
        ri, rj = roots[i], roots[j]
        if ri == rj:
            continue
        # the later signer is the one in doubt; its earliest row gets the flag
        later_root, earlier = (ri, rj) if rank[ri] > rank[rj] else (rj, ri)
        target = i if roots[i] == later_root else j
        target = int(later_root) if new_status[target] == "duplicate" else target
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
    return DedupResult(out, candidates, duplicates=int((new_status == "duplicate").sum()), possible=len(flagged),
                       retakes=retakes)


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
    # each distinct name once: a ledger repeats names
    name_code, distinct = pd.factorize(names[pool])
    distinct_tokens = [_tokens(x) for x in distinct.tolist()]
    keys = [" ".join(sorted(t)) for t in distinct_tokens]
    cutoff = max(0.0, cfg.possible_score - cfg.prefilter_margin)
    scores = process.cdist([" ".join(sorted(query))], keys, scorer=fuzz.ratio, score_cutoff=cutoff,
                           dtype=np.uint8, workers=-1)[0]
    reduced = _initial_form(query) if any(len(t) == 1 for t in query) else None
    close = [k for k in range(len(keys)) if keys[k] and (scores[k] or (
        reduced is not None and reduced in _initial_forms(distinct_tokens[k])))]
    score, _, variant = name_scores([query] * len(close), [distinct_tokens[k] for k in close])
    threshold = cfg.certain_score if certain_only else cfg.possible_score
    fits = {k: s for k, s, v in zip(close, score.tolist(), variant.tolist(), strict=True)
            if s >= threshold and not (certain_only and v)}
    hits = [(int(pool[r]), fits[c]) for r, c in enumerate(name_code.tolist()) if c in fits]
    hits.sort(key=lambda h: (-h[1], h[0]))
    return hits
