"""Benchmark the handwritten postal code reader on generated cells (and, optionally, pipeline crops).

    python scripts/bench_postal.py --cells 1500 --seed 7 --out bench-postal.json
    python scripts/bench_postal.py --corpus build/c --ledger build/c.csv   # real pipeline crops too

Cells are blank canvases of the sizes a postal code cell has on the sheets (cell heights 40-110 px,
with the margin `cells.cut_row` keeps) written with `synth.write_digits`, i.e. with the MNIST
*generator* digits that no model trains on, then degraded (noise, blur, bilevel, JPEG, low
resolution, a strike-through line, thin gaps where a ruled line was whitened). Every code is drawn
from the real list, written with the writer's habits of the sample generator (a space after the
departement, a dropped leading zero). Prints exact rate, accept rate, error among accepted, time
per cell on one core, the reliability table and the digit images behind the accepted errors;
writes the figures to --out.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_THREAD_LIMIT", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from scan_pipeline.core.config import load_config
from scan_pipeline.core.postcodes import load_postal_list
from scan_pipeline.read.postal import read_postal
from scan_pipeline.synth import samples as synth
from scan_pipeline.synth.cells import generated_cases_traced, misread_images

BINS = (0.0, 0.5, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 1.0001)


def pipeline_cases(corpus: Path, ledger: Path) -> list[tuple[str, str, str, np.ndarray]]:
    """(mode, code, written, crop) from a processed generated corpus (crops beside the ledger)."""
    import csv

    truth = json.loads((corpus / "truth.json").read_text("utf-8"))
    by_key = {}
    for f in truth["files"] if "files" in truth else truth:
        for p in f["pages"]:
            for r in p["rows"]:
                if r.get("written") and r.get("postal_code"):
                    by_key[(f["file"], p["page"], r["row_number"])] = (f.get("mode", "?"), r)
    crops_dir = ledger.with_suffix(".crops")
    out = []
    with ledger.open(encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            name = Path(row["source_file"]).name
            key = next((k for k in by_key if Path(k[0]).name == name and k[1] == int(row["page"])
                        and k[2] == int(row["row_number"])), None)
            path = crops_dir / row["page_sha256"][:16] / f"{int(row['row_number']):02d}-postal_code.png"
            if key is None or not path.exists():
                continue
            mode, r = by_key[key]
            out.append((mode, r["postal_code"], r["postal_written"], cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)))
    return out


def evaluate(cases, images: list[list[int]] | None = None) -> dict:
    """The figures of reading `cases`; with `images` (generated cells), the accepted errors are traced
    to the digit images misread, as a few images can make most of them."""
    plist = load_postal_list()
    config = load_config().postal
    rows = []
    t_total = cpu_total = 0.0
    for group, code, written, crop in cases:
        t0, c0 = time.perf_counter(), time.process_time()
        d = read_postal(crop, True, None, plist, config)
        t_total += time.perf_counter() - t0
        cpu_total += time.process_time() - c0
        rows.append((group, code, d.value, d.band, d.confidence, d.raw, written))
    n = len(rows)
    right = np.array([r[1] == r[2] for r in rows])
    conf = np.array([r[4] for r in rows])
    band = np.array([r[3] for r in rows])
    acc = band == "accept"
    table = []
    for lo, hi in zip(BINS[:-1], BINS[1:]):
        sel = (conf >= lo) & (conf < hi)
        if sel.any():
            table.append({"bin": f"[{lo:.3f},{min(hi, 1):.3f})", "n": int(sel.sum()),
                          "mean_confidence": round(float(conf[sel].mean()), 4),
                          "accuracy": round(float(right[sel].mean()), 4)})
    groups = {}
    for g in dict.fromkeys(r[0] for r in rows):
        sel = np.array([r[0] == g for r in rows])
        groups[g] = {"n": int(sel.sum()), "exact": round(float(right[sel].mean()), 4),
                     "accepted": round(float(acc[sel].mean()), 4),
                     "error_among_accepted": round(float((~right[sel & acc]).mean()), 4) if (sel & acc).any() else 0.0}
    return {
        "cells": n,
        "exact": round(float(right.mean()), 4),
        "accepted": round(float(acc.mean()), 4),
        "error_among_accepted": round(float((~right[acc]).mean()), 4) if acc.any() else 0.0,
        "errors_among_accepted": int((~right[acc]).sum()),
        "review": round(float((band == "review").mean()), 4),
        "rejected": round(float((band == "reject").mean()), 4),
        "exact_among_review": round(float(right[band == "review"].mean()), 4) if (band == "review").any() else 0.0,
        "ms_per_cell": round(1000 * t_total / max(n, 1), 2),
        "cpu_ms_per_cell": round(1000 * cpu_total / max(n, 1), 2),  # one thread: the same on a quiet machine
        "accept_threshold": config.accept_confidence,
        "reliability": table,
        "by_group": groups,
        "examples_wrong": [{"truth": r[1], "written": r[6], "read": r[2], "raw": r[5], "band": r[3],
                            "confidence": round(r[4], 4)} for r in rows if r[1] != r[2]][:25],
        **({"accepted_errors_by_image": _errors_by_image(rows, acc & ~right, images)} if images else {}),
    }


def _errors_by_image(rows, wrong: np.ndarray, images: list[list[int]]) -> list[dict]:
    """The generator digit images misread in the accepted errors, most often first."""
    _, labels = synth._digits()
    count: dict[int, int] = {}
    for i in np.flatnonzero(wrong):
        for img in misread_images(rows[i][1], rows[i][6], rows[i][2], images[i]):
            count[img] = count.get(img, 0) + 1
    return [{"image": img, "label": int(labels[img]), "accepted_errors": n}
            for img, n in sorted(count.items(), key=lambda t: (-t[1], t[0]))]


def show(title: str, res: dict) -> None:
    print(f"\n== {title}: {res['cells']} cells")
    print(f"exact postal code       {res['exact']:.4f}")
    print(f"auto-accepted           {res['accepted']:.4f}  (threshold {res['accept_threshold']})")
    print(f"error among accepted    {res['error_among_accepted']:.4f}  ({res['errors_among_accepted']} cells)")
    print(f"review / reject         {res['review']:.4f} / {res['rejected']:.4f}")
    print(f"time per cell (1 core)  {res['ms_per_cell']:.1f} ms wall clock, {res['cpu_ms_per_cell']:.1f} ms CPU")
    print("reliability:  bin              n     mean conf  accuracy")
    for b in res["reliability"]:
        print(f"              {b['bin']:16s} {b['n']:5d}   {b['mean_confidence']:.4f}    {b['accuracy']:.4f}")
    if res.get("accepted_errors_by_image"):
        by_image = res["accepted_errors_by_image"]
        print(f"accepted errors by digit image: {len(by_image)} images;", ", ".join(
            f"#{b['image']} (a {b['label']}) {b['accepted_errors']}" for b in by_image[:5]))
    print("by group:", ", ".join(f"{g} {v['exact']:.3f}/{v['accepted']:.3f}/{v['error_among_accepted']:.3f}"
                                 for g, v in res["by_group"].items()), "(exact/accepted/error among accepted)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=1600)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--corpus", type=Path, help="a generated corpus (with truth.json) already processed")
    parser.add_argument("--ledger", type=Path, help="the ledger written by `scan-pipeline process CORPUS`")
    parser.add_argument("--out", type=Path, default=Path("bench-postal.json"))
    parser.add_argument("--model", type=Path, help="a digit model file to measure instead of the bundled one")
    args = parser.parse_args(argv)
    cv2.setNumThreads(1)
    from scan_pipeline.read import digits

    if args.model:
        model = digits.model_from_bytes(args.model.read_bytes())
        digits.load_model = lambda: model  # read_postal looks it up at each call
    digits.load_model()  # loading is once per worker, not per cell: keep it out of the timing
    results = {"generated": evaluate(*generated_cases_traced(args.cells, args.seed))}
    show("generated cells", results["generated"])
    if args.corpus and args.ledger:
        results["pipeline_crops"] = evaluate(pipeline_cases(args.corpus, args.ledger))
        show(f"pipeline crops of {args.corpus}", results["pipeline_crops"])
    args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"\nwritten {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
