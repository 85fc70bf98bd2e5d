"""Retakes: a sheet read twice is recognised by its rows, and its rows are counted once."""

from __future__ import annotations

import hashlib
from dataclasses import replace

import pandas as pd

from scan_pipeline.core.config import default_config
from scan_pipeline.core.records import Retake
from scan_pipeline.ledger import dedup
from scan_pipeline.ledger.paths import signature_id
from scan_pipeline.ledger.schema import LEDGER_COLUMNS, validate_ledger_frame
from scan_pipeline.synth import signers as synth_signers

CODE = "35000"  # a group collecting in one town: every row has the same postal code


def page_rows(key: str, rows: dict[int, tuple[str, str]], at: str) -> list[dict[str, str]]:
    sha = hashlib.sha256(key.encode()).hexdigest()
    return [{
        "signature_id": signature_id(sha, n), "source_file": f"{key}.jpg", "page": "1", "row_number": str(n),
        "name": name, "name_ocr": name, "name_confidence": "0.900", "postal_code": code,
        "postal_code_ocr": code, "postal_confidence": "0.900", "postal_valid": "true", "commune": "",
        "signature": "signed", "status": "ok", "flags": "", "duplicate_of": "", "page_sha256": sha,
        "processed_at": at, "reviewed_by": "", "reviewed_at": ""} for n, (name, code) in rows.items()]


def ledger(*pages: list[dict[str, str]]) -> pd.DataFrame:
    df = pd.DataFrame([r for p in pages for r in p], columns=list(LEDGER_COLUMNS), dtype=str)
    assert validate_ledger_frame(df) == []
    return df


def names(n: int, seed: int) -> list[str]:
    return [name for _, name, _ in synth_signers.generated_signers(n, 0.0, seed, codes=[CODE])]


