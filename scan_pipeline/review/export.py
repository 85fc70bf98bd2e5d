"""Export: the flagged rows out to an .xlsx workbook (openpyxl) that volunteers correct.

An instructions sheet, then one line per row to review with the crops of its name, postal-code
and signature cells (from L.crops/, so the scans are not needed), the machine's readings,
confidences, other readings (also offered as a dropdown in the correction cell), the flags in
words, the possible duplicate with its image, and empty cells to correct `name`, `postal_code`,
`signature` and to choose a `decision`. Only those cells are unlocked; every text is neutralised
against formula injection. A hidden `check` column holds a fingerprint of what the volunteer saw.
"""

from __future__ import annotations

import io
import struct
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from scan_pipeline.core.errors import LedgerError, OutputError, PipelineError
from scan_pipeline.ledger import dedup
from scan_pipeline.ledger.outputs import output_record, record_outputs
from scan_pipeline.ledger.paths import sidecar_paths
from scan_pipeline.ledger.rows import utc_timestamp
from scan_pipeline.ledger.sidecars import read_details
from scan_pipeline.ledger.store import atomic_write, read_ledger
from scan_pipeline.review.sheet import (
    COLUMNS,
    DECISIONS,
    EDIT_KEYS,
    IMAGE_FIELDS,
    IMAGE_HEIGHT_PX,
    IMAGE_MARGIN_PX,
    IMAGE_MAX_WIDTH_PX,
    INSTRUCTIONS_SHEET,
    LISTS_SHEET,
    MAX_OPTIONS,
    REVIEW_SHEET,
    REVIEWER_LABEL,
    SIGNATURE_STATES,
    flags_in_words,
    neutralise,
    row_fingerprint,
)


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


@dataclass(frozen=True)
class _Line:
    """What one line of the review sheet shows, before it is written."""

    values: dict[str, Any]  # info column -> text (or a float shown as a percentage)
    options: dict[str, list[str]]  # edit column -> its dropdown's options (the machine's reading first)
    pictures: list[tuple[str, bytes | None]]  # image column -> PNG (None: no crop)


def _line(row: dict[str, Any], by_id: pd.DataFrame, details: dict[str, Any], crops_dir: Path) -> _Line:
    sid = row["signature_id"]
    det = details.get(sid, {})
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
    pictures = [(key, _crop_bytes(crops_dir, det, row["page_sha256"], row["row_number"], field_))
                for key, field_ in IMAGE_FIELDS.items()]
    if first_cand is not None:
        data = _crop_bytes(crops_dir, details.get(candidates[0], {}), first_cand["page_sha256"],
                           first_cand["row_number"], "name")
        if data is not None:  # no image of the other row: its column stays empty, not '(no image)'
            pictures.append(("duplicate image", data))
    return _Line(values, {"name": name_opts, "postal_code": postal_opts, "duplicate_of": candidates}, pictures)


def _fill_review_sheet(ws: Any, lists: Any, rows: pd.DataFrame, by_id: pd.DataFrame, details: dict[str, Any],
                       crops_dir: Path) -> tuple[int, int]:
    from openpyxl.styles import Alignment, Font, PatternFill, Protection
    from openpyxl.utils import get_column_letter
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
    for r, row in enumerate(rows.to_dict("records"), start=2):
        line = _line(row, by_id, details, crops_dir)
        for key, value in line.values.items():
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
        _add_dropdowns(ws, lists, r, letter, line.options)
        decision_dv.add(f"{letter['decision']}{r}")
        signature_dv.add(f"{letter['signature']}{r}")
        height_px = 20
        for key, data in line.pictures:
            if data is None:
                ws.cell(row=r, column=col[key], value="(no image)").alignment = wrap
                missing += 1
                continue
            dw, dh = _add_picture(ws, r, col[key], key, data)
            images += 1
            widths_px[key] = max(widths_px[key], dw)
            height_px = max(height_px, dh + 2 * IMAGE_MARGIN_PX)
        lines = max(_text_lines(str(line.values[c.key]), c.width) for c in COLUMNS if c.kind == "info")
        ws.row_dimensions[r].height = max(height_px * 0.75, 13 * lines + 4)  # points; 1 px = 0.75 pt
    _finish_sheet(ws, letter, widths_px, len(rows))
    return images, missing


def _add_dropdowns(ws: Any, lists: Any, r: int, letter: dict[str, str], options: dict[str, list[str]]) -> None:
    """Each edit cell's dropdown of this row's options, kept on the hidden lists sheet (a list written
    inline breaks on commas and quotes); free text stays allowed."""
    from openpyxl.utils import get_column_letter
    from openpyxl.worksheet.datavalidation import DataValidation

    for key, offset in (("name", 1), ("postal_code", 1 + MAX_OPTIONS), ("duplicate_of", 1 + 2 * MAX_OPTIONS)):
        opts = options[key]
        if not opts or (key != "duplicate_of" and len(opts) < 2):
            continue
        for k, value in enumerate(opts):
            lc = lists.cell(row=r, column=offset + k, value=neutralise(value))
            lc.data_type = "s"
        first, last = get_column_letter(offset), get_column_letter(offset + len(opts) - 1)
        dv = DataValidation(type="list", formula1=f"{LISTS_SHEET}!${first}${r}:${last}${r}", allow_blank=True,
                            showErrorMessage=False)
        ws.add_data_validation(dv)
        dv.add(f"{letter[key]}{r}")


def _add_picture(ws: Any, r: int, column: int, key: str, data: bytes) -> tuple[int, int]:
    """A crop in its cell, scaled to the row height and the column's width; its drawn size in px."""
    from openpyxl.drawing.image import Image
    from openpyxl.drawing.spreadsheet_drawing import AnchorMarker, TwoCellAnchor
    from openpyxl.utils.units import pixels_to_EMU

    w, h = _png_size(data) or (1, 1)
    scale = min(IMAGE_HEIGHT_PX / h, IMAGE_MAX_WIDTH_PX[key] / w)
    dw, dh = max(1, round(w * scale)), max(1, round(h * scale))
    image = Image(io.BytesIO(data))
    image.width, image.height = dw, dh
    m = pixels_to_EMU(IMAGE_MARGIN_PX)
    # anchored to its cell ("move and size with cells"): sorting or deleting rows takes it along
    image.anchor = TwoCellAnchor(
        editAs="twoCell",
        _from=AnchorMarker(col=column - 1, colOff=m, row=r - 1, rowOff=m),
        to=AnchorMarker(col=column - 1, colOff=m + pixels_to_EMU(dw), row=r - 1, rowOff=m + pixels_to_EMU(dh)))
    ws.add_image(image)
    return dw, dh


def _finish_sheet(ws: Any, letter: dict[str, str], widths_px: dict[str, int], n_rows: int) -> None:
    from openpyxl.utils import get_column_letter

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
    ws.auto_filter.ref = f"A1:{last}{max(2, n_rows + 1)}"
    # Locked cells (everything but the correction columns) cannot be typed over. No password, so
    # LibreOffice opens it and a coordinator can lift it; filtering and resizing stay allowed.
    ws.protection.sheet = True
    ws.protection.objects = True
    for option in ("sort", "autoFilter", "formatColumns", "formatRows", "deleteRows"):
        setattr(ws.protection, option, False)


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
