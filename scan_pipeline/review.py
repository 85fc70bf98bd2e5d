"""The volunteers' review spreadsheet: flagged rows out with their images, corrections back in.

Export (`export_review`) writes an .xlsx workbook (openpyxl): an instructions sheet, then one line
per row to review with the crops of its name, postal-code and signature cells (from L.crops/, so
the scans are not needed), the machine's readings, confidences, other readings (also offered as a
dropdown in the correction cell), the flags in words, the possible duplicate with its image, and
empty cells to correct `name`, `postal_code`, `signature` and to choose a `decision`. Only those
cells are unlocked; every text is neutralised against formula injection.

Import (`import_review`) reads that workbook back, or the .ods/.csv a spreadsheet program saved
from it (CSV with ',' or ';', with or without a BOM, UTF-8 or Windows-1252). Rows are found by
`signature_id`, never by position, so sorted or deleted rows are harmless. Every row is checked
first and every problem is listed with its spreadsheet row; nothing is applied while one is left
(unless skip_invalid). A hidden `check` column holds a fingerprint of what the volunteer saw: a
row changed in the ledger since the export is not overwritten. The ledger is then rewritten under
its lock, atomically, with the decisions, `reviewed_by`/`reviewed_at`, deduplication re-run, and
an audit record (ids and decisions, never names). Importing the same file twice changes nothing.
"""

from __future__ import annotations

import csv
import getpass
import hashlib
import io
import logging
import re
import struct
import time
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from . import dedup, journal
from .config import DedupConfig
from .errors import LedgerError, OutputError, PipelineError, ReviewFileError
from .flags import flag_words
from .ledger import (
    LEDGER_COLUMNS,
    SIGNATURE_ID_PATTERN,
    atomic_write,
    commit,
    details_text,
    ledger_lock,
    output_record,
    read_details,
    read_ledger,
    record_outputs,
    sidecar_paths,
    stage_audit,
    stage_ledger,
    utc_timestamp,
)
from .postal import PostalList, load_postal_list
from .text import drop_hidden, ledger_text, path_text

log = logging.getLogger(__name__)

# --- the vocabulary of the sheet ----------------------------------------------------------------

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


# --- export ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExportSummary:
    path: Path
    rows: int  # lines written
    to_review: int  # rows of the ledger with status review
    images: int
    images_missing: int  # crops not found beside the ledger (the cell says so)
    seconds: float


def select_rows(df: pd.DataFrame, *, all_rows: bool = False, limit: int | None = None) -> pd.DataFrame:
    """The rows to review (status review, or every row), in paper order: file, page, row number."""
    chosen = df if all_rows else df[df["status"] == "review"]
    order = np.lexsort((pd.to_numeric(chosen["row_number"]).to_numpy(), pd.to_numeric(chosen["page"]).to_numpy(),
                        chosen["source_file"].to_numpy(dtype=object).astype(str)))
    chosen = chosen.iloc[order]
    if limit is not None:
        chosen = chosen.iloc[: max(limit, 0)]
    return chosen.reset_index(drop=True)


def _png_size(data: bytes) -> tuple[int, int] | None:
    # Width and height from the PNG header: no decoding, 3,000 images stay cheap.
    if len(data) < 24 or not data.startswith(b"\x89PNG\r\n\x1a\n") or data[12:16] != b"IHDR":
        return None
    return struct.unpack(">II", data[16:24])


def _inside(path: Path, folder: Path) -> bool:
    """The file the path names (links followed) is in the folder: L.details.jsonl names crops, and a
    file edited by hand must not make the workbook carry any other file of the machine."""
    try:
        return path.resolve().is_relative_to(folder.resolve())
    except (OSError, RuntimeError):  # a loop of links
        return False


def _crop_bytes(crops_dir: Path, details: dict[str, Any], sha: str, row_number: str, column: str) -> bytes | None:
    candidates = [crops_dir / sha[:16] / f"{int(row_number):02d}-{column}.png"]
    listed = (details.get("crops") or {}).get(column)
    if isinstance(listed, str) and listed:  # as process wrote it: relative to the ledger's folder
        candidates.append(crops_dir.parent / listed)
    for path in candidates:
        if not _inside(path, crops_dir):
            continue
        try:
            data = path.read_bytes()
        except OSError:
            continue
        if _png_size(data):
            return data
    return None


def _options(first: str, more: Iterable[str]) -> list[str]:
    seen: list[str] = []
    for value in (first, *more):
        value = str(value).strip()
        if value and value not in seen:
            seen.append(value)
    return seen[:MAX_OPTIONS]


def _percent(confidence: str) -> float | None:
    try:
        return round(float(confidence), 3)
    except ValueError:
        return None


