"""The review spreadsheet (scan_pipeline.review): export, checks, import, on a small generated ledger.

The ledger is built through the real ledger code (append_results) from hand-made readings of
invented people with real PNG crops; the workbooks are real .xlsx files written and read by
openpyxl. The end-to-end test through Tesseract and LibreOffice is tests/test_review_e2e.py.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from openpyxl import load_workbook
from typer.testing import CliRunner

from scan_pipeline.cli import app
from scan_pipeline.core.errors import OutputError, ReviewFileError
from scan_pipeline.core.flags import FLAG_WORDS
from scan_pipeline.core.postcodes import load_postal_list
from scan_pipeline.core.records import FieldReading, PageRef, PageResult, RowReading
from scan_pipeline.ledger import dedup
from scan_pipeline.ledger.append import append_results
from scan_pipeline.ledger.audit import audit_records
from scan_pipeline.ledger.paths import sidecar_paths, signature_id
from scan_pipeline.ledger.schema import LEDGER_COLUMNS, validate_ledger_frame
from scan_pipeline.ledger.sidecars import details_text, read_details
from scan_pipeline.ledger.store import atomic_write, read_ledger
from scan_pipeline.review.apply import ImportSummary, import_review
from scan_pipeline.review.export import export_review
from scan_pipeline.review.sheet import (
    COLUMNS,
    EDIT_KEYS,
    IMAGE_FIELDS,
    IMAGE_HEIGHT_PX,
    IMAGE_MARGIN_PX,
    INSTRUCTIONS_SHEET,
    LISTS_SHEET,
    REVIEW_SHEET,
    REVIEWER_LABEL,
    neutralise,
)

T_IMPORT = "2026-11-25T09:00:00Z"
EVIL = '=HYPERLINK("http://evil.example","click")'


def png_text(text: str, width: int = 600, height: int = 70) -> bytes:
    img = np.full((height, width), 255, np.uint8)
    cv2.putText(img, text[:30], (8, height - 20), cv2.FONT_HERSHEY_SCRIPT_SIMPLEX, 1.2, 0, 2)
    return cv2.imencode(".png", img)[1].tobytes()


def reading(number: int, name: str, postal: str, flags: tuple[str, ...] = (), name_alts: tuple[str, ...] = (),
            postal_alts: tuple[str, ...] = (), signature: str = "signed") -> RowReading:
    return RowReading(
        number, FieldReading(name, name, 0.5, "review", name_alts), FieldReading(postal, postal, 0.9, "accept",
                                                                                 postal_alts),
        bool(postal), load_postal_list().commune_label(postal) if postal else "", signature,  # type: ignore[arg-type]
        flags, crops_png=(("name", png_text(name or "?")), ("postal_code", png_text(postal, 250)),
                          ("signature", png_text("~~~", 360))))


def page(seed: str, rows: list[RowReading], source: str) -> PageResult:
    return PageResult(PageRef(source, 1, hashlib.sha256(seed.encode()).hexdigest()), tuple(rows))


def sid(seed: str, row: int) -> str:
    return signature_id(hashlib.sha256(seed.encode()).hexdigest(), row)


A1, A2, A3, A4, A5, A6 = (sid("a", n) for n in range(1, 7))
B1, B2, B3 = (sid("b", n) for n in range(1, 4))


@pytest.fixture
def ledger(tmp_path: Path) -> Path:
    """Two pages of invented signers: flagged rows, an injection attempt, a duplicate, a possible duplicate."""
    path = tmp_path / "L.csv"
    a = page("a", [reading(1, "DUPONT Marie", "75011", ("name_low_conf",), ("DUPONT Maria", "DUPOND Marie")),
                   reading(2, "MARTIN Paul", "69003", ("postal_low_conf",), (), ("69008", "69002")),
                   reading(3, EVIL, "13001", ("name_low_conf",)),
                   reading(4, "LEROY Anne", "33000"),
                   reading(5, "", "01000", ("name_unreadable",)),
                   reading(6, "BERNARD Luc", "75011", ("signature_struck",), signature="struck")], "scans/a.pdf")
    b = page("b", [reading(1, "DUPONT Marie", "75011"), reading(2, "MARTIN Paule", "69003"),
                   reading(3, "GIRARD Luc", "01000", ("postal_low_conf",))], "scans/b.pdf")
    append_results(path, [a], processed_at="2026-11-23T10:00:00Z")
    append_results(path, [b], processed_at="2026-11-23T11:00:00Z")
    df = read_ledger(path)
    state = dict(zip(df["signature_id"], df["status"], strict=True))
    # what the tests below rely on
    assert state[B1] == "duplicate" and state[B2] == "review" and state[A4] == "ok"
    return path


def export(ledger: Path, name: str = "review.xlsx", **kw) -> Path:
    out = ledger.parent / name
    export_review(ledger, out, force=True, **kw)
    return out


def fill(xlsx: Path, edits: dict[str, dict[str, object]], out: Path | None = None) -> Path:
    """Type values into the lines of the given signature_ids, as a volunteer would."""
    wb = load_workbook(xlsx)
    ws = wb[REVIEW_SHEET]
    header = [c.value for c in ws[1]]
    for row in ws.iter_rows(min_row=2):
        key = row[header.index("signature_id")].value
        for column, value in edits.get(key, {}).items():
            row[header.index(column)].value = value
    target = out or xlsx
    wb.save(target)
    return target


def shown_size(img) -> tuple[float, float]:
    """Width and height in pixels an image is shown at (its anchor's extent)."""
    a = img.anchor
    return (a.to.colOff - a._from.colOff) / 9525, (a.to.rowOff - a._from.rowOff) / 9525


def frame(ledger: Path) -> pd.DataFrame:
    return read_ledger(ledger).set_index("signature_id")


def do_import(path: Path, ledger: Path, **kw) -> ImportSummary:
    kw.setdefault("reviewer", "Vol Unteer")
    return import_review(path, ledger, now=T_IMPORT, **kw)


# --- export -------------------------------------------------------------------------------------


def test_export_lists_the_rows_to_review_with_their_images_and_readings(ledger: Path) -> None:
    summary = export_review(ledger, ledger.parent / "r.xlsx")
    df = read_ledger(ledger)
    assert summary.rows == summary.to_review == int((df["status"] == "review").sum())
    assert summary.images_missing == 0
    wb = load_workbook(ledger.parent / "r.xlsx")
    assert wb.sheetnames[0] == INSTRUCTIONS_SHEET and wb.active.title == INSTRUCTIONS_SHEET
    ws = wb[REVIEW_SHEET]
    header = [c.value for c in ws[1]]
    assert header == [c.key for c in COLUMNS]
    ids = [r[0].value for r in ws.iter_rows(min_row=2)]
    assert set(ids) == set(df.loc[df["status"] == "review", "signature_id"])
    assert A4 not in ids and B1 not in ids  # ok and duplicate rows are not flagged
    # three images per line (name, postal code, signature) plus the possible duplicate's name
    anchors = [(img.anchor._from.row, img.anchor._from.col) for img in ws._images]
    assert len(anchors) == 3 * len(ids) + 1
    col = {k: header.index(k) for k in header}
    for i, _ in enumerate(ids, start=2):
        cols = sorted(c for r, c in anchors if r == i - 1)
        assert cols[:3] == [col["name image"], col["postal code image"], col["signature image"]]
    for img in ws._images:  # each image fits its row (heights in points, 0.75 per pixel)
        _, height = shown_size(img)
        assert 20 <= height <= IMAGE_HEIGHT_PX
        assert ws.row_dimensions[img.anchor._from.row + 1].height >= (height + IMAGE_MARGIN_PX) * 0.75
    line = {c.value: ws.cell(row=ids.index(A1) + 2, column=i + 1).value for i, c in enumerate(ws[1])}
    assert line["name read"] == "DUPONT Marie" and line["name confidence"] == 0.5
    assert line["other name readings"].split("\n") == ["DUPONT Maria", "DUPOND Marie"]
    assert line["to check"] == FLAG_WORDS["name_low_conf"]
    assert line["sheet"] == "a.pdf, p. 1, row 1"
    possible = {c.value: ws.cell(row=ids.index(B2) + 2, column=i + 1).value for i, c in enumerate(ws[1])}
    assert possible["possible duplicate of"].startswith(A2)  # the candidate, with its name and code
    assert "MARTIN Paul" in possible["possible duplicate of"]


def test_export_sheet_protection_dropdowns_and_layout(ledger: Path) -> None:
    wb = load_workbook(export(ledger))
    ws = wb[REVIEW_SHEET]
    header = [c.value for c in ws[1]]
    assert ws.freeze_panes == "C2"
    assert ws.protection.sheet and not ws.protection.password  # LibreOffice opens it without a password
    assert not ws.protection.sort and not ws.protection.autoFilter
    for cell in ws[2]:
        key = header[cell.column - 1]
        assert cell.protection.locked == (key not in EDIT_KEYS), key
    assert ws.column_dimensions["U"].hidden  # the check column
    rules = {str(dv.sqref): dv for dv in ws.data_validations.dataValidation}
    decision = [dv for dv in rules.values() if dv.formula1 == '"ok,correct,not a signature,duplicate"']
    assert len(decision) == 1 and len(str(decision[0].sqref).split()) == ws.max_row - 1
    ids = [r[0].value for r in ws.iter_rows(min_row=2)]
    name_col = "G"
    row_a1 = ids.index(A1) + 2
    name_rule = rules[f"{name_col}{row_a1}"]
    assert not name_rule.showErrorMessage  # free text stays allowed
    first, last = name_rule.formula1.split("!")[1].replace("$", "").split(":")
    options = [c.value for c in wb[LISTS_SHEET][f"{first}:{last}"][0]]
    assert options == ["DUPONT Marie", "DUPONT Maria", "DUPOND Marie"]
    assert wb[LISTS_SHEET].sheet_state == "hidden"
    # widths fit the images
    img_cols = {header.index(k) for k in IMAGE_FIELDS}
    for img in ws._images:
        if img.anchor._from.col in img_cols:
            letter = ws.cell(row=1, column=img.anchor._from.col + 1).column_letter
            assert ws.column_dimensions[letter].width * 7 >= shown_size(img)[0] + IMAGE_MARGIN_PX


def test_export_all_and_limit_follow_paper_order(ledger: Path) -> None:
    wb = load_workbook(export(ledger, all_rows=True))
    ids = [r[0].value for r in wb[REVIEW_SHEET].iter_rows(min_row=2)]
    assert ids == [A1, A2, A3, A4, A5, A6, B1, B2, B3]
    wb = load_workbook(export(ledger, all_rows=True, limit=2))
    assert [r[0].value for r in wb[REVIEW_SHEET].iter_rows(min_row=2)] == [A1, A2]
    wb = load_workbook(export(ledger))
    dup = [r for r in wb[REVIEW_SHEET].iter_rows(min_row=2)]
    assert all(r[0].value != B1 for r in dup)
    wb = load_workbook(export(ledger, all_rows=True))
    ws = wb[REVIEW_SHEET]
    header = [c.value for c in ws[1]]
    b1 = next(r for r in ws.iter_rows(min_row=2) if r[0].value == B1)
    assert b1[header.index("possible duplicate of")].value.startswith(A1)  # a duplicate shows its first row


def test_formula_injection_comes_out_inert(ledger: Path) -> None:
    xlsx = export(ledger)
    with zipfile.ZipFile(xlsx) as z:
        xml = "".join(z.read(n).decode("utf-8") for n in z.namelist() if n.startswith("xl/worksheets/"))
    assert "<f>" not in xml and "<f " not in xml  # no formula anywhere
    wb = load_workbook(xlsx)
    ws = wb[REVIEW_SHEET]
    cells = [c for row in ws.iter_rows() for c in row if isinstance(c.value, str) and "HYPERLINK" in c.value]
    # the ledger already holds the reading without its formula lead; the workbook shows it as text
    assert cells and all(c.value == EVIL[1:] and c.data_type == "s" for c in cells)
    assert neutralise("-1+2") == "'-1+2" and neutralise("@x") == "'@x" and neutralise("\tx") == "x"
    assert neutralise("+33") == "'+33" and neutralise("\r=x") == "'=x" and neutralise("DUPONT") == "DUPONT"
    assert neutralise("a\x07b\x1b[2Jc\nd") == "ab[2Jc\nd"  # control characters gone, line breaks kept


def test_export_without_crops_says_so_and_refuses_to_overwrite(ledger: Path) -> None:
    import shutil

    shutil.rmtree(sidecar_paths(ledger).crops)
    out = ledger.parent / "r.xlsx"
    summary = export_review(ledger, out)
    assert summary.images == 0 and summary.images_missing == 3 * summary.rows
    before = out.read_bytes()
    with pytest.raises(OutputError, match="already exists"):
        export_review(ledger, out)
    assert out.read_bytes() == before


# --- import -------------------------------------------------------------------------------------


def test_untouched_workbook_imports_as_a_no_op(ledger: Path) -> None:
    xlsx = export(ledger)
    before = ledger.read_bytes()
    summary = do_import(xlsx, ledger)
    assert summary.blank == summary.lines > 0 and not summary.changes and not summary.written
    assert ledger.read_bytes() == before
    assert not sidecar_paths(ledger).audit.exists()


def test_each_decision_changes_exactly_its_row(ledger: Path) -> None:
    xlsx = fill(export(ledger), {
        A1: {"name": "DUPONT Maria", "decision": "correct"},  # an alternative, picked
        A2: {"decision": "ok"},  # confirmed as read
        A3: {"decision": "not a signature"},
        A5: {"name": "ROUX Claire"},  # typed, no decision: a correction
        A6: {"signature": "signed", "decision": "ok"},  # ok with a typed value: corrected
        B3: {"postal_code": "1100", "decision": "correct"},  # a leading zero lost by a spreadsheet
    })
    before = frame(ledger)
    summary = do_import(xlsx, ledger)
    after = frame(ledger)
    assert (summary.confirmed, summary.corrected, summary.rejected, summary.duplicates) == (1, 4, 1, 0)
    assert summary.written and summary.other_rows == 0
    assert after.loc[A1, "name"] == "DUPONT Maria" and after.loc[A1, "status"] == "corrected"
    assert after.loc[A1, "name_ocr"] == before.loc[A1, "name_ocr"]  # the machine's reading is kept
    assert after.loc[A2, "status"] == "ok" and after.loc[A2, "flags"] == ""
    assert after.loc[A3, "status"] == "rejected"
    assert after.loc[A5, "name"] == "ROUX Claire" and after.loc[A5, "status"] == "corrected"
    assert after.loc[A6, "signature"] == "signed" and after.loc[A6, "status"] == "corrected"
    assert after.loc[B3, "postal_code"] == "01100" and after.loc[B3, "postal_code_ocr"] == "01000"
    assert after.loc[B3, "postal_valid"] == "true" and after.loc[B3, "commune"]
    decided = [A1, A2, A3, A5, A6, B3]
    for key in decided:
        assert after.loc[key, "reviewed_by"] == "Vol Unteer" and after.loc[key, "reviewed_at"] == T_IMPORT
    untouched = [k for k in before.index if k not in decided]
    pd.testing.assert_frame_equal(after.loc[untouched], before.loc[untouched])
    audit = audit_records(ledger)[-1]
    assert audit["action"] == "review_import" and audit["by"] == "Vol Unteer"
    assert {r["signature_id"] for r in audit["rows"]} == set(decided)
    assert "DUPONT" not in json.dumps(audit) and "ROUX" not in json.dumps(audit)  # never a name


def test_importing_the_same_file_twice_changes_nothing(ledger: Path) -> None:
    xlsx = fill(export(ledger), {A1: {"name": "DUPONT Maria", "decision": "correct"},
                                 A3: {"decision": "not a signature"}, B2: {"decision": "duplicate"}})
    do_import(xlsx, ledger)
    once = ledger.read_bytes()
    audit = sidecar_paths(ledger).audit.read_bytes()
    summary = import_review(xlsx, ledger, reviewer="Someone Else", now="2026-11-26T09:00:00Z")
    assert summary.unchanged == 3 and not summary.changes and not summary.written
    assert ledger.read_bytes() == once and sidecar_paths(ledger).audit.read_bytes() == audit


def test_dry_run_writes_nothing_but_reports(ledger: Path) -> None:
    xlsx = fill(export(ledger), {A1: {"decision": "ok"}, A3: {"decision": "not a signature"}})
    before = ledger.read_bytes()
    summary = do_import(xlsx, ledger, dry_run=True)
    assert (summary.confirmed, summary.rejected) == (1, 1) and not summary.written
    assert ledger.read_bytes() == before and not sidecar_paths(ledger).audit.exists()


def test_sorted_and_deleted_lines_are_matched_by_id(ledger: Path) -> None:
    xlsx = fill(export(ledger), {A1: {"name": "DUPONT Maria", "decision": "correct"}, A2: {"decision": "ok"},
                                 B3: {"decision": "not a signature"}})
    wb = load_workbook(xlsx)
    ws = wb[REVIEW_SHEET]
    rows = [[c.value for c in r] for r in ws.iter_rows(min_row=2)]
    rows.sort(key=lambda r: str(r[3]), reverse=True)  # sorted by the name read, whole lines
    for i, values in enumerate(rows, start=2):
        for j, value in enumerate(values, start=1):
            ws.cell(row=i, column=j).value = value
    gone = next(i for i, r in enumerate(rows, start=2) if r[0] == A2)
    ws.delete_rows(gone)  # a deleted line changes nothing
    wb.save(xlsx)
    do_import(xlsx, ledger)
    after = frame(ledger)
    assert after.loc[A1, "name"] == "DUPONT Maria" and after.loc[B3, "status"] == "rejected"
    assert after.loc[A2, "status"] == "review" and after.loc[A2, "reviewed_by"] == ""


def test_every_problem_is_listed_and_nothing_applied(ledger: Path) -> None:
    xlsx = export(ledger)
    wb = load_workbook(xlsx)
    ws = wb[REVIEW_SHEET]
    ws.append(["0123456789abcdef-09", *[None] * 18, "ok"])  # an id the ledger does not have
    ws.append([A1, *[None] * 18, "ok"])  # A1 twice
    wb.save(xlsx)
    fill(xlsx, {
        A1: {"decision": "ok"},
        A2: {"postal_code": "99999", "decision": "correct"},  # not a French code
        A5: {"decision": "ok"},  # no name at all
        A6: {"name": "75011", "decision": "correct"},  # a code in the name column
        B3: {"signature": "ok"},  # a decision in the signature column
        B2: {"decision": "maybe"},
    })
    wb = load_workbook(xlsx)
    ws = wb[REVIEW_SHEET]
    header = [c.value for c in ws[1]]
    for row in ws.iter_rows(min_row=2):
        if row[0].value == A3:
            row[header.index("name")].value = '=CONCATENATE("a","b")'  # a formula
    wb.save(xlsx)
    before = ledger.read_bytes()
    with pytest.raises(ReviewFileError) as info:
        do_import(xlsx, ledger)
    text = str(info.value)
    for expected in ("not in the ledger", "row 2 too", "the postal code typed is not a French postal code",
                     "the name is empty", "holds a postal code", "belongs in the decision column",
                     "the decision typed is not one of", "holds a formula"):
        assert expected in text, expected
    assert "99999" not in text and "maybe" not in text  # what was typed is shown at -v only
    assert text.count("\n  row ") == 8
    assert ledger.read_bytes() == before and not sidecar_paths(ledger).audit.exists()
    result = CliRunner().invoke(app, ["review", "import", str(xlsx), "--ledger", str(ledger)])
    assert result.exit_code == 7 and "nothing was changed" in result.output and "99999" not in result.output
    verbose = CliRunner().invoke(app, ["-v", "review", "import", str(xlsx), "--ledger", str(ledger)])
    assert verbose.exit_code == 7 and "(typed: '99999')" in verbose.output and "(typed: 'maybe')" in verbose.output


def test_skip_invalid_applies_the_valid_lines(ledger: Path) -> None:
    xlsx = fill(export(ledger), {A1: {"decision": "not a signature"}, A2: {"postal_code": "99999"}})
    summary = do_import(xlsx, ledger, skip_invalid=True)
    assert summary.rejected == 1 and len(summary.invalid) == 1 and summary.invalid[0].signature_id == A2
    after = frame(ledger)
    assert after.loc[A1, "status"] == "rejected" and after.loc[A2, "postal_code"] == "69003"


def test_a_row_changed_since_the_export_is_not_overwritten(ledger: Path) -> None:
    xlsx = fill(export(ledger), {A1: {"name": "DUPONT Maria", "decision": "correct"}})
    other = fill(export(ledger, "other.xlsx"), {A1: {"decision": "not a signature"}})
    do_import(other, ledger)  # another volunteer's file came back first
    with pytest.raises(ReviewFileError, match="changed in the ledger since the file was exported"):
        do_import(xlsx, ledger)
    assert frame(ledger).loc[A1, "status"] == "rejected"


def test_duplicate_decisions_and_deduplication(ledger: Path) -> None:
    xlsx = fill(export(ledger), {
        B2: {"decision": "duplicate"},  # the candidate shown: A2
        B3: {"duplicate_of": A6, "decision": "duplicate"},  # another row, typed
        A1: {"name": "LEROY Anne", "postal_code": "33000", "decision": "correct"},  # now the same as A4
    })
    summary = do_import(xlsx, ledger)
    after = frame(ledger)
    assert after.loc[B2, "status"] == "duplicate" and after.loc[B2, "duplicate_of"] == A2
    assert after.loc[B3, "status"] == "duplicate" and after.loc[B3, "duplicate_of"] == A6
    # the corrected name is the signer of A4, further down the page: deduplication makes A4 the
    # duplicate of A1; and B1 (DUPONT Marie) is no longer a duplicate of A1, now someone else
    assert after.loc[A1, "status"] == "corrected"
    assert after.loc[A4, "status"] == "duplicate" and after.loc[A4, "duplicate_of"] == A1
    assert after.loc[B1, "status"] == "ok" and after.loc[B1, "duplicate_of"] == ""
    assert summary.duplicates == 2 and summary.other_rows == 2
    assert validate_ledger_frame(read_ledger(ledger)) == []


def test_ok_on_a_possible_duplicate_means_not_the_same_signer(ledger: Path) -> None:
    xlsx = fill(export(ledger), {B2: {"decision": "ok"}})
    do_import(xlsx, ledger)
    after = frame(ledger)
    assert after.loc[B2, "status"] == "corrected" and dedup.POSSIBLE_FLAG not in after.loc[B2, "flags"]
    # a later run of the deduplication keeps it (corrected is never changed)
    again = dedup.deduplicate(read_ledger(ledger)).frame.set_index("signature_id")
    assert again.loc[B2, "status"] == "corrected"


def test_a_later_deduplication_keeps_a_reviewed_duplicate(ledger: Path) -> None:
    xlsx = fill(export(ledger), {B3: {"duplicate_of": A6, "decision": "duplicate"}})
    do_import(xlsx, ledger)
    again = dedup.deduplicate(read_ledger(ledger)).frame.set_index("signature_id")
    assert again.loc[B3, "status"] == "duplicate"


def test_duplicate_cycles_and_duplicates_of_rejected_rows_are_refused(ledger: Path) -> None:
    xlsx = fill(export(ledger), {A1: {"duplicate_of": A2, "decision": "duplicate"},
                                 A2: {"duplicate_of": A1, "decision": "duplicate"},
                                 A5: {"duplicate_of": A3, "decision": "duplicate"},
                                 A3: {"decision": "not a signature"}})
    with pytest.raises(ReviewFileError) as info:
        do_import(xlsx, ledger)
    assert "circle" in str(info.value) and "marks not a signature" in str(info.value)


def test_reviewer_from_the_instructions_sheet(ledger: Path) -> None:
    xlsx = fill(export(ledger), {A2: {"decision": "ok"}})
    wb = load_workbook(xlsx)
    info = wb[INSTRUCTIONS_SHEET]
    label = next(r for r in info.iter_rows() if r[0].value == REVIEWER_LABEL)
    label[1].value = "  Claire   Bénévole "
    wb.save(xlsx)
    import_review(xlsx, ledger, now=T_IMPORT)
    assert frame(ledger).loc[A2, "reviewed_by"] == "Claire Bénévole"


# --- other formats ------------------------------------------------------------------------------


def _review_csv(xlsx: Path) -> list[list[str]]:
    ws = load_workbook(xlsx)[REVIEW_SHEET]
    return [["" if c.value is None else str(c.value) for c in r] for r in ws.iter_rows()]


@pytest.mark.parametrize("delimiter,encoding,bom", [(",", "utf-8", False), (";", "utf-8", True),
                                                    (";", "cp1252", False), ("\t", "utf-16", False)])
def test_csv_as_spreadsheet_programs_save_it(ledger: Path, delimiter: str, encoding: str, bom: bool) -> None:
    import csv

    xlsx = fill(export(ledger), {A1: {"name": "DUPONT Hélène", "decision": "correct"}, A2: {"decision": "ok"},
                                 B3: {"postal_code": "01000", "decision": "ok"}})
    buffer = io.StringIO()
    csv.writer(buffer, delimiter=delimiter, lineterminator="\r\n").writerows(_review_csv(xlsx))
    data = buffer.getvalue().encode(encoding)
    path = ledger.parent / "back.csv"
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + data)
    do_import(path, ledger)
    after = frame(ledger)
    assert after.loc[A1, "name"] == "DUPONT Hélène" and after.loc[A2, "status"] == "ok"
    assert after.loc[B3, "status"] == "ok"  # the code typed is the machine's own: confirmed


