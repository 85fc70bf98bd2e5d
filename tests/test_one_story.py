"""One writer and one story (issue #21): a ledger and its sidecars consistent at every instant.

Each command that changes a ledger (`process`, `review import`, `ledger erase`, `ledger merge`)
is killed with SIGKILL at every step of the commit protocol (journal.py, by fault points) and at
20 random instants; the next command must find one story: the change made whole or not at all,
no record twice, no temporary file left, every row with its sidecars and no sidecar without its
row. Through the real command, on generated sheets and invented people.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from scan_pipeline.core import faults
from scan_pipeline.ledger.append import append_results
from scan_pipeline.ledger.journal import journal_path
from scan_pipeline.ledger.paths import sidecar_paths
from scan_pipeline.ledger.sidecars import read_details
from scan_pipeline.ledger.store import ledger_lock, read_ledger

from .conftest import SCRIPT
from .test_ledger import page, row

RANDOM_KILLS = 20


def _env(fault: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != faults.ENV}
    if fault:
        env[faults.ENV] = fault
    return env


def _run(args: list[str], fault: str | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout, env=_env(fault))


def _killed_at_random(args: list[str], delay: float) -> int:
    proc = subprocess.Popen([str(SCRIPT), *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env())
    time.sleep(delay)
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, signal.SIGKILL)
    return proc.wait(timeout=120)


def one_story(ledger: Path) -> pd.DataFrame:
    """What the next command sees (it completes or clears what a kill left), checked whole."""
    df = read_ledger(ledger)  # completes a journal left behind, under the lock
    folder = ledger.parent
    assert not journal_path(ledger).exists()
    debris = [e.name for e in folder.iterdir() if ".tx-" in e.name or e.name.endswith(".tmp")]
    assert debris == [], debris
    ids = set(df["signature_id"])
    details = read_details(sidecar_paths(ledger).details)
    assert set(details) == ids  # every row has its details, no details outlive their row
    crops = sidecar_paths(ledger).crops
    on_disk = {(p.parent.name, int(p.name[:2])) for p in crops.glob("*/*.png")} if crops.is_dir() else set()
    rows = {(s[:16], int(n)) for s, n in zip(df["page_sha256"], df["row_number"], strict=True)}
    assert on_disk <= rows, on_disk - rows  # no image of a row the ledger does not hold
    for sid, obj in details.items():
        for rel in (obj.get("crops") or {}).values():
            assert (ledger.parent / rel).is_file(), (sid, rel)
    audit = sidecar_paths(ledger).audit
    if audit.exists():
        lines = [line for line in audit.read_text("utf-8").splitlines() if line.strip()]
        assert len(lines) == len(set(lines)), "an audit record written twice"
        for record in map(json.loads, lines):
            if record.get("action") == "erase":
                gone = {(r["page_sha256"][:16], r["row_number"]) for r in record["rows"]}
                assert not gone & rows
    pages = sidecar_paths(ledger).pages
    if pages.exists():
        records = [json.loads(x) for x in pages.read_text("utf-8").splitlines() if x.strip()]
        assert len({r["page_sha256"] for r in records}) == len(records), "a page recorded twice"
        done = {r["page_sha256"] for r in records if r["status"] == "done"}
        assert set(df["page_sha256"]) <= done  # a page in the ledger is a page recorded done
    return df


_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z")
_OP = re.compile(r'"op": "[0-9a-f]{16}", ')  # the change's id: another on every run


def _state(ledger: Path, folder: Path) -> tuple[str, ...]:
    """The ledger, details, audit log and crops, with the times and the copy's folder left out."""
    paths = sidecar_paths(ledger)
    texts = [_OP.sub("", _TIME.sub("T", p.read_text("utf-8"))).replace(str(folder), "<folder>")
             if p.exists() else "" for p in (ledger, paths.details, paths.audit)]
    crops = sorted(str(c.relative_to(paths.crops)) for c in paths.crops.glob("*/*.png")) if paths.crops.is_dir() \
        else []
    return (*texts, "\n".join(crops))


def _fresh(src: Path, dst: Path) -> Path:
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst, symlinks=True)
    return dst


# --- process ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def one_page(scan_corpus, tmp_path_factory):
    """A one-page scan, the config that writes after each page, and the ledger a clean run writes."""
    root = tmp_path_factory.mktemp("one_page")
    png = root / "scan.png"
    shutil.copy(sorted(scan_corpus.glob("*.png"))[0], png)
    config = root / "flush.toml"
    config.write_text("[batch]\nflush_seconds = 0\n", encoding="utf-8")
    clean = root / "clean" / "L.csv"
    started = time.monotonic()
    result = _run(["process", str(png), "--ledger", str(clean), "--workers", "1", "--config", str(config)])
    assert result.returncode == 0, result.stderr
    return png, config, clean, time.monotonic() - started


