"""Shared fixtures: generated sheets (never real people's), built once per test session."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from scan_pipeline.core.template import load_template
from scan_pipeline.synth.samples import generate

SCRIPT = Path(sys.executable).parent / "scan-pipeline"


@pytest.fixture(scope="session")
def template():
    return load_template()


@pytest.fixture(scope="session")
def scan_corpus(tmp_path_factory, template) -> Path:
    """Two scanned sheets (four pages) as PDF and PNG, with truth.json."""
    out = tmp_path_factory.mktemp("scan_corpus")
    generate(out, template, sheets=2, seed=11, modes=("scan",), formats=("pdf", "png"))
    return out


@pytest.fixture(scope="session")
def mixed_corpus(tmp_path_factory, template) -> Path:
    """One sheet in each mode: scan, gray, bilevel, photo."""
    out = tmp_path_factory.mktemp("mixed_corpus")
    generate(out, template, sheets=4, seed=5, modes=("scan", "gray", "bilevel", "photo"),
             formats=("png", "jpg", "tiff", "pdf"))
    return out


@pytest.fixture(scope="session")
def serial_ledger(scan_corpus, tmp_path_factory) -> Path:
    """The scan corpus processed by one worker: what every other way of running must reproduce."""
    ledger = tmp_path_factory.mktemp("serial") / "l.csv"
    result = run("process", str(scan_corpus), "--ledger", str(ledger), "--workers", "1")
    assert result.returncode == 0, result.stderr
    return ledger


def run(*args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    """The real command, in a subprocess."""
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout)


def ledger_rows(path: Path) -> pd.DataFrame:
    """A ledger's rows, checked against the schema, without the columns that hold the time of the run."""
    from scan_pipeline.ledger.schema import validate_ledger_frame

    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    assert validate_ledger_frame(df) == []
    return df.drop(columns=["processed_at", "reviewed_at"])


def child_pids(pid: int) -> list[int]:
    """The processes `pid` started, from any of its threads (Dask's nannies start workers from one)."""
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:  # the thread or process ended meanwhile
            pass
    return out


def load_truth(corpus: Path) -> dict:
    return json.loads((corpus / "truth.json").read_text(encoding="utf-8"))


def copy_corpus(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst
