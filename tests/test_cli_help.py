"""Every command answers --help, and the exit codes are documented there."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from scan_pipeline.cli import app
from scan_pipeline.core.errors import ExitCode

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


def test_usage_lines_read_as_words():
    """`INPUT...`, `--id ID`: not typer's `{inputs}...`, `<list[str]>`, `<int range>` (see cli.py)."""
    process = CliRunner().invoke(app, ["process", "--help"], terminal_width=100).output
    assert "Usage: scan-pipeline process [OPTIONS] INPUT...\n" in process
    assert "\n  INPUT...  Scans" in process and "-w, --workers WORKERS" in process
    erase = CliRunner().invoke(app, ["ledger", "erase", "--help"], terminal_width=100).output
    assert "Usage: scan-pipeline ledger erase [OPTIONS] LEDGER\n" in erase and "--id ID " in erase
    for command in COMMANDS:
        text = CliRunner().invoke(app, [*command, "--help"], terminal_width=100).output
        assert not re.search(r"[{}]|<[a-z][^>]*>", text), (command, text)


def test_top_help_lists_exit_codes():
    result = CliRunner().invoke(app, ["--help"])
    for code in ExitCode:
        assert f"\n    {int(code)} " in result.output


def test_docs_cli_md_is_what_the_code_says():
    """docs/cli.md (exit codes, every command's --help) is generated: stale, it fails here and in make lint."""
    root = Path(__file__).resolve().parent.parent
    result = subprocess.run([sys.executable, str(root / "scripts" / "cli_docs.py"), "--check"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    page = (root / "docs" / "cli.md").read_text(encoding="utf-8")
    table = page.split("## Exit codes", 1)[1].split("\n\n", 2)[1]
    rows = [line.split("|")[1:3] for line in table.splitlines()[2:]]
    assert [(int(code), meaning.strip()) for code, meaning in rows] == [(int(c), c.meaning) for c in ExitCode]
    for command in COMMANDS:
        assert f"\n## {' '.join(['scan-pipeline', *command])}\n" in page


def test_readme_links_resolve():
    root = Path(__file__).resolve().parent.parent
    readme = (root / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 150
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", readme):
        if "://" not in target:
            assert (root / target).exists(), target


def test_installed_console_script_runs():
    result = subprocess.run([str(SCRIPT), "--version"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    assert result.stdout.startswith("scan-pipeline ")
