"""Ledger benchmark: deduplication quality on generated signers, and merge+dedup speed and memory.

1. Quality: invented signers (scan_pipeline/data/synth_names.json, real postal codes), a share of
   whom sign again with OCR-like noise (accents dropped, case, word order, 1-2 OCR confusions,
   initials): precision and recall of the duplicates found (synth_signers.pair_quality), for sparse and
   dense postal-code blocks. Fixed seeds: the same figures on every run.
2. Speed: a synthetic ledger of --rows rows (default 1,000,000) in two group ledgers (1% of rows
   in both), merged with `merge_ledgers` in a child process: wall time of the whole merge (read,
   dedup, write), the child's CPU seconds and peak RSS (resource.getrusage(RUSAGE_CHILDREN)), and
   the machine's load average before and after (a busy machine stretches the wall time).

    python scripts/bench_ledger.py [--rows N] [--out bench-ledger.json] [--skip-speed]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from scan_pipeline.core.postcodes import load_postal_list
from scan_pipeline.ledger import dedup
from scan_pipeline.ledger.schema import LEDGER_COLUMNS
from scan_pipeline.ledger.store import write_ledger
from scan_pipeline.synth import signers as synth_signers

CHILD = """
import json, sys, time
from pathlib import Path
from scan_pipeline.ledger.merge import merge_ledgers
start = time.perf_counter()
summary = merge_ledgers([Path(p) for p in sys.argv[2:]], Path(sys.argv[1]))
print(json.dumps({"wall_seconds": time.perf_counter() - start, "rows_total": summary.rows_total,
                  "rows_read": summary.rows_read, "same_rows": summary.same_rows,
                  "duplicates": summary.duplicates, "possible_duplicates": summary.possible_duplicates,
                  "stages": summary.seconds}))
"""


def ledger_frame(rows: list[tuple[int, str, str]], seed: int) -> pd.DataFrame:
    """Valid ledger rows for (signer, name, postal code) triples: 30 rows a page, one source file per 1000 pages."""
    n = len(rows)
    rnd = random.Random(seed)
    pages = [hashlib.sha256(f"{seed}-page-{i}".encode()).hexdigest() for i in range((n + 29) // 30)]
    number = [i % 30 + 1 for i in range(n)]
    sha = [pages[i // 30] for i in range(n)]
    names = [r[1] for r in rows]
    codes = [r[2] for r in rows]
    minutes = [f"2026-11-{20 + (i // 30) // 20000:02d}T{(i // 30) // 600 % 24:02d}:{(i // 30) // 10 % 60:02d}:"
               f"{rnd.randrange(60):02d}Z" for i in range(n)]
    return pd.DataFrame({
        "signature_id": [f"{s[:16]}-{k:02d}" for s, k in zip(sha, number, strict=True)],
        "source_file": [f"scans/lot{(i // 30) // 1000:04d}.pdf" for i in range(n)],
        "page": [str((i // 30) % 1000 + 1) for i in range(n)],
        "row_number": [str(k) for k in number], "name": names, "name_ocr": names,
        "name_confidence": ["0.900"] * n, "postal_code": codes, "postal_code_ocr": codes,
        "postal_confidence": ["0.950"] * n, "postal_valid": ["true"] * n, "commune": [""] * n,
        "signature": ["signed"] * n, "status": ["ok"] * n, "flags": [""] * n, "duplicate_of": [""] * n,
        "page_sha256": sha, "processed_at": minutes, "reviewed_by": [""] * n, "reviewed_at": [""] * n,
    }, columns=list(LEDGER_COLUMNS), dtype=str)


def quality(codes: list[str]) -> dict[str, dict]:
    out = {}
    for label, signers, n_codes in (("sparse: 20,000 signers over 2,000 codes", 20_000, 2000),
                                    ("dense: 20,000 signers over 200 codes", 20_000, 200)):
        chosen = random.Random(1).sample(codes, n_codes)
        rows = synth_signers.generated_signers(signers, 0.3, seed=2026, codes=chosen)
        start = time.perf_counter()
        result = dedup.deduplicate(ledger_frame(rows, 5))
        figures = synth_signers.pair_quality([s for s, _, _ in rows], result)
        figures["seconds"] = time.perf_counter() - start
        out[label] = figures
        print(f"{label}: precision {figures['precision']:.4f}, recall {figures['recall']:.4f} "
              f"(with possible duplicates {figures['recall_with_possible']:.4f}); {figures['rows']} rows, "
              f"{figures['repeated_rows']} repeated, {figures['possible_flagged']} flagged possible; "
              f"{figures['seconds']:.1f} s")
    return out


def speed(codes: list[str], rows_wanted: int) -> dict:
    signers = int(rows_wanted / 1.6)  # a repeat share of 0.3 adds 2 rows on average: 1.6 rows a signer
    start = time.perf_counter()
    rows = synth_signers.generated_signers(signers, 0.3, seed=7, codes=codes)[:rows_wanted]
    df = ledger_frame(rows, 11)
    rnd = np.random.default_rng(3)
    in_a = rnd.random(len(df)) < 0.5
    both = rnd.random(len(df)) < 0.01
    with tempfile.TemporaryDirectory() as tmp:
        a, b, out = Path(tmp) / "A.csv", Path(tmp) / "B.csv", Path(tmp) / "M.csv"
        write_ledger(df[in_a | both].reset_index(drop=True), a)
        write_ledger(df[~in_a | both].reset_index(drop=True), b)
        generated = time.perf_counter() - start
        print(f"generated {len(df)} rows in two ledgers ({a.stat().st_size + b.stat().st_size} bytes) "
              f"in {generated:.1f} s; merging...")
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        before = usage.ru_maxrss
        cpu_before = usage.ru_utime + usage.ru_stime
        load_before = os.getloadavg()
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", CHILD, str(out), str(a), str(b)], capture_output=True,
                              text=True, check=False)
        wall = time.perf_counter() - t0
        if proc.returncode:
            raise SystemExit(f"merge failed:\n{proc.stderr}")
        child = json.loads(proc.stdout)
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        peak = usage.ru_maxrss
        cpu = usage.ru_utime + usage.ru_stime - cpu_before
        load_after = os.getloadavg()
    figures = {"rows": len(df), "signers": signers, "process_wall_seconds": wall, **child,
               "process_cpu_seconds": cpu, "peak_rss_mib": peak / 1024, "peak_rss_before_mib": before / 1024,
               "load_average_before": load_before, "load_average_after": load_after}
    print(f"merge+dedup of {child['rows_read']} input rows -> {child['rows_total']}: {child['wall_seconds']:.1f} s "
          f"in the merge ({wall:.1f} s with Python start-up, {cpu:.1f} CPU s), stages "
          + ", ".join(f"{k} {v:.1f} s" for k, v in child["stages"].items())
          + f"; peak RSS {peak / 1024:.0f} MiB; {child['duplicates']} duplicates, "
          f"{child['possible_duplicates']} possible; load average {load_before[0]:.1f} before, "
          f"{load_after[0]:.1f} after ({os.cpu_count()} CPUs)")
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows of the synthetic ledger to merge")
    parser.add_argument("--out", type=Path, help="write the figures to this JSON file")
    parser.add_argument("--skip-speed", action="store_true", help="only the quality figures")
    args = parser.parse_args()
    codes = list(load_postal_list().codes)
    results: dict = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                 "platform": platform.platform()},
                     "quality": quality(codes)}
    if not args.skip_speed:
        results["speed"] = speed(codes, args.rows)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
