"""Handwritten names: clean the cell, read it with two engines, weigh the readings against the ink
and the name lexicons, and write the name as a ledger expects (NOM Prénom).

How a name is read:

1. The cell is cut to its ink (cells.trim_to_ink) and read by Tesseract (`fra`, one line) and by the
   PP-OCRv4 recognition model (RapidRecEngine), which also gives its per-frame letter probabilities.
2. The second engine's best path splits the line into words (its space frames); a word it read
   across a space Tesseract saw, or across a gap that stands out in the ink, is read as two when
   that spells the frames and names better (at 28 px the model often misses a space), and two
   neighbours as one when that does. For each word the candidates are: what each engine read, and
   the lexicon's names a letter or two away from those readings (never further: a name is only
   ever corrected to one that was almost read).
3. Every candidate is scored by the probability that the model's frames spell it (CTC likelihood,
   case and accents folded), plus how common the name is (INSEE tiers; a word that is no known name
   weighs least), plus a bonus when Tesseract read the same word. The best wins; the softmax of the
   scores is the word's posterior, and the line's is their product.
4. A calibrated confidence (the share of right names among names of that score, fitted on real
   handwriting by scripts/bench_names.py --fit) decides the band with [names] of config.toml.
"""

from __future__ import annotations

import heapq
import math
import re
from dataclasses import dataclass

import numpy as np
from rapidfuzz.distance import Levenshtein

from scan_pipeline.core.config import NamesConfig, default_config
from scan_pipeline.core.ocr import OcrEngine
from scan_pipeline.core.records import FieldReading
from scan_pipeline.core.text import fold
from scan_pipeline.page.cells import OCR_BORDER, clean_cell, ink_box, scale_line, word_gaps
from scan_pipeline.read.engines import RapidRecEngine
from scan_pipeline.read.lexicon import ALPHABET, Lexicon, load_lexicon

_NOT_NAME = re.compile(r"[^A-Za-zÀ-ÖØ-öø-ÿŒœ' \-]")

# the folded classes the reader scores with: CTC blank, the letters, '-', "'", space, anything else
_BLANK, _SPACE, _OTHER = 0, len(ALPHABET) + 1, len(ALPHABET) + 2
_CLASSES = len(ALPHABET) + 3

# calibration of the confidence (logistic on the reader's features), fitted by scripts/bench_names.py --fit
CALIBRATION = {"bias": -0.037, "log_posterior": 5.52, "agree": 0.856, "tess_conf": 0.956, "in_lexicon": 2.396}


def clean_text(raw: str) -> str:
    """Letters, spaces, hyphens and apostrophes only; single spaces; no stray edges."""
    text = _NOT_NAME.sub(" ", raw)
    text = re.sub(r"\s+", " ", text)
    text = re.sub(r"\s*-\s*", "-", text)
    return text.strip(" -'")


def _given(word: str) -> str:
    return "-".join(part[:1].upper() + part[1:].lower() for part in word.split("-"))


def ledger_form(text: str) -> str:
    """`NOM Prénom`: the surname in capitals, given names capitalised, accents kept.

    The header asks for the surname first; a word written all in capitals among others that are
    not is taken as the surname wherever it stands.
    """
    words = text.split()
    if not words:
        return ""
    caps = [w.isupper() and len(w) > 1 for w in words]
    if any(caps) and not all(caps):
        surname = [w for w, c in zip(words, caps) if c]
        given = [w for w, c in zip(words, caps) if not c]
    else:
        surname, given = words[:1], words[1:]
    return " ".join([*(w.upper() for w in surname), *(_given(w) for w in given)])


# --- scoring against the second engine's frames ----------------------------------------------------

@dataclass(frozen=True)
class _Folding:
    columns: np.ndarray  # the model's classes that fold to a letter, '-', "'" or space
    targets: np.ndarray  # the folded class of each


_FOLDINGS: dict[int, _Folding] = {}


def _folding(engine: RapidRecEngine) -> _Folding:
    got = _FOLDINGS.get(id(engine))
    if got is None:
        cols, targets = [0], [_BLANK]
        for i, c in enumerate(engine.charset):
            if not c:
                continue
            f = fold(c)
            if c == " ":
                cols.append(i)
                targets.append(_SPACE)
            elif len(f) == 1 and f in ALPHABET:
                cols.append(i)
                targets.append(1 + ALPHABET.index(f))
        got = _FOLDINGS[id(engine)] = _Folding(np.array(cols), np.array(targets))
    return got


