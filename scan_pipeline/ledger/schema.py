"""The ledger's contract (schemas/ledger.schema.json): its columns, and one checker compiled from the schema."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

import numpy as np
import pandas as pd
from jsonschema import Draft202012Validator

from scan_pipeline.ledger.paths import signature_id

LEDGER_COLUMNS: tuple[str, ...] = (
    "signature_id",
    "source_file",
    "page",
    "row_number",
    "name",
    "name_ocr",
    "name_confidence",
    "postal_code",
    "postal_code_ocr",
    "postal_confidence",
    "postal_valid",
    "commune",
    "signature",
    "status",
    "flags",
    "duplicate_of",
    "page_sha256",
    "processed_at",
    "reviewed_by",
    "reviewed_at",
)


# Columns that hold personal or free text: their values are never echoed in error messages.
_FREE_TEXT = frozenset({"source_file", "name", "name_ocr", "postal_code_ocr", "commune", "reviewed_by"})


# Short wording of what a column must look like, for error messages (the schema holds the rules).
_EXPECTED = {
    "signature_id": "16 lower-case hex digits, a dash and the row number (e.g. 3f2a9c0d11e4b5a7-07)",
    "page": "a page number from 1, without leading zeros",
    "row_number": "a whole number without leading zeros",
    "name_confidence": "a number from 0.000 to 1.000 with three decimals",
    "postal_confidence": "a number from 0.000 to 1.000 with three decimals",
    "postal_code": "five digits (e.g. 01000) or empty",
    "flags": "codes starting with name_, postal_, signature_ or row_ (a-z, 0-9, _), separated by ';'",
    "duplicate_of": "a signature_id or empty",
    "page_sha256": "64 lower-case hex digits",
    "processed_at": "UTC time like 2026-11-23T15:00:00Z",
    "reviewed_at": "ISO 8601 time like 2026-11-24T09:30:00Z, or empty",
    **{c: "text without control characters, not starting with a space or = + - @" for c in _FREE_TEXT},
}


_READ_HINT = ("the ledger was probably edited by hand or saved by a spreadsheet program; fix the listed "
              "cells (every value is text: keep leading zeros of postal codes, save as UTF-8 CSV without "
              "BOM, comma-separated) or restore the previous copy from a backup")


BUG_HINT = ("this is a bug in scan-pipeline; please report it with the input file "
             "(the ledger was not changed)")


POSTAL_RE = re.compile(r"[0-9]{5}")


_DIGITS_RE = re.compile(r"[0-9]+")


@lru_cache(maxsize=1)
def load_schema() -> dict[str, Any]:
    """The ledger row schema, shipped as package data."""
    text = resources.files("scan_pipeline").joinpath("schemas", "ledger.schema.json").read_text("utf-8")
    return json.loads(text)


@lru_cache(maxsize=1)
def _validator() -> Draft202012Validator:
    return Draft202012Validator(load_schema())


_SIMPLE_KEYWORDS = frozenset({"type", "pattern", "enum", "minLength", "title", "description", "format"})


_TOP_KEYWORDS = frozenset({"$schema", "$id", "title", "description", "type", "properties", "required",
                           "additionalProperties"})


@dataclass(frozen=True)
class ColumnRule:
    """The schema's rules for one column's text, compiled once: the one checker behind every fast
    path (a row, a column of a million values, the CSV writer's quoting); jsonschema only words the
    problems of what fails here."""

    name: str
    pattern: re.Pattern[str] | None
    enum: frozenset[str] | None
    min_length: int

    @property
    def only_text(self) -> bool:
        """Any text is valid (a free-text column: names, communes, paths)."""
        return self.pattern is None and self.enum is None and not self.min_length

    def ok(self, value: Any) -> bool:
        """What jsonschema says of one value (re.search, as jsonschema does: '$' matches before a
        final newline, which the callers check apart)."""
        return (isinstance(value, str) and len(value) >= self.min_length
                and (self.pattern is None or self.pattern.search(value) is not None)
                and (self.enum is None or value in self.enum))

    def all_ok(self, values: list[str]) -> bool:
        """`ok` of many texts at once, looping in C, and none of them ending with a newline when the
        column has a pattern: what the row check and its newline check say together."""
        if not values:
            return True
        if self.min_length and min(map(len, values)) < self.min_length:
            return False
        if self.enum is not None and not self.enum.issuperset(values):
            return False
        if self.pattern is not None:
            if None in map(self.pattern.search, values):
                return False
            if "\n\0" in "\0".join(values) + "\0":
                return False
        return True


@lru_cache(maxsize=1)
def column_rules() -> dict[str, ColumnRule] | None:
    """Each column's rule, from the schema itself; None (every check goes through jsonschema) when
    the schema uses a keyword this does not understand."""
    schema = load_schema()
    props: dict[str, dict[str, Any]] = schema.get("properties", {})
    if (set(schema) - _TOP_KEYWORDS or schema.get("type") != "object"
            or schema.get("additionalProperties") is not False
            or set(schema.get("required", ())) != set(props)):
        return None
    rules = {}
    for name, prop in props.items():
        if set(prop) - _SIMPLE_KEYWORDS or prop.get("type") != "string":
            return None
        rules[name] = ColumnRule(name, re.compile(prop["pattern"]) if "pattern" in prop else None,
                                 frozenset(prop["enum"]) if "enum" in prop else None, int(prop.get("minLength", 0)))
    return rules


@lru_cache(maxsize=1)
def _prescreen() -> Callable[[dict[str, Any]], bool] | None:
    """A fast yes/no 'the schema finds no error' for one row (jsonschema costs ~0.3 ms a row, seconds
    for a large ledger read on every run; valid rows skip it, failing rows go through it for the
    messages). None when the schema is beyond `column_rules`."""
    rules = column_rules()
    if rules is None:
        return None
    checks = tuple(rules.values())
    keys = frozenset(rules)

    def passes(row: dict[str, Any]) -> bool:
        return row.keys() == keys and all(rule.ok(row[rule.name]) for rule in checks)

    return passes


@lru_cache(maxsize=1)
def _pattern_columns() -> tuple[str, ...]:
    return tuple(n for n, p in load_schema()["properties"].items() if "pattern" in p)


def _header_problems(header: Sequence[str]) -> list[str]:
    header = [str(c) for c in header]
    if header == list(LEDGER_COLUMNS):
        return []
    problems = []
    missing = [c for c in LEDGER_COLUMNS if c not in header]
    extra = [c for c in header if c not in LEDGER_COLUMNS]
    repeated = sorted({c for c in header if header.count(c) > 1})
    if missing:
        problems.append(f"header (line 1): missing column(s): {', '.join(missing)}")
    if extra:
        problems.append(f"header (line 1): unexpected column(s): {', '.join(repr(c) for c in extra)}")
    if repeated:
        problems.append(f"header (line 1): repeated column(s): {', '.join(repeated)}")
    if not problems:
        problems.append("header (line 1): columns are out of order; expected: " + ",".join(LEDGER_COLUMNS))
    return problems


def _describe(error: Any, column: str) -> str:
    """One schema error in words, without echoing personal text."""
    value = error.instance
    kind = error.validator
    if kind == "type":
        if isinstance(value, float) and math.isnan(value):
            return "is missing (every cell must be text, empty text is allowed)"
        return f"must be text, found {type(value).__name__}"
    shown = "value" if column in _FREE_TEXT else repr(value)
    if kind == "minLength":
        return "must not be empty"
    if kind == "enum":
        return f"{shown} is not one of: {', '.join(error.validator_value)}"
    if kind == "pattern":
        return f"{shown} is not valid: expected {_EXPECTED.get(column, error.validator_value)}"
    if kind == "required":
        return "column is missing"
    if kind == "additionalProperties":
        return "unexpected column"
    return error.message if column not in _FREE_TEXT else f"invalid value ({kind})"


def row_problems(rows: Iterable[tuple[str, dict[str, Any]]]) -> list[str]:
    """Schema errors for (label, row) pairs, then checks across rows that a schema cannot express."""
    validator = _validator()
    passes = _prescreen()
    problems: list[str] = []
    seen: dict[str, str] = {}
    kept: list[tuple[str, dict[str, Any]]] = []
    for label, row in rows:
        if passes is None or not passes(row):
            errors = list(validator.iter_errors(row))
            for error in sorted(errors, key=lambda e: LEDGER_COLUMNS.index(e.path[0]) if e.path else -1):
                column = str(error.path[0]) if error.path else "?"
                problems.append(f"{label}, column {column}: {_describe(error, column)}")
        for column in _pattern_columns():
            # Python's '$' also matches before a final newline, so '01000\n' would pass the pattern.
            value = row.get(column)
            if isinstance(value, str) and value.endswith("\n"):
                problems.append(f"{label}, column {column}: ends with a line break")
        kept.append((label, row))
        sid = row.get("signature_id")
        if isinstance(sid, str) and sid:
            if sid in seen:
                problems.append(f"{label}, column signature_id: {sid!r} repeats {seen[sid]}")
            else:
                seen[sid] = label
    for label, row in kept:
        sid, sha, number = row.get("signature_id"), row.get("page_sha256"), row.get("row_number")
        if (isinstance(sha, str) and re.fullmatch(r"[0-9a-f]{64}", sha) and isinstance(number, str)
                and _DIGITS_RE.fullmatch(number) and isinstance(sid, str)):
            expected = signature_id(sha, int(number))
            if sid != expected:
                problems.append(f"{label}, column signature_id: {sid!r} does not match page_sha256 and "
                                f"row_number (expected {expected!r})")
        dup = row.get("duplicate_of")
        if row.get("status") == "duplicate" and dup == "":
            problems.append(f"{label}, column duplicate_of: must name the earliest row when status is "
                            "duplicate")
        if isinstance(dup, str) and dup:
            if dup == sid:
                problems.append(f"{label}, column duplicate_of: refers to the row itself")
            elif dup not in seen:
                problems.append(f"{label}, column duplicate_of: {dup!r} is not a signature_id in the ledger")
    return problems


# signature_id is page_sha256[:16], a dash and row_number on at least two digits: when those two
# columns pass these patterns and every id is the one they give, the id passes its pattern too.
SIGNATURE_ID_PATTERN = "[0-9a-f]{16}-[0-9]{2,}"  # what signature_id gives (also in schemas/ledger.schema.json)


_ID_PARTS = {"signature_id": f"^{SIGNATURE_ID_PATTERN}$", "page_sha256": "^[0-9a-f]{64}$",
             "row_number": "^(0|[1-9][0-9]*)$"}


@lru_cache(maxsize=1)
def _id_follows_from_parts() -> bool:
    props = load_schema()["properties"]
    return all(props.get(c, {}).get("pattern") == p and not {"enum", "minLength"} & set(props[c])
               for c, p in _ID_PARTS.items())


def _expected_ids(sha: np.ndarray, number: np.ndarray) -> np.ndarray:
    """signature_id(sha, int(number)) of every row, computed once per distinct page and row number."""
    sha_code, shas = pd.factorize(sha)
    number_code, numbers = pd.factorize(number)
    heads = np.array([h[:16] + "-" for h in shas.tolist()], dtype=object)
    tails = np.array([f"{int(r):02d}" for r in numbers.tolist()], dtype=object)
    return heads[sha_code] + tails[number_code]


def _fast_valid(df: pd.DataFrame) -> bool:
    """True when the frame certainly has no problem; False means: ask row_problems for the list.

    Column-wise (each distinct value checked once, 'every value is text' checked by pandas in C),
    so a million-row ledger takes about a second rather than minutes; it checks exactly what
    row_problems checks.
    """
    rules = column_rules()
    if rules is None or list(df.columns) != list(LEDGER_COLUMNS):
        return False
    if not len(df):
        return True
    arrays = {c: df[c].to_numpy(dtype=object) for c in LEDGER_COLUMNS}
    for name, rule in rules.items():
        if pd.api.types.infer_dtype(arrays[name], skipna=False) != "string":
            return False  # a value that is not text (a missing cell reads as NaN)
        if rule.only_text or (name == "signature_id" and _id_follows_from_parts()):
            continue  # the id is compared with page_sha256 and row_number below
        if not rule.all_ok(pd.unique(arrays[name]).tolist()):
            return False
    ids = arrays["signature_id"]
    if pd.Series(ids).duplicated().any():
        return False
    if not (ids == _expected_ids(arrays["page_sha256"], arrays["row_number"])).all():
        return False
    dup = arrays["duplicate_of"]
    if ((arrays["status"] == "duplicate") & (dup == "")).any():
        return False
    named = dup != ""
    if named.any():
        if (dup[named] == ids[named]).any() or not pd.Series(dup[named]).isin(pd.Series(ids)).all():
            return False
    return True


def _frame_rows(df: pd.DataFrame) -> Iterator[tuple[int, dict[str, Any]]]:
    values = [df[c].tolist() for c in LEDGER_COLUMNS]
    for i, row in enumerate(zip(*values, strict=True), start=1):
        yield i, dict(zip(LEDGER_COLUMNS, row, strict=True))


def validate_ledger_frame(df: pd.DataFrame) -> list[str]:
    """Every problem of a ledger frame, as 'row N (line N+1), column C: problem'; empty when valid.

    Row N is the N-th data row; line N+1 counts the header as line 1 (a value holding a newline
    spans several physical lines, so an editor may show a higher line number).
    """
    problems = _header_problems(list(df.columns))
    if problems:
        return problems  # per-row errors would only repeat the header problem on every row
    if _fast_valid(df):
        return []
    return row_problems((f"row {i} (line {i + 1})", row) for i, row in _frame_rows(df))


def problem_list(title: str, problems: Sequence[str]) -> str:
    plural = "s" if len(problems) != 1 else ""
    return f"{title} ({len(problems)} problem{plural}):\n  " + "\n  ".join(problems)
