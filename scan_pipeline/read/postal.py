"""French postal codes: the bundled list of valid codes and a first decoder for written codes.

The list (scan_pipeline/data/postal_codes.csv.gz) is built by scan_pipeline.training.build_postal_codes from the
npm package codes-postaux 4.1.2 (MIT). It has no 98x codes (Monaco, Pacific collectivities) and no
977/978 (Saint-Barthélemy, Saint-Martin): such codes decode as invalid and go to review or reject.
"""

from __future__ import annotations

import functools
import math
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from scan_pipeline.core.config import PostalConfig
from scan_pipeline.core.ocr import OcrEngine
from scan_pipeline.core.postcodes import PostalList, PrefixTree
from scan_pipeline.core.records import Band, FieldReading
from scan_pipeline.core.text import fold
from scan_pipeline.page.cells import prepare_for_ocr

if TYPE_CHECKING:  # imported where used: the digit model's module loads cv2
    from scan_pipeline.read.digits import DigitModel

# Letters (and strokes) that OCR engines or hurried hands produce instead of digits.
_OCR_TO_DIGIT = {
    "O": "0", "o": "0", "Q": "0", "D": "0",
    "I": "1", "l": "1", "|": "1", "!": "1",
    "Z": "2",
    "S": "5", "s": "5",
    "B": "8",
    "G": "6",
    "T": "7",
    "g": "9", "q": "9",
}
_OCR_TABLE = str.maketrans(_OCR_TO_DIGIT)

# Digit pairs often confused in handwriting; used only to order alternatives for a reviewer.
_CONFUSABLE = frozenset(frozenset(p) for p in (
    "17", "38", "56", "06", "08", "09", "49", "27", "68", "58", "35", "89", "14", "23", "01", "69",
))

# A one-digit correction is a guess: its confidence is the OCR's, halved, so it never looks certain.
CORRECTION_FACTOR = 0.5
MAX_ALTERNATIVES = 5


def normalise_written_code(raw: str) -> str:
    """The digits a person most likely meant: '75 011' -> '75011', 'O6I00' -> '06100'.

    Separators are dropped, common letter look-alikes become digits, anything else is dropped.
    The result may have any length; the caller checks it.
    """
    # NFKC folds full-width digits and no-break spaces into their plain forms.
    text = unicodedata.normalize("NFKC", raw).translate(_OCR_TABLE)
    return "".join(c for c in text if "0" <= c <= "9")


@dataclass(frozen=True)
class PostalDecision:
    value: str  # a valid 5-digit code, or "" when none could be chosen
    raw: str  # the engine's text, unchanged
    confidence: float  # 0..1
    band: Band
    valid: bool
    commune: str  # commune label of `value`, "" when there is no value
    alternatives: tuple[str, ...] = ()
    flags: tuple[str, ...] = ()  # each starts with "postal_"

    def to_field(self) -> FieldReading:
        return FieldReading(self.value, self.raw, self.confidence, self.band, self.alternatives)


def _clamp(x: float) -> float:
    return 0.0 if x is None or math.isnan(x) else min(1.0, max(0.0, float(x)))


def _rank_alternatives(digits: str, candidates: list[str]) -> list[str]:
    # Candidates whose changed digit is a usual confusion come first, then code order.
    def key(code: str) -> tuple[int, str]:
        pair = next(frozenset((a, b)) for a, b in zip(digits, code, strict=True) if a != b)
        return (0 if pair in _CONFUSABLE else 1, code)

    return sorted(candidates, key=key)


def _fold(text: str) -> str:
    """A commune name for comparison: no accents, upper case, hyphens and apostrophes as spaces."""
    text = "".join(c if c.isalnum() else " " for c in fold(text))
    return " ".join(w if w not in ("ST", "STE") else {"ST": "SAINT", "STE": "SAINTE"}[w] for w in text.split())


@functools.lru_cache(maxsize=4)
def _commune_index(postal_list: PostalList) -> dict[str, tuple[str, ...]]:
    index: dict[str, list[str]] = {}
    for code in postal_list.codes:
        for name in postal_list.communes(code):
            index.setdefault(_fold(name), []).append(code)
    return {k: tuple(v) for k, v in index.items()}


def codes_of_commune(text: str, postal_list: PostalList) -> tuple[str, ...]:
    """The codes serving a commune written by name ('Bourg en Bresse', 'st denis'); () if none."""
    index = _commune_index(postal_list)
    key = _fold(text)
    if key in index or len(key) < 4:
        return index.get(key, ())
    # 'Paris', 'Lyon', 'Marseille': the list names their arrondissements
    return tuple(sorted({c for name, codes in index.items() if name.startswith(key + " ") for c in codes}))


