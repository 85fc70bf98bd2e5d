"""The `ledger` commands: merge, stats, find, erase (exit codes, stderr summaries, no names by default)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from scan_pipeline.cli import app
from scan_pipeline.ledger.append import append_results
from scan_pipeline.ledger.paths import signature_id
from scan_pipeline.ledger.store import read_ledger

from .test_ledger import T0, T1, page, row, sha

runner = CliRunner()


@pytest.fixture()
def two_groups(tmp_path: Path) -> tuple[Path, Path]:
    a, b = tmp_path / "A.csv", tmp_path / "B.csv"
    append_results(a, [page("p1", (row(1, "Marie Dupont"), row(2, "Jean Martin", "75011")))], processed_at=T0)
    append_results(b, [page("p2", (row(1, "DUPONT Marie"), row(2, "Paul Petit", "69001")))], processed_at=T1)
    return a, b


@pytest.mark.parametrize("command", ["merge", "stats", "find", "erase"])
def test_help(command: str) -> None:
    result = runner.invoke(app, ["ledger", command, "--help"])
    assert result.exit_code == 0 and "Usage:" in result.output


def test_merge_stats_find_erase(tmp_path: Path, two_groups: tuple[Path, Path]) -> None:
    a, b = two_groups
    merged = tmp_path / "M.csv"
    result = runner.invoke(app, ["ledger", "merge", str(a), str(b), "--out", str(merged)])
    assert result.exit_code == 0, result.output
    assert "4 row(s)" in result.stderr and "1 duplicate(s)" in result.stderr
    assert "Dupont" not in result.output and "DUPONT" not in result.output  # no names at the default level

    result = runner.invoke(app, ["ledger", "stats", str(merged), "--json"])
    assert result.exit_code == 0, result.output
    stats = json.loads(result.stdout)
    assert (stats["signatures"], stats["unique_signers"], stats["duplicates"]) == (4, 3, 1)
    assert stats["by_departement"]["01"]["unique_signers"] == 1
    assert set(stats["by_source"]) == {"scans/lot1.pdf"}
    table = runner.invoke(app, ["ledger", "stats", str(merged)])
    assert table.exit_code == 0 and "unique signers" in table.stdout and "Dupont" not in table.output

    found = runner.invoke(app, ["ledger", "find", str(merged), "--name", "marie dupont", "--postal-code", "01000"])
    assert found.exit_code == 0 and "Marie Dupont" in found.stdout and "DUPONT Marie" in found.stdout
    assert "2 matching row(s)" in found.stderr

    erased = runner.invoke(app, ["ledger", "erase", str(merged), "--name", "Dupont Marie", "--postal-code", "01000"])
    assert erased.exit_code == 0, erased.output
    assert "2 row(s) erased" in erased.stderr and "Dupont" not in erased.output
    again = runner.invoke(app, ["ledger", "find", str(merged), "--name", "marie dupont"])
    assert again.exit_code == 0 and "0 matching row(s)" in again.stderr and "Dupont" not in again.stdout

    by_id = runner.invoke(app, ["ledger", "erase", str(merged), "--id", signature_id(sha("p2"), 2)])
    assert by_id.exit_code == 0 and "1 row(s) erased" in by_id.stderr
    assert len(read_ledger(merged)) == 1


def test_usage_and_missing_files(tmp_path: Path, two_groups: tuple[Path, Path]) -> None:
    a, _ = two_groups
    assert runner.invoke(app, ["ledger", "erase", str(a)]).exit_code == 2
    assert runner.invoke(app, ["ledger", "erase", str(a), "--name", "X"]).exit_code == 2
    missing = runner.invoke(app, ["ledger", "stats", str(tmp_path / "none.csv")])
    assert missing.exit_code == 8 and "does not exist" in missing.stderr
    merge = runner.invoke(app, ["ledger", "merge", str(tmp_path / "none.csv"), "--out", str(tmp_path / "M.csv")])
    assert merge.exit_code == 8


def test_an_invalid_ledger_has_an_exit_code_of_its_own(tmp_path: Path) -> None:
    from scan_pipeline.core.errors import ExitCode

    bad = tmp_path / "bad.csv"
    bad.write_text("signature_id,name\nx,y\n", encoding="utf-8")
    for command in (["ledger", "validate", str(bad)], ["ledger", "stats", str(bad)],
                    ["review", "export", "--ledger", str(bad), "--out", str(tmp_path / "r.xlsx")]):
        result = runner.invoke(app, command)
        assert result.exit_code == ExitCode.INVALID_LEDGER == 8, (command, result.output)
        assert "missing column(s)" in result.stderr
    assert "8   the ledger" in runner.invoke(app, ["--help"]).output


def test_chart_or_install_hint(tmp_path: Path, two_groups: tuple[Path, Path], monkeypatch) -> None:
    a, _ = two_groups
    png = tmp_path / "chart.png"
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        pass
    else:
        result = runner.invoke(app, ["ledger", "stats", str(a), "--chart", str(png)])
        assert result.exit_code == 0, result.output
        assert png.read_bytes().startswith(b"\x89PNG")
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if it were not installed
    result = runner.invoke(app, ["ledger", "stats", str(a), "--chart", str(tmp_path / "other.png")])
    assert result.exit_code == 5 and "pip install matplotlib" in result.stderr


def test_merge_says_which_pages_two_groups_both_read(tmp_path: Path) -> None:
    """A sheet passed from one group to another and photographed by both: one sheet, counted once."""
    people = [("Marie Dupont", "01000"), ("Jean Martin", "75011"), ("Paul Petit", "69001"), ("Anne Roux", "13001")]
    a, b, merged = tmp_path / "A.csv", tmp_path / "B.csv", tmp_path / "M.csv"
    append_results(a, [page("a1", tuple(row(n, *p) for n, p in enumerate(people, 1)), "lyon/sheet.jpg")],
                   processed_at=T0)
    misread = [people[0], ("JEAN MARTIM", "75011"), ("P4UL PETlT", "69081"), people[3]]
    append_results(b, [page("b1", tuple(row(n, *p) for n, p in enumerate(misread, 1)), "paris/img_0042.jpg")],
                   processed_at=T1)
    result = runner.invoke(app, ["ledger", "merge", str(a), str(b), "--out", str(merged)])
    assert result.exit_code == 0, result.output
    said = " ".join(result.stderr.split())
    assert "read twice: paris/img_0042.jpg:page 1 is the same sheet as lyon/sheet.jpg:page 1 (3 of the 4" in said
    rows = read_ledger(merged)
    assert (rows["status"] == "duplicate").sum() == 4  # the misread code too: the same row of one sheet