def fold_frames(probs: np.ndarray, engine: RapidRecEngine) -> np.ndarray:
    """(T, classes) of the model -> (T, _CLASSES): blank, folded letters, space, other."""
    f = _folding(engine)
    out = np.zeros((probs.shape[0], _CLASSES), np.float64)
    picked = probs[:, f.columns].astype(np.float64)
    for j in range(picked.shape[1]):
        out[:, f.targets[j]] += picked[:, j]
    out[:, _OTHER] = np.clip(1.0 - out.sum(axis=1), 0.0, None)
    return out


def _labels(word: str) -> list[int]:
    return [1 + ALPHABET.index(c) if c in ALPHABET else _OTHER for c in word]


def ctc_log_likelihood(frames: np.ndarray, words: list[str]) -> np.ndarray:
    """log P(word | frames) for each word (folded), by the CTC forward algorithm, all words at once."""
    n, t_len = len(words), frames.shape[0]
    if n == 0:
        return np.zeros(0)
    ext_len = [2 * len(w) + 1 for w in words]
    S = max(ext_len)
    ext = np.full((n, S), _BLANK, np.int64)
    for i, w in enumerate(words):
        ext[i, 1:2 * len(w):2] = _labels(w)
    skip = np.zeros((n, S), bool)  # a letter may follow the one two places back (no blank between)
    skip[:, 2:] = (ext[:, 2:] != _BLANK) & (ext[:, 2:] != ext[:, :-2])
    valid = np.arange(S)[None, :] < np.array(ext_len)[:, None]
    alpha = np.zeros((n, S))
    y0 = frames[0][ext]
    alpha[:, 0] = y0[:, 0]
    alpha[:, 1] = np.where(np.array(ext_len) > 1, y0[:, 1], 0.0)
    log_scale = np.zeros(n)
    for t in range(1, t_len):
        prev = alpha
        a = prev.copy()
        a[:, 1:] += prev[:, :-1]
        a[:, 2:] += np.where(skip[:, 2:], prev[:, :-2], 0.0)
        alpha = a * frames[t][ext] * valid
        c = alpha.sum(axis=1)
        c[c <= 0] = 1e-300
        alpha /= c[:, None]
        log_scale += np.log(c)
    last = np.array(ext_len) - 1
    rows = np.arange(n)
    end = alpha[rows, last] + np.where(last > 0, alpha[rows, np.maximum(last - 1, 0)], 0.0)
    log_likelihood: np.ndarray = log_scale + np.log(np.maximum(end, 1e-300))
    return log_likelihood


def best_path(frames: np.ndarray) -> list[tuple[str, int, int]]:
    """The words of the best path over folded frames, each with its first and last frame."""
    best = frames.argmax(axis=1)
    words: list[tuple[str, int, int]] = []
    start: int | None
    text, start, prev = "", None, -1
    for t, k in enumerate(best):
        if k == _SPACE:
            if text:
                assert start is not None  # set with the word's first letter
                words.append((text, start, t - 1))
            text, start = "", None
        elif k != _BLANK and k != prev and k != _OTHER:
            if start is None:
                start = t
            text += ALPHABET[k - 1]
        prev = k
    if text:
        assert start is not None  # set with the word's first letter
        words.append((text, start, len(best) - 1))
    return words


# --- the reader -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class WordChoice:
    key: str  # folded
    posterior: float
    alternatives: tuple[str, ...]
    score: float = -1e9  # log weight of the best: CTC likelihood + prior + agreement


def _max_distance(word: str) -> int:
    return 1 if len(word) <= 3 else 2