def _text_lines(text: str, width: float) -> int:
    """Lines a wrapped text takes in a column `width` characters wide (so the row can be made that high)."""
    return sum(max(1, -(-len(line) // max(1, int(width) - 1))) for line in text.split("\n"))


def _where(row: pd.Series) -> str:
    return f"{Path(row['source_file']).name}, p. {row['page']}, row {row['row_number']}"


def export_review(ledger: Path, out: Path, *, all_rows: bool = False, limit: int | None = None,
                  force: bool = False) -> ExportSummary:
    """Write the review workbook for the ledger's rows to review (or all rows) to `out` (.xlsx)."""
    from openpyxl import Workbook

    start = time.perf_counter()
    ledger, out = Path(ledger), Path(out)
    if out.suffix.lower() != ".xlsx":
        raise PipelineError(f"{out}: the review workbook is written as .xlsx",
                            hint="give a file name ending in .xlsx (LibreOffice and Excel both open it)")
    if not ledger.exists():
        raise LedgerError(f"{ledger} does not exist", hint="give the path of a ledger CSV")
    if out.exists() and not force:
        raise OutputError(f"{out} already exists (it may hold a volunteer's work)",
                          hint="choose another file name, or pass --force to replace it")
    df = read_ledger(ledger)
    paths = sidecar_paths(ledger)
    details = read_details(paths.details)
    rows = select_rows(df, all_rows=all_rows, limit=limit)
    by_id = df.set_index("signature_id", drop=False)
    by_id["_rank"] = dedup.order_rank(df)  # only an earlier row can be the one a row repeats

    wb = Workbook()
    info = wb.active
    info.title = INSTRUCTIONS_SHEET
    ws = wb.create_sheet(REVIEW_SHEET)
    lists = wb.create_sheet(LISTS_SHEET)
    counts = _fill_review_sheet(ws, lists, rows, by_id, details, paths.crops)
    _fill_instructions(info, ledger, len(rows), all_rows)
    lists.sheet_state = "hidden"
    lists.protection.sheet = True
    wb.active = 0  # volunteers open the file on its instructions

    buffer = io.BytesIO()
    wb.save(buffer)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, buffer.getvalue())
    # listed among the ledger's outputs with every row it shows (a possible duplicate's too): an
    # erasure blanks them there
    shown = set(rows["signature_id"]) | {c for c in rows["duplicate_of"] if c} | {
        c for s in rows["signature_id"] for c in details.get(s, {}).get("duplicate_candidates", [])[:1]}
    record_outputs(ledger, [output_record("review", out, ids=shown, pages=set(rows["page_sha256"]))])
    return ExportSummary(out, len(rows), int((df["status"] == "review").sum()), counts[0], counts[1],
                         time.perf_counter() - start)


def _fill_review_sheet(ws: Any, lists: Any, rows: pd.DataFrame, by_id: pd.DataFrame, details: dict[str, Any],
                       crops_dir: Path) -> tuple[int, int]:
    from openpyxl.drawing.image import Image
    from openpyxl.drawing.spreadsheet_drawing import AnchorMarker, TwoCellAnchor
    from openpyxl.styles import Alignment, Font, PatternFill, Protection
    from openpyxl.utils import get_column_letter
    from openpyxl.utils.units import pixels_to_EMU
    from openpyxl.worksheet.datavalidation import DataValidation

    col = {c.key: i for i, c in enumerate(COLUMNS, start=1)}
    letter = {c.key: get_column_letter(i) for i, c in enumerate(COLUMNS, start=1)}
    edit_fill = PatternFill("solid", fgColor="FFF4C2")
    head_fill = PatternFill("solid", fgColor="DDE6F0")
    wrap = Alignment(wrap_text=True, vertical="center")
    unlocked = Protection(locked=False)
    for c in COLUMNS:
        cell = ws.cell(row=1, column=col[c.key], value=c.key)
        cell.font = Font(bold=True)
        cell.fill = edit_fill if c.kind == "edit" else head_fill
        cell.alignment = Alignment(wrap_text=True, vertical="center")

    decision_dv = DataValidation(type="list", formula1='"' + ",".join(DECISIONS) + '"', allow_blank=True,
                                 showErrorMessage=True, errorTitle="decision",
                                 error="Choose ok, correct, not a signature or duplicate.")
    signature_dv = DataValidation(type="list", formula1='"' + ",".join(SIGNATURE_STATES) + '"', allow_blank=True,
                                  showErrorMessage=True, errorTitle="signature",
                                  error="Choose signed, empty or struck.")
    ws.add_data_validation(decision_dv)
    ws.add_data_validation(signature_dv)

    widths_px = {k: 0 for k in IMAGE_MAX_WIDTH_PX}
    images = missing = 0
    for i, row in enumerate(rows.to_dict("records")):
        r = i + 2
        sid = row["signature_id"]
        det = details.get(sid, {})
        height_px = 20
        rank = by_id.at[sid, "_rank"]
        candidates = ([row["duplicate_of"]] if row["status"] == "duplicate" and row["duplicate_of"] else []) + [
            c for c in det.get("duplicate_candidates", []) if c in by_id.index and by_id.at[c, "_rank"] < rank]
        candidates = list(dict.fromkeys(candidates))[:MAX_OPTIONS]
        name_opts = _options(row["name"], det.get("name_alternatives", []))
        postal_opts = _options(row["postal_code"], det.get("postal_alternatives", []))
        first_cand = by_id.loc[candidates[0]] if candidates else None
        postal_read = row["postal_code"] or (f"({row['postal_code_ocr']})" if row["postal_code_ocr"] else "")
        values = {
            "signature_id": sid,
            "sheet": _where(row),
            "name read": row["name"],
            "name confidence": _percent(row["name_confidence"]),
            "other name readings": "\n".join(name_opts[1:]),
            "postal code read": postal_read,
            "postal confidence": _percent(row["postal_confidence"]),
            "other postal codes": "\n".join(postal_opts[1:]),
            "signature read": row["signature"],
            "to check": flags_in_words(row["flags"], row["status"], row["duplicate_of"]),
            "possible duplicate of": (f"{candidates[0]}\n{first_cand['name']}, {first_cand['postal_code']}"
                                      if first_cand is not None else ""),
            "check": row_fingerprint(row),
        }
        for key, value in values.items():
            cell = ws.cell(row=r, column=col[key])
            if isinstance(value, float):
                cell.value = value
                cell.number_format = "0%"
            else:
                cell.value = neutralise(value)
                cell.data_type = "s"  # never a formula, whatever the text
            cell.alignment = wrap
        for key in EDIT_KEYS:
            cell = ws.cell(row=r, column=col[key])
            cell.protection = unlocked
            cell.fill = edit_fill
            cell.number_format = "@"  # text: a postal code keeps its leading 0
            cell.alignment = wrap
        # dropdowns of this row's options, kept on the hidden lists sheet (a list written inline
        # breaks on commas and quotes)
        for key, opts, offset in (("name", name_opts, 1), ("postal_code", postal_opts, 1 + MAX_OPTIONS),
                                  ("duplicate_of", candidates, 1 + 2 * MAX_OPTIONS)):
            if not opts or (key != "duplicate_of" and len(opts) < 2):
                continue
            for k, value in enumerate(opts):
                lc = lists.cell(row=r, column=offset + k, value=neutralise(value))
                lc.data_type = "s"
            first, last = get_column_letter(offset), get_column_letter(offset + len(opts) - 1)
            dv = DataValidation(type="list", formula1=f"{LISTS_SHEET}!${first}${r}:${last}${r}", allow_blank=True,
                                showErrorMessage=False)  # free text stays allowed
            ws.add_data_validation(dv)
            dv.add(f"{letter[key]}{r}")
        decision_dv.add(f"{letter['decision']}{r}")
        signature_dv.add(f"{letter['signature']}{r}")

        pictures = [(key, _crop_bytes(crops_dir, det, row["page_sha256"], row["row_number"], field_))
                    for key, field_ in IMAGE_FIELDS.items()]
        if first_cand is not None:
            pictures.append(("duplicate image", _crop_bytes(crops_dir, details.get(candidates[0], {}),
                                                            first_cand["page_sha256"], first_cand["row_number"],
                                                            "name")))
        for key, data in pictures:
            if key == "duplicate image" and data is None:
                continue
            if data is None:
                ws.cell(row=r, column=col[key], value="(no image)").alignment = wrap
                missing += 1
                continue
            w, h = _png_size(data) or (1, 1)
            scale = min(IMAGE_HEIGHT_PX / h, IMAGE_MAX_WIDTH_PX[key] / w)
            dw, dh = max(1, round(w * scale)), max(1, round(h * scale))
            image = Image(io.BytesIO(data))
            image.width, image.height = dw, dh
            m = pixels_to_EMU(IMAGE_MARGIN_PX)
            # anchored to its cell ("move and size with cells"): sorting or deleting rows takes it along
            image.anchor = TwoCellAnchor(
                editAs="twoCell",
                _from=AnchorMarker(col=col[key] - 1, colOff=m, row=r - 1, rowOff=m),
                to=AnchorMarker(col=col[key] - 1, colOff=m + pixels_to_EMU(dw), row=r - 1,
                                rowOff=m + pixels_to_EMU(dh)))
            ws.add_image(image)
            images += 1
            widths_px[key] = max(widths_px[key], dw)
            height_px = max(height_px, dh + 2 * IMAGE_MARGIN_PX)
        lines = max(_text_lines(str(values[c.key]), c.width) for c in COLUMNS if c.kind == "info")
        ws.row_dimensions[r].height = max(height_px * 0.75, 13 * lines + 4)  # points; 1 px = 0.75 pt

    for c in COLUMNS:
        dim = ws.column_dimensions[letter[c.key]]
        if c.kind == "image":
            dim.width = max(12.0, (widths_px[c.key] + 2 * IMAGE_MARGIN_PX) / 7 + 1)  # ~7 px per character
        else:
            dim.width = c.width
        if c.kind == "hidden":
            dim.hidden = True
    ws.row_dimensions[1].height = 32
    ws.freeze_panes = "C2"  # header and the row's id and place stay in view
    last = get_column_letter(len(COLUMNS))
    ws.auto_filter.ref = f"A1:{last}{max(2, len(rows) + 1)}"
    # Locked cells (everything but the correction columns) cannot be typed over. No password, so
    # LibreOffice opens it and a coordinator can lift it; filtering and resizing stay allowed.
    ws.protection.sheet = True
    ws.protection.objects = True
    for option in ("sort", "autoFilter", "formatColumns", "formatRows", "deleteRows"):
        setattr(ws.protection, option, False)
    return images, missing


def redact_workbook(path: Path, ids: set[str]) -> tuple[bytes, int]:
    """The workbook with every trace of the given signatures blanked, and how many lines were theirs.

    Their lines are emptied in place (cells, images, their dropdown options), not deleted, so what a
    volunteer already typed on the other lines, and every image's anchor, stay as they were; a
    line that showed one of them as its possible duplicate loses that name and image."""
    from openpyxl import load_workbook

    wb = load_workbook(path)  # not read-only: images are kept
    ws = wb[REVIEW_SHEET]
    header = [str(c.value or "").strip().lower() for c in ws[1]]
    at = {h: i for i, h in enumerate(header) if h}
    image_cols = {at[k] for k in ("duplicate image",) if k in at}
    lists = wb[LISTS_SHEET] if LISTS_SHEET in wb.sheetnames else None
    blanked = 0
    drop: set[tuple[int, int | None]] = set()  # (0-based row, column or None for the whole row)
    for row in ws.iter_rows(min_row=2):
        sid = str(row[at["signature_id"]].value or "").strip() if "signature_id" in at else ""
        shown = str(row[at["possible duplicate of"]].value or "") if "possible duplicate of" in at else ""
        r = row[0].row
        if sid in ids:
            for cell in row:
                cell.value = None
            if lists is not None:
                for cell in next(lists.iter_rows(min_row=r, max_row=r), ()):
                    cell.value = None
            drop.add((r - 1, None))
            blanked += 1
        elif any(i in shown for i in ids):
            row[at["possible duplicate of"]].value = None
            drop |= {(r - 1, c) for c in image_cols}
    ws._images = [im for im in ws._images if not ((im.anchor._from.row, None) in drop
                                                  or (im.anchor._from.row, im.anchor._from.col) in drop)]
    buffer = io.BytesIO()
    wb.save(buffer)
    return buffer.getvalue(), blanked


INSTRUCTIONS = (
    ("How to review", None),
    ("Each line of the sheet 'Review' is one signature the machine was unsure of. Look at the images "
     "of the handwriting, compare them with what the machine read, and fill in the yellow cells.", None),
    ("", None),
    ("1. If everything the machine read is right: choose decision ok.", None),
    ("2. If something is wrong: type the right value in the yellow column name, postal_code or signature "
     "(or pick one of the other readings in the cell's dropdown), then choose decision correct.", None),
    ("3. If the line is not a signature (crossed out by the signer, written by mistake, unreadable "
     "scribbles): choose decision not a signature.", None),
    ("4. If it is the same person as the row shown under 'possible duplicate of': choose decision duplicate "
     "(type another row's signature_id in duplicate_of if it repeats a different row).", None),
    ("5. Not sure? Leave the line empty: an empty line changes nothing.", None),
    ("", None),
    ("Type names as NOM Prénom (surname in capitals), postal codes as five digits (01000, not 1000).", None),
    ("You may sort, filter or delete lines: each line is matched by its signature_id. Do not change "
     "the signature_id column. Save the file as it is (.xlsx), or as .ods or .csv, and send it back.", None),
    ("", None),
    ("Columns", "bold"),
)
INSTRUCTIONS_FR = (
    ("En français", "bold"),
    ("Chaque ligne de la feuille « Review » est une signature dont la machine n'est pas sûre. Comparez "
     "les images de l'écriture avec ce que la machine a lu et remplissez les cellules jaunes : "
     "ok si tout est juste ; sinon tapez la bonne valeur (NOM Prénom, code postal à cinq chiffres) "
     "et choisissez correct ; not a signature si la ligne n'est pas une signature ; duplicate si c'est "
     "la même personne que la ligne indiquée. Dans le doute, laissez la ligne vide. Vous pouvez trier "
     "ou supprimer des lignes ; ne modifiez pas la colonne signature_id.", None),
)


def _fill_instructions(ws: Any, ledger: Path, rows: int, all_rows: bool) -> None:
    from openpyxl.styles import Alignment, Font, PatternFill, Protection

    ws.column_dimensions["A"].width = 24
    ws.column_dimensions["B"].width = 110
    r = 1
    ws.cell(row=r, column=1, value="Signature review").font = Font(bold=True, size=16)
    r += 2
    ws.cell(row=r, column=1, value=REVIEWER_LABEL).font = Font(bold=True)
    you = ws.cell(row=r, column=2)
    you.protection = Protection(locked=False)
    you.fill = PatternFill("solid", fgColor="FFF4C2")
    you.number_format = "@"
    r += 1
    facts = (("ledger", ledger.name), ("exported at", utc_timestamp()),
             ("lines", f"{rows} ({'all rows' if all_rows else 'rows to review'})"))
    for label, value in facts:
        ws.cell(row=r, column=1, value=label)
        cell = ws.cell(row=r, column=2, value=neutralise(value))
        cell.data_type = "s"
        r += 1
    r += 1
    wrap = Alignment(wrap_text=True, vertical="top")
    for text, style in INSTRUCTIONS:
        cell = ws.cell(row=r, column=1 if style else 2, value=text)
        cell.alignment = wrap
        if style:
            cell.font = Font(bold=True)
        r += 1
    for c in COLUMNS:
        if c.kind == "hidden":
            continue
        ws.cell(row=r, column=1, value=c.key).font = Font(bold=True, color="806000" if c.kind == "edit" else "000000")
        ws.cell(row=r, column=2, value=c.help).alignment = wrap
        r += 1
    r += 1
    for text, style in INSTRUCTIONS_FR:
        cell = ws.cell(row=r, column=1 if style else 2, value=text)
        cell.alignment = wrap
        if style:
            cell.font = Font(bold=True)
        else:
            ws.row_dimensions[r].height = 75
        r += 1
    ws.protection.sheet = True


# --- reading a returned file ---------------------------------------------------------------------


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


def _not_review_file(path: Path, what: str) -> ReviewFileError:
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
        raw = []
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
    raise _not_review_file(path, "no sheet")


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
    raise _not_review_file(path, "no sheet")


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
        raise _not_review_file(path, "first lines")
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


# --- checking the lines ----------------------------------------------------------------------------


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


def _fold(text: str) -> str:
    text = unicodedata.normalize("NFKD", text)
    text = "".join(c for c in text if not unicodedata.combining(c)).lower().replace("_", " ")
    return " ".join(text.split())


def _clean_typed(text: str) -> str:
    text = unicodedata.normalize("NFC", drop_hidden(text.replace("\u00a0", " "))).strip()
    if text.startswith("'"):  # a spreadsheet's 'this is text' mark, or the export's own neutralising
        text = text[1:].strip()
    return " ".join(text.split())


def _looks_like_code(text: str) -> bool:
    return bool(re.fullmatch(r"[0-9 ]{4,6}", text)) and len(text.replace(" ", "")) in (4, 5)


def _check_line(number: int, cells: dict[str, SheetCell], ledger_ids: set[str], postal: PostalList,
                current: dict[str, dict[str, str]]) -> tuple[Decision | None, list[Problem]]:
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

    decision = ""
    if typed["decision"]:
        folded = _fold(typed["decision"])
        decision = _DECISION_WORDS.get(folded, "")
        if not decision:
            hint = " (it belongs in the signature column)" if folded in _SIGNATURE_WORDS else ""
            bad(f"the decision typed is not one of: {', '.join(DECISIONS)}{hint}", typed["decision"])

    name = typed["name"] or None
    if name is not None:
        folded = _fold(name)
        if _looks_like_code(name):
            bad("the name column holds a postal code: type it in the postal_code column")
        elif folded in _DECISION_WORDS or folded in _SIGNATURE_WORDS:
            bad(f"the name column holds {folded!r}: that belongs in the "
                f"{'decision' if folded in _DECISION_WORDS else 'signature'} column")
        elif name.startswith(_FORMULA_START):
            bad("the name starts with = + - or @: type the name only (letters)")
        elif not any(c.isalpha() for c in name):
            bad("the name has no letters: type the name as NOM Prénom, or leave it empty")
        elif name == row["name"]:
            name = None  # the machine's value, picked from the dropdown: nothing to correct

    postal_code = typed["postal_code"] or None
    if postal_code is not None:
        digits = postal_code.replace(" ", "")
        if len(digits) == 4 and digits.isdigit():
            digits = "0" + digits  # a spreadsheet dropped the leading zero
        if any(c.isalpha() for c in postal_code):
            folded = _fold(postal_code)
            where = ("decision" if folded in _DECISION_WORDS else "signature" if folded in _SIGNATURE_WORDS
                     else "name")
            bad(f"the postal_code column holds letters (it looks like a {where}): type five digits here, "
                f"and the {where} in its own column", postal_code)
        elif not (len(digits) == 5 and digits.isdigit()):
            bad("the postal code typed is not five digits: type it like 01000", postal_code)
        elif digits not in postal:
            bad("the postal code typed is not a French postal code: check the image; if the signer wrote a "
                "code that does not exist, leave postal_code empty", digits)
        else:
            postal_code = None if digits == row["postal_code"] else digits

    signature = typed["signature"] or None
    if signature is not None:
        folded = _fold(signature)
        state = _SIGNATURE_WORDS.get(folded)
        if state is None:
            hint = " (it belongs in the decision column)" if folded in _DECISION_WORDS else ""
            bad(f"the signature typed is not one of: {', '.join(SIGNATURE_STATES)}{hint}", typed["signature"])
        signature = None if state == row["signature"] else state

    shown = _ID_RE.search(cells.get("possible duplicate of", SheetCell("")).value or "")
    candidate = shown.group(0) if shown else ""
    duplicate_of = None
    if typed["duplicate_of"]:
        found = _ID_RE.fullmatch(typed["duplicate_of"].lower())
        folded = _fold(typed["duplicate_of"])
        if found is None:
            hint = (": choose duplicate in the decision column and leave duplicate_of empty for the row shown"
                    if folded in _DECISION_WORDS else "")
            bad(f"duplicate_of must be a signature_id like 3f2a9c0d11e4b5a7-07{hint}", typed["duplicate_of"])
        elif found.group(0) not in ledger_ids:
            bad(f"duplicate_of {found.group(0)} is not a signature_id of the ledger: copy it from its line")
        elif found.group(0) == sid:
            bad("duplicate_of names the line itself: give the id of the row it repeats")
        else:
            duplicate_of = found.group(0)

    if problems:
        return None, problems
    if not decision:
        if duplicate_of:
            decision = "duplicate"
        elif any(v is not None for v in (name, postal_code, signature)) or any(
                typed[k] for k in ("name", "postal_code", "signature")):
            decision = "correct"
    if decision == "correct" and not any(v is not None for v in (name, postal_code, signature)):
        if any(typed[k] for k in ("name", "postal_code", "signature")):
            decision = "ok"  # the values typed are the machine's own: nothing to correct, they confirm it
        else:
            bad("decision correct, but no corrected value typed: type the right name, postal_code or "
                "signature, or choose ok if the machine read it right")
    if decision in ("ok", "correct") and not (name or row["name"]):
        bad(f"decision {decision}, but the name is empty: type the name, or choose not a signature")
    if decision == "duplicate" and not (duplicate_of or candidate):
        bad("decision duplicate, but no row to be a duplicate of: type that row's signature_id in duplicate_of")
    if decision == "duplicate" and not duplicate_of:
        duplicate_of = candidate if candidate in ledger_ids else None
        if duplicate_of is None:
            bad(f"the row shown as possible duplicate ({candidate}) is no longer in the ledger: type another "
                "row's signature_id in duplicate_of, or choose another decision")
    if problems or not decision:
        return None, problems
    return Decision(number, sid, decision, name, postal_code, signature,
                    duplicate_of if decision == "duplicate" else None, bool(candidate),
                    cells.get("check", SheetCell("")).value.strip()), []


def check_review_table(table: ReviewTable, df: pd.DataFrame,
                       postal: PostalList | None = None) -> tuple[list[Decision], list[Problem]]:
    """The decisions of the filled lines, and every problem found (with its spreadsheet row)."""
    postal = postal or load_postal_list()
    problems: list[Problem] = []
    if "signature_id" not in table.header:
        raise _not_review_file(table.source, "header")
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
        seen_ids, step = {d.signature_id}, d.duplicate_of
        while step in by_id and by_id[step].decision == "duplicate" and by_id[step].duplicate_of:
            if step in seen_ids:
                problems.append(Problem(d.sheet_row, "the duplicate_of of these lines go round in a circle: "
                                                     "mark only the later signatures duplicate", d.signature_id))
                break
            seen_ids.add(step)
            step = by_id[step].duplicate_of
    bad_ids = {p.signature_id for p in problems}
    return [d for d in decisions if d.signature_id not in bad_ids], problems


# --- applying them -------------------------------------------------------------------------------

_TRACKED = tuple(c for c in LEDGER_COLUMNS if c not in ("reviewed_by", "reviewed_at"))
_HELD_STATUSES = ("ok", "corrected", "duplicate", "rejected")


@dataclass(frozen=True)
class RowChange:
    signature_id: str
    sheet_row: int | None  # None: changed by deduplication, not by a line of the file
    decision: str
    changed: tuple[str, ...]  # ledger columns that changed
    status: str  # after


@dataclass
class ImportSummary:
    path: Path
    reviewer: str
    lines: int = 0  # lines read from the file
    blank: int = 0  # lines left empty
    confirmed: int = 0
    corrected: int = 0
    rejected: int = 0
    duplicates: int = 0
    unchanged: int = 0  # filled lines whose decision the ledger already holds
    other_rows: int = 0  # rows not in the file whose deduplication changed
    sent_back: int = 0  # decided rows deduplication flags again (possible duplicate): status review
    invalid: list[Problem] = field(default_factory=list)  # skipped with skip_invalid
    changes: list[RowChange] = field(default_factory=list)
    dry_run: bool = False
    written: bool = False
    seconds: float = 0.0


def _apply(frame: pd.DataFrame, decisions: Sequence[Decision], postal: PostalList) -> pd.DataFrame:
    """The frame with each decision's values and status (before deduplication)."""
    out = frame.copy()
    pos = {s: i for i, s in enumerate(out["signature_id"].tolist())}
    columns = {c: out[c].to_numpy(dtype=object).copy() for c in LEDGER_COLUMNS}
    for d in decisions:
        i = pos[d.signature_id]
        typed = False
        if d.decision != "not a signature":
            if d.name is not None:
                columns["name"][i], typed = d.name, True
            if d.postal_code is not None:
                columns["postal_code"][i], typed = d.postal_code, True
                columns["postal_valid"][i] = "true"
                columns["commune"][i] = postal.commune_label(d.postal_code)
            if d.signature is not None:
                columns["signature"][i], typed = d.signature, True
        if d.decision == "not a signature":
            columns["status"][i], columns["duplicate_of"][i] = "rejected", ""
            columns["flags"][i] = ";".join(f for f in columns["flags"][i].split(";") if f and f != dedup.POSSIBLE_FLAG)
        elif d.decision == "duplicate":
            columns["status"][i], columns["duplicate_of"][i], columns["flags"][i] = "duplicate", d.duplicate_of, ""
        else:
            # ok on a line shown with a possible duplicate says 'not the same signer': corrected is the
            # status deduplication never changes, so the next run does not ask again
            held = typed or d.candidate_shown or columns["status"][i] == "corrected"
            columns["status"][i] = "corrected" if held else "ok"
            columns["duplicate_of"][i], columns["flags"][i] = "", ""
    for c in LEDGER_COLUMNS:
        out[c] = pd.Series(columns[c], index=out.index, dtype=str)
    return out


def deduplicate_keeping_decisions(frame: pd.DataFrame, decisions: Sequence[Decision],
                                  cfg: DedupConfig | None = None) -> dedup.DedupResult:
    """Deduplication that keeps what people decided.

    dedup.deduplicate keeps only `corrected` and `rejected`; a person's `ok` or `duplicate` would be
    recomputed. So rows reviewed before (reviewed_at set, a final status) and rows whose line here
    settled the duplicate question (not a signature, duplicate, or ok with a candidate shown) go
    through it as corrected (or as rejected, left out, for duplicates) and get their status back.
    A row confirmed or corrected here with no candidate shown is compared freely: a corrected name
    may reveal a duplicate, which it then becomes (or it is flagged possible duplicate, for review).
    """
    decided = {d.signature_id: d for d in decisions}
    ids = frame["signature_id"].tolist()
    status = frame["status"].to_numpy(dtype=object)
    reviewed = frame["reviewed_at"].to_numpy(dtype=object) != ""
    temp_status = status.copy()
    held: list[int] = []
    free: list[int] = []
    for i, sid in enumerate(ids):
        d = decided.get(sid)
        if d is None:
            if reviewed[i] and status[i] in _HELD_STATUSES:
                held.append(i)
        elif d.decision in ("ok", "correct") and not d.candidate_shown:
            free.append(i)
        else:
            held.append(i)
    for i in held:
        temp_status[i] = "rejected" if status[i] in ("duplicate", "rejected") else "corrected"
    for i in free:
        temp_status[i] = "ok"
    temp = frame.copy()
    temp["status"] = pd.Series(temp_status, index=frame.index, dtype=str)
    result = dedup.deduplicate(temp, cfg)
    out = result.frame
    new_status = out["status"].to_numpy(dtype=object).copy()
    new_dup = out["duplicate_of"].to_numpy(dtype=object).copy()
    new_flags = out["flags"].to_numpy(dtype=object).copy()
    old_dup = frame["duplicate_of"].to_numpy(dtype=object)
    old_flags = frame["flags"].to_numpy(dtype=object)
    for i in held:
        new_status[i], new_dup[i], new_flags[i] = status[i], old_dup[i], old_flags[i]
    for i in free:
        if new_status[i] == "ok":
            new_status[i] = status[i]
    # a duplicate points to its signer's first row, never to another duplicate
    pos = {s: i for i, s in enumerate(ids)}
    for i in np.flatnonzero(new_status == "duplicate").tolist():
        target, hops = new_dup[i], 0
        while target in pos and new_status[pos[target]] == "duplicate" and new_dup[pos[target]] and hops < len(ids):
            target, hops = new_dup[pos[target]], hops + 1
        new_dup[i] = target
    out["status"] = pd.Series(new_status, index=out.index, dtype=str)
    out["duplicate_of"] = pd.Series(new_dup, index=out.index, dtype=str)
    out["flags"] = pd.Series(new_flags, index=out.index, dtype=str)
    return dedup.DedupResult(out, result.candidates, duplicates=int((new_status == "duplicate").sum()),
                             possible=int(sum(dedup.POSSIBLE_FLAG in f.split(";") for f in new_flags)))


def _changed_columns(before: pd.DataFrame, after: pd.DataFrame) -> list[tuple[str, ...]]:
    changed = [np.asarray(before[c].to_numpy(dtype=object) != after[c].to_numpy(dtype=object)) for c in _TRACKED]
    stack = np.vstack(changed) if changed else np.zeros((0, len(before)), dtype=bool)
    return [tuple(c for c, hit in zip(_TRACKED, stack[:, i]) if hit) for i in range(len(before))]


def plan_import(df: pd.DataFrame, decisions: Sequence[Decision], *, reviewer: str, at: str,
                postal: PostalList | None = None,
                cfg: DedupConfig | None = None) -> tuple[dedup.DedupResult, list[RowChange], list[Problem]]:
    """The ledger after the decisions (deduplicated), what changed per row, and the conflicts.

    A conflict is a line whose row changed in the ledger since the export (its check fingerprint
    differs) and that would change it again: the volunteer decided on something else.
    """
    postal = postal or load_postal_list()
    result = deduplicate_keeping_decisions(_apply(df, decisions, postal), decisions, cfg)
    after = result.frame
    changed = _changed_columns(df, after)
    by_id = {d.signature_id: d for d in decisions}
    reviewed_by = after["reviewed_by"].to_numpy(dtype=object).copy()
    reviewed_at = after["reviewed_at"].to_numpy(dtype=object).copy()
    changes: list[RowChange] = []
    conflicts: list[Problem] = []
    for i, row in enumerate(df.to_dict("records")):
        d = by_id.get(row["signature_id"])
        if not changed[i]:
            continue
        if d is None:
            changes.append(RowChange(row["signature_id"], None, "", changed[i], after["status"].iat[i]))
            continue
        if d.fingerprint and d.fingerprint != row_fingerprint(row):
            conflicts.append(Problem(d.sheet_row, "this signature changed in the ledger since the file was "
                                                  "exported (someone reviewed it, or it was processed again): "
                                                  "export it again to review what it holds now", d.signature_id))
            continue
        reviewed_by[i], reviewed_at[i] = reviewer, at
        changes.append(RowChange(row["signature_id"], d.sheet_row, d.decision, changed[i], after["status"].iat[i]))
    after["reviewed_by"] = pd.Series(reviewed_by, index=after.index, dtype=str)
    after["reviewed_at"] = pd.Series(reviewed_at, index=after.index, dtype=str)
    return result, changes, conflicts


def _count(summary: ImportSummary, decisions: Sequence[Decision], changes: Sequence[RowChange]) -> None:
    by_id = {c.signature_id: c for c in changes}
    for d in decisions:
        change = by_id.get(d.signature_id)
        if change is None:
            summary.unchanged += 1
            continue
        if change.status == "review":
            summary.sent_back += 1
        if d.decision == "not a signature":
            summary.rejected += 1
        elif d.decision == "duplicate" or change.status == "duplicate":
            summary.duplicates += 1
        elif {"name", "postal_code", "signature"} & set(change.changed):
            summary.corrected += 1
        else:
            summary.confirmed += 1
    summary.other_rows = sum(1 for c in changes if c.sheet_row is None)


def _decision_records(before: pd.DataFrame, after: pd.DataFrame, changes: Sequence[RowChange]
                      ) -> dict[str, dict[str, Any]]:
    """Per row a person decided on in this file: the decision, with what the row held when they saw
    it (`read`): a re-read (`process --reprocess`) that reads the same again is no news
    (ledger.carry_decisions)."""
    lines = {c.signature_id for c in changes if c.sheet_row is not None}
    if not lines:
        return {}
    seen = before[before["signature_id"].isin(lines)].set_index("signature_id")
    now = after[after["signature_id"].isin(lines)].set_index("signature_id")
    return {sid: {"status": now.at[sid, "status"], "by": now.at[sid, "reviewed_by"], "at": now.at[sid, "reviewed_at"],
                  **{k: now.at[sid, k] for k in ("name", "postal_code", "signature", "duplicate_of")},
                  "read": {k: seen.at[sid, k] for k in ("name", "postal_code", "signature")}}
            for sid in sorted(lines)}


def import_review(path: Path, ledger: Path, *, reviewer: str | None = None, dry_run: bool = False,
                  skip_invalid: bool = False, now: str | None = None, dedup_config: DedupConfig | None = None,
                  lock_timeout: float = 30.0) -> ImportSummary:
    """Apply a returned review file to the ledger; nothing at all when a line is invalid (see module doc)."""
    start = time.perf_counter()
    path, ledger = Path(path), Path(ledger)
    table = read_review_file(path)
    if not ledger.exists():
        raise LedgerError(f"{ledger} does not exist", hint="give the ledger the review file was exported from")
    who = ledger_text(" ".join((reviewer or table.reviewer or getpass.getuser() or "reviewer").split())) or "reviewer"
    summary = ImportSummary(path, who, lines=len(table.rows), dry_run=dry_run)
    at = utc_timestamp(now)
    postal = load_postal_list()
    paths = sidecar_paths(ledger)
    with ledger_lock(ledger, timeout=lock_timeout):
        df = read_ledger(ledger)
        decisions, problems = check_review_table(table, df, postal)
        result, changes, conflicts = plan_import(df, decisions, reviewer=who, at=at, postal=postal, cfg=dedup_config)
        problems += conflicts
        if problems and not skip_invalid:
            shown = sorted(problems, key=lambda p: (p.sheet_row or 0, p.message))
            more = f"\n  ... and {len(shown) - MAX_PROBLEMS_SHOWN} more" if len(shown) > MAX_PROBLEMS_SHOWN else ""
            raise ReviewFileError(
                f"{len(problems)} line(s) cannot be applied, so nothing was changed:\n  "
                + "\n  ".join(map(shown_problem, shown[:MAX_PROBLEMS_SHOWN])) + more, file=path_text(str(path)),
                hint="fix these lines in the spreadsheet and import it again, or pass --skip-invalid to apply "
                     "the other lines now")
        if conflicts:  # skip_invalid: plan again without the lines in conflict
            gone = {p.signature_id for p in conflicts}
            decisions = [d for d in decisions if d.signature_id not in gone]
            result, changes, more = plan_import(df, decisions, reviewer=who, at=at, postal=postal, cfg=dedup_config)
            problems += more
        summary.invalid = sorted(problems, key=lambda p: (p.sheet_row or 0, p.message))
        summary.blank = summary.lines - len(decisions) - len({p.sheet_row for p in problems})
        summary.changes = changes
        _count(summary, decisions, changes)
        for change in changes:
            log.debug("review: %s (row %s) %s -> %s: %s", change.signature_id, change.sheet_row, change.decision,
                      change.status, ", ".join(change.changed))
        if changes and not dry_run:
            after = result.frame
            details = read_details(paths.details)
            decisions = _decision_records(df, after, changes)
            updated = []
            for s in after["signature_id"]:
                obj = details.get(s)
                if obj is None and s not in decisions:
                    continue
                obj = dict(obj or {"signature_id": s})
                if obj.get("duplicate_candidates", []) != result.candidates.get(s, []):
                    obj["duplicate_candidates"] = result.candidates.get(s, [])
                if s in decisions:
                    obj["decision"] = decisions[s]
                updated.append(obj)
            change = journal.Change(ledger, "review")
            if updated != list(details.values()):
                change.write(paths.details, details_text(updated).encode("utf-8"))
            stage_audit(change, ledger, [{
                "action": "review_import", "at": at, "by": who, "file": path.name,
                "rows": [{"signature_id": c.signature_id, "sheet_row": c.sheet_row, "decision": c.decision,
                          "changed": list(c.changed), "status": c.status} for c in changes if c.sheet_row],
                "deduplication": [c.signature_id for c in changes if c.sheet_row is None],
            }])
            stage_ledger(change, after, ledger)
            commit(change)
            summary.written = True
    summary.seconds = time.perf_counter() - start
    return summary