def _rows(ledger: Path) -> pd.DataFrame:
    return pd.read_csv(ledger, dtype=str, keep_default_na=False).drop(columns=["processed_at"])


STEPS = ["tx.process.staged@1", "tx.process.journaled@1", "tx.process.replaced@1", "tx.process.replaced@2",
         "tx.process.replaced@20", "tx.process.applied@1"]


@pytest.mark.parametrize("step", STEPS)
def test_process_killed_at_each_step_of_the_commit(one_page, tmp_path, step):
    png, config, clean, _ = one_page
    ledger = tmp_path / "L.csv"
    args = ["process", str(png), "--ledger", str(ledger), "--workers", "1", "--config", str(config)]
    killed = _run(args, fault=f"{step}=KILL")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    df = one_story(ledger)
    committed = step.split("@")[0] not in ("tx.process.staged",)
    assert len(df) == (len(_rows(clean)) if committed else 0)  # whole or nothing
    again = _run(args)
    assert again.returncode == 0, again.stderr
    one_story(ledger)
    pd.testing.assert_frame_equal(_rows(ledger), _rows(clean))


def test_process_killed_at_random_instants(one_page, tmp_path):
    png, config, clean, _ = one_page
    rnd = random.Random(21)
    args = ["process", str(png), "--ledger", str(tmp_path / "timed" / "L.csv"), "--workers", "1", "--config",
            str(config)]
    started = time.monotonic()
    assert _run(args).returncode == 0
    seconds = time.monotonic() - started  # as long as a run takes now (the machine may be busy)
    outcomes = {"nothing": 0, "whole": 0}
    for k in range(RANDOM_KILLS):
        ledger = tmp_path / f"k{k}" / "L.csv"
        args = ["process", str(png), "--ledger", str(ledger), "--workers", "1", "--config", str(config)]
        _killed_at_random(args, rnd.uniform(0.0, 1.2 * seconds))
        df = one_story(ledger) if ledger.parent.exists() else pd.DataFrame()
        assert len(df) in (0, len(_rows(clean)))
        outcomes["whole" if len(df) else "nothing"] += 1
    print(f"process killed at {RANDOM_KILLS} random instants: {outcomes}")
    assert outcomes["nothing"]  # the commit window itself is a few ms: the steps above kill inside it


# --- review import, erase, merge: a small ledger of invented people ------------------------------


SURNAMES = ("MARTIN", "BERNARD", "PETIT", "ROBERT", "RICHARD", "DURAND", "LEROY", "MOREAU", "SIMON", "LAURENT",
            "LEFEBVRE", "MICHEL", "GARCIA", "DAVID", "BERTRAND", "ROUX", "VINCENT", "FOURNIER", "MOREL", "GIRARD",
            "ANDRE", "MERCIER", "DUPONT", "LAMBERT")
GIVEN = ("Marie", "Jean", "Léa", "Paul", "Anne", "Luc", "Emma", "Hugo")


def _build(folder: Path, seed: str = "g") -> Path:
    """Three pages of eight invented signers each, half of them flagged for review."""
    ledger = folder / "L.csv"
    pages = [page(f"{seed}{k}", tuple(row(n, f"{SURNAMES[8 * k + n - 1]} {GIVEN[n - 1]}",
                                          ("75011", "69003", "13001")[n % 3],
                                          flags=("name_low_conf",) if n % 2 else ())
                                      for n in range(1, 9)), source=f"scans/{seed}{k}.pdf") for k in range(3)]
    append_results(ledger, pages, processed_at="2026-11-23T15:00:00Z")
    return ledger


@pytest.fixture()
def small(tmp_path) -> Path:
    return _build(tmp_path / "base")


def _kill_cases(op: str, steps: int) -> list[str]:
    return [f"tx.{op}.staged@1", f"tx.{op}.journaled@1"] + [f"tx.{op}.replaced@{n}" for n in range(1, steps + 1)] \
        + [f"tx.{op}.applied@1"]


