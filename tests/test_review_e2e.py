"""The review round trip end to end: generated sheets -> `process` (real Tesseract) -> `review export`
-> a volunteer's edits (openpyxl) -> `review import`; and the same file through real LibreOffice.

LibreOffice (`soffice`, Debian package libreoffice-calc-nogui) is installed by `make install`.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pandas as pd
import pytest
from openpyxl import load_workbook

from scan_pipeline.ledger.paths import sidecar_paths
from scan_pipeline.ledger.schema import LEDGER_COLUMNS
from scan_pipeline.ledger.sidecars import details_text, read_details
from scan_pipeline.ledger.store import atomic_write, read_ledger
from scan_pipeline.review.apply import import_review
from scan_pipeline.review.export import export_review
from scan_pipeline.review.sheet import INSTRUCTIONS_SHEET, REVIEW_SHEET
from scan_pipeline.synth.samples import generate

from .conftest import SCRIPT

pytestmark = pytest.mark.e2e

_spec = importlib.util.spec_from_file_location("bench_review", Path(__file__).parent.parent / "scripts" /
                                               "bench_review.py")
assert _spec and _spec.loader
bench_review = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("bench_review", bench_review)
_spec.loader.exec_module(bench_review)

NOW = "2026-11-25T10:00:00Z"


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def processed(tmp_path_factory, template) -> Path:
    """One generated sheet (two pages, scans) processed by the real command: the pristine ledger."""
    root = tmp_path_factory.mktemp("review_e2e")
    generate(root / "corpus", template, sheets=1, seed=21, modes=("scan",), formats=("png",))
    ledger = root / "base" / "ledger.csv"
    done = run("process", str(root / "corpus"), "--ledger", str(ledger), "--quiet")
    assert done.returncode == 0, done.stderr
    return ledger


def copy_ledger(ledger: Path, folder: Path) -> Path:
    """The ledger with its sidecars, in another folder (each import gets a pristine copy)."""
    folder.mkdir(parents=True)
    for item in ledger.parent.iterdir():
        if item.name.startswith(ledger.stem + "."):
            (shutil.copytree if item.is_dir() else shutil.copy2)(item, folder / item.name)
    return folder / ledger.name


@pytest.fixture(scope="module")
def edited(processed, tmp_path_factory):
    """The exported workbook, edited as a volunteer would: what was done, and the file."""
    folder = tmp_path_factory.mktemp("edited")
    ledger = copy_ledger(processed, folder / "L")
    xlsx = folder / "review.xlsx"
    done = run("review", "export", "--ledger", str(ledger), "--out", str(xlsx))
    assert done.returncode == 0, done.stderr
    df = read_ledger(ledger).set_index("signature_id")
    wb = load_workbook(xlsx)
    ws = wb[REVIEW_SHEET]
    header = [c.value for c in ws[1]]
    col = {k: header.index(k) for k in header}
    lines = [r for r in ws.iter_rows(min_row=2)]
    # lines without a possible duplicate, so that the changes stay on their own rows
    plain = [r for r in lines if not r[col["possible duplicate of"]].value and df.loc[r[0].value, "name"]]
    with_alt = next(r for r in plain if r[col["other name readings"]].value)
    others = [r for r in plain if r is not with_alt]
    fix, reject, dup, target = others[0], others[1], others[2], others[3]
    alternative = with_alt[col["other name readings"]].value.split("\n")[0]
    edits = {
        fix[0].value: {"name": "ZZTEST Corrigé", "decision": "correct"},  # a name corrected by hand
        with_alt[0].value: {"name": alternative, "decision": "correct"},  # an alternative picked
        reject[0].value: {"decision": "not a signature"},
        dup[0].value: {"duplicate_of": target[0].value, "decision": "duplicate"},
    }
    for line in lines:
        for key, value in edits.get(line[0].value, {}).items():
            line[col[key]].value = value
    # sort the whole sheet by the name read, then delete a line nobody touched
    values = [[c.value for c in r] for r in lines]
    values.sort(key=lambda v: str(v[col["name read"]]))
    for i, row_values in enumerate(values, start=2):
        for j, value in enumerate(row_values, start=1):
            ws.cell(row=i, column=j).value = value
    deleted = next(i for i, v in enumerate(values, start=2) if v[0] not in edits)
    deleted_id = values[deleted - 2][0]
    ws.delete_rows(deleted)
    wb.save(xlsx)
    return ledger, xlsx, edits, deleted_id


def test_round_trip_applies_exactly_the_volunteers_changes(edited, tmp_path):
    source, xlsx, edits, deleted_id = edited
    ledger = copy_ledger(source, tmp_path / "L")
    before = read_ledger(ledger).set_index("signature_id")
    done = run("review", "import", str(xlsx), "--ledger", str(ledger), "--reviewer", "Test Reviewer")
    assert done.returncode == 0, done.stderr
    assert "2 corrected, 1 rejected, 1 marked duplicate" in done.stderr
    assert "ZZTEST" not in done.stderr + done.stdout  # no name on the terminal
    after = read_ledger(ledger).set_index("signature_id")
    fix, alt, reject, dup = edits
    assert after.loc[fix, "name"] == "ZZTEST Corrigé" and after.loc[fix, "status"] == "corrected"
    assert after.loc[alt, "name"] == edits[alt]["name"] and after.loc[alt, "status"] == "corrected"
    assert after.loc[reject, "status"] == "rejected"
    assert after.loc[dup, "status"] == "duplicate" and after.loc[dup, "duplicate_of"] == edits[dup]["duplicate_of"]
    for key in edits:
        assert after.loc[key, "reviewed_by"] == "Test Reviewer" and after.loc[key, "reviewed_at"]
        assert after.loc[key, "name_ocr"] == before.loc[key, "name_ocr"]  # the machine's reading stays
        changed = {c for c in LEDGER_COLUMNS[1:] if after.loc[key, c] != before.loc[key, c]}
        expected = {"status", "flags", "reviewed_by", "reviewed_at"} | ({"name"} if "name" in edits[key] else set()) \
            | ({"duplicate_of"} if key == dup else set())
        assert changed <= expected, (key, changed)
    rest = [k for k in before.index if k not in edits]
    assert deleted_id in rest
    pd.testing.assert_frame_equal(after.loc[rest], before.loc[rest])  # nothing else moved
    # the same file again changes nothing
    once = ledger.read_bytes()
    again = run("review", "import", str(xlsx), "--ledger", str(ledger), "--reviewer", "Test Reviewer")
    assert again.returncode == 0 and "nothing to change" in again.stderr
    assert ledger.read_bytes() == once


def test_erasing_a_row_removes_its_crops_and_it_leaves_the_export(processed, tmp_path):
    ledger = copy_ledger(processed, tmp_path / "L")
    df = read_ledger(ledger)
    victim = df[df["status"] == "review"].iloc[0]
    folder = sidecar_paths(ledger).crops / victim["page_sha256"][:16]
    crops = sorted(folder.glob(f"{int(victim['row_number']):02d}-*.png"))
    assert len(crops) == 3
    assert run("ledger", "erase", str(ledger), "--id", victim["signature_id"]).returncode == 0
    assert not any(p.exists() for p in crops)
    summary = export_review(ledger, tmp_path / "r.xlsx")
    assert summary.images_missing == 0
    ids = [r[0].value for r in load_workbook(tmp_path / "r.xlsx")[REVIEW_SHEET].iter_rows(min_row=2)]
    assert victim["signature_id"] not in ids


@pytest.fixture(scope="module")
def profile(tmp_path_factory) -> Path:
    if bench_review.soffice() is None:
        pytest.fail("LibreOffice (soffice) is not installed: run `make install` (package libreoffice-calc-nogui)")
    return tmp_path_factory.mktemp("lo-profile")


def test_libreoffice_ods_and_csv_import_like_the_xlsx(edited, profile, tmp_path):
    source, xlsx, edits, _ = edited
    results = {}
    for fmt in ("xlsx", "ods", "csv"):
        path = xlsx if fmt == "xlsx" else bench_review.convert(xlsx, fmt, tmp_path / "lo", profile)
        ledger = copy_ledger(source, tmp_path / fmt)
        summary = import_review(path, ledger, reviewer="Test Reviewer", now=NOW)
        assert (summary.corrected, summary.rejected, summary.duplicates) == (2, 1, 1), fmt
        results[fmt] = ledger.read_bytes()
    assert results["ods"] == results["xlsx"] and results["csv"] == results["xlsx"]
    assert results["xlsx"] != source.read_bytes()


def test_libreoffice_keeps_an_injected_formula_inert(processed, profile, tmp_path):
    ledger = copy_ledger(processed, tmp_path / "L")
    df = read_ledger(ledger)
    evil = '=HYPERLINK("http://evil.example";"click")'
    first = df.loc[df["status"] == "review", "signature_id"].iloc[0]
    # the ledger holds no formula lead (contract 2); a reading offered as another reading may
    paths = sidecar_paths(ledger)
    details = read_details(paths.details)
    details[first]["name_alternatives"] = [evil, *details[first].get("name_alternatives", [])]
    atomic_write(paths.details, details_text(details.values()).encode("utf-8"))
    xlsx = tmp_path / "review.xlsx"
    export_review(ledger, xlsx)
    ods = bench_review.convert(xlsx, "ods", tmp_path / "lo", profile)
    with zipfile.ZipFile(ods) as z:
        content = z.read("content.xml").decode("utf-8")
    assert "table:formula" not in content and "HYPERLINK" in content
    text = bench_review.convert(xlsx, "csv", tmp_path / "lo", profile).read_text(encoding="utf-8")
    assert "'" + evil.replace('"', '""') in text  # still text, with its neutralising quote
    # and the untouched file still imports as a no-op, from each format
    for path in (xlsx, ods):
        before = ledger.read_bytes()
        assert not import_review(path, ledger, now=NOW).written and ledger.read_bytes() == before


def test_libreoffice_renders_the_sheet_with_its_images(processed, profile, tmp_path):
    xlsx = tmp_path / "review.xlsx"
    export_review(processed, xlsx)
    png = bench_review.render_png(xlsx, tmp_path / "sheet.png", profile, lines=4)
    from PIL import Image

    img = Image.open(png)
    assert img.width > 1000 and img.height > 150
    # the PDF LibreOffice printed holds the crops as images: three per line shown
    pdf = tmp_path / "check"
    pdf.mkdir()
    wb = load_workbook(xlsx)
    wb[INSTRUCTIONS_SHEET].sheet_state = "hidden"
    wb.active = 1
    ws = wb[REVIEW_SHEET]
    ws.print_area = "A1:T5"
    wb.save(pdf / "p.xlsx")
    out = bench_review.convert(pdf / "p.xlsx", "pdf", pdf, profile)
    listed = subprocess.run(["pdfimages", "-list", str(out)], capture_output=True, text=True, check=True).stdout
    assert len(listed.strip().splitlines()) - 2 >= 3 * 4