def decode_postal_text(raw: str, ocr_confidence: float, postal_list: PostalList, *,
                       accept_confidence: float = 0.80) -> PostalDecision:
    """Turn the engine's text for a postal code cell into a decision.

    A first, text-only decoder: exact codes are accepted when the engine is confident, a code one
    digit away from exactly one valid code is corrected but always sent to review.
    """
    conf = _clamp(ocr_confidence)
    if not raw or not raw.strip():
        return PostalDecision("", raw, 0.0, "reject", False, "", (), ("postal_missing",))

    digits = normalise_written_code(raw)
    flags: list[str] = []
    if any(c in _OCR_TO_DIGIT for c in unicodedata.normalize("NFKC", raw)):
        flags.append("postal_letters_mapped")

    def found(code: str, confidence: float, extra: tuple[str, ...]) -> PostalDecision:
        band: Band = "accept" if confidence >= accept_confidence else "review"
        more = () if band == "accept" else ("postal_low_conf",)
        return PostalDecision(code, raw, confidence, band, True, postal_list.commune_label(code), (),
                              (*flags, *extra, *more))

    def rejected() -> PostalDecision:
        return PostalDecision("", raw, 0.0, "reject", False, "", (), (*flags, "postal_invalid"))

    letters = sum(c.isalpha() for c in raw)
    if letters >= 3 and letters > len(digits):  # a commune written instead of the code
        codes = codes_of_commune("".join(c for c in raw if not c.isdigit()), postal_list)
        if codes:
            one = len(codes) == 1
            return PostalDecision(codes[0] if one else "", raw, conf * CORRECTION_FACTOR, "review", one,
                                  postal_list.commune_label(codes[0]) if one else "", codes[:MAX_ALTERNATIVES],
                                  ("postal_from_commune",))
    # A dropped leading zero (01000 written 1000) is common for departements 01-09.
    if len(digits) == 4 and "0" + digits in postal_list:
        return found("0" + digits, conf, ("postal_leading_zero",))
    if len(digits) != 5:
        return rejected()
    if digits in postal_list:
        return found(digits, conf, ())

    candidates = postal_list.neighbours(digits, 1)
    if len(candidates) == 1:
        code = candidates[0]
        # Never accepted: a one-digit correction needs a person or more evidence.
        return PostalDecision(code, raw, conf * CORRECTION_FACTOR, "review", True,
                              postal_list.commune_label(code), tuple(candidates),
                              (*flags, "postal_corrected"))
    if candidates:
        ranked = _rank_alternatives(digits, candidates)[:MAX_ALTERNATIVES]
        return PostalDecision("", raw, 0.0, "review", False, "", tuple(ranked), (*flags, "postal_invalid"))
    return rejected()


# --- handwritten codes: digit model + lexicon decoding ------------------------------------------------

# Decoder priors (part of the model: the calibration is fitted with these values, do not tune alone).
LEADING_ZERO_LOG_PRIOR = math.log(0.05)  # a code of departements 01-09 written without its 0
SKIP_LOG_PRIOR = math.log(0.05)  # a piece of ink that is no digit of the code (crossed out, spill)
LENGTH_LOG_PRIOR = {5: math.log(0.9), 4: math.log(0.05)}  # for the raw digit-by-digit reading
OTHER_LENGTH_LOG_PRIOR = math.log(0.01)
_NEG = np.float32(-1e9)


@dataclass(frozen=True)
class DigitEvidence:
    """What the digit model and the code list say about a postal cell."""

    best: str  # the valid code that best explains the ink
    raw: str  # the digit-by-digit reading, without the list (any length)
    score: float  # log-odds of `best` against all other codes: the calibration's input
    alternatives: tuple[str, ...]  # the next best valid codes, best first
    leading_zero: bool  # `best` was read from 4 written digits
    distance: int  # digits of `raw` changed to reach `best` (a length mismatch counts 5)


def _closure(V: np.ndarray, segs: list[tuple[int, int, int]], skip: np.ndarray) -> np.ndarray:
    """Let any number of skipped segments follow: V[j] = max(V[j], V[i] + skip[s]) in node order."""
    for s, i, j in segs:
        np.maximum(V[j], V[i] + skip[s], out=V[j])
    return V


def _lexicon_scores(tree: PrefixTree, n_nodes: int, segs: list[tuple[int, int, int]], dlog: np.ndarray,
                    skip: np.ndarray) -> np.ndarray:
    """Best path score of every code of the tree through the atom graph, vectorised over the prefixes
    of each length (a code's score is its last prefix's)."""
    V = np.full((n_nodes, 1), _NEG, np.float32)
    V[0] = 0.0
    V = _closure(V, segs, skip)
    for parents, digits in tree.levels:
        V = V[:, parents]
        W = np.full_like(V, _NEG)
        for s, i, j in segs:
            np.maximum(W[j], V[i] + dlog[s][digits], out=W[j])
        V = _closure(W, segs, skip)
    best: np.ndarray = V[n_nodes - 1][tree.leaves]
    return best


def _free_reading(n_nodes: int, segs: list[tuple[int, int, int]], dlog: np.ndarray, skip: np.ndarray,
                  max_len: int = 8) -> str:
    """The best digit string of any length, each segment read as its likeliest digit."""
    best_d = dlog.argmax(axis=1)
    best_v = dlog.max(axis=1)
    # R[k][node] = (score, string) of the best path reaching node with k digits
    R = [[(-1e18, "")] * n_nodes for _ in range(max_len + 1)]
    R[0][0] = (0.0, "")
    for k in range(max_len + 1):
        row = R[k]
        for s, i, j in segs:  # ordered by end node, so row[i] is final when used for skips
            if row[i][0] > -1e17 and row[i][0] + skip[s] > row[j][0]:
                row[j] = (row[i][0] + float(skip[s]), row[i][1])
        if k == max_len:
            break
        nxt = R[k + 1]
        for s, i, j in segs:
            if row[i][0] > -1e17 and row[i][0] + best_v[s] > nxt[j][0]:
                nxt[j] = (row[i][0] + float(best_v[s]), row[i][1] + str(int(best_d[s])))
    end = n_nodes - 1
    scored = [(R[k][end][0] + LENGTH_LOG_PRIOR.get(k, OTHER_LENGTH_LOG_PRIOR), R[k][end][1])
              for k in range(1, max_len + 1) if R[k][end][0] > -1e17]
    return max(scored)[1] if scored else ""


def _distance(raw: str, code: str, leading_zero: bool) -> int:
    target = code[1:] if leading_zero else code
    if len(raw) != len(target):
        return 5
    return sum(a != b for a, b in zip(raw, target))


def read_digits_evidence(crop: np.ndarray, model: DigitModel, postal_list: PostalList) -> DigitEvidence | None:
    """Segment the cell, score every candidate piece, decode over the list. None: no digit-like ink."""
    from scan_pipeline.read.digits import segment

    seg = segment(crop)
    if seg is None:
        return None
    return decode_log_proba(seg.segments, seg.n_atoms, model.log_proba(seg.patches), postal_list)


def decode_log_proba(segments: Sequence[tuple[int, int]], n_atoms: int, logp: np.ndarray,
                     postal_list: PostalList) -> DigitEvidence | None:
    """Decode over the list: segments (i, j) cover atoms i..j-1; logp[s] is the (11,) log-probability of
    segment s being each digit or (last) no digit. Every atom is read once, as part of a digit or skipped."""
    if not len(postal_list) or not len(segments):
        return None
    logp = np.asarray(logp, np.float32)
    dlog = logp[:, :10]
    skip = logp[:, 10] + np.float32(SKIP_LOG_PRIOR)
    segs = sorted(((s, i, j) for s, (i, j) in enumerate(segments)), key=lambda t: (t[2], t[1]))
    n_nodes = n_atoms + 1
    scores = _lexicon_scores(postal_list._tree, n_nodes, segs, dlog, skip)
    zero = postal_list._zero
    four = _lexicon_scores(postal_list._zero_tree, n_nodes, segs, dlog, skip) + np.float32(LEADING_ZERO_LOG_PRIOR)
    lz = np.zeros(len(scores), bool)
    lz[zero] = four > scores[zero]
    scores[zero] = np.maximum(scores[zero], four)
    if scores.max() < -1e8:
        return None
    # the best codes in the order of a stable sort of all, without sorting all: the codes scoring at
    # least the k-th best (ties at the edge too), in list order, then sorted
    k = min(MAX_ALTERNATIVES + 1, len(scores))
    kth = np.partition(scores, len(scores) - k)[len(scores) - k]
    top = np.flatnonzero(scores >= kth)
    order = top[np.argsort(-scores[top], kind="stable")][:k]
    best = int(order[0])
    rest = np.delete(scores, best).astype(np.float64)
    if len(rest):
        peak = float(rest.max())
        log_rest = peak + math.log(float(np.exp(rest - peak).sum()))
    else:
        log_rest = -1e9
    raw = _free_reading(n_nodes, segs, dlog, skip)
    code = postal_list.codes[best]
    return DigitEvidence(code, raw, float(scores[best]) - log_rest,
                         tuple(postal_list.codes[i] for i in order[1:]), bool(lz[best]),
                         _distance(raw, code, bool(lz[best])))


