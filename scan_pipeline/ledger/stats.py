"""Counting signatures: the definition of a counted signature, totals and the departement chart."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from scan_pipeline.core.errors import MissingDependencyError, OutputError
from scan_pipeline.ledger import dedup
from scan_pipeline.ledger.store import WRITE_HINT, ensure_dir


def counts_as_signer(df: pd.DataFrame) -> np.ndarray:
    """Rows that count as one signer each: not a duplicate, not rejected, not struck out."""
    return ((~df["status"].isin(["duplicate", "rejected"])) & (df["signature"] != "struck")).to_numpy()


def ledger_stats(df: pd.DataFrame, departement: Callable[[str], str] | None = None) -> dict[str, Any]:
    """Counts of a ledger: rows, unique signers, duplicates, flagged, by département and by source."""
    if departement is None:
        from scan_pipeline.core.postcodes import load_postal_list

        departement = load_postal_list().departement
    unique = counts_as_signer(df)
    codes = df["postal_code"].to_numpy(dtype=object)
    dep_of = {c: (departement(c) or "?") if c else "?" for c in pd.unique(codes)}
    deps = np.array([dep_of[c] for c in codes], dtype=object)
    status = df["status"].to_numpy(dtype=object)
    frame = pd.DataFrame({"dep": deps, "src": df["source_file"].to_numpy(dtype=object), "unique": unique,
                          "dup": status == "duplicate"})
    by_dep = frame.groupby("dep").agg(signatures=("unique", "size"), unique_signers=("unique", "sum"),
                                      duplicates=("dup", "sum"))
    by_src = frame.groupby("src").agg(signatures=("unique", "size"), unique_signers=("unique", "sum"),
                                      duplicates=("dup", "sum"))

    def table(t: pd.DataFrame) -> dict[str, dict[str, int]]:
        return {str(k): {c: int(v) for c, v in row.items()} for k, row in t.iterrows()}

    return {
        "signatures": len(df),
        "unique_signers": int(unique.sum()),
        "duplicates": int((status == "duplicate").sum()),
        "flagged": int((df["flags"] != "").sum()),
        "review": int((status == "review").sum()),
        "rejected": int((status == "rejected").sum()),
        "struck": int((df["signature"] == "struck").sum()),
        "possible_duplicates": int(df["flags"].str.contains(dedup.POSSIBLE_FLAG, regex=False).sum()),
        "by_departement": table(by_dep),
        "by_source": table(by_src),
    }


def departement_chart(stats: dict[str, Any], path: Path) -> None:
    """A PNG bar chart of unique signers by département (matplotlib, an optional dependency)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise MissingDependencyError("the chart needs matplotlib, which is not installed",
                                     hint="pip install matplotlib") from None
    items = sorted(stats["by_departement"].items(), key=lambda kv: -kv[1]["unique_signers"])
    labels = [k for k, _ in items]
    values = [v["unique_signers"] for _, v in items]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.3 * len(labels) + 2), 4))
    ax.bar(labels, values, color="#3b6ea8")
    ax.set_xlabel("département")
    ax.set_ylabel("unique signers")
    ax.set_title(f"Unique signers by département ({stats['unique_signers']} in all)")
    ax.tick_params(axis="x", labelrotation=90, labelsize=7)
    fig.tight_layout()
    ensure_dir(Path(path).parent)
    try:
        fig.savefig(path, dpi=120)
    except OSError as exc:
        raise OutputError(f"cannot write the chart: {exc.strerror or exc}", file=str(path), hint=WRITE_HINT) from exc
    finally:
        plt.close(fig)
