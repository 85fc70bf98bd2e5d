"""Every command answers --help, and the exit codes are documented there."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from scan_pipeline.cli import app
from scan_pipeline.errors import ExitCode

from .conftest import SCRIPT

COMMANDS = [
    [], ["process"], ["sheet"], ["sheet", "blank"], ["sheet", "validate"], ["samples"],
    ["samples", "generate"], ["config"], ["config", "show"], ["ledger"], ["ledger", "validate"],
    ["ledger", "merge"], ["ledger", "stats"], ["ledger", "find"], ["ledger", "erase"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "top")
def test_help(command):
    result = CliRunner().invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output


def test_top_help_lists_exit_codes():
    result = CliRunner().invoke(app, ["--help"])
    for code in ExitCode:
        assert f"\n    {int(code)} " in result.output


def test_the_readme_lists_every_exit_code_as_the_enum_says():
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    table = readme.split("### Exit codes", 1)[1].split("\n\n", 2)[1]
    rows = [line.split("|")[1:3] for line in table.splitlines()[2:]]
    assert [int(code) for code, _ in rows] == [int(c) for c in ExitCode]
    for (_, meaning), code in zip(rows, ExitCode):
        assert meaning.strip().startswith(code.meaning.split(" (")[0]), (code, meaning)


def test_installed_console_script_runs():
    result = subprocess.run([str(SCRIPT), "--version"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    assert result.stdout.startswith("scan-pipeline ")
