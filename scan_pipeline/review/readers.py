"""Reading a returned review file: the .xlsx, or the .ods/.csv a spreadsheet program saved from it.

CSV with ',' or ';', with or without a BOM, UTF-8 or Windows-1252. Sizes are bounded before any
XML is parsed: a file that would not fit is refused with its limit, never read into memory whole.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from scan_pipeline.core.errors import ReviewFileError
from scan_pipeline.review.sheet import INSTRUCTIONS_SHEET, LISTS_SHEET, REVIEW_SHEET, REVIEWER_LABEL


@dataclass(frozen=True, slots=True)
class SheetCell:
    value: str  # as text ('' when empty)
    formula: bool = False  # the cell holds a formula (xlsx, ods)


@dataclass(frozen=True)
class ReviewTable:
    """The review lines of a returned file, whatever its format."""

    source: Path
    header: tuple[str, ...]  # lower-cased, stripped header texts
    rows: tuple[tuple[int, tuple[SheetCell, ...]], ...]  # (spreadsheet row number, cells)
    reviewer: str = ""  # from the instructions sheet, when there is one


def _cell_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # a postal code a spreadsheet turned into a number
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def _header_index(rows: Sequence[Sequence[SheetCell]]) -> int | None:
    for i, row in enumerate(rows[:5]):
        if any(c.value.strip().lower() == "signature_id" for c in row):
            return i
    return None


def _table(source: Path, raw: list[tuple[int, list[SheetCell]]], reviewer: str = "") -> ReviewTable | None:
    at = _header_index([cells for _, cells in raw])
    if at is None:
        return None
    header = tuple(c.value.strip().lower() for c in raw[at][1])
    body = tuple((n, tuple(cells)) for n, cells in raw[at + 1:])
    return ReviewTable(source, header, body, reviewer.strip())


def not_review_file(path: Path, what: str) -> ReviewFileError:
    return ReviewFileError(f"{what}: no column named signature_id, so this is not a review file", file=str(path),
                           hint="import the file `scan-pipeline review export` wrote (its sheet 'Review'); when "
                                "saving as CSV, save the sheet 'Review', not the instructions")


# A returned file is read within these bounds, well above a real workbook of 10,000 rows with its
# images (docs/benchmarks.md), so that no file, however built, can take the machine's memory.
MAX_LINES = 100_000  # lines with something in them, per sheet


MAX_COLUMNS = 64  # cells read per line (the workbook has 21 columns)


MAX_CELLS = 1_000_000  # cells with something in them, per sheet


MAX_SHEET_XML = 256 << 20  # bytes of one sheet's XML, decompressed (streamed, never held whole)


MAX_STRINGS_XML = 64 << 20  # bytes of an .xlsx's shared strings, decompressed (held whole by openpyxl)


MAX_CSV_BYTES = 64 << 20


MAX_PROBLEMS_SHOWN = 200  # problems listed in the error (the count says how many there are)


_EMPTY = SheetCell("")


def _too_big(path: Path, what: str) -> ReviewFileError:
    return ReviewFileError(f"{what}: more than a review file holds, so it was not read", file=str(path),
                           hint=f"import the workbook `scan-pipeline review export` wrote (at most {MAX_LINES:,} "
                                "lines); split a bigger one into several files")


def _check_zip(path: Path, limits: dict[str, int], default: int) -> None:
    """Refuse a zip whose entries would decompress past the limits (their declared sizes bound what
    zipfile ever decompresses: it stops reading an entry there)."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as z:
            entries = z.infolist()
    except (zipfile.BadZipFile, OSError) as exc:
        raise ReviewFileError(f"cannot read the workbook: {exc}", file=str(path),
                              hint="open it in LibreOffice or Excel and save it again") from exc
    for info in entries:
        if not info.filename.endswith(".xml"):
            continue  # images are never decompressed by the import
        limit = next((v for k, v in limits.items() if k in info.filename), default)
        if info.file_size > limit:
            raise _too_big(path, f"{info.filename} would take {info.file_size / 2**20:,.0f} MB once unpacked")


