"""Run-length and ink-share helpers over masks, shared by the grid, the cells and the digit reader."""

from __future__ import annotations

import numpy as np


def runs(flags: np.ndarray, join: int = 0) -> list[tuple[int, int]]:
    """[start, end) of the runs of True in a 1-D array; runs at most `join` apart are one."""
    d = np.diff(np.r_[0, np.asarray(flags, bool).astype(np.int8), 0])
    starts, ends = np.flatnonzero(d == 1), np.flatnonzero(d == -1)
    if join > 0 and len(starts) > 1:
        apart = starts[1:] - ends[:-1] > join
        starts, ends = np.r_[starts[:1], starts[1:][apart]], np.r_[ends[:-1][apart], ends[-1:]]
    return list(zip(starts.tolist(), ends.tolist()))


def ink_share(mask: np.ndarray, axis: int) -> np.ndarray:
    """The share of inked (non-zero) pixels across `axis`: counted, the same floats as a mean of the
    mask's booleans at a fraction of the time on a whole page."""
    share: np.ndarray = np.count_nonzero(mask, axis=axis) / mask.shape[axis]
    return share
