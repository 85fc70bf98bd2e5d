"""Text that is safe to store and to show, whatever a file name or a reading holds.

- `path_text`: a file's path as the ledger, the sidecars and every message hold it: valid UTF-8
  without control characters, the same bytes recoverable (`path_bytes`), never taken for an option
  or a formula.
- `ledger_text`: a free-text value of the ledger (a reading, a commune, a reviewer's name): no
  control character, and no lead a spreadsheet runs as a formula.
- `printable`: any text bound for a terminal or a log: control characters (and so terminal escape
  sequences) escaped, never sent raw.
"""

from __future__ import annotations

import os
import re
import unicodedata
from functools import lru_cache
from pathlib import PurePath

# a value starting with one of these is a formula to spreadsheet programs (and a leading space may
# be trimmed before they look)
FORMULA_START = frozenset("=+-@")
# invisible characters that reorder what a terminal or a spreadsheet shows (Trojan-source style)
_BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_ESCAPED = re.compile(r"\\(\\|x[0-9a-f]{2})")


def _hidden(ch: str) -> bool:
    return unicodedata.category(ch) == "Cc" or ch in _BIDI


def path_text(path: str | os.PathLike[str] | bytes) -> str:
    """The path as text: each byte that is not UTF-8, each control or bidi character as `\\xNN` (its
    UTF-8 bytes), a backslash as `\\\\`; a relative path that would start like a formula or an
    option (`=` `+` `-` `@`, a space) gets `./` in front, which names the same file."""
    raw = os.fsencode(path)
    out = []
    for ch in raw.decode("utf-8", errors="surrogateescape"):
        code = ord(ch)
        if 0xDC80 <= code <= 0xDCFF:  # a byte that is not UTF-8 (surrogateescape)
            out.append(f"\\x{code - 0xDC00:02x}")
        elif ch == "\\":
            out.append("\\\\")
        elif _hidden(ch):
            out.append("".join(f"\\x{b:02x}" for b in ch.encode("utf-8")))
        else:
            out.append(ch)
    text = "".join(out)
    if text and (text[0] in FORMULA_START or text[0].isspace()):
        text = "./" + text
    return text


def path_bytes(text: str) -> bytes:
    """The bytes of the path `path_text` gave this text for (the `./` it may have added kept)."""
    out = bytearray()
    pos = 0
    for match in _ESCAPED.finditer(text):
        out += text[pos:match.start()].encode("utf-8")
        token = match.group(1)
        out += b"\\" if token == "\\" else bytes([int(token[1:], 16)])
        pos = match.end()
    out += text[pos:].encode("utf-8")
    return bytes(out)


def is_safe_text(text: str) -> bool:
    """No control or bidi character, no surrogate, no lead a spreadsheet or a shell would act on."""
    if text and (text[0] in FORMULA_START or text[0].isspace()):
        return False
    return not any(_hidden(ch) or 0xD800 <= ord(ch) <= 0xDFFF for ch in text)


def ledger_path(text: str) -> str:
    """A source_file value: the text itself when it is already safe (as `path_text` made it), else
    `path_text` of it (a path given as it came, from an older ledger or a caller)."""
    return text if is_safe_text(text) else path_text(text)


def display_path(path: str | PurePath) -> str:
    """`path_text` of a path given as str or Path (surrogate-escaped bytes included)."""
    return path_text(os.fspath(path))


def drop_hidden(value: str) -> str:
    """The text without its control and bidi characters."""
    return "".join(ch for ch in str(value) if not _hidden(ch))


def ledger_text(value: str) -> str:
    """A free-text value as the ledger holds it: control and bidi characters dropped, and no leading
    space or formula character (a reading's stray lead is noise; typed values starting so are refused)."""
    stripped = drop_hidden(value).lstrip()
    while stripped and stripped[0] in FORMULA_START:
        stripped = stripped[1:].lstrip()
    return stripped


def printable(text: str, *, keep_newlines: bool = True) -> str:
    """Text for a terminal or a log: control and bidi characters (ESC among them) as `\\xNN` or
    `\\uNNNN`, lone surrogates (undecodable bytes) as `\\xNN`."""
    out = []
    for ch in str(text):
        code = ord(ch)
        if ch == "\n" and keep_newlines:
            out.append(ch)
        elif 0xDC80 <= code <= 0xDCFF:
            out.append(f"\\x{code - 0xDC00:02x}")
        elif 0xD800 <= code <= 0xDFFF:
            out.append(f"\\u{code:04x}")
        elif _hidden(ch):
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
        else:
            out.append(ch)
    return "".join(out)


# --- comparing texts ------------------------------------------------------------------------------

# Letters NFKD leaves whole: spelt out as a French reader (and a hurried writer) spells them.
_SPELT = {"Œ": "OE", "œ": "oe", "Æ": "AE", "æ": "ae", "ß": "ss", "Ø": "O", "ø": "o", "Đ": "D", "đ": "d",
          "Ł": "L", "ł": "l"}


@lru_cache(maxsize=65536)
def _bare_char(c: str) -> str:
    return "".join(_SPELT.get(x, x) for x in unicodedata.normalize("NFKD", c) if not unicodedata.combining(x))


class _BareTable(dict[int, str]):
    """A str.translate table built as it is used: each character stripped once."""

    def __missing__(self, code: int) -> str:
        value = self[code] = _bare_char(chr(code))
        return value


_BARE = _BareTable()


def strip_accents(text: str) -> str:
    """The text without accents, ligatures spelt out ('Œ' -> 'OE', 'ﬁ' -> 'fi'), case kept."""
    return text if text.isascii() else text.translate(_BARE)


def fold(text: str) -> str:
    """The one key texts are compared by (names, communes, typed words): upper case, no accents,
    ligatures spelt out. 'Hélène d'Œillet' -> "HELENE D'OEILLET"; callers keep what else they
    need (letters only, word order)."""
    return strip_accents(text).upper()