def _review_file(folder: Path, ledger: Path) -> Path:
    df = read_ledger(ledger)
    flagged = df[df["status"] == "review"]["signature_id"].tolist()
    lines = ["signature_id;name;decision", f"{flagged[0]};DURAND Élise;correct", f"{flagged[1]};;not a signature",
             f"{flagged[2]};;ok"]
    path = folder / "back.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _check_all_or_nothing(make_args, ledger_of, op: str, base: Path, tmp_path: Path, steps: int) -> None:
    """Kill the command at each step and at random instants on fresh copies; it is whole or not at all."""
    reference = _fresh(base, tmp_path / "reference")
    started = time.monotonic()
    done = _run(make_args(reference))
    seconds = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    one_story(ledger_of(reference))
    after = _state(ledger_of(reference), reference)
    before = _state(ledger_of(base), base)
    assert after != before
    cases = [(fault, None) for fault in _kill_cases(op, steps)]
    rnd = random.Random(hash(op) % 1000)
    cases += [(None, rnd.uniform(0.0, 1.2 * seconds)) for _ in range(RANDOM_KILLS)]
    outcomes = {"before": 0, "after": 0}
    for k, (fault, delay) in enumerate(cases):
        copy = _fresh(base, tmp_path / f"c{k}")
        if fault:
            killed = _run(make_args(copy), fault=f"{fault}=KILL")
            assert killed.returncode == -signal.SIGKILL, (fault, killed.stderr)
        else:
            _killed_at_random(make_args(copy), delay)
        one_story(ledger_of(copy))
        state = _state(ledger_of(copy), copy)
        assert state in (before, after), (fault, delay)
        outcomes["after" if state == after else "before"] += 1
        if fault:
            assert (state == after) == (fault.split("@")[0] != f"tx.{op}.staged"), fault
            again = _run(make_args(copy))
            assert again.returncode == 0, again.stderr
            one_story(ledger_of(copy))
            # done once more, the change is the reference's (a review import done twice changes nothing)
            assert _state(ledger_of(copy), copy)[0] == after[0]
        shutil.rmtree(copy)
    assert outcomes["before"] and outcomes["after"], outcomes


def test_review_import_killed_at_each_step_and_at_random(small, tmp_path):
    back = _review_file(tmp_path, small)

    def args(folder: Path) -> list[str]:
        return ["review", "import", str(back), "--ledger", str(folder / "L.csv"), "--reviewer", "Alice"]

    _check_all_or_nothing(args, lambda f: f / "L.csv", "review", small.parent, tmp_path, steps=3)


def test_erase_killed_at_each_step_and_at_random(small, tmp_path):
    victim = read_ledger(small).iloc[0]["signature_id"]

    def args(folder: Path) -> list[str]:
        return ["ledger", "erase", str(folder / "L.csv"), "--id", victim]

    _check_all_or_nothing(args, lambda f: f / "L.csv", "erase", small.parent, tmp_path, steps=3)


def test_merge_killed_at_each_step_and_at_random(tmp_path):
    base = tmp_path / "groups"
    _build(base / "a", "a")
    _build(base / "b", "b")

    def args(folder: Path) -> list[str]:
        return ["ledger", "merge", str(folder / "a" / "L.csv"), str(folder / "b" / "L.csv"), "--out",
                str(folder / "M.csv")]

    _check_all_or_nothing(args, lambda f: f / "M.csv", "merge", base, tmp_path, steps=4)


# --- one writer per ledger -----------------------------------------------------------------------

HOLD_RUN = """
import sys
from pathlib import Path
from scan_pipeline.ledger.store import run_lock
with run_lock(Path(sys.argv[1]), "scan-pipeline process scans/"):
    print("locked", flush=True)
    sys.stdin.read()
"""


def test_a_second_process_on_a_ledger_in_use_is_refused_or_waits(one_page, tmp_path):
    png, config, _, _ = one_page
    ledger = tmp_path / "L.csv"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_RUN, str(ledger)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        started = time.monotonic()
        refused = _run(["process", str(png), "--ledger", str(ledger), "--workers", "1"])
        assert refused.returncode == 6, refused.stderr
        assert f"process {holder.pid}, started 20" in refused.stderr and "--wait" in refused.stderr
        assert time.monotonic() - started < 30 and not ledger.exists()
        # a volunteer's import or an erasure does not wait for the run: only for its writes
        other = _build(tmp_path / "other")
        back = _review_file(tmp_path, other)
        assert _run(["review", "import", str(back), "--ledger", str(other)]).returncode == 0
        merge = _run(["ledger", "merge", str(other), "--out", str(ledger)])
        assert merge.returncode == 6 and f"process {holder.pid}" in merge.stderr
        waiting = subprocess.Popen([str(SCRIPT), "process", str(png), "--ledger", str(ledger), "--workers", "1",
                                    "--wait"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
        time.sleep(2)
        assert waiting.poll() is None  # waiting for the first run
    finally:
        holder.communicate(input="", timeout=30)
    _, stderr = waiting.communicate(timeout=600)
    assert waiting.returncode == 0, stderr
    assert len(one_story(ledger)) > 5


def test_review_import_waits_for_a_flush_then_applies(small, tmp_path):
    """The write lock, held by a flush, delays an import (it is not refused)."""
    import threading

    back = _review_file(tmp_path, small)
    release = threading.Event()

    def hold() -> None:
        with ledger_lock(small):
            release.wait(5)

    holder = threading.Thread(target=hold)
    holder.start()
    time.sleep(0.3)
    started = time.monotonic()
    threading.Timer(1.5, release.set).start()
    result = _run(["review", "import", str(back), "--ledger", str(small)])
    holder.join()
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started >= 1.0
    assert (read_ledger(small)["reviewed_by"] != "").sum() == 3

