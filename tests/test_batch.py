"""Batches: parallel equals serial, resume after a kill, hostile input, the HTML report, crashes.

Through the real command (subprocesses, real poppler and Tesseract) except the worker-crash test,
which fakes the executor to make a worker die on one chosen page.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from scan_pipeline.core import faults
from scan_pipeline.core.config import load_config
from scan_pipeline.core.records import BatchReport, PageImage, PageRef, PageResult
from scan_pipeline.run.batch import _drive, _Slot, _Writer

from .bad_inputs import make_corpus
from .conftest import SCRIPT, child_pids, ledger_rows, load_truth, run


@pytest.fixture()
def flush_each_page(tmp_path) -> Path:
    config = tmp_path / "flush.toml"
    config.write_text("[batch]\nflush_seconds = 0\n", encoding="utf-8")
    return config


def test_parallel_run_writes_the_same_ledger_as_a_serial_one(scan_corpus, serial_ledger, tmp_path):
    ledger = tmp_path / "l.csv"
    result = run("process", str(scan_corpus), "--ledger", str(ledger), "--workers", "2")
    assert result.returncode == 0, result.stderr
    assert "2 local worker(s)" in result.stderr
    parallel, serial = ledger_rows(ledger), ledger_rows(serial_ledger)
    assert len(serial) > 20
    pd.testing.assert_frame_equal(parallel, serial)


def _wait_for_pages(ledger: Path, proc: subprocess.Popen, count: int, timeout: float = 300) -> None:
    pages = ledger.with_suffix(".pages.jsonl")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pages.exists() and len(pages.read_text(encoding="utf-8").splitlines()) >= count:
            return
        assert proc.poll() is None, "the run ended before it could be interrupted"
        time.sleep(0.05)
    raise AssertionError("no page was written in time")


def _descendants(pid: int) -> list[int]:
    children = child_pids(pid)
    return children + [d for c in children for d in _descendants(c)]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_a_killed_run_restarted_with_the_same_command_ends_with_the_same_ledger(
        scan_corpus, serial_ledger, tmp_path, flush_each_page):
    ledger = tmp_path / "l.csv"
    command = [str(SCRIPT), "process", str(scan_corpus), "--ledger", str(ledger), "--workers", "2",
               "--config", str(flush_each_page)]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        _wait_for_pages(ledger, proc, 1)
        family = _descendants(proc.pid)
        assert len(family) >= 2  # the workers
        proc.kill()  # kill -9 of the command alone: its workers must not run on without it
        proc.wait()
        deadline = time.monotonic() + 15
        while any(_alive(pid) for pid in family) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(_alive(pid) for pid in family), "workers outlived the killed command"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    partial = ledger_rows(ledger)
    assert 0 < partial["page_sha256"].nunique() < 4  # whole pages only, and not all of them
    assert partial.groupby("page_sha256").size().min() >= 5  # no page is in the ledger by halves
    again = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr
    skipped = int(again.stderr.split(" already in the ledger")[0].rsplit(", ", 1)[1])
    assert skipped >= 1
    pd.testing.assert_frame_equal(ledger_rows(ledger), ledger_rows(serial_ledger))


def test_ctrl_c_writes_the_finished_pages_and_exits_130(scan_corpus, tmp_path, flush_each_page):
    ledger = tmp_path / "l.csv"
    # Ctrl-C once the first page is written, a known point of the run (a timer raced fast machines)
    env = {**os.environ, faults.ENV: "batch_flushed@1=INT"}
    # Ctrl-C as a terminal sends it, even when the suite runs in a background job (which starts its
    # children with SIGINT ignored, as a shell without job control does)
    proc = subprocess.Popen([str(SCRIPT), "process", str(scan_corpus), "--ledger", str(ledger), "--workers", "2",
                             "--config", str(flush_each_page)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    _, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 130, stderr
    assert "run the same command again to continue" in stderr
    pages = ledger_rows(ledger)["page_sha256"].nunique()
    # the page finished before the interruption, and any other already finished then: never all four
    assert 1 <= pages < 4 and f"{pages} page(s) processed" in stderr
    time.sleep(0.5)
    leftover = subprocess.run(["pgrep", "-f", str(ledger)], capture_output=True, text=True).stdout.split()
    assert leftover == [], "worker processes were left running"


def test_bad_input_corpus_every_case_reported_and_good_pages_all_in(scan_corpus, tmp_path):
    batch = tmp_path / "batch"
    good = sorted(scan_corpus.glob("*.png"))
    assert good
    cases = make_corpus(batch, good[0])
    for g in good:
        shutil.copy(g, batch / f"good-{g.name}")
    ledger = tmp_path / "l.csv"
    result = run("process", str(batch), "--ledger", str(ledger), "--workers", "2")
    assert result.returncode == 10, result.stderr
    failed_lines = [line for line in result.stderr.splitlines() if line.startswith("failed: ")]
    for case in cases:
        where = str(batch / case.file) + ("" if case.page is None else f":page {case.page}")
        lines = [line for line in failed_lines if line.startswith(f"failed: {where}: ")]
        assert lines, f"{case.file}: not reported\n{result.stderr}"
        assert case.reason in lines[0], f"{case.file}: {lines[0]}"
        assert "(" in lines[0] and lines[0].endswith(")"), f"{case.file}: no hint: {lines[0]}"
    assert len(failed_lines) == len(cases)
    df = ledger_rows(ledger)
    truth = load_truth(scan_corpus)
    for g in good:
        written = [r for f in truth["files"] if f["file"] == g.name for p in f["pages"] for r in p["rows"]
                   if r["written"]]
        got = df[df["source_file"] == str(batch / f"good-{g.name}")]
        assert len(got) >= 0.9 * len(written) > 0


def test_report_is_one_self_contained_page_chromium_renders(scan_corpus, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "Debian's chromium is installed by `make install` (scripts/install_system_deps.sh)"
    batch = tmp_path / "batch"
    batch.mkdir()
    shutil.copy(sorted(scan_corpus.glob("*.png"))[0], batch / "good.png")
    (batch / "empty.png").write_bytes(b"")
    report = tmp_path / "out" / "report.html"
    result = run("process", str(batch), "--ledger", str(tmp_path / "l.csv"), "--report", str(report), "-q")
    assert result.returncode == 10, result.stderr
    html = report.read_text(encoding="utf-8")
    assert "http://" not in html.replace("http://www.w3.org", "") and "https://" not in html  # nothing fetched
    assert "empty.png" in html and "the file is empty" in html
    assert html.count("<figure") == 1 and "data:image/jpeg;base64," in html
    assert "data:image/png;base64," in html  # the chart by département
    shot = tmp_path / "report.png"
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--no-first-run",
                    f"--user-data-dir={tmp_path / 'profile'}", "--hide-scrollbars", "--window-size=1200,1600",
                    f"--screenshot={shot}", report.as_uri()], capture_output=True, timeout=180, check=True)
    import cv2

    img = cv2.imread(str(shot), cv2.IMREAD_GRAYSCALE)
    assert img is not None and img.shape == (1600, 1200)
    assert (img < 128).mean() > 0.01  # text, tables and images were drawn, not a blank page


def test_verbose_logs_name_the_file_page_and_row_and_default_logs_no_names(scan_corpus, tmp_path):
    png = sorted(scan_corpus.glob("*.png"))[0]
    quiet = run("process", str(png), "--ledger", str(tmp_path / "a.csv"), "--workers", "1")
    verbose = run("-v", "process", str(png), "--ledger", str(tmp_path / "b.csv"), "--workers", "1")
    assert quiet.returncode == verbose.returncode == 0, quiet.stderr + verbose.stderr
    names = [r["name"] for f in load_truth(scan_corpus)["files"] if f["file"] == png.name
             for p in f["pages"] for r in p["rows"] if r["written"]]
    surnames = {n.split()[0] for n in names}
    assert not any(s in quiet.stderr for s in surnames)
    assert f"{png}:1:row " in verbose.stderr
    assert "━" not in quiet.stderr  # no progress bar when stderr is not a terminal


# --- a worker that dies ------------------------------------------------------------------------

class _CrashingExecutor:
    """Fails like a process pool whose worker died while one chosen page was in flight."""

    workers = 2

    def __init__(self, deadly: int):
        self.deadly = deadly
        self.restarts = 0
        self.pending: list[int] = []

    def submit(self, page: PageImage) -> Future[PageResult]:
        future: Future[PageResult] = Future()
        if page.ref.page == self.deadly:
            self.pending.append(page.ref.page)
        self._futures = getattr(self, "_futures", []) + [(page, future)]
        if self.pending:  # the pool is broken: everything in flight fails
            for _, f in self._futures:
                if not f.done():
                    f.set_exception(BrokenProcessPool("a worker died"))
        else:
            future.set_result(PageResult(ref=page.ref))
        return future

    def restart(self) -> None:
        self.restarts += 1
        self.pending = []
        self._futures = []

    def close(self, cancel: bool = False) -> None:
        pass


def test_a_page_that_kills_its_worker_fails_alone_and_the_others_are_written(tmp_path):
    pages = [PageImage(PageRef("scan.tif", n, f"{n:064x}"), np.zeros((4, 4), np.uint8), 200.0) for n in range(1, 7)]
    slots = iter([_Slot(f"scan.tif:{p.ref.page}", ref=p.ref, page=p) for p in pages])
    report = BatchReport()
    writer = _Writer(tmp_path / "l.csv", report, False, load_config(), 3600, False, None)
    pool = _CrashingExecutor(deadly=3)
    _drive(pool, slots, writer, None, in_flight=4)
    assert [(f.file, f.page) for f in report.failures] == [("scan.tif", 3)]
    assert "stopped its worker process twice" in report.failures[0].reason
    assert report.pages_done == 5
    assert [p.page for p in report.pages] == [1, 2, 3, 4, 5, 6]  # still in input order
    assert pool.restarts >= 2



def test_a_page_with_a_row_missed_keeps_its_numbered_rows_and_is_reported(tmp_path):
    from scan_pipeline.core.records import EMPTY_FIELD, FieldReading, PageIssue, RowReading

    ref = PageRef("scan.png", 1, "ab" * 32)
    rows = tuple(RowReading(n, FieldReading("DUPONT Marie", "DUPONT Marie", 0.99, "accept"), EMPTY_FIELD, False, "",
                            "signed") for n in (1, 2, 4))
    result = PageResult(ref=ref, rows=rows, issues=(PageIssue("page_rows_count", "3 rows found, the template "
                                                             "prints 4 on page 1", "look at the page"),))
    report = BatchReport()
    writer = _Writer(tmp_path / "l.csv", report, False, load_config(), 3600, False, None)
    writer.page(_Slot("scan.png:1", ref=ref), result)
    assert [(f.file, f.page) for f in report.failures] == [("scan.png", 1)]  # said, exit 10
    assert report.pages_done == 1 and len(writer.results) == 1  # and its rows are written
    writer.flush()
    assert ledger_rows(tmp_path / "l.csv")["row_number"].tolist() == ["1", "2", "4"]