def sha(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def status_of(df: pd.DataFrame, key: str) -> dict[int, tuple[str, str]]:
    mine = df[df["page_sha256"] == sha(key)]
    return {int(n): (s, d) for n, s, d in zip(mine["row_number"], mine["status"], mine["duplicate_of"], strict=True)}


def test_a_retake_read_otherwise_is_counted_once() -> None:
    people = names(12, 1)
    first = {n: (people[n - 1], CODE) for n in range(1, 13)}
    again = dict(first)
    again[3] = ("XQWZ Jvk", CODE)  # misread on the blurred retake
    again[7] = ("", CODE)  # its name cell read empty
    again[9] = (people[8], "35080")  # its code misread
    result = dedup.deduplicate(ledger(page_rows("first", first, "2026-12-01T10:00:00Z"),
                                      page_rows("again", again, "2026-12-01T11:00:00Z")))
    assert result.retakes == [Retake(sha("again"), sha("first"), 9, 12, "again.jpg:page 1",
                                      "first.jpg:page 1")]
    rows = status_of(result.frame, "again")
    assert rows == {n: ("duplicate", signature_id(sha("first"), n)) for n in range(1, 13)}
    assert set(status_of(result.frame, "first").values()) == {("ok", "")}


def test_a_partial_photo_and_its_retake_keep_the_rows_only_one_shows() -> None:
    people = names(20, 2)
    cut = {n: (people[n - 1], CODE) for n in range(1, 9)}  # rows 9-20 were out of the photo
    whole = {n: (people[n - 1], CODE) for n in range(1, 21)}
    result = dedup.deduplicate(ledger(page_rows("cut", cut, "2026-12-01T10:00:00Z"),
                                      page_rows("whole", whole, "2026-12-01T11:00:00Z")))
    assert result.retakes == [Retake(sha("whole"), sha("cut"), 8, 8, "whole.jpg:page 1", "cut.jpg:page 1")]
    rows = status_of(result.frame, "whole")
    assert all(rows[n][0] == "duplicate" for n in range(1, 9))
    assert all(rows[n] == ("ok", "") for n in range(9, 21))


def test_two_sheets_of_one_town_are_not_retakes() -> None:
    """The same postal code on every row, and a family who signed both sheets in the same rows: not
    enough of the rows alike to call them one sheet, so the other rows stay signers of their own."""
    a, b = names(15, 3), names(15, 4)
    family = {n: a[n - 1] for n in (4, 5)}
    one = {n: (a[n - 1], CODE) for n in range(1, 16)}
    other = {n: (family.get(n, b[n - 1]), CODE) for n in range(1, 16)}
    result = dedup.deduplicate(ledger(page_rows("one", one, "2026-12-01T10:00:00Z"),
                                      page_rows("other", other, "2026-12-01T11:00:00Z")))
    assert result.retakes == []
    rows = status_of(result.frame, "other")
    assert {n for n, (s, _) in rows.items() if s == "duplicate"} == {4, 5}


def test_how_many_rows_make_a_retake_is_the_config() -> None:
    people = names(10, 5)
    one = {n: (people[n - 1], CODE) for n in range(1, 11)}
    half = {n: (people[n - 1] if n <= 5 else f"AUTRE{chr(64 + n)} Paul", CODE) for n in range(1, 11)}
    df = ledger(page_rows("one", one, "2026-12-01T10:00:00Z"), page_rows("half", half, "2026-12-01T11:00:00Z"))
    assert dedup.deduplicate(df).retakes == []  # 5 of 10 rows alike: below the share
    loose = replace(default_config().dedup, retake_share=0.5)
    assert dedup.deduplicate(df, loose).retakes == [Retake(sha("half"), sha("one"), 5, 10, "half.jpg:page 1",
                                                                  "one.jpg:page 1")]
    strict = replace(default_config().dedup, retake_min_rows=6, retake_share=0.5)
    assert dedup.deduplicate(df, strict).retakes == []


def test_a_cut_photo_and_its_retake_end_to_end(template, tmp_path):
    """A photo that cut off the bottom of the grid, then the whole sheet taken again in a second
    batch: the retake is said to be the same sheet, its rows already read are duplicates, and the
    rows the first photo missed are added."""
    import subprocess

    import numpy as np

    from scan_pipeline.core.postcodes import load_postal_list
    from scan_pipeline.synth.samples import _style, degrade, fill_page, people_from

    from .conftest import SCRIPT

    rng = np.random.default_rng(24)
    people = people_from(tuple(load_postal_list().codes), rng)
    canvas, _, truth = fill_page(template, 2, 300, _style(rng, template), rng, people, 1.0)
    first, _, _ = degrade(canvas, "photo", rng)
    first = first.crop((0, 0, first.width, int(first.height * 0.62)))  # the phone held too close
    again, _, _ = degrade(canvas, "photo", np.random.default_rng(99))
    (tmp_path / "monday").mkdir()
    (tmp_path / "tuesday").mkdir()
    first.save(tmp_path / "monday" / "sheet.jpg", quality=90)
    again.save(tmp_path / "tuesday" / "sheet-again.jpg", quality=90)
    ledger = tmp_path / "L.csv"

    def process(folder: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(SCRIPT), "process", str(tmp_path / folder), "--ledger", str(ledger),
                               "--report", str(tmp_path / f"{folder}.html")],
                              capture_output=True, text=True, timeout=600)

    monday = process("monday")
    assert monday.returncode == 10, monday.stderr  # the rows not in view are reported missing
    assert "not found" in monday.stderr and "read twice:" not in monday.stderr
    seen = set(pd.read_csv(ledger, dtype=str, keep_default_na=False)["row_number"].astype(int))
    written = {r["row_number"] for r in truth if r["written"]}
    assert seen and seen < written  # some rows were cut off

    tuesday = process("tuesday")
    assert tuesday.returncode == 0, tuesday.stderr
    said = " ".join(tuesday.stderr.split())
    assert "sheet-again.jpg:page 1 is the same sheet as" in said and "sheet.jpg:page 1" in said, tuesday.stderr
    assert "Sheets read twice (1)" in (tmp_path / "tuesday.html").read_text(encoding="utf-8")
    df = pd.read_csv(ledger, dtype=str, keep_default_na=False)
    assert validate_ledger_frame(df) == []
    before = df[df["source_file"].str.endswith("/sheet.jpg")]
    later = df[df["source_file"].str.endswith("sheet-again.jpg")]
    assert set(later["row_number"].astype(int)) == written  # the whole sheet this time
    root = {int(n): d or sid for n, sid, d in zip(before["row_number"], before["signature_id"], before["duplicate_of"],
                                                  strict=True)}
    for n, status, dup in zip(later["row_number"].astype(int), later["status"], later["duplicate_of"], strict=True):
        if n in seen:  # read on both: counted once, as the first photo's signer
            assert (status, dup) == ("duplicate", root[n]), n
        else:  # only the retake shows it: a signature of its own (unless its signer signed twice)
            assert dup not in root.values() or status != "duplicate", n