def test_instructions_saved_as_csv_get_a_clear_error(ledger: Path, tmp_path: Path) -> None:
    path = tmp_path / "oops.csv"
    path.write_text("Signature review\nYour name (reviewer):,\n", encoding="utf-8")
    with pytest.raises(ReviewFileError, match="not a review file"):
        do_import(path, ledger)
    bad = tmp_path / "bad.xlsx"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(ReviewFileError, match="cannot read the workbook"):
        do_import(bad, ledger)


def test_cli_export_and_import(ledger: Path) -> None:
    out = ledger.parent / "cli.xlsx"
    runner = CliRunner()
    result = runner.invoke(app, ["review", "export", "--ledger", str(ledger), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "line(s) written" in result.output
    assert runner.invoke(app, ["review", "export", "--ledger", str(ledger), "--out", str(out)]).exit_code == 6
    fill(out, {A3: {"decision": "not a signature"}})
    result = runner.invoke(app, ["review", "import", str(out), "--ledger", str(ledger), "--reviewer", "Léa"])
    assert result.exit_code == 0, result.output
    assert "1 rejected" in result.output and "DUPONT" not in result.output  # no names on the terminal
    for command in (["review"], ["review", "export"], ["review", "import"]):
        help_result = runner.invoke(app, [*command, "--help"])
        assert help_result.exit_code == 0 and "Usage:" in help_result.output


# --- issue #20: control characters, crops from outside L.crops/ --------------------------------------


def test_control_characters_in_readings_and_file_names_never_reach_the_workbook(tmp_path: Path) -> None:
    ledger = tmp_path / "L.csv"
    odd = page("odd", [reading(1, "DUPONT\x07 Marie\x1b[2J", "75011", ("name_low_conf",), ("DUPOND\x0b Marie",))],
               "scans/a\x0bb\x1b.pdf")
    append_results(ledger, [odd], processed_at="2026-11-23T10:00:00Z")
    row = read_ledger(ledger).iloc[0]
    assert row["name"] == "DUPONT Marie[2J" and row["source_file"] == "scans/a\\x0bb\\x1b.pdf"
    xlsx = export(ledger)
    with zipfile.ZipFile(xlsx) as z:
        xml = "".join(z.read(n).decode("utf-8") for n in z.namelist() if n.endswith(".xml"))
    assert not any(ch in xml for ch in "\x07\x0b\x1b")
    # a volunteer's typed name with a control character (a CSV saved by a spreadsheet) is stored without it
    back = tmp_path / "back.csv"
    back.write_text("signature_id;name;decision\n" + f"{sid('odd', 1)};MARTIN\x0c Jean\x1b;correct\n", "utf-8")
    summary = do_import(back, ledger)
    assert summary.corrected == 1 and read_ledger(ledger).iloc[0]["name"] == "MARTIN Jean"


def test_a_contract_1_ledger_with_control_characters_exports(tmp_path: Path) -> None:
    import csv

    ledger = tmp_path / "L.csv"
    append_results(ledger, [page("a", [reading(1, "DUPONT Marie", "75011", ("name_low_conf",))], "a.pdf")],
                     processed_at="2026-11-23T10:00:00Z")
    rows = list(csv.reader(io.StringIO(ledger.read_text("utf-8"))))
    rows[1][LEDGER_COLUMNS.index("name")] = "DUPONT\x08 Marie"
    rows[1][LEDGER_COLUMNS.index("source_file")] = "=cmd|' /C calc'!A0"
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n", quoting=csv.QUOTE_ALL).writerows(rows)
    ledger.write_text(buf.getvalue(), "utf-8")
    summary = export_review(ledger, tmp_path / "r.xlsx")
    assert summary.rows == 1
    ws = load_workbook(tmp_path / "r.xlsx")[REVIEW_SHEET]
    texts = [str(c.value) for row in ws.iter_rows() for c in row if c.value is not None]
    assert "DUPONT Marie" in texts and not any("\x08" in t or t.startswith("=") for t in texts)


def test_the_export_reads_crops_only_from_inside_the_crops_folder(ledger: Path, tmp_path: Path) -> None:
    secret = png_text("SECRET outside", 300)
    (tmp_path / "secret.png").write_bytes(secret)
    crops = sidecar_paths(ledger).crops
    sha = hashlib.sha256(b"a").hexdigest()
    for old in (crops / sha[:16]).glob("01-*.png"):
        old.unlink()
    (crops / sha[:16] / "01-signature.png").symlink_to(tmp_path / "secret.png")  # a link out of the folder
    details = read_details(sidecar_paths(ledger).details)
    details[A1]["crops"] = {"name": "../secret.png", "postal_code": str(tmp_path / "secret.png"),
                            "signature": f"{crops.name}/{sha[:16]}/01-signature.png"}
    atomic_write(sidecar_paths(ledger).details, details_text(details.values()).encode("utf-8"))
    summary = export_review(ledger, tmp_path / "r.xlsx")
    with zipfile.ZipFile(tmp_path / "r.xlsx") as z:
        media = [z.read(n) for n in z.namelist() if n.startswith("xl/media/")]
    assert media and secret not in media
    assert summary.images_missing >= 3