def calibrated(score: float, calibration: dict[str, Any], leading_zero: bool = False) -> float:
    """P(the best code is right) from the decoder's log-odds, by the model's isotonic calibration.

    A code read from 4 digits as a dropped leading zero has its own map: those readings are far more
    often wrong at the same log-odds (a 5-digit code with two digits read as one), so one map for all
    would make them overconfident and every other reading underconfident."""
    own = calibration.get("leading_zero") if leading_zero else None
    xs, ys = (own or calibration).get("x"), (own or calibration).get("y")
    if not xs:
        return _clamp(1.0 / (1.0 + math.exp(-min(max(score, -50.0), 50.0))))
    if ys is None:  # np.interp would raise the same error, less plainly
        raise ValueError("the digit model's calibration map has x but no y")
    return _clamp(float(np.interp(score, xs, ys)))


def decide(ev: DigitEvidence | None, confidence: float, postal_list: PostalList,
           config: PostalConfig) -> PostalDecision:
    """The band of a reading: accept, review (kept with its alternatives), or reject (unreadable)."""
    if ev is None:
        return PostalDecision("", "", 0.0, "reject", False, "", (), ("postal_unreadable",))
    flags: list[str] = ["postal_leading_zero"] if ev.leading_zero else []
    alternatives = ev.alternatives
    # a dropped leading zero is ambiguous (01000 or 10000?), not unreadable: its own calibration puts
    # it low, and a person picks among the codes kept
    if len(ev.raw) < 3 or (confidence < config.reject_confidence and not ev.leading_zero):
        return PostalDecision("", ev.raw, confidence, "reject", False, "", (ev.best, *alternatives)[:MAX_ALTERNATIVES],
                              (*flags, "postal_unreadable"))
    if ev.distance == 0:
        band: Band = "accept" if confidence >= config.accept_confidence else "review"
    else:
        flags.append("postal_corrected")
        # a correction is accepted only on strong evidence; a far one never is
        strong = confidence >= config.accept_corrected_confidence
        band = "accept" if strong and ev.distance <= config.max_corrected_digits else "review"
        if ev.distance > config.max_corrected_digits and confidence < config.accept_confidence:
            # the list does not clearly explain the ink: no code is put forward, only alternatives
            return PostalDecision("", ev.raw, confidence, "review", False, "",
                                  (ev.best, *alternatives)[:MAX_ALTERNATIVES], (*flags, "postal_invalid"))
    if band == "review":
        flags.append("postal_low_conf")
    # The contract: a field with no flag of its own was accepted. An accepted correction shows as
    # postal_code differing from postal_code_ocr, not as a flag that would send the row to review.
    return PostalDecision(ev.best, ev.raw, confidence, band, True, postal_list.commune_label(ev.best),
                          alternatives if band == "review" else (), tuple(flags) if band != "accept" else ())


def read_postal(crop: np.ndarray, has_ink: bool, engine: OcrEngine | None, postal_list: PostalList,
                config: PostalConfig) -> PostalDecision:
    """Read a handwritten postal code cell and decode it over the list of real codes.

    The digit model scores every candidate piece of the cell; the list decides. `engine` (Tesseract)
    is not needed for digits; it is kept for the signature run/process.py calls.
    """
    if not has_ink:
        return PostalDecision("", "", 1.0, "accept", False, "", (), ())
    from scan_pipeline.read.digits import load_model

    model = load_model()
    ev = read_digits_evidence(crop, model, postal_list)
    confidence = calibrated(ev.score, model.calibration, ev.leading_zero) if ev is not None else 0.0
    decision = decide(ev, confidence, postal_list, config)
    if decision.band == "reject" and engine is not None:  # perhaps a commune written by name
        image = prepare_for_ocr(crop, config.ocr_height_px)
        if image is not None:
            text = engine.read_line(image).text
            if sum(c.isalpha() for c in text) >= 3:
                by_name = decode_postal_text(text, 1.0, postal_list, accept_confidence=2.0)
                if "postal_from_commune" in by_name.flags:
                    return by_name
    return decision