def choose_word(frames: np.ndarray, read: list[str], lexicon: Lexicon, config: NamesConfig,
                tess_word: str = "") -> WordChoice:
    """The word the frames spell best among the readings and the lexicon's names near them."""
    read = [r for r in read if r]
    if not read:
        return WordChoice("", 0.0, ())
    # closest, then most common, first; each reading's neighbours come ranked from the lexicon
    ranked = heapq.merge(sorted((0, lexicon.tier(r), r) for r in set(read)),
                         *(lexicon.near_ranked(r, _max_distance(r)) for r in dict.fromkeys(read)))
    keys: list[str] = []
    for _, _, k in ranked:  # the first max_candidates distinct keys, without merging the rest
        if k not in keys:
            keys.append(k)
            if len(keys) == config.max_candidates:
                break
    for r in read:  # the readings themselves always compete
        if r and r not in keys:
            keys.append(r)
    ll = ctc_log_likelihood(frames, keys)
    prior = np.array([lexicon.log_prior(k) for k in keys])
    bonus = np.array([config.agree_bonus if tess_word and k == tess_word else 0.0 for k in keys])
    score = ll + config.prior_weight * prior + bonus
    order = np.argsort(-score)
    p = np.exp(score - score.max())
    p /= p.sum()
    return WordChoice(keys[order[0]], float(p[order[0]]), tuple(keys[i] for i in order[1:4]),
                      float(score[order[0]]))


def _segment_frames(frames: np.ndarray, a: int, b: int) -> np.ndarray:
    seg = frames[a:b].copy()
    seg[:, _BLANK] += seg[:, _SPACE]  # within a word, a space frame is a pause
    seg[:, _SPACE] = 0.0
    return seg


