"""The bundled list of valid French postal codes, with the communes and departement of each.

The list (scan_pipeline/data/postal_codes.csv.gz) is built by `python -m
scan_pipeline.training.build_postal_codes` from the npm package codes-postaux 4.1.2 (MIT). It has no
98x codes (Monaco, Pacific collectivities) and no 977/978 (Saint-Barthélemy, Saint-Martin): such
codes decode as invalid and go to review or reject.
"""

from __future__ import annotations

import csv
import functools
import gzip
import importlib.resources
import io
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from scan_pipeline.core.errors import MissingDependencyError

DATA_PACKAGE = "scan_pipeline"
DATA_FILE = "postal_codes.csv.gz"
HEADER = ["postal_code", "departement", "communes"]

@dataclass(frozen=True)
class PrefixTree:
    """Codes (rows of digits) as a tree of their prefixes: the 6,201 codes have 10 first digits, 96
    departements, 890 three-digit prefixes, so the decoder scores each prefix once, not once per code."""

    levels: tuple[tuple[np.ndarray, np.ndarray], ...]  # per position: (parent prefix, digit) of each prefix
    leaves: np.ndarray  # each code's prefix at the last position


def prefix_tree(codes: np.ndarray) -> PrefixTree:
    parent = np.zeros(len(codes), np.int64)  # the one empty prefix
    levels = []
    for k in range(codes.shape[1]):
        prefixes, parent = np.unique(parent * 10 + codes[:, k], return_inverse=True)
        levels.append((prefixes // 10, (prefixes % 10).astype(np.intp)))
    return PrefixTree(tuple(levels), parent.reshape(-1))


@dataclass(frozen=True)
class PostalList:
    """The valid postal codes, with the communes and departement each one serves."""

    codes: tuple[str, ...]  # sorted, 5 ASCII digits each
    communes_by_code: dict[str, tuple[str, ...]] = field(hash=False)
    departement_by_code: dict[str, str] = field(hash=False)
    # (N, 5) uint8 digits of `codes`, for vectorised Hamming distances.
    _digits: np.ndarray = field(init=False, repr=False, compare=False, hash=False)
    # indices of the codes of departements 01-09, which may be written without their leading 0
    _zero: np.ndarray = field(init=False, repr=False, compare=False, hash=False)
    # the codes, and those 01-09 codes without their 0, as trees of prefixes (for the decoder)
    _tree: PrefixTree = field(init=False, repr=False, compare=False, hash=False)
    _zero_tree: PrefixTree = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        if list(self.codes) != sorted(set(self.codes)):
            raise ValueError("PostalList.codes must be sorted and distinct")
        bad = [c for c in self.codes if not is_five_digits(c)]
        if bad:
            raise ValueError(f"not 5-digit postal codes: {bad[:5]}")
        if set(self.communes_by_code) != set(self.codes) or set(self.departement_by_code) != set(self.codes):
            raise ValueError("communes_by_code and departement_by_code must have exactly the codes as keys")
        digits = np.frombuffer("".join(self.codes).encode("ascii"), dtype=np.uint8).reshape(-1, 5) - ord("0")
        object.__setattr__(self, "_digits", digits)
        object.__setattr__(self, "_zero", np.flatnonzero(digits[:, 0] == 0))
        object.__setattr__(self, "_tree", prefix_tree(digits))
        object.__setattr__(self, "_zero_tree", prefix_tree(digits[self._zero, 1:]))

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
        if not is_five_digits(code):
            raise ValueError(f"neighbours() needs 5 ASCII digits, got {code!r}")
        if max_distance < 1 or not self.codes:
            return []
        query = np.frombuffer(code.encode("ascii"), dtype=np.uint8) - ord("0")
        distance = (self._digits != query).sum(axis=1)
        hits = np.flatnonzero((distance > 0) & (distance <= max_distance))
        return [self.codes[i] for i in hits]


def is_five_digits(code: str) -> bool:
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
            hint="reinstall scan_pipeline; rebuild: python -m scan_pipeline.training.build_postal_codes",
        ) from exc
    reader = csv.reader(io.StringIO(text))
    if next(reader, None) != HEADER:
        raise MissingDependencyError(
            f"the bundled postal code list {DATA_FILE} has an unexpected header",
            hint="reinstall scan_pipeline; rebuild: python -m scan_pipeline.training.build_postal_codes",
        )
    return PostalList.from_rows((code, dep, names.split("|") if names else ()) for code, dep, names in reader)
