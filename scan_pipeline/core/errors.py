"""Exit codes and the exceptions that carry them.

Every exception here says what went wrong, where (file, page, row when known) and what to do.
The CLI maps them to exit codes; no other module exits.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Every exit code, with its meaning: the one list `--help`, docs/cli.md and the tests read."""

    OK = 0, "all done"
    USAGE = 2, "usage error"
    BAD_TEMPLATE = 3, "bad template or config"
    NO_INPUT = 4, "no readable input"
    MISSING_DEPENDENCY = 5, "missing dependency (a system package or an optional extra)"
    OUTPUT_NOT_WRITABLE = 6, "output not writable or not readable (or the ledger is locked by another run)"
    INVALID_REVIEW = 7, "invalid review file (nothing applied)"
    INVALID_LEDGER = 8, "the ledger or a file beside it is missing or invalid (each problem is listed)"
    PAGES_FAILED = 10, "finished, but some files or pages failed (each is listed on stderr)"
    INTERRUPTED = 130, "interrupted"

    meaning: str

    def __new__(cls, value: int, meaning: str) -> ExitCode:
        member = int.__new__(cls, value)
        member._value_ = value
        member.meaning = meaning
        return member


EXIT_CODE_HELP = "Exit codes:\n" + "\n".join(f"  {int(c):<3} {c.meaning}" for c in ExitCode)


class PipelineError(Exception):
    """An error a person can act on."""

    exit_code: ExitCode = ExitCode.USAGE

    def __init__(self, message: str, *, hint: str = "", file: str | None = None,
                 page: int | None = None, row: int | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.file = file
        self.page = page
        self.row = row

    @property
    def where(self) -> str:
        parts = [self.file or ""]
        if self.page is not None:
            parts.append(f"page {self.page}")
        if self.row is not None:
            parts.append(f"row {self.row}")
        return ":".join(p for p in parts if p)

    def __str__(self) -> str:
        text = f"{self.where}: {self.message}" if self.where else self.message
        return f"{text}\n  hint: {self.hint}" if self.hint else text


class TemplateError(PipelineError):
    exit_code = ExitCode.BAD_TEMPLATE


class ConfigError(PipelineError):
    exit_code = ExitCode.BAD_TEMPLATE


class NoInputError(PipelineError):
    exit_code = ExitCode.NO_INPUT


class MissingDependencyError(PipelineError):
    exit_code = ExitCode.MISSING_DEPENDENCY


class OutputError(PipelineError):
    exit_code = ExitCode.OUTPUT_NOT_WRITABLE


class ReviewFileError(PipelineError):
    exit_code = ExitCode.INVALID_REVIEW


class InputFileError(PipelineError):
    """One input file or page could not be read; the batch goes on."""

    exit_code = ExitCode.PAGES_FAILED


class LedgerError(PipelineError):
    """The ledger (or a sidecar file) is missing or invalid."""

    exit_code = ExitCode.INVALID_LEDGER


class LedgerLockedError(PipelineError):
    """Another run holds the ledger's lock."""

    exit_code = ExitCode.OUTPUT_NOT_WRITABLE
