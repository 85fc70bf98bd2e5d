"""French postal codes: the bundled list of valid codes and a first decoder for written codes.

The list (scan_pipeline/data/postal_codes.csv.gz) is built by scripts/build_postal_codes.py from the
npm package codes-postaux 4.1.2 (MIT). It has no 98x codes (Monaco, Pacific collectivities) and no
977/978 (Saint-Barthélemy, Saint-Martin): such codes decode as invalid and go to review or reject.
"""

from __future__ import annotations

import csv
import functools
import gzip
import importlib.resources
import io
import math
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from .cells import prepare_for_ocr
from .config import PostalConfig
from .engines import DIGITS, OcrEngine
from .errors import MissingDependencyError
from .records import Band, FieldReading

DATA_PACKAGE = "scan_pipeline"
DATA_FILE = "postal_codes.csv.gz"
HEADER = ["postal_code", "departement", "communes"]

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


@dataclass(frozen=True)
class PostalList:
    """The valid postal codes, with the communes and departement each one serves."""

    codes: tuple[str, ...]  # sorted, 5 ASCII digits each
    communes_by_code: dict[str, tuple[str, ...]] = field(hash=False)
    departement_by_code: dict[str, str] = field(hash=False)
    # (N, 5) uint8 digits of `codes`, for vectorised Hamming distances.
    _digits: np.ndarray = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        if list(self.codes) != sorted(set(self.codes)):
            raise ValueError("PostalList.codes must be sorted and distinct")
        bad = [c for c in self.codes if not _is_five_digits(c)]
        if bad:
            raise ValueError(f"not 5-digit postal codes: {bad[:5]}")
        if set(self.communes_by_code) != set(self.codes) or set(self.departement_by_code) != set(self.codes):
            raise ValueError("communes_by_code and departement_by_code must have exactly the codes as keys")
        digits = np.frombuffer("".join(self.codes).encode("ascii"), dtype=np.uint8).reshape(-1, 5) - ord("0")
        object.__setattr__(self, "_digits", digits)

    @classmethod
    def from_rows(cls, rows: Iterable[tuple[str, str, Iterable[str]]]) -> PostalList:
        """Build from (code, departement, communes) rows, in any order."""
        communes: dict[str, tuple[str, ...]] = {}
        departements: dict[str, str] = {}
        for code, departement, names in rows:
            if code in communes:
                raise ValueError(f"postal code {code} listed twice")
            communes[code] = tuple(names)
            departements[code] = departement
        return cls(tuple(sorted(communes)), communes, departements)

    def __len__(self) -> int:
        return len(self.codes)

    def __contains__(self, code: object) -> bool:
        return isinstance(code, str) and code in self.communes_by_code

    def communes(self, code: str) -> tuple[str, ...]:
        """The communes served by `code`; () for an unknown code."""
        return self.communes_by_code.get(code, ())

    def departement(self, code: str) -> str:
        """The departement ('75', '2A', '974'...) of `code`; '' for an unknown code."""
        return self.departement_by_code.get(code, "")

    def commune_label(self, code: str) -> str:
        return ", ".join(self.communes(code))

    def neighbours(self, code: str, max_distance: int = 1) -> list[str]:
        """Valid codes within `max_distance` substituted digits of `code` (itself excluded), sorted."""
        if not _is_five_digits(code):
            raise ValueError(f"neighbours() needs 5 ASCII digits, got {code!r}")
        if max_distance < 1 or not self.codes:
            return []
        query = np.frombuffer(code.encode("ascii"), dtype=np.uint8) - ord("0")
        distance = (self._digits != query).sum(axis=1)
        hits = np.flatnonzero((distance > 0) & (distance <= max_distance))
        return [self.codes[i] for i in hits]


def _is_five_digits(code: str) -> bool:
    # str.isdigit() would accept '²' or Arabic-Indic digits; only ASCII digits make a postal code.
    return isinstance(code, str) and len(code) == 5 and code.isascii() and code.isdigit()


@functools.lru_cache(maxsize=1)
def load_postal_list() -> PostalList:
    """The bundled list, read once per process from the installed package data."""
    try:
        resource = importlib.resources.files(DATA_PACKAGE) / "data" / DATA_FILE
        text = gzip.decompress(resource.read_bytes()).decode("utf-8")
    except (OSError, ModuleNotFoundError, EOFError, UnicodeDecodeError) as exc:
        raise MissingDependencyError(
            f"cannot read the bundled postal code list {DATA_PACKAGE}/data/{DATA_FILE}: {exc}",
            hint="reinstall scan_pipeline; a developer can rebuild the file with scripts/build_postal_codes.py",
        ) from exc
    reader = csv.reader(io.StringIO(text))
    if next(reader, None) != HEADER:
        raise MissingDependencyError(
            f"the bundled postal code list {DATA_FILE} has an unexpected header",
            hint="reinstall scan_pipeline; a developer can rebuild the file with scripts/build_postal_codes.py",
        )
    return PostalList.from_rows((code, dep, names.split("|") if names else ()) for code, dep, names in reader)


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


def read_postal(crop: np.ndarray, has_ink: bool, engine: OcrEngine, postal_list: PostalList,
                config: PostalConfig) -> PostalDecision:
    """Read a handwritten postal code cell and decode it over the list of real codes."""
    if not has_ink:
        return PostalDecision("", "", 1.0, "accept", False, "", (), ())
    image = prepare_for_ocr(crop, config.ocr_height_px)
    if image is None:
        return PostalDecision("", "", 1.0, "accept", False, "", (), ())
    result = engine.read_line(image, whitelist=DIGITS + " ")
    return decode_postal_text(result.text, result.confidence, postal_list,
                              accept_confidence=config.accept_confidence)
