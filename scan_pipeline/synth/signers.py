"""Invented signers who sign more than once, to measure the deduplication (tests, scripts/bench_ledger.py).

Like `synth` for sheets: everything is invented (names drawn from data/synth_names.json, postal
codes given by the caller); a share of the signers sign again with the noise a reader adds to a name
(accents dropped, case, word order, OCR confusions, an initial). `pair_quality` scores what
`dedup.deduplicate` found against who really signed.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from functools import cache
from importlib import resources

from scan_pipeline.core.text import strip_accents
from scan_pipeline.ledger.dedup import POSSIBLE_FLAG, DedupResult

# Confusions OCR makes on handwritten capitals: the first ones are folded by dedup.name_tokens, the
# others are left for the fuzzy comparison to absorb.
OCR_NOISE = (("O", "0"), ("I", "1"), ("L", "1"), ("I", "L"), ("M", "RN"), ("W", "VV"), ("D", "CL"), ("S", "5"),
             ("B", "8"), ("E", "F"), ("E", "C"), ("A", "O"), ("U", "V"), ("N", "H"), ("R", "K"), ("G", "C"),
             ("T", "I"), ("H", "N"))


@cache
def _names() -> dict[str, list[str]]:
    names: dict[str, list[str]] = json.loads(
        resources.files("scan_pipeline").joinpath("data/synth_names.json").read_text("utf-8"))
    return names


def _spots(upper: str) -> list[tuple[int, str, str]]:
    """Every place a confusion can happen: (index, letters, what they may be read as), pair by pair."""
    spots = []
    for a, b in OCR_NOISE:
        i = upper.find(a)
        while i >= 0:
            spots.append((i, a, b))
            i = upper.find(a, i + 1)
    return spots


def noisy_spelling(surname: str, given: str, rnd: random.Random) -> str:
    """How a signer's name may come out of the reader: accents dropped, case, order, OCR confusions,
    an initial for the given name."""
    s, g = surname, given
    if rnd.random() < 0.5:
        s, g = strip_accents(s), strip_accents(g)
    s = s.upper() if rnd.random() < 0.8 else s
    g = g.upper() if rnd.random() < 0.3 else g
    if rnd.random() < 0.1:
        g = g[0] + "."
    text = f"{g} {s}" if rnd.random() < 0.3 else f"{s} {g}"
    for _ in range(rnd.choice((0, 1, 1, 2))):
        spots = _spots(text.upper())
        if spots:
            i, a, b = rnd.choice(spots)
            b = b if text[i].isupper() or not b.isalpha() else b.lower()
            text = text[:i] + b + text[i + len(a):]
    return text


def generated_signers(n_signers: int, repeat_share: float, seed: int, *, codes: Sequence[str],
                      max_repeats: int = 3) -> list[tuple[int, str, str]]:
    """(signer number, name as read, postal code) rows for n_signers invented people.

    A share of them sign again (up to max_repeats more times), with noisy spellings. Two signers of
    the same postal code never share a name (they could not be told apart). The same seed gives the
    same rows.
    """
    data = _names()
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
    status, dup, flags = df["status"].tolist(), df["duplicate_of"].tolist(), df["flags"].tolist()
    counts: dict[int, int] = {}
    for s in signers:
        counts[s] = counts.get(s, 0) + 1
    repeated = sum(c - 1 for c in counts.values())
    marked = right = possible_right = possible = 0
    for i, st in enumerate(status):
        if st == "duplicate":
            marked += 1
            right += signers[pos[dup[i]]] == signers[i]
        elif POSSIBLE_FLAG in flags[i]:
            possible += 1
            possible_right += any(signers[pos[c]] == signers[i] for c in result.candidates.get(ids[i], []))
    return {
        "rows": len(ids), "signers": len(counts), "repeated_rows": repeated, "marked_duplicate": marked,
        "precision": right / marked if marked else 1.0, "recall": right / repeated if repeated else 1.0,
        "possible_flagged": possible, "possible_right": possible_right,
        "recall_with_possible": min(1.0, (right + possible_right) / repeated) if repeated else 1.0,
    }
