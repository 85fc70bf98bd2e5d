"""The Dask executor: the same ledger as the local pool, a killed worker loses no page, a clear
error without the extra. On loopback only (a LocalCluster bound to 127.0.0.1)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd

from scan_pipeline.core.records import PageImage, PageRef
from scan_pipeline.run.cluster import PackedPage

from .conftest import SCRIPT, child_pids, ledger_rows, run


def test_a_packed_page_unpacks_to_the_same_pixels_and_a_compressed_one_is_smaller():
    rng = np.random.default_rng(0)
    gray = np.full((1200, 900), 255, np.uint8)
    gray[300:900:40, 100:800] = rng.integers(0, 80, (15, 700), dtype=np.uint8)
    rgb = np.dstack([gray, gray // 2, 255 - gray])
    for pixels in (gray, rgb):
        for compress in (True, False):
            packed = PackedPage.pack(PageImage(PageRef("a.png", 1, "0" * 64), pixels, 300.0), compress)
            back = packed.unpack()
            assert np.array_equal(back.pixels, pixels) and back.dpi == 300.0 and back.ref.page == 1
            assert len(packed.data) < pixels.nbytes / 5 if compress else len(packed.data) == pixels.nbytes


def test_a_jpeg_or_png_page_travels_as_its_file_and_unpacks_to_the_pixels_the_parent_read(tmp_path):
    from PIL import Image

    from scan_pipeline.page.load import InputFile, iter_pages

    rng = np.random.default_rng(1)
    gray = np.full((700, 500), 250, np.uint8)
    gray[100:600:30, 50:450] = rng.integers(0, 90, (17, 400), dtype=np.uint8)
    rgb = Image.fromarray(np.dstack([gray, gray, 255 - gray // 3]))
    exif = Image.Exif()
    exif[0x0112] = 6  # a phone photo taken sideways: the loader turns it upright
    rgb.save(tmp_path / "turned.jpg", quality=85, exif=exif)
    rgb.save(tmp_path / "page.png")
    Image.fromarray(gray).save(tmp_path / "two.tif", save_all=True, append_images=[Image.fromarray(gray)])
    rgb.save(tmp_path / "scan.pdf", resolution=100.0)  # a scanner's PDF: one JPEG filling the page
    for name, as_file in (("turned.jpg", True), ("page.png", True), ("scan.pdf", True), ("two.tif", False)):
        path = tmp_path / name
        pages = list(iter_pages(InputFile(path, name), keep_encoded=True))
        assert [bool(p.encoded) for p in pages] == [as_file] * len(pages)
        for page in pages:
            packed = PackedPage.pack(page, compress=True)
            assert packed.file_bytes == as_file
            if as_file and name != "scan.pdf":
                assert packed.data == path.read_bytes()
            assert np.array_equal(packed.unpack().pixels, page.pixels) and page.pixels.ndim == 2
    assert pages[0].pixels.shape == (700, 500)
    upright = next(iter_pages(InputFile(tmp_path / "turned.jpg", "turned.jpg")))
    assert upright.pixels.shape == (500, 700) and not upright.encoded  # kept only when asked


def test_a_page_the_cluster_cannot_read_fails_alone_and_says_why():
    from scan_pipeline.core.errors import InputFileError
    from scan_pipeline.run.cluster import cluster_failure

    ref = PageRef("scan.jpg", 1, "0" * 64)
    packed = PackedPage(ref, b"\xff\xd8\xff\xe0 cut short", 300.0, file_bytes=True)
    try:
        packed.unpack()
    except InputFileError as exc:
        result = cluster_failure(ref, exc)
    else:
        raise AssertionError("a truncated JPEG unpacked")
    assert result.failed and result.ref == ref
    assert "failed on the cluster (the image is damaged or truncated" in result.issues[0].message
    assert "KilledWorker" in cluster_failure(ref, type("KilledWorker", (Exception,), {})()).issues[0].message


def test_dask_local_cluster_writes_the_same_ledger_as_the_local_pool(scan_corpus, serial_ledger, tmp_path):
    ledger = tmp_path / "l.csv"
    result = run("process", str(scan_corpus), "--ledger", str(ledger), "--executor", "dask", "--workers", "2")
    assert result.returncode == 0, result.stderr
    assert "2 dask worker(s)" in result.stderr
    assert "INFO" not in result.stderr  # Dask's chatter only with --verbose
    pd.testing.assert_frame_equal(ledger_rows(ledger), ledger_rows(serial_ledger))


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_cluster_given_by_its_scheduler_reads_the_pages_it_is_sent(scan_corpus, serial_ledger, tmp_path):
    """`dask scheduler` and `dask worker` started apart, as on other machines (here on loopback, in
    a folder where the scans are not): the PNG pages go as their files, the PDF pages as PNGs."""
    dask = Path(SCRIPT).parent / "dask"
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    away = tmp_path / "worker-dir"
    away.mkdir()
    procs = [subprocess.Popen([str(dask), "scheduler", "--host", "127.0.0.1", "--port", str(port),
                               "--no-dashboard"], cwd=away, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)]
    try:
        procs.append(subprocess.Popen([str(dask), "worker", address, "--nworkers", "1", "--nthreads", "1",
                                       "--no-dashboard", "--host", "127.0.0.1"], cwd=away,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))
        ledger = tmp_path / "l.csv"
        result = run("process", str(scan_corpus), "--ledger", str(ledger), "--executor", "dask",
                     "--scheduler", address)
        assert result.returncode == 0, result.stderr
        assert "1 dask worker(s)" in result.stderr
        pd.testing.assert_frame_equal(ledger_rows(ledger), ledger_rows(serial_ledger))
    finally:
        for proc in reversed(procs):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


def test_a_scheduler_with_no_worker_is_a_clear_error(monkeypatch, template, tmp_path):
    import pytest

    from scan_pipeline.core.config import load_config
    from scan_pipeline.core.errors import PipelineError
    from scan_pipeline.run import cluster
    from scan_pipeline.run.worker import WorkerSetup

    port = _free_port()
    proc = subprocess.Popen([str(Path(SCRIPT).parent / "dask"), "scheduler", "--host", "127.0.0.1", "--port",
                             str(port), "--no-dashboard"], cwd=tmp_path, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        monkeypatch.setattr(cluster, "WAIT_FOR_WORKERS_S", 2)
        address = f"tcp://127.0.0.1:{port}"
        with pytest.raises(PipelineError) as caught:
            for _ in range(40):  # the scheduler takes a moment to listen
                try:
                    cluster.DaskExecutor(WorkerSetup(template, load_config()), 2, address)
                except PipelineError as exc:
                    if "has no worker" in exc.message:
                        raise
                time.sleep(0.25)
        assert caught.value.message == f"the Dask scheduler {address} has no worker"
        assert f"dask worker {address}" in caught.value.hint
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


def _dask_workers(pid: int) -> list[int]:
    """The worker processes of the LocalCluster that `pid` started (its nannies run inside it)."""
    out = []
    for child in child_pids(pid):
        with contextlib.suppress(OSError):
            cmd = Path(f"/proc/{child}/cmdline").read_bytes()
            if b"forkserver" in cmd:  # workers are forked from the fork server
                out += child_pids(child)
            elif b"spawn_main" in cmd:
                out.append(child)
    return out


def test_a_worker_killed_mid_run_loses_no_page_and_writes_none_twice(scan_corpus, serial_ledger, tmp_path):
    config = tmp_path / "flush.toml"
    config.write_text("[batch]\nflush_seconds = 0\n", encoding="utf-8")
    ledger = tmp_path / "l.csv"
    proc = subprocess.Popen([str(SCRIPT), "process", str(scan_corpus), "--ledger", str(ledger), "--executor", "dask",
                             "--workers", "2", "--config", str(config)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        pages = ledger.with_suffix(".pages.jsonl")
        deadline = time.monotonic() + 300
        while not (pages.exists() and pages.read_text(encoding="utf-8").strip()):
            assert proc.poll() is None and time.monotonic() < deadline, "no page was written"
            time.sleep(0.05)
        workers = _dask_workers(proc.pid)
        assert len(workers) == 2
        os.kill(workers[0], signal.SIGKILL)  # mid-run: the other pages are in flight
        _, stderr = proc.communicate(timeout=600)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, stderr
    records = [json.loads(line) for line in pages.read_text(encoding="utf-8").splitlines()]
    assert len(records) == len({r["page_sha256"] for r in records}) == 4  # every page once
    pd.testing.assert_frame_equal(ledger_rows(ledger), ledger_rows(serial_ledger))


def test_executor_dask_without_the_extra_exits_5_and_says_how_to_install(scan_corpus, tmp_path):
    fake = tmp_path / "site" / "distributed"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('No module named distributed')\n", encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(fake.parent), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([str(SCRIPT), "process", str(scan_corpus), "--ledger", str(tmp_path / "l.csv"),
                             "--executor", "dask"], capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 5, result.stderr
    assert "pip install 'scan-pipeline[dask]'" in result.stderr
    assert not (tmp_path / "l.csv").exists()


def test_scheduler_without_executor_dask_is_a_usage_error(scan_corpus, tmp_path):
    result = run("process", str(scan_corpus), "--ledger", str(tmp_path / "l.csv"),
                 "--scheduler", "tcp://127.0.0.1:1")
    assert result.returncode == 2, result.stderr
    assert "--executor dask" in result.stderr
