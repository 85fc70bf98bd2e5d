"""Every command answers --help, and the exit codes are documented there."""

from __future__ import annotations

import subprocess

import pytest
from typer.testing import CliRunner

from scan_pipeline.cli import app

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
    for code in ("0", "2", "3", "4", "5", "6", "7", "10", "130"):
        assert f"\n    {code} " in result.output


def test_installed_console_script_runs():
    result = subprocess.run([str(SCRIPT), "--version"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    assert result.stdout.startswith("scan-pipeline ")
