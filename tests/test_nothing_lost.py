"""Nothing lost, nothing leaked (issue #20): every page of every file read or reported, any file name
handled, no formula or control character in what the tool writes.

One batch of hostile inputs goes through the real command (real poppler, Pillow and Tesseract),
beside good scans, from the folder that holds them (so relative names reach the command as they
would from a user's shell); the tests below look at what it wrote and said.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from scan_pipeline.core.text import path_bytes

from .bad_inputs import pdf_after_a_huge_page, pdf_of, tiff_of
from .conftest import SCRIPT, ledger_rows

NON_UTF8 = b"caf\xe9-sheet.png"  # Latin-1, as an old Windows share or a zip names it
ESCAPE = "evil-\x1b[2J\x1b[31m.png"  # a terminal escape in a file name
FORMULA = "=1+1.png"


@pytest.fixture(scope="module")
def hostile(scan_corpus, tmp_path_factory):
    """The batch's folder, the command's result and its ledger."""
    root = tmp_path_factory.mktemp("hostile")
    batch = root / "batch"
    batch.mkdir()
    pngs = [p.read_bytes() for p in sorted(scan_corpus.glob("*.png"))]
    assert len(pngs) == 2  # a sheet's two pages
    good = [_variant(pngs[i % 2], i) for i in range(4)]  # other bytes, so other pages (the same sheet)
    (batch / FORMULA).write_bytes(good[0])
    (batch / "-opw").write_bytes(pdf_of(good[1]))  # a PDF named like a pdfinfo option
    with open(os.fsencode(batch) + b"/" + NON_UTF8, "wb") as fh:
        fh.write(good[2])
    (batch / "pages.tif").write_bytes(tiff_of([good[0], good[1], good[2], good[3]], bomb=(2,),
                                              damaged=(3,)))
    (batch / "huge-first.pdf").write_bytes(pdf_after_a_huge_page(good[1]))
    (batch / ESCAPE).write_bytes(b"not an image")
    (batch / "odd-tags.tif").write_bytes(tiff_of([good[2]], odd_tag=True))
    folder = batch / "folder"
    folder.mkdir()
    elsewhere = root / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "linked-scan.png").write_bytes(good[3])
    (folder / "linked").symlink_to(elsewhere, target_is_directory=True)
    (folder / "loop").symlink_to(".", target_is_directory=True)  # a folder that holds itself
    (folder / "gone.pdf").symlink_to(root / "nowhere.pdf")
    os.mkfifo(folder / "pipe.png")
    os.mkfifo(batch / "fifo.pdf")
    inputs = [FORMULA, "-opw", NON_UTF8, "pages.tif", "huge-first.pdf", ESCAPE, "odd-tags.tif", "folder",
              "fifo.pdf"]
    ledger = root / "l.csv"
    command = [os.fsencode(str(SCRIPT)), b"process", b"--ledger", os.fsencode(ledger), b"--workers", b"2", b"--"]
    command += [i if isinstance(i, bytes) else os.fsencode(i) for i in inputs]
    result = subprocess.run(command, cwd=batch, capture_output=True, timeout=900)
    return batch, result, ledger


def _variant(png: bytes, level: int) -> bytes:
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.open(io.BytesIO(png)).save(out, "PNG", compress_level=level + 1, dpi=(200, 200))
    return out.getvalue()


def _stderr(result) -> str:
    return result.stderr.decode("utf-8")


def _failed(result) -> list[str]:
    return [line for line in _stderr(result).splitlines() if line.startswith("failed: ")]


def test_the_batch_ends_with_exit_10_and_writes_every_good_page(hostile):
    _, result, ledger = hostile
    assert result.returncode == 10, _stderr(result)
    df = ledger_rows(ledger)
    pages = df.groupby("source_file")["page"].apply(lambda s: sorted(set(s), key=int)).to_dict()
    assert pages.pop("./" + FORMULA) == ["1"]
    assert pages.pop("./-opw") == ["1"]
    assert pages.pop("caf\\xe9-sheet.png") == ["1"]
    assert pages.pop("pages.tif") == ["1", "4"]  # pages 2 and 3 failed; page 4 was still read
    assert pages.pop("huge-first.pdf") == ["2"]  # page 1 failed; page 2 was still read
    assert pages.pop("odd-tags.tif") == ["1"]
    assert [Path(k).name for k in pages] == ["linked-scan.png"]  # through the link, once (not again by the loop)


def test_a_bad_page_is_reported_with_its_number_and_never_hides_the_next_ones(hostile):
    _, result, _ = hostile
    failed = _failed(result)
    assert any(line.startswith("failed: pages.tif:page 2: the image is too large") for line in failed), failed
    assert any(line.startswith("failed: pages.tif:page 3: the page is damaged") for line in failed), failed
    assert any(line.startswith("failed: huge-first.pdf:page 1: the page is far too large") for line in failed)


def test_a_name_that_is_not_utf8_is_kept_exactly(hostile):
    batch, result, ledger = hostile
    df = ledger_rows(ledger)
    shown = "caf\\xe9-sheet.png"
    assert path_bytes(shown) == NON_UTF8  # the file's own bytes, recoverable from the ledger
    assert (batch / os.fsdecode(path_bytes(shown))).is_file()
    records = [json.loads(line) for line in ledger.with_suffix(".pages.jsonl").read_text("utf-8").splitlines()]
    assert shown in {r["source_file"] for r in records} and len(records) >= 8
    assert (df["source_file"] == shown).sum() > 5


def test_folders_links_and_special_files_are_reported(hostile):
    _, result, _ = hostile
    failed = _failed(result)
    assert "failed: fifo.pdf: not a regular file (a FIFO (named pipe)) (give the scans themselves (PDF, TIFF, " \
           "JPEG, PNG, HEIC))" in failed
    assert "failed: folder/pipe.png: not a regular file (a FIFO (named pipe)) (give the scans themselves (PDF, " \
           "TIFF, JPEG, PNG, HEIC))" in failed
    assert any(line.startswith("failed: folder/gone.pdf: a link to a file that does not exist") for line in failed)


def test_names_like_options_never_reach_poppler_as_options(hostile):
    _, result, ledger = hostile
    df = ledger_rows(ledger)
    assert (df["source_file"] == "./-opw").sum() > 5
    assert "-opw" not in " ".join(_failed(result))


def test_terminal_escapes_in_a_name_are_never_printed_raw(hostile):
    _, result, _ = hostile
    stderr = _stderr(result)
    assert "\x1b" not in stderr
    assert "failed: evil-\\x1b[2J\\x1b[31m.png: not an image this program can read" in stderr


def test_reader_warnings_are_caught_and_logged_against_their_file_at_v(hostile, tmp_path):
    batch, result, _ = hostile
    stderr = _stderr(result)
    for said in ("Warning", "Tag data", "TIFFFillStrip", "tempfile.tif", "Using code"):  # Pillow's, libtiff's
        assert said not in stderr, stderr
    verbose = subprocess.run([str(SCRIPT), "-v", "process", "odd-tags.tif", "pages.tif", "--ledger",
                              str(tmp_path / "v.csv"), "--workers", "1"], cwd=batch, capture_output=True, text=True,
                             timeout=600)
    assert verbose.returncode == 10, verbose.stderr
    lines = [line for line in verbose.stderr.splitlines() if "warning(s) from the image reader" in line]
    assert any("odd-tags.tif: " in line and ("Tag data" in line or "Truncated File Read" in line) for line in lines)
    assert any("pages.tif: " in line and "Using code not yet in table" in line for line in lines), lines  # libtiff's
    assert "DEBUG PIL" not in verbose.stderr  # the libraries' own debugging is not ours to show


def _formula_cells(csv_path: Path, out: Path) -> list[str]:
    """The formulas LibreOffice finds in a CSV, imported with 'evaluate formulas' on (the worst case)."""
    soffice = shutil.which("soffice")
    assert soffice, "LibreOffice is installed by `make install` (scripts/install_system_deps.sh)"
    subprocess.run([soffice, "--headless", f"-env:UserInstallation=file://{out}/profile",
                    "--infilter=CSV:44,34,76,1,,1033,false,false,false,false,false,false,true",
                    "--convert-to", "ods", "--outdir", str(out), str(csv_path)],
                   capture_output=True, timeout=300, check=True)
    with zipfile.ZipFile(out / (csv_path.stem + ".ods")) as z:
        content = z.read("content.xml").decode("utf-8")
    return [part.split('"', 1)[0] for part in content.split('table:formula="')[1:]]


def test_the_ledger_opens_in_libreoffice_with_no_formula(hostile, tmp_path):
    _, _, ledger = hostile
    probe = tmp_path / "probe.csv"  # the check itself must see a formula where there is one
    probe.write_text("a,b\n=1+1,x\n", encoding="utf-8")
    assert _formula_cells(probe, tmp_path / "p") == ["of:=1+1"]
    copy = tmp_path / "ledger.csv"
    shutil.copy(ledger, copy)
    assert _formula_cells(copy, tmp_path / "l") == []
    found = subprocess.run([str(SCRIPT), "ledger", "find", str(ledger), "--name", "a"], capture_output=True,
                           text=True, timeout=120)
    printed = tmp_path / "found.csv"
    printed.write_text(found.stdout, encoding="utf-8")
    if found.stdout:
        assert _formula_cells(printed, tmp_path / "f") == []


def test_the_pages_sidecar_is_whole_json(hostile):
    _, _, ledger = hostile
    lines = ledger.with_suffix(".pages.jsonl").read_text("utf-8").splitlines()
    assert lines and all(isinstance(json.loads(line), dict) for line in lines)
    assert pd.Series([json.loads(line)["status"] for line in lines]).isin(["done", "failed"]).all()


def test_an_unreadable_folder_is_reported_and_the_run_ends_with_exit_10(scan_corpus, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from scan_pipeline.cli import app

    batch = tmp_path / "batch"
    (batch / "locked").mkdir(parents=True)
    shutil.copy(sorted(scan_corpus.glob("*.png"))[0], batch / "good.png")
    shutil.copy(sorted(scan_corpus.glob("*.png"))[1], batch / "locked" / "hidden.png")
    locked = str(batch / "locked")
    if os.geteuid() == 0:  # root reads any folder: refuse it as the kernel would refuse a user
        real = os.scandir

        def scandir(path="."):
            if not isinstance(path, int) and os.fspath(path) == locked:
                raise PermissionError(13, "Permission denied", locked)
            return real(path)

        monkeypatch.setattr(os, "scandir", scandir)
    else:
        os.chmod(locked, 0)
    try:
        result = CliRunner().invoke(app, ["process", str(batch), "--ledger", str(tmp_path / "l.csv"), "--workers", "1"])
    finally:
        os.chmod(locked, 0o755)
    assert result.exit_code == 10, result.output
    assert f"failed: {locked}: cannot read the folder (Permission denied): its files were not processed" \
           in result.stderr
    assert ledger_rows(tmp_path / "l.csv")["source_file"].unique().tolist() == [str(batch / "good.png")]


def test_process_reprocess_keeps_what_volunteers_decided(scan_corpus, tmp_path):
    batch = tmp_path / "batch"
    batch.mkdir()
    for png in sorted(scan_corpus.glob("*.png")):
        shutil.copy(png, batch / png.name)
    ledger = tmp_path / "l.csv"
    first = subprocess.run([str(SCRIPT), "process", str(batch), "--ledger", str(ledger)], capture_output=True,
                           text=True, timeout=900)
    assert first.returncode == 0, first.stderr
    df = pd.read_csv(ledger, dtype=str, keep_default_na=False)
    flagged = df[df["status"] == "review"]["signature_id"].tolist()
    assert len(flagged) >= 8
    corrected, rejected, confirmed = flagged[:3], flagged[3:5], flagged[5:8]
    lines = ["signature_id;name;decision"] + [f"{s};DURAND Élise;correct" for s in corrected] + \
        [f"{s};;not a signature" for s in rejected] + [f"{s};;ok" for s in confirmed]
    (tmp_path / "back.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    applied = subprocess.run([str(SCRIPT), "review", "import", str(tmp_path / "back.csv"), "--ledger", str(ledger),
                              "--reviewer", "Alice"], capture_output=True, text=True, timeout=300)
    assert applied.returncode == 0, applied.stderr
    decided = pd.read_csv(ledger, dtype=str, keep_default_na=False).set_index("signature_id")
    again = subprocess.run([str(SCRIPT), "process", str(batch), "--ledger", str(ledger), "--reprocess"],
                           capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr
    assert "8 reviewed row(s) kept their decision" in again.stderr
    after = pd.read_csv(ledger, dtype=str, keep_default_na=False).set_index("signature_id")
    for sid in corrected + rejected + confirmed:
        for column in ("name", "postal_code", "signature", "status", "reviewed_by", "reviewed_at"):
            assert after.at[sid, column] == decided.at[sid, column], (sid, column)
    assert set(after.loc[corrected, "status"]) == {"corrected"} and set(after.loc[rejected, "status"]) == {"rejected"}
    assert set(after.loc[corrected, "name"]) == {"DURAND Élise"}