def _read_xlsx(path: Path) -> ReviewTable:
    from openpyxl import load_workbook
    from openpyxl.cell.read_only import EmptyCell

    _check_zip(path, {"sharedStrings": MAX_STRINGS_XML}, MAX_SHEET_XML)
    try:
        wb = load_workbook(path, data_only=False, read_only=True)
    except Exception as exc:  # noqa: BLE001 - openpyxl raises many kinds for a damaged file
        raise ReviewFileError(f"cannot read the workbook: {exc}", file=str(path),
                              hint="open it in LibreOffice or Excel and save it again as .xlsx") from exc

    def lines(ws: Any) -> list[tuple[int, list[SheetCell]]]:
        ws.reset_dimensions()  # a claimed A1:XFD1048576 must not become a million empty rows
        raw: list[tuple[int, list[SheetCell]]] = []
        cells_held = 0
        for number, row in enumerate(ws.iter_rows(min_row=1, max_col=MAX_COLUMNS), start=1):
            filled = [not isinstance(c, EmptyCell) and c.value is not None for c in row]
            if not any(filled):
                continue  # an empty line (or a gap in the file) changes nothing
            if len(raw) >= MAX_LINES:
                raise _too_big(path, f"sheet {ws.title!r} has more than {MAX_LINES:,} lines")
            last = max(i for i, f in enumerate(filled) if f) + 1
            cells_held += sum(filled)
            if cells_held > MAX_CELLS:
                raise _too_big(path, f"sheet {ws.title!r} has more than {MAX_CELLS:,} cells filled in")
            raw.append((number, [SheetCell(_cell_text(c.value), getattr(c, "data_type", "") == "f") if f else _EMPTY
                                 for c, f in zip(row[:last], filled, strict=False)]))
        return raw

    try:
        reviewer = ""
        if INSTRUCTIONS_SHEET in wb.sheetnames:
            for _, cells in lines(wb[INSTRUCTIONS_SHEET])[:12]:
                if len(cells) >= 2 and cells[0].value.strip() == REVIEWER_LABEL:
                    reviewer = cells[1].value
        order = [REVIEW_SHEET] + [n for n in wb.sheetnames if n != REVIEW_SHEET]
        for name in order:
            if name not in wb.sheetnames or name == LISTS_SHEET:
                continue
            table = _table(path, lines(wb[name]), reviewer)
            if table is not None:
                return table
    except ReviewFileError:
        raise
    except Exception as exc:  # noqa: BLE001 - a sheet openpyxl cannot parse
        raise ReviewFileError(f"cannot read the workbook: {type(exc).__name__}: {exc}", file=str(path),
                              hint="open it in LibreOffice or Excel and save it again as .xlsx") from exc
    finally:
        wb.close()
    raise not_review_file(path, "no sheet")


_ODS_TABLE = "{urn:oasis:names:tc:opendocument:xmlns:table:1.0}"


_ODS_OFFICE = "{urn:oasis:names:tc:opendocument:xmlns:office:1.0}"


_ODS_TEXT = "{urn:oasis:names:tc:opendocument:xmlns:text:1.0}"


def _ods_text(cell: Any) -> str:
    """The text of an .ods cell: its paragraphs, with spaces, tabs and line breaks as written."""
    def walk(el: Any) -> str:
        out = [el.text or ""]
        for child in el:
            tag = child.tag
            if tag == f"{_ODS_TEXT}s":
                out.append(" " * int(child.get(f"{_ODS_TEXT}c", "1") or 1))
            elif tag == f"{_ODS_TEXT}tab":
                out.append("\t")
            elif tag == f"{_ODS_TEXT}line-break":
                out.append("\n")
            else:
                out.append(walk(child))
            out.append(child.tail or "")
        return "".join(out)

    return "\n".join(walk(p) for p in cell.iter(f"{_ODS_TEXT}p"))


def _ods_cell(cell: Any) -> SheetCell:
    kind = cell.get(f"{_ODS_OFFICE}value-type") or ""
    formula = bool(cell.get(f"{_ODS_TABLE}formula"))
    if kind in ("float", "percentage", "currency"):
        try:
            value = _cell_text(float(cell.get(f"{_ODS_OFFICE}value") or "nan"))
        except ValueError:
            value = _ods_text(cell)
    elif kind == "date":
        value = cell.get(f"{_ODS_OFFICE}date-value") or ""
    elif kind == "boolean":
        value = cell.get(f"{_ODS_OFFICE}boolean-value") or ""
    else:
        value = _ods_text(cell)
    return SheetCell(value, formula)


