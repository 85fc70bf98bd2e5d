"""`scan-pipeline process` end to end: real files, real poppler, real Tesseract, the real command."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from scan_pipeline.cli import app
from scan_pipeline.ledger.schema import LEDGER_COLUMNS, validate_ledger_frame

from .conftest import SCRIPT, load_truth


def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, timeout=600, env=env)


def read(ledger: Path) -> pd.DataFrame:
    return pd.read_csv(ledger, dtype=str, keep_default_na=False)


@pytest.fixture(scope="module")
def processed(scan_corpus, tmp_path_factory):
    ledger = tmp_path_factory.mktemp("e2e") / "ledger.csv"
    result = run("process", str(scan_corpus), "--ledger", str(ledger), "--debug-dir", str(ledger.parent / "dbg"))
    return scan_corpus, ledger, result


def test_process_exits_0_and_writes_a_valid_ledger(processed):
    _, ledger, result = processed
    assert result.returncode == 0, result.stderr
    raw = ledger.read_bytes()
    assert not raw.startswith(b"\xef\xbb\xbf")
    with ledger.open(encoding="utf-8", newline="") as fh:
        assert next(csv.reader(fh)) == list(LEDGER_COLUMNS)
    assert validate_ledger_frame(read(ledger)) == []
    assert "signature row(s) added" in result.stderr  # the summary goes to stderr


def test_written_rows_are_in_the_ledger_under_their_printed_number(processed):
    corpus, ledger, _ = processed
    truth = load_truth(corpus)
    df = read(ledger)
    found = {(Path(r.source_file).name, int(r.page), int(r.row_number)) for r in df.itertuples()}
    written = [(f["file"], p["page"], r["row_number"]) for f in truth["files"] for p in f["pages"]
               for r in p["rows"] if r["written"]]
    hit = sum(1 for key in written if key in found)
    assert written and hit / len(written) >= 0.90, f"{hit}/{len(written)}"
    empty = {(f["file"], p["page"], r["row_number"]) for f in truth["files"] for p in f["pages"]
             for r in p["rows"] if not r["written"]}
    assert len(found & empty) <= 1  # empty rows are not signatures


def test_rerun_adds_no_rows(processed):
    corpus, ledger, _ = processed
    before = ledger.read_bytes()
    again = run("process", str(corpus), "--ledger", str(ledger))
    assert again.returncode == 0, again.stderr
    assert ledger.read_bytes() == before
    assert "already in the ledger" in again.stderr


def test_crops_and_overlays_are_written(processed):
    _, ledger, _ = processed
    crops = list((ledger.parent / "ledger.crops").rglob("*.png"))
    assert len(crops) >= 3 * len(read(ledger)) * 0.9
    assert len(list((ledger.parent / "dbg").glob("*.png"))) == 4


def test_signature_ids_are_stable_and_unique(processed):
    _, ledger, _ = processed
    df = read(ledger)
    assert df["signature_id"].is_unique
    assert all(sid.startswith(h[:16]) for sid, h in zip(df["signature_id"], df["page_sha256"]))


# --- exit codes -------------------------------------------------------------------------------

def test_exit_2_on_usage_error(tmp_path):
    result = CliRunner().invoke(app, ["process", str(tmp_path)])  # no --ledger
    assert result.exit_code == 2


def test_exit_3_on_bad_template(tmp_path, scan_corpus):
    bad = tmp_path / "t.json"
    bad.write_text('{"id": "x"}', encoding="utf-8")
    result = CliRunner().invoke(app, ["process", str(scan_corpus), "--ledger", str(tmp_path / "l.csv"),
                                      "--template", str(bad)])
    assert result.exit_code == 3
    assert "is a required property" in result.output


def test_exit_3_on_bad_config(tmp_path, scan_corpus):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[names]\naccept_confidance = 0.5\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["process", str(scan_corpus), "--ledger", str(tmp_path / "l.csv"),
                                      "--config", str(cfg)])
    assert result.exit_code == 3
    assert "accept_confidance: unknown key" in result.output


def test_exit_4_when_nothing_is_readable(tmp_path):
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    result = run("process", str(tmp_path), "--ledger", str(tmp_path / "l.csv"))
    assert result.returncode == 4, result.stderr
    assert "broken.jpg" in result.stderr


def test_exit_4_when_input_does_not_exist(tmp_path):
    result = run("process", str(tmp_path / "nothing-here"), "--ledger", str(tmp_path / "l.csv"))
    assert result.returncode == 4


def test_exit_5_when_poppler_is_missing(tmp_path, scan_corpus):
    pdf = next(scan_corpus.glob("*.pdf"))
    env = dict(os.environ, PATH=str(tmp_path))  # nothing on PATH: no pdftoppm
    result = run("process", str(pdf), "--ledger", str(tmp_path / "l.csv"), env=env)
    assert result.returncode == 5, result.stderr
    assert "poppler-utils" in result.stderr


def test_exit_6_when_the_ledger_cannot_be_written(tmp_path, scan_corpus):
    png = next(scan_corpus.glob("*.png"))
    blocker = tmp_path / "file"
    blocker.write_text("a file where a folder should be")
    result = run("process", str(png), "--ledger", str(blocker / "ledger.csv"))
    assert result.returncode == 6, result.stderr


def test_exit_10_when_some_pages_fail_and_the_rest_is_kept(tmp_path, scan_corpus):
    batch = tmp_path / "batch"
    batch.mkdir()
    png = next(scan_corpus.glob("*.png"))
    shutil.copy(png, batch / "good.png")
    (batch / "zero.png").write_bytes(b"")
    (batch / "notes.txt").write_text("skipped silently")
    ledger = tmp_path / "l.csv"
    result = run("process", str(batch), "--ledger", str(ledger))
    assert result.returncode == 10, result.stderr
    assert "zero.png" in result.stderr and "empty" in result.stderr
    assert "notes.txt" not in result.stderr
    assert len(read(ledger)) > 0
    assert set(read(ledger)["source_file"]) == {str(batch / "good.png")}


def test_exit_130_when_interrupted(tmp_path, scan_corpus, monkeypatch):
    import scan_pipeline.run.batch as batch

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(batch, "run_batch", interrupted)
    result = CliRunner().invoke(app, ["process", str(scan_corpus), "--ledger", str(tmp_path / "l.csv")])
    assert result.exit_code == 130


def test_sheet_blank_is_two_a4_pages_the_pipeline_can_read(tmp_path, template):
    from scan_pipeline.page.load import expand_inputs, iter_pages
    from scan_pipeline.run.process import WorkerContext, process_page

    out = tmp_path / "blank.pdf"
    result = CliRunner().invoke(app, ["sheet", "blank", str(out)])
    assert result.exit_code == 0, result.output
    info = subprocess.run(["pdfinfo", str(out)], capture_output=True, text=True).stdout
    assert "Pages:           2" in info and "(A4)" in info
    ctx = WorkerContext.build(template)
    pages = [process_page(p, ctx) for p in iter_pages(expand_inputs([str(out)])[0][0])]
    assert [p.sheet_page for p in pages] == [1, 2]
    assert [p.quality.rows_found for p in pages] == [10, 24]
    assert all(r.is_blank for p in pages for r in p.rows)  # nothing written: nothing in a ledger


def test_per_page_quality_records_hold_no_names(processed):
    import json

    corpus, ledger, _ = processed
    lines = (ledger.parent / "ledger.pages.jsonl").read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines]
    assert len(records) == 4 and all(r["status"] == "done" for r in records)
    assert all(r["rows_found"] == r["rows_expected"] > 0 for r in records)
    assert {r["sheet_page"] for r in records} == {1, 2}
    text = "\n".join(lines)
    names = [r["name"] for f in load_truth(corpus)["files"] for p in f["pages"] for r in p["rows"] if r["written"]]
    assert not any(n.split()[0] in text for n in names)


@pytest.mark.parametrize("terminal", [True, False])
def test_summary_is_a_table_on_a_terminal_and_one_line_otherwise(monkeypatch, tmp_path, terminal):
    import io

    from rich.console import Console

    from scan_pipeline import cli
    from scan_pipeline.core.records import BatchReport

    out = io.StringIO()
    console = Console(file=out, force_terminal=terminal, width=100, color_system=None, soft_wrap=True)
    monkeypatch.setattr(cli, "err", console)
    cli._print_summary(BatchReport(pages_done=3, pages_skipped=1, rows_added=40, flagged=7, duplicates=2,
                                   seconds=12.0), tmp_path / "l.csv", None)
    text = out.getvalue()
    one_line = "3 page(s) processed (15 pages/min, 1 local worker(s)), 1 already in the ledger, 0 failed; 40 signature"
    assert (one_line in text) is not terminal  # said once: never the table and the line together
    assert ("signature rows added" in text) is terminal
    assert "15 pages/min" in text if terminal else "ledger:" in text
