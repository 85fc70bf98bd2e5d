"""Fault points: named places where a test makes the program stop as a user or a crash would.

A test sets `SCAN_PIPELINE_FAULTS` to `NAME@N=SIGNAL[,NAME@N=SIGNAL...]`: the N-th time the code
reaches `point(NAME)`, the process sends itself SIGNAL (INT: Ctrl-C, TERM: `kill`, KILL: `kill -9`).
So an interruption lands at a known step of the run instead of racing a timer. Unset (always, but
in tests), a point costs one dictionary lookup.
"""

from __future__ import annotations

import os
import signal

ENV = "SCAN_PIPELINE_FAULTS"
_counts: dict[str, int] = {}


def _plan() -> dict[str, tuple[int, signal.Signals]]:
    plan = {}
    for item in filter(None, (part.strip() for part in os.environ.get(ENV, "").split(","))):
        where, _, sig = item.partition("=")
        name, _, nth = where.partition("@")
        plan[name] = (int(nth or 1), signal.Signals[f"SIG{sig.upper() or 'KILL'}"])
    return plan


def point(name: str) -> None:
    """Reached a named step (see the module doc); does nothing unless a test asked for a fault here."""
    if ENV not in os.environ:
        return
    wanted = _plan().get(name)
    if wanted is None:
        return
    _counts[name] = _counts.get(name, 0) + 1
    if _counts[name] == wanted[0]:
        os.kill(os.getpid(), wanted[1])
