"""Erasure that reaches everything the tool wrote, and review imports that no file can blow up (#21).

End to end through the real command on a generated sheet (invented people): a run report, grid
overlays and a review workbook written for a ledger, then a signer erased; then hand-made ledgers
for the choices of `ledger erase` and `ledger find`; then returned files built to hurt: empty rows,
a sheet claiming a million rows, and three bombs, imported by the real command with its peak memory
measured.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import zipfile
from pathlib import Path

import pandas as pd
import pytest
from openpyxl import load_workbook

from scan_pipeline.ledger.append import append_results
from scan_pipeline.ledger.paths import sidecar_paths
from scan_pipeline.ledger.store import read_ledger
from scan_pipeline.review.apply import import_review
from scan_pipeline.review.export import export_review
from scan_pipeline.review.sheet import REVIEW_SHEET

from .conftest import SCRIPT
from .test_ledger import page, row


def _run(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout)


def _media(xlsx: Path) -> list[bytes]:
    with zipfile.ZipFile(xlsx) as z:
        return [z.read(n) for n in z.namelist() if n.startswith("xl/media/")]


@pytest.fixture(scope="module")
def written(scan_corpus, tmp_path_factory):
    """One page processed with a run report and overlays, and a review workbook of every row."""
    root = tmp_path_factory.mktemp("erasure")
    scans = root / "scans"
    scans.mkdir()
    shutil.copy(sorted(scan_corpus.glob("*.png"))[0], scans / "sheet.png")
    ledger = root / "out" / "L.csv"
    done = _run("process", str(scans), "--ledger", str(ledger), "--report", str(root / "out" / "run.html"),
                "--debug-dir", str(root / "overlays"), "--workers", "1")
    assert done.returncode == 0, done.stderr
    exported = _run("review", "export", "--ledger", str(ledger), "--out", str(root / "review.xlsx"), "--all")
    assert exported.returncode == 0, exported.stderr
    return root, ledger


def _copy_of(written, tmp_path: Path) -> tuple[Path, Path]:
    """The written folder copied (each test erases from its own copy), and the copy's ledger."""
    root, _ = written
    work = tmp_path / "copy"
    shutil.copytree(root, work, symlinks=True)
    # the outputs list holds absolute paths: point them at the copy
    outputs = sidecar_paths(work / "out" / "L.csv").outputs
    outputs.write_text(outputs.read_text("utf-8").replace(str(root), str(work)), "utf-8")
    return work, work / "out" / "L.csv"


def test_an_erasure_reaches_the_report_the_overlays_and_the_workbook(written, tmp_path):
    work, ledger = _copy_of(written, tmp_path)
    df = read_ledger(ledger)
    victim = df.iloc[3]
    overlays = list((work / "overlays").glob("*.png"))
    assert len(overlays) == 1 and (work / "out" / "run.html").exists()
    images_before = len(_media(work / "review.xlsx"))
    result = _run("ledger", "erase", str(ledger), "--id", victim["signature_id"])
    assert result.returncode == 0, result.stderr
    assert "run.html: deleted (this report showed the signature)" in result.stderr
    assert f"{overlays[0].name}: deleted (this overlay showed the signature)" in result.stderr
    assert "review.xlsx: 1 line(s) blanked" in result.stderr
    assert not (work / "out" / "run.html").exists() and not overlays[0].exists()
    ws = load_workbook(work / "review.xlsx")[REVIEW_SHEET]
    values = [str(c.value) for r in ws.iter_rows() for c in r if c.value is not None]
    assert victim["signature_id"] not in " ".join(values) and victim["name"] not in values
    assert len(values) > 100  # the other lines are still there
    assert 0 < len(_media(work / "review.xlsx")) <= images_before - 3  # the line's three images are gone
    # the same scans processed again: the erased row, its images and the page's overlay stay out
    again = _run("process", str(work / "scans"), "--ledger", str(ledger), "--reprocess", "--debug-dir",
                 str(work / "overlays"), "--workers", "1")
    assert again.returncode == 0, again.stderr
    assert "no overlay written: the page holds a signature erased from the ledger" in again.stderr
    after = read_ledger(ledger)
    assert victim["signature_id"] not in set(after["signature_id"]) and len(after) == len(df) - 1
    crops = sidecar_paths(ledger).crops / victim["page_sha256"][:16]
    assert not list(crops.glob(f"{int(victim['row_number']):02d}-*.png"))
    assert list((work / "overlays").glob("*.png")) == []



