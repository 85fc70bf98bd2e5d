"""The vocabulary of the review workbook, shared by its export and its import: sheets, columns, decisions."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

import pandas as pd

from scan_pipeline.core.flags import flag_words
from scan_pipeline.core.text import drop_hidden
from scan_pipeline.ledger.schema import SIGNATURE_ID_PATTERN

REVIEW_SHEET = "Review"


INSTRUCTIONS_SHEET = "Instructions"


LISTS_SHEET = "lists"  # hidden: the options of each row's dropdowns


REVIEWER_LABEL = "Your name (reviewer):"


DECISIONS = ("ok", "correct", "not a signature", "duplicate")


SIGNATURE_STATES = ("signed", "empty", "struck")


# What volunteers may type instead of the dropdown's words (case, accents and '_' ignored).
_DECISION_WORDS = {
    "ok": "ok", "okay": "ok", "yes": "ok", "oui": "ok", "bon": "ok", "valide": "ok",
    "correct": "correct", "corrected": "correct", "corriger": "correct", "corrige": "correct", "fix": "correct",
    "not a signature": "not a signature", "reject": "not a signature", "rejected": "not a signature",
    "rejeter": "not a signature", "rejete": "not a signature", "pas une signature": "not a signature",
    "duplicate": "duplicate", "doublon": "duplicate", "dup": "duplicate",
}


_SIGNATURE_WORDS = {
    "signed": "signed", "signe": "signed", "signee": "signed",
    "empty": "empty", "vide": "empty", "none": "empty",
    "struck": "struck", "barre": "struck", "barree": "struck", "raye": "struck", "rayee": "struck",
}


# Formula injection: a cell starting with one of these is taken for a formula by spreadsheet programs.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


_ID_RE = re.compile(SIGNATURE_ID_PATTERN)


def neutralise(text: str) -> str:
    """Text a spreadsheet shows as it is and never runs: control and bidi characters dropped (line
    breaks kept), a leading ' before = + - @."""
    text = "\n".join(drop_hidden(line) for line in str(text).split("\n"))
    return "'" + text if text.startswith(_FORMULA_START) else text


def flags_in_words(flags: str, status: str = "", duplicate_of: str = "") -> str:
    words = flag_words(flags)
    if status == "duplicate" and duplicate_of:
        words.insert(0, "the machine found the same signer earlier (see 'possible duplicate of')")
    return "\n".join(words)


def row_fingerprint(row: dict[str, str] | pd.Series) -> str:
    """What the volunteer decided on: a row whose fingerprint changed since the export was changed by someone else."""
    text = "\x1f".join(str(row[c]) for c in ("name", "postal_code", "signature", "status", "duplicate_of",
                                              "reviewed_at"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


@dataclass(frozen=True)
class Column:
    key: str  # the header text, which import matches (case-insensitively)
    width: float  # Excel character units
    kind: str = "info"  # info (locked text), image, edit (unlocked), hidden
    help: str = ""  # for the instructions sheet


# Each field's image, reading and correction side by side: one look per row.
COLUMNS: tuple[Column, ...] = (
    Column("signature_id", 19, help="the row's id in the ledger: never change it"),
    Column("sheet", 22, help="file, page and row number on the paper sheet"),
    Column("name image", 0, "image", "the name as written"),
    Column("name read", 22, help="the machine's reading of the name"),
    Column("name confidence", 10, help="how sure the machine is (100 % = certain)"),
    Column("other name readings", 24, help="other readings the machine considered (also in the dropdown)"),
    Column("name", 26, "edit", "type the right name (NOM Prénom) if the reading is wrong, or pick one in the dropdown"),
    Column("postal code image", 0, "image", "the postal code as written"),
    Column("postal code read", 11, help="the machine's reading of the postal code"),
    Column("postal confidence", 10, help="how sure the machine is"),
    Column("other postal codes", 14, help="other codes the machine considered (also in the dropdown)"),
    Column("postal_code", 12, "edit", "type the right five-digit code if the reading is wrong"),
    Column("signature image", 0, "image", "the signature cell"),
    Column("signature read", 10, help="signed, empty, or struck (crossed out)"),
    Column("signature", 11, "edit", "pick signed / empty / struck if the reading is wrong"),
    Column("to check", 34, help="why the machine asks you to look"),
    Column("possible duplicate of", 30, help="a row that may be the same person: id, name, postal code"),
    Column("duplicate image", 0, "image", "that row's name as written"),
    Column("duplicate_of", 19, "edit", "with decision duplicate: the id of the row it repeats (empty: the one shown)"),
    Column("decision", 15, "edit", "ok / correct / not a signature / duplicate"),
    Column("check", 14, "hidden", "kept for the import: do not change"),
)


EDIT_KEYS = tuple(c.key for c in COLUMNS if c.kind == "edit")


IMAGE_FIELDS = {"name image": "name", "postal code image": "postal_code", "signature image": "signature"}


# Images: shown at most this high and wide (pixels); the file keeps the crop's full resolution,
# so zooming in shows every stroke.
IMAGE_HEIGHT_PX = 56


IMAGE_MAX_WIDTH_PX = {"name image": 380, "postal code image": 150, "signature image": 230, "duplicate image": 300}


IMAGE_MARGIN_PX = 3


MAX_OPTIONS = 8  # entries per dropdown
