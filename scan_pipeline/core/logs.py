"""Logging with the place it is about: `file:page` and `:row N` in every message of a page.

Messages that show a name are logged at DEBUG only (`--verbose`): names are personal data and
the default level must be safe to paste into a bug report.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from contextvars import ContextVar

_where: ContextVar[str] = ContextVar("where", default="")

FORMAT = "%(levelname)s %(where)s%(name)s: %(message)s"


class _WhereFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        where = _where.get()
        record.where = f"{where}: " if where else ""
        return True


@contextlib.contextmanager
def page_context(where: str) -> Iterator[None]:
    """Everything logged inside is prefixed with `where` (e.g. `scans/a.pdf:2`)."""
    token = _where.set(where)
    try:
        yield
    finally:
        _where.reset(token)


def row_context(row: int) -> contextlib.AbstractContextManager[None]:
    """Inside a page's context: `file:page:row N`."""
    return page_context(f"{_where.get()}:row {row}")


def configure_logging(level: int) -> None:
    """Log to stderr at `level`, with the page context; called in the parent and in each worker."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_scan_pipeline", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(FORMAT))
    handler.addFilter(_WhereFilter())
    handler._scan_pipeline = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger("PIL").setLevel(max(level, logging.INFO))  # Pillow's debugging is not ours to show