def test_without_a_redactor_an_erasure_deletes_the_workbook(written, tmp_path):
    """ledger.erase knows no workbook (the review layer is above it): given no redactor, it deletes
    a workbook that shows an erased signature rather than leave the name in it."""
    from scan_pipeline.ledger.erase import erase

    work, ledger = _copy_of(written, tmp_path)
    victim = read_ledger(ledger).iloc[2]["signature_id"]
    summary = erase(ledger, ids=(victim,))
    said = dict(summary.outputs)
    assert said[str(work / "review.xlsx")] == "deleted (this review showed the signature)"
    assert not (work / "review.xlsx").exists()
    assert victim not in read_ledger(ledger)["signature_id"].tolist()

def _people(folder: Path) -> Path:
    ledger = folder / "L.csv"
    append_results(ledger, [page("e1", (row(1, "DURAND Jean", "75011"), row(2, "DURAND Jez", "75011"),
                                          row(3, "MARTIN Paul", "75011"), row(4, "DURAND Jean", "69003"),
                                          row(5, "DURANT Jeanne", "75011")))],
                     processed_at="2026-11-23T15:00:00Z")
    return ledger


def test_erase_by_name_lists_close_names_and_dry_run_changes_nothing(tmp_path):
    ledger = _people(tmp_path)
    before = ledger.read_bytes()
    dry = _run("ledger", "erase", str(ledger), "--name", "Jean Durand", "--postal-code", "75011", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "1 row(s) would be erased" in dry.stderr and "dry run: nothing was changed" in dry.stderr
    assert ledger.read_bytes() == before and not sidecar_paths(ledger).audit.exists()
    near = [line.split(",")[1] for line in dry.stdout.splitlines()]
    assert "DURAND Jez" in near and "DURANT Jeanne" in near and "MARTIN Paul" not in near
    done = _run("ledger", "erase", str(ledger), "--name", "Jean Durand", "--postal-code", "75011")
    assert done.returncode == 0 and "1 row(s) erased" in done.stderr
    names = read_ledger(ledger)["name"].tolist()
    assert names.count("DURAND Jean") == 1 and "DURAND Jez" in names  # the other code's, and the close one


def test_erase_skips_ids_erased_before_and_refuses_unknown_ones_and_bad_codes(tmp_path):
    ledger = _people(tmp_path)
    ids = read_ledger(ledger)["signature_id"].tolist()
    assert _run("ledger", "erase", str(ledger), "--id", ids[0]).returncode == 0
    both = _run("ledger", "erase", str(ledger), "--id", ids[0], "--id", ids[1])
    assert both.returncode == 0, both.stderr
    assert f"skipped: {ids[0]} was erased before" in both.stderr and "1 row(s) erased" in both.stderr
    before = ledger.read_bytes()
    unknown = _run("ledger", "erase", str(ledger), "--id", ids[2], "--id", "0123456789abcdef-01")
    assert unknown.returncode == 2 and "0123456789abcdef-01" in unknown.stderr and ledger.read_bytes() == before
    for code in ("7500", "99999", "7501A"):
        bad = _run("ledger", "erase", str(ledger), "--name", "MARTIN Paul", "--postal-code", code)
        assert bad.returncode == 2, (code, bad.stderr)
    assert ledger.read_bytes() == before


def test_find_by_surname_alone_and_by_postal_code_alone(tmp_path):
    ledger = _people(tmp_path)
    by_surname = _run("ledger", "find", str(ledger), "--name", "durand")
    assert by_surname.returncode == 0, by_surname.stderr
    found = pd.read_csv(io.StringIO(by_surname.stdout), dtype=str)
    assert set(found["name"]) == {"DURAND Jean", "DURAND Jez", "DURANT Jeanne"}  # DURANT: one letter off
    by_code = pd.read_csv(io.StringIO(_run("ledger", "find", str(ledger), "--postal-code", "69003").stdout), dtype=str)
    assert found.shape[0] == 4 and by_code["name"].tolist() == ["DURAND Jean"]
    assert _run("ledger", "find", str(ledger)).returncode == 2


# --- review import within bounds -------------------------------------------------------------------


@pytest.fixture()
def reviewed(tmp_path):
    """A small ledger and its workbook, with one decision typed."""
    ledger = _people(tmp_path)
    xlsx = tmp_path / "review.xlsx"
    export_review(ledger, xlsx, all_rows=True)
    wb = load_workbook(xlsx)
    ws = wb[REVIEW_SHEET]
    header = [c.value for c in ws[1]]
    ws.cell(row=2, column=header.index("decision") + 1, value="not a signature")
    wb.save(xlsx)
    return ledger, xlsx


# Started from a small Python, not from pytest: a child's peak memory counts what its parent held
# when it forked, and pytest holds hundreds of MB by now.
_MEASURE = """
import resource, subprocess, sys
done = subprocess.run(sys.argv[1:])
sys.stderr.write("\\npeak-kb %d\\n" % resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
sys.exit(done.returncode)
"""


def _peak_of(*args: str) -> tuple[subprocess.CompletedProcess, int]:
    """The real command, and the most memory it held (MB)."""
    import sys

    done = subprocess.run([sys.executable, "-c", _MEASURE, str(SCRIPT), *args], capture_output=True, text=True,
                          timeout=600)
    said, _, peak = done.stderr.rpartition("\npeak-kb ")
    return subprocess.CompletedProcess(done.args, done.returncode, done.stdout, said), int(peak) // 1024


def _rewrite_sheet(xlsx: Path, out: Path, edit) -> Path:
    with zipfile.ZipFile(xlsx) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            data = src.read(info.filename)
            if info.filename == "xl/worksheets/sheet2.xml":  # the sheet 'Review'
                data = edit(data.decode("utf-8")).encode("utf-8")
            dst.writestr(info.filename, data)
    return out


def test_empty_rows_in_the_middle_and_a_sheet_claiming_a_million_rows_are_harmless(reviewed, tmp_path):
    ledger, xlsx = reviewed
    wb = load_workbook(xlsx)
    wb[REVIEW_SHEET].insert_rows(4, amount=3)  # as LibreOffice saves a sheet with empty rows in it
    gaps = tmp_path / "gaps.xlsx"
    wb.save(gaps)
    claimed = _rewrite_sheet(gaps, tmp_path / "claimed.xlsx",
                             lambda xml: re.sub(r'<dimension ref="[^"]*"/>', '<dimension ref="A1:XFD1048576"/>', xml))
    result, peak = _peak_of("review", "import", str(claimed), "--ledger", str(ledger), "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "1 rejected" in result.stderr and peak < 600
    assert import_review(gaps, ledger).rejected == 1


def _xlsx_with_sheet(reviewed_xlsx: Path, out: Path, rows: int) -> Path:
    """The workbook with its sheet 'Review' holding `rows` filled lines (a 3-million-row bomb)."""
    with zipfile.ZipFile(reviewed_xlsx) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            if info.filename != "xl/worksheets/sheet2.xml":
                dst.writestr(info.filename, src.read(info.filename))
                continue
            with dst.open("xl/worksheets/sheet2.xml", "w", force_zip64=True) as fh:
                fh.write(b'<?xml version="1.0"?><worksheet xmlns="http://schemas.openxmlformats.org/'
                         b'spreadsheetml/2006/main"><sheetData><row r="1"><c r="A1" t="inlineStr"><is><t>'
                         b'signature_id</t></is></c><c r="B1" t="inlineStr"><is><t>decision</t></is></c></row>')
                line = (b'<row r="%d"><c r="A%d" t="inlineStr"><is><t>0123456789abcdef-01</t></is></c>'
                        b'<c r="B%d" t="inlineStr"><is><t>ok</t></is></c></row>')
                for start in range(2, rows + 2, 10_000):
                    fh.write(b"".join(line % (n, n, n) for n in range(start, start + 10_000)))
                fh.write(b"</sheetData></worksheet>")
    return out


def test_bombs_are_refused_with_a_clear_message_within_bounded_memory(reviewed, tmp_path):
    ledger, xlsx = reviewed
    baseline, base_peak = _peak_of("review", "import", str(xlsx), "--ledger", str(ledger), "--dry-run")
    assert baseline.returncode == 0, baseline.stderr
    rows = _xlsx_with_sheet(xlsx, tmp_path / "rows.xlsx", 3_000_000)  # 409 MB of XML
    million = _xlsx_with_sheet(xlsx, tmp_path / "million.xlsx", 1_000_000)  # within the XML bound: counted
    ods = tmp_path / "repeated.ods"
    with zipfile.ZipFile(ods, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("mimetype", "application/vnd.oasis.opendocument.spreadsheet", zipfile.ZIP_STORED)
        z.writestr("content.xml", '<?xml version="1.0"?><office:document-content xmlns:office="urn:oasis:names:tc:'
                   'opendocument:xmlns:office:1.0" xmlns:table="urn:oasis:names:tc:opendocument:xmlns:table:1.0" '
                   'xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0"><office:body><office:spreadsheet>'
                   '<table:table table:name="Review"><table:table-row><table:table-cell office:value-type="string">'
                   '<text:p>signature_id</text:p></table:table-cell><table:table-cell office:value-type="string">'
                   '<text:p>decision</text:p></table:table-cell></table:table-row>'
                   '<table:table-row table:number-rows-repeated="20000000"><table:table-cell '
                   'office:value-type="string"><text:p>0123456789abcdef-01</text:p></table:table-cell>'
                   '<table:table-cell office:value-type='
                   '"string"><text:p>ok</text:p></table:table-cell></table:table-row></table:table>'
                   '</office:spreadsheet></office:body></office:document-content>')
    spaces = tmp_path / "spaces.xlsx"
    with zipfile.ZipFile(xlsx) as src, zipfile.ZipFile(spaces, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            if info.filename != "xl/sharedStrings.xml":
                dst.writestr(info.filename, src.read(info.filename))
        with dst.open("xl/sharedStrings.xml", "w", force_zip64=True) as fh:
            block = b" " * (1 << 20)
            for _ in range(300):  # 300 MB of whitespace, a few hundred kB zipped
                fh.write(block)
    peaks = {}
    for bomb, said in ((rows, "xl/worksheets/sheet2.xml would take 409 MB once unpacked"),
                       (million, "more than 100,000 lines"), (ods, "more than 100,000 lines"),
                       (spaces, "xl/sharedStrings.xml would take 300 MB once unpacked")):
        result, peak = _peak_of("review", "import", str(bomb), "--ledger", str(ledger))
        assert result.returncode == 7, result.stderr
        assert said in result.stderr and "split a bigger one" in result.stderr, result.stderr
        peaks[bomb.name] = peak
    print(f"peak memory (MB): valid file {base_peak}, " + ", ".join(f"{k} {v}" for k, v in peaks.items()))
    assert all(p < base_peak + 300 for p in peaks.values()), (base_peak, peaks)
    assert os.path.getsize(rows) < 40 << 20 and os.path.getsize(spaces) < 2 << 20
