"""Checking every line of a returned file before anything is applied.

Lines are found by `signature_id`, never by position, so sorted or deleted lines are harmless.
Every problem is listed with its spreadsheet row; a line whose row changed in the ledger since
the export (its `check` fingerprint differs) is not overwritten.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from scan_pipeline.core.errors import ReviewFileError
from scan_pipeline.core.postcodes import PostalList, load_postal_list
from scan_pipeline.core.text import drop_hidden, fold
from scan_pipeline.review.readers import ReviewTable, SheetCell, not_review_file
from scan_pipeline.review.sheet import (
    _DECISION_WORDS,
    _FORMULA_START,
    _ID_RE,
    _SIGNATURE_WORDS,
    COLUMNS,
    DECISIONS,
    EDIT_KEYS,
    SIGNATURE_STATES,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Problem:
    sheet_row: int | None
    message: str  # never what was typed (it may be a name or a postal code): see `typed`
    signature_id: str = ""
    typed: str = ""  # the text typed in the cell at fault, shown only at -v (`verbose`)

    def __str__(self) -> str:
        where = f"row {self.sheet_row}" if self.sheet_row is not None else "file"
        return f"{where}{f' ({self.signature_id})' if self.signature_id else ''}: {self.message}"

    def verbose(self) -> str:
        return f"{self}{f' (typed: {self.typed!r})' if self.typed else ''}"


def shown_problem(problem: Problem) -> str:
    """A problem as the default log level may show it; with -v, what was typed too."""
    return problem.verbose() if log.isEnabledFor(logging.DEBUG) else str(problem)


@dataclass(frozen=True)
class Decision:
    """One filled line of the returned file, checked."""

    sheet_row: int
    signature_id: str
    decision: str  # one of DECISIONS ('' was turned into 'correct' when a value was typed)
    name: str | None  # typed value, None when left empty
    postal_code: str | None
    signature: str | None
    duplicate_of: str | None  # the row it repeats (typed or shown), for decision duplicate
    candidate_shown: bool  # a possible duplicate was shown on the line: ok then means 'not the same'
    fingerprint: str  # '' when the check column is missing


def _typed_word(text: str) -> str:
    """A typed word as it is compared: 'Not_a  Signature' -> 'not a signature'."""
    return " ".join(fold(text).lower().replace("_", " ").split())


def _clean_typed(text: str) -> str:
    text = unicodedata.normalize("NFC", drop_hidden(text.replace("\u00a0", " "))).strip()
    if text.startswith("'"):  # a spreadsheet's 'this is text' mark, or the export's own neutralising
        text = text[1:].strip()
    return " ".join(text.split())


def _looks_like_code(text: str) -> bool:
    return bool(re.fullmatch(r"[0-9 ]{4,6}", text)) and len(text.replace(" ", "")) in (4, 5)


Bad = Callable[..., None]  # bad(message, typed=""): one problem of the line being checked


def _check_line(number: int, cells: dict[str, SheetCell], ledger_ids: set[str], postal: PostalList,
                current: dict[str, dict[str, str]]) -> tuple[Decision | None, list[Problem]]:
    """One line of the returned sheet: its Decision, or every problem it has (never both)."""
    sid = cells.get("signature_id", SheetCell("")).value.strip()
    edits = {k: cells.get(k, SheetCell("")) for k in EDIT_KEYS}
    problems: list[Problem] = []

    def bad(message: str, typed: str = "") -> None:
        problems.append(Problem(number, message, sid, typed))

    for key, cell in edits.items():
        if cell.formula:
            bad(f"the {key} cell holds a formula: type the value itself as plain text")
    if problems:
        return None, problems
    typed = {k: _clean_typed(c.value) for k, c in edits.items()}
    if not any(typed.values()):
        return None, []  # an untouched line changes nothing
    if not sid:
        bad("the signature_id cell is empty: it tells which signature the line is about; copy the line again "
            "from the exported file, or leave the line empty")
        return None, problems
    if sid not in ledger_ids:
        bad("this signature_id is not in the ledger (was the row erased, or is this file from another "
            "ledger?): leave the line empty")
        return None, problems
    row = current[sid]
    decision = _typed_decision(typed["decision"], bad)
    name = _typed_name(typed["name"], row, bad)
    postal_code = _typed_postal_code(typed["postal_code"], row, postal, bad)
    signature = _typed_signature(typed["signature"], row, bad)
    shown = _ID_RE.search(cells.get("possible duplicate of", SheetCell("")).value or "")
    candidate = shown.group(0) if shown else ""
    duplicate_of = _typed_duplicate_of(typed["duplicate_of"], sid, ledger_ids, bad)
    if problems:
        return None, problems
    decision, duplicate_of = _settled(decision, typed, row, (name, postal_code, signature), duplicate_of, candidate,
                                      ledger_ids, bad)
    if problems or not decision:
        return None, problems
    return Decision(number, sid, decision, name, postal_code, signature,
                    duplicate_of if decision == "duplicate" else None, bool(candidate),
                    cells.get("check", SheetCell("")).value.strip()), []


def _typed_decision(text: str, bad: Bad) -> str:
    if not text:
        return ""
    folded = _typed_word(text)
    decision = _DECISION_WORDS.get(folded, "")
    if not decision:
        hint = " (it belongs in the signature column)" if folded in _SIGNATURE_WORDS else ""
        bad(f"the decision typed is not one of: {', '.join(DECISIONS)}{hint}", text)
    return decision


def _typed_name(text: str, row: dict[str, str], bad: Bad) -> str | None:
    """The corrected name, or None (nothing typed, or the machine's own value)."""
    if not text:
        return None
    folded = _typed_word(text)
    if _looks_like_code(text):
        bad("the name column holds a postal code: type it in the postal_code column")
    elif folded in _DECISION_WORDS or folded in _SIGNATURE_WORDS:
        bad(f"the name column holds {folded!r}: that belongs in the "
            f"{'decision' if folded in _DECISION_WORDS else 'signature'} column")
    elif text.startswith(_FORMULA_START):
        bad("the name starts with = + - or @: type the name only (letters)")
    elif not any(c.isalpha() for c in text):
        bad("the name has no letters: type the name as NOM Prénom, or leave it empty")
    elif text == row["name"]:
        return None  # the machine's value, picked from the dropdown: nothing to correct
    return text


def _typed_postal_code(text: str, row: dict[str, str], postal: PostalList, bad: Bad) -> str | None:
    if not text:
        return None
    digits = text.replace(" ", "")
    if len(digits) == 4 and digits.isdigit():
        digits = "0" + digits  # a spreadsheet dropped the leading zero
    if any(c.isalpha() for c in text):
        folded = _typed_word(text)
        where = ("decision" if folded in _DECISION_WORDS else "signature" if folded in _SIGNATURE_WORDS
                 else "name")
        bad(f"the postal_code column holds letters (it looks like a {where}): type five digits here, "
            f"and the {where} in its own column", text)
    elif not (len(digits) == 5 and digits.isdigit()):
        bad("the postal code typed is not five digits: type it like 01000", text)
    elif digits not in postal:
        bad("the postal code typed is not a French postal code: check the image; if the signer wrote a "
            "code that does not exist, leave postal_code empty", digits)
    else:
        return None if digits == row["postal_code"] else digits
    return text


def _typed_signature(text: str, row: dict[str, str], bad: Bad) -> str | None:
    if not text:
        return None
    folded = _typed_word(text)
    state = _SIGNATURE_WORDS.get(folded)
    if state is None:
        hint = " (it belongs in the decision column)" if folded in _DECISION_WORDS else ""
        bad(f"the signature typed is not one of: {', '.join(SIGNATURE_STATES)}{hint}", text)
    return None if state == row["signature"] else state


def _typed_duplicate_of(text: str, sid: str, ledger_ids: set[str], bad: Bad) -> str | None:
    if not text:
        return None
    found = _ID_RE.fullmatch(text.lower())
    if found is None:
        hint = (": choose duplicate in the decision column and leave duplicate_of empty for the row shown"
                if _typed_word(text) in _DECISION_WORDS else "")
        bad(f"duplicate_of must be a signature_id like 3f2a9c0d11e4b5a7-07{hint}", text)
    elif found.group(0) not in ledger_ids:
        bad(f"duplicate_of {found.group(0)} is not a signature_id of the ledger: copy it from its line")
    elif found.group(0) == sid:
        bad("duplicate_of names the line itself: give the id of the row it repeats")
    else:
        return found.group(0)
    return None


def _settled(decision: str, typed: dict[str, str], row: dict[str, str], values: tuple[str | None, ...],
             duplicate_of: str | None, candidate: str, ledger_ids: set[str], bad: Bad) -> tuple[str, str | None]:
    """The decision a line means when its cells are valid one by one: the one chosen, or the one its
    typed values imply; and the row it repeats."""
    corrected = any(v is not None for v in values)
    typed_values = any(typed[k] for k in ("name", "postal_code", "signature"))
    if not decision:
        if duplicate_of:
            decision = "duplicate"
        elif corrected or typed_values:
            decision = "correct"
    if decision == "correct" and not corrected:
        if typed_values:
            decision = "ok"  # the values typed are the machine's own: nothing to correct, they confirm it
        else:
            bad("decision correct, but no corrected value typed: type the right name, postal_code or "
                "signature, or choose ok if the machine read it right")
    if decision in ("ok", "correct") and not (values[0] or row["name"]):
        bad(f"decision {decision}, but the name is empty: type the name, or choose not a signature")
    if decision == "duplicate" and not (duplicate_of or candidate):
        bad("decision duplicate, but no row to be a duplicate of: type that row's signature_id in duplicate_of")
    if decision == "duplicate" and not duplicate_of:
        duplicate_of = candidate if candidate in ledger_ids else None
        if duplicate_of is None:
            bad(f"the row shown as possible duplicate ({candidate}) is no longer in the ledger: type another "
                "row's signature_id in duplicate_of, or choose another decision")
    return decision, duplicate_of


def check_review_table(table: ReviewTable, df: pd.DataFrame,
                       postal: PostalList | None = None) -> tuple[list[Decision], list[Problem]]:
    """The decisions of the filled lines, and every problem found (with its spreadsheet row)."""
    postal = postal or load_postal_list()
    problems: list[Problem] = []
    if "signature_id" not in table.header:
        raise not_review_file(table.source, "header")
    present = [k for k in EDIT_KEYS if k in table.header]
    if not present:
        raise ReviewFileError("no correction column (name, postal_code, signature, duplicate_of, decision)",
                              file=str(table.source), hint="import the file `scan-pipeline review export` wrote")
    repeated = sorted({h for h in table.header if h and table.header.count(h) > 1 and h in
                       {c.key for c in COLUMNS}})
    if repeated:
        raise ReviewFileError(f"the header repeats the column(s) {', '.join(repeated)}", file=str(table.source),
                              hint="delete the extra column(s) in the spreadsheet and import again")
    index = {h: i for i, h in enumerate(table.header) if h}
    current = {r["signature_id"]: r for r in df.to_dict("records")}
    ledger_ids = set(current)
    decisions: list[Decision] = []
    seen: dict[str, int] = {}
    for number, cells in table.rows:
        named = {k: cells[i] if i < len(cells) else SheetCell("") for k, i in index.items()}
        sid = named.get("signature_id", SheetCell("")).value.strip()
        if sid and any(_clean_typed(named.get(k, SheetCell("")).value) for k in EDIT_KEYS):
            if sid in seen:
                problems.append(Problem(number, f"the same signature_id is on row {seen[sid]} too: keep one of "
                                                "the two lines", sid))
                continue
            seen[sid] = number
        decision, found = _check_line(number, named, ledger_ids, postal, current)
        problems += found
        if decision is not None:
            decisions.append(decision)
    # duplicates within the file: no cycles, never a duplicate of a row rejected here
    by_id = {d.signature_id: d for d in decisions}
    for d in decisions:
        if d.decision != "duplicate" or d.duplicate_of is None:
            continue
        target = by_id.get(d.duplicate_of)
        if target is not None and target.decision == "not a signature":
            problems.append(Problem(d.sheet_row, f"duplicate of {d.duplicate_of}, which row {target.sheet_row} "
                                                 "marks not a signature: choose another decision for one of them",
                                    d.signature_id))
        elif current[d.duplicate_of]["status"] == "rejected" and target is None:
            problems.append(Problem(d.sheet_row, f"duplicate of {d.duplicate_of}, which was rejected (not a "
                                                 "signature): choose ok or not a signature instead",
                                    d.signature_id))
        seen_ids, step = {d.signature_id}, d.duplicate_of or ""
        while step in by_id and by_id[step].decision == "duplicate" and by_id[step].duplicate_of:
            if step in seen_ids:
                problems.append(Problem(d.sheet_row, "the duplicate_of of these lines go round in a circle: "
                                                     "mark only the later signatures duplicate", d.signature_id))
                break
            seen_ids.add(step)
            step = by_id[step].duplicate_of or ""
    bad_ids = {p.signature_id for p in problems}
    return [d for d in decisions if d.signature_id not in bad_ids], problems
