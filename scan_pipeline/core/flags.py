"""The flags a row can carry, in words a volunteer or a coordinator understands.

Flags are machine codes in the ledger's `flags` column (`name_low_conf;signature_missing`); the
report and the review spreadsheet show these sentences instead.
"""

from __future__ import annotations

FLAG_WORDS: dict[str, str] = {
    "name_low_conf": "name: the machine is unsure of its reading",
    "name_unreadable": "name: could not be read",
    "name_missing": "name: nothing written, but the row is signed",
    "postal_low_conf": "postal code: the machine is unsure of its reading",
    "postal_unreadable": "postal code: could not be read",
    "postal_invalid": "postal code: not a French postal code",
    "postal_corrected": "postal code: the reading was corrected to the nearest real code",
    "postal_leading_zero": "postal code: a leading 0 was added",
    "postal_letters_mapped": "postal code: letters read as digits (O as 0, I as 1...)",
    "postal_from_commune": "postal code: taken from the commune written in the cell",
    "postal_missing": "postal code: nothing written",
    "postal_not_five_digits": "postal code: the reading is not five digits",
    "signature_missing": "signature: none, but a name or postal code is written",
    "signature_struck": "signature: the row is struck through (withdrawn?)",
    "row_possible_duplicate": "possibly the same person as another row",
    "row_unnumbered": "row number could not be read",
    "row_reread_differs": "read again, the machine reads something else than the reviewer's value (kept)",
    "row_reread_missing": "read again, the row was not found; the reviewer's decision is kept",
}


def flag_words(flags: str) -> list[str]:
    """The sentences for a `flags` cell (unknown codes are shown as they are)."""
    return [FLAG_WORDS.get(code, code) for code in flags.split(";") if code]