def _tess_readings(word: str, tess_words: list[str]) -> list[str]:
    """Tesseract's words that look like this one (the engines may split a line differently)."""
    joined = "".join(tess_words)
    near = [t for t in tess_words if Levenshtein.distance(word, t) <= max(1, len(word) // 3)]
    if not near and Levenshtein.distance(word, joined) <= max(1, len(word) // 3):
        near = [joined]
    return near


def _segments(words: list[tuple[str, int, int]], t_len: int) -> list[tuple[int, int]]:
    """Frame ranges of the words: each runs to halfway across the gap to its neighbours."""
    cuts = [0] + [(a[2] + b[1] + 1) // 2 for a, b in zip(words, words[1:])] + [t_len]
    return [(cuts[i], cuts[i + 1]) for i in range(len(words))]


def _choose_words(frames: np.ndarray, words: list[tuple[str, int, int]], gap_frames: list[int],
                  tess_words: list[str], lexicon: Lexicon, config: NamesConfig,
                  clear: frozenset[int] | set[int] = frozenset()) -> list[tuple[WordChoice, int, int]]:
    """Each word's choice with its frames.

    - A word the model read across a wide gap in the ink (`gap_frames`, widest first) is read as two
      when that spells the frames and names better: at low resolution the model often sees no space
      between two words (`BONNETANAIS`).
    - Two neighbours are read as one word when that spells the frames better (a pause inside a word
      is often taken for a space).
    - Where the ink has a gap that stands out (`clear`) inside a word no lexicon knows, a space weighs
      `gap_space_weight` more: else an unknown surname and a given name, the surname paying the prior
      of a word no lexicon knows, would be as cheap read as one unknown word (`DEROUARDHAXHIU`)."""
    def at_gap(whole: WordChoice, a: int, b: int) -> float:
        unknown = whole.key not in lexicon  # a known name read whole pays no such prior
        return config.gap_space_weight if unknown and any(a <= g <= b for g in clear) else 0.0

    def choose(a: int, b: int, word: str | None = None) -> WordChoice:
        seg = _segment_frames(frames, a, b)
        if word is None:
            word = "".join(w for w, _, _ in best_path(seg))
        if not word:
            return WordChoice("", 0.0, (), -1e9)
        tess = _tess_readings(word, tess_words)
        return choose_word(seg, [word, *tess], lexicon, config, tess[0] if tess else "")

    def split(choice: WordChoice, a: int, b: int, depth: int = 0) -> list[tuple[WordChoice, int, int]]:
        if depth >= 2:
            return [(choice, a, b)]
        for g in (g for g in gap_frames if a + 2 <= g <= b - 2):
            left, right = choose(a, g), choose(g, b)
            if min(len(left.key), len(right.key)) < 2:  # a lone letter is a stray stroke, not a name
                continue
            if left.score + right.score >= choice.score + config.space_margin - at_gap(choice, g, g):
                return split(left, a, g, depth + 1) + split(right, g, b, depth + 1)
        return [(choice, a, b)]

    out: list[tuple[WordChoice, int, int]] = []
    for (word, _, _), (a, b) in zip(words, _segments(words, frames.shape[0])):
        parts = split(choose(a, b, word), a, b)
        if out and len(parts) == 1:
            prev, pa, _ = out[-1]
            merged = choose(pa, b)
            if merged.score >= prev.score + parts[0][0].score + config.split_penalty + at_gap(merged, a - 2, a + 2):
                out[-1] = (merged, pa, b)
                continue
        out.extend(parts)
    return [(c, a, b) for c, a, b in out if c.key]


def _case_words(raw: str) -> list[str]:
    return clean_text(raw).split()


def _display(keys: list[str], raw_words: list[str], lexicon: Lexicon) -> str:
    """Folded keys back to written words, for ledger_form: a word read exactly as chosen keeps its
    letters as written (case and accents); a corrected word takes the case of what was read there and,
    for a given name, its usual accents."""
    out = []
    upper = [w.isupper() and len(w) > 1 for w in raw_words]
    all_upper = all(upper) if upper else True
    for i, key in enumerate(keys):
        if not key:
            continue
        raw = raw_words[i] if i < len(raw_words) else ""
        if raw and fold(raw) == key:
            # capitals written without accents: a given name (not the first word) takes its usual ones
            spelling = lexicon.given_spelling(key) if raw == key and i > 0 and all_upper else ""
            out.append(spelling.upper() if spelling else raw)
            continue
        was_upper = upper[i] if i < len(upper) else all_upper
        spelled = lexicon.given_spelling(key) or _given(key)
        out.append(spelled.upper() if was_upper else spelled)
    return " ".join(out)


def _order(keys: list[str], raw_words: list[str], lexicon: Lexicon) -> tuple[list[str], list[str]]:
    """Surname first: a given name written first (`Marie DUPONT` in one case) is moved after."""
    caps = [w.isupper() and len(w) > 1 for w in raw_words]
    if len(keys) == 2 and (len(caps) != 2 or caps[0] == caps[1]):
        a, b = keys
        ga, sa, gb, sb = (lexicon.given_tier_of(a), lexicon.surname_tier_of(a), lexicon.given_tier_of(b),
                          lexicon.surname_tier_of(b))
        if ga < sa and sb < gb:  # the first is rather a given name, the second rather a surname
            return [b, a], raw_words[::-1] if len(raw_words) == 2 else raw_words
    return keys, raw_words


def calibrated(features: dict[str, float]) -> float:
    z = CALIBRATION["bias"] + sum(CALIBRATION[k] * v for k, v in features.items() if k in CALIBRATION)
    return 1.0 / (1.0 + math.exp(-max(-30.0, min(30.0, z))))


@dataclass(frozen=True)
class NameReading:
    """Everything the reader found, for the bench and the calibration."""

    value: str
    raw: str
    tess: str
    tess_conf: float
    rapid: str
    keys: tuple[str, ...]
    features: tuple[tuple[str, float], ...]
    confidence: float
    alternatives: tuple[str, ...]


def read_name_details(crop: np.ndarray, engine: OcrEngine, config: NamesConfig,
                      second: RapidRecEngine | None = None, lexicon: Lexicon | None = None,
                      cell_margin: float | None = None) -> NameReading | None:
    """`cell_margin`: the crop is a sheet cell cut with this margin (CellsConfig.margin), to be cleaned
    of the neighbours' ink; None for a crop already cut to its writing."""
    if cell_margin is not None:
        crop = clean_cell(crop, cell_margin)
    box = ink_box(crop, pad=1)
    if box is None:
        return None
    trimmed = crop[box.y0:box.y1, box.x0:box.x1]
    wide = ink_box(crop, pad=4)  # Tesseract reads best with a little more paper around
    assert wide is not None  # the same ink as `box`, with a wider margin
    image, scale = scale_line(crop[wide.y0:wide.y1, wide.x0:wide.x1], config.ocr_height_px)
    tess = engine.read_line(image)
    tess_text = clean_text(tess.text) if tess else ""
    tess_conf = tess.confidence if tess else 0.0
    tess_words = [fold(w) for w in tess_text.split()]
    if second is None:  # Tesseract alone: its reading, its confidence
        value = ledger_form(tess_text)
        feats = {"log_posterior": 0.0, "agree": 0.0, "tess_conf": tess_conf, "in_lexicon": float(
            bool(tess_words) and all(w in (lexicon or load_lexicon()) for w in tess_words))}
        return NameReading(value, tess.text if tess else "", tess_text, tess_conf, "", tuple(tess_words),
                           tuple(feats.items()), min(tess_conf, 0.85), ())
    lexicon = lexicon or load_lexicon()
    probs = second.frames(trimmed)
    rapid_raw = second.decode(probs).text
    frames = fold_frames(probs, second)
    words = best_path(frames)
    # where the line may part into words: first where Tesseract saw a space, then the ink's wide gaps
    shift = box.x0 - wide.x0
    spaces = [((a[2] + b[1]) / 2 - OCR_BORDER) / scale - shift for a, b in zip(tess.words, tess.words[1:])]
    gaps = [(x0 + x1) / 2 for x0, x1 in word_gaps(trimmed, config.word_gap, config.word_gap_contrast)]
    gap_frames = list(dict.fromkeys(second.frame_at(x, trimmed.shape[0]) for x in spaces + gaps))
    clear = {second.frame_at(x, trimmed.shape[0]) for x in gaps}
    found = _choose_words(frames, words, gap_frames, tess_words, lexicon, config, clear)
    if not found and tess_words:  # the model saw no letter: Tesseract's first word, weighed on the frames
        seg = _segment_frames(frames, 0, frames.shape[0])
        found = [(choose_word(seg, tess_words[:1], lexicon, config, tess_words[0]), 0, frames.shape[0])]
    keys = [c.key for c, _, _ in found]
    posts = [c.posterior for c, _, _ in found]
    alts = [c.alternatives for c, _, _ in found]
    raw_words = _case_words(tess_text)  # Tesseract tells capitals from small letters better
    if len(raw_words) != len(keys):
        raw_words = [clean_text(second.decode(probs[a:b]).text).replace(" ", "") for _, a, b in found]
    keys, raw_words = _order(keys, raw_words, lexicon)
    text = _display(keys, raw_words, lexicon)
    value = ledger_form(text)
    agree = float(" ".join(k for k in keys if k) == " ".join(tess_words))
    feats = {"log_posterior": float(sum(math.log(max(p, 1e-9)) for p in posts)), "agree": agree,
             "tess_conf": tess_conf, "in_lexicon": float(all(k in lexicon for k in keys if k))}
    conf = calibrated(feats)
    alternatives = []
    for i, alt in enumerate(alts):
        for a in alt[:2]:
            alt_keys = list(keys)
            alt_keys[i] = a
            alternatives.append(ledger_form(_display(alt_keys, raw_words, lexicon)))
    if tess_text and ledger_form(tess_text) != value:
        alternatives.insert(0, ledger_form(tess_text))
    raw = rapid_raw if rapid_raw else (tess.text if tess else "")
    if tess and tess.text and fold(clean_text(tess.text)) != fold(clean_text(rapid_raw)):
        raw = f"{rapid_raw} | {tess.text}" if rapid_raw else tess.text
    return NameReading(value, raw, tess_text, tess_conf, rapid_raw, tuple(keys), tuple(feats.items()), conf,
                       tuple(dict.fromkeys(a for a in alternatives if a and a != value))[:4])


def read_name(crop: np.ndarray, has_ink: bool, engine: OcrEngine, config: NamesConfig,
              second: RapidRecEngine | None = None, lexicon: Lexicon | None = None,
              cell_margin: float | None = None) -> tuple[FieldReading, tuple[str, ...]]:
    """The name in a sheet cell (as cut_row cuts it), with its band and flags. `second` is the PP-OCR
    engine (one per worker); without it the name is Tesseract's reading alone, never accepted.
    `cell_margin` defaults to the bundled [cells] margin."""
    if not has_ink:
        return FieldReading("", "", 1.0, "accept"), ()
    if cell_margin is None:
        cell_margin = default_config().cells.margin
    found = read_name_details(crop, engine, config, second, lexicon, cell_margin)
    if found is None or len(found.value.replace(" ", "")) < 2:
        return FieldReading("", found.raw if found else "", 0.0, "reject"), ("name_unreadable",)
    conf = round(found.confidence, 3)
    field = (found.value, found.raw, conf)
    if conf >= config.accept_confidence:
        return FieldReading(*field, "accept", found.alternatives), ()
    if conf < config.reject_confidence:
        return FieldReading(*field, "reject", found.alternatives), ("name_unreadable",)
    return FieldReading(*field, "review", found.alternatives), ("name_low_conf",)