def _read_ods(path: Path) -> ReviewTable:
    """An .ods read as a stream (content.xml is never held whole): its sheets' lines, within bounds."""
    import xml.etree.ElementTree as ET
    import zipfile

    _check_zip(path, {}, MAX_SHEET_XML)
    tables: dict[str, list[tuple[int, list[SheetCell]]]] = {}
    try:
        with zipfile.ZipFile(path) as z, z.open("content.xml") as content:
            current: list[tuple[int, list[SheetCell]]] | None = None
            number = held = 0
            depth = 0  # inside a row (nested tables are not a review sheet's)
            for event, el in ET.iterparse(content, events=("start", "end")):
                tag = el.tag
                if event == "start":
                    if tag == f"{_ODS_TABLE}table" and depth == 0:
                        current, number, held = [], 0, 0
                        tables[el.get(f"{_ODS_TABLE}name") or f"sheet {len(tables) + 1}"] = current
                    elif tag == f"{_ODS_TABLE}table-row":
                        depth += 1
                    continue
                if tag == f"{_ODS_TABLE}table-row":
                    depth -= 1
                    repeat = int(el.get(f"{_ODS_TABLE}number-rows-repeated") or 1)
                    cells: list[SheetCell] = []
                    for cell in el:
                        if cell.tag not in (f"{_ODS_TABLE}table-cell", f"{_ODS_TABLE}covered-table-cell"):
                            continue
                        n = int(cell.get(f"{_ODS_TABLE}number-columns-repeated") or 1)
                        value = _ods_cell(cell)
                        cells += [value] * max(0, min(n, MAX_COLUMNS - len(cells)))  # trailing empties: one huge repeat
                        if len(cells) >= MAX_COLUMNS:
                            break
                    while cells and not cells[-1].value and not cells[-1].formula:
                        cells.pop()
                    el.clear()
                    if current is None:
                        continue
                    if not cells:  # empty rows (often repeated a million times) only move the count
                        number += repeat
                        continue
                    if len(current) + repeat > MAX_LINES:
                        raise _too_big(path, f"a sheet has more than {MAX_LINES:,} lines")
                    held += repeat * sum(1 for c in cells if c.value or c.formula)
                    if held > MAX_CELLS:
                        raise _too_big(path, f"a sheet has more than {MAX_CELLS:,} cells filled in")
                    for _ in range(repeat):
                        number += 1
                        current.append((number, cells))
                elif tag == f"{_ODS_TABLE}table" and depth == 0:
                    current = None
                    el.clear()
    except ReviewFileError:
        raise
    except (zipfile.BadZipFile, KeyError, ET.ParseError, OSError, ValueError) as exc:
        raise ReviewFileError(f"cannot read the spreadsheet: {exc}", file=str(path),
                              hint="open it in LibreOffice and save it again as .ods or .xlsx") from exc
    reviewer = ""
    for _, cells in tables.get(INSTRUCTIONS_SHEET, [])[:12]:
        if len(cells) >= 2 and cells[0].value.strip() == REVIEWER_LABEL:
            reviewer = cells[1].value
    order = [REVIEW_SHEET] + [n for n in tables if n != REVIEW_SHEET]
    for name in order:
        if name in tables and name != LISTS_SHEET:
            table = _table(path, tables[name], reviewer)
            if table is not None:
                return table
    raise not_review_file(path, "no sheet")


def _decode_text(raw: bytes) -> str:
    """UTF-8 (with or without BOM), UTF-16 with BOM, or Windows-1252 (what 'CSV' means in a French Excel)."""
    if raw.startswith(b"\xef\xbb\xbf"):
        return raw[3:].decode("utf-8")
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        return raw.decode("utf-16")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("cp1252", errors="replace")


def _read_csv(path: Path) -> ReviewTable:
    try:
        if path.stat().st_size > MAX_CSV_BYTES:
            raise _too_big(path, f"the file is {path.stat().st_size / 2**20:,.0f} MB")
        text = _decode_text(path.read_bytes())
    except (OSError, UnicodeDecodeError) as exc:
        raise ReviewFileError(f"cannot read the file: {exc}", file=str(path),
                              hint="save the sheet 'Review' again as CSV (UTF-8)") from exc
    first = text.split("\n", 1)[0]
    delimiter = max((";", ",", "\t"), key=first.count)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    raw: list[tuple[int, list[SheetCell]]] = []
    held = 0
    try:
        for number, record in enumerate(reader, start=1):
            if not any(v.strip() for v in record):
                continue
            if len(raw) >= MAX_LINES:
                raise _too_big(path, f"the file has more than {MAX_LINES:,} lines")
            held += min(len(record), MAX_COLUMNS)
            if held > MAX_CELLS:
                raise _too_big(path, f"the file has more than {MAX_CELLS:,} cells")
            raw.append((number, [SheetCell(v) if v else _EMPTY for v in record[:MAX_COLUMNS]]))
    except csv.Error as exc:
        raise ReviewFileError(f"line {reader.line_num}: not readable as CSV ({exc})", file=str(path),
                              hint="save the sheet 'Review' again as CSV from the spreadsheet program") from exc
    table = _table(path, raw)
    if table is None:
        raise not_review_file(path, "first lines")
    return table


def read_review_file(path: Path) -> ReviewTable:
    """The review lines of an .xlsx, .ods or .csv file (by its content's format, not only its name)."""
    path = Path(path)
    if not path.is_file():
        raise ReviewFileError(f"{path} does not exist or is not a file", hint="give the path of the returned file")
    with path.open("rb") as fh:
        head = fh.read(4096)
    suffix = path.suffix.lower()
    if head.startswith(b"PK\x03\x04"):  # a zip: xlsx or ods
        if b"mimetypeapplication/vnd.oasis.opendocument.spreadsheet" in head or suffix == ".ods":
            return _read_ods(path)
        return _read_xlsx(path)
    if suffix in (".xlsx", ".ods", ".xls"):
        raise ReviewFileError(f"{path.name} is not an .xlsx or .ods workbook (its content is not one)",
                              file=str(path), hint="save it from the spreadsheet program as .xlsx, .ods or .csv")
    return _read_csv(path)
