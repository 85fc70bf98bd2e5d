"""Names and signatures: accuracy, calibration and speed.

    python scripts/bench_names.py dev [--part tune|heldout] [--fit] [--limit N]
    python scripts/bench_names.py sheets --sheets 6 --seed 4 [--out build/bench-names]
    python scripts/bench_names.py speed

`dev` reads the real handwritten crops of ../shared/data/names-dev/ (never copied into the repository;
skipped cleanly when the folder is absent). Crops whose number is divisible by 5 are the held-out part:
tune on `--part tune`, measure `--part heldout` once at the end. `--fit` fits the confidence
calibration (names.CALIBRATION) on the part read and prints it.

`sheets` generates sheets (scan_pipeline.synth), runs the whole pipeline on them, and scores names,
signature states and empty rows against the truth. `speed` times name + signature per row on one core.

Names are compared case- and accent-insensitively (word order kept for `dev`, ignored for sheets as the
ledger's deduplication does). CER is the edit distance over the truth's length.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_THREAD_LIMIT", "1")

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from rapidfuzz.distance import Levenshtein  # noqa: E402

from scan_pipeline.core.config import load_config
from scan_pipeline.core.errors import MissingDependencyError
from scan_pipeline.core.text import fold
from scan_pipeline.read import names
from scan_pipeline.read.engines import rapid_engine, tesseract_engine
from scan_pipeline.read.lexicon import load_lexicon

DEV = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "names-dev"


def _key(text: str) -> str:
    return " ".join(fold(text).replace("-", " ").split())


def score(rows: list[dict], accept: float) -> dict:
    """rows: truth, value, confidence. Exact, CER, accept rate and accuracy among accepted."""
    n = len(rows)
    if not n:
        return {}
    exact = [_key(r["value"]) == _key(r["truth"]) for r in rows]
    cer = sum(Levenshtein.distance(_key(r["value"]), _key(r["truth"])) for r in rows) / max(
        1, sum(len(_key(r["truth"])) for r in rows))
    acc = [e for e, r in zip(exact, rows) if r["confidence"] >= accept]
    return {"n": n, "exact": round(sum(exact) / n, 4), "cer": round(cer, 4),
            "accepted": round(len(acc) / n, 4), "accepted_right": round(sum(acc) / len(acc), 4) if acc else None,
            "tesseract_exact": round(sum(_key(r["tess"]) == _key(r["truth"]) for r in rows) / n, 4),
            "rapid_exact": round(sum(_key(r["rapid"]) == _key(r["truth"]) for r in rows) / n, 4)}


def fit_calibration(rows: list[dict]) -> dict[str, float]:
    """Logistic regression (Newton steps, a little ridge) of rightness on the reader's features."""
    keys = ["log_posterior", "agree", "tess_conf", "in_lexicon"]
    X = np.array([[1.0] + [r["features"][k] for k in keys] for r in rows])
    X[:, 1] = np.maximum(X[:, 1], -10)
    y = np.array([float(_key(r["value"]) == _key(r["truth"])) for r in rows])
    w = np.zeros(X.shape[1])
    for _ in range(50):
        p = 1 / (1 + np.exp(-X @ w))
        g = X.T @ (p - y) + 0.01 * w
        H = X.T @ (X * (p * (1 - p))[:, None]) + 0.01 * np.eye(len(w))
        w -= np.linalg.solve(H, g)
    return {"bias": round(float(w[0]), 3), **{k: round(float(v), 3) for k, v in zip(keys, w[1:])}}


def reliability(rows: list[dict]) -> list[tuple[str, int, float]]:
    out = []
    for lo, hi in [(0, .3), (.3, .6), (.6, .8), (.8, .9), (.9, .95), (.95, .98), (.98, .99), (.99, 1.01)]:
        sel = [r for r in rows if lo <= r["confidence"] < hi]
        if sel:
            out.append((f"{lo:.2f}-{min(hi, 1):.2f}", len(sel),
                        round(sum(_key(r["value"]) == _key(r["truth"]) for r in sel) / len(sel), 3)))
    return out


def accept_threshold_for(rows: list[dict], target: float = 0.99) -> float | None:
    """The lowest confidence whose accepted names are at least `target` right."""
    ranked = sorted(rows, key=lambda r: -r["confidence"])
    right, best = 0, None
    for i, r in enumerate(ranked, 1):
        right += _key(r["value"]) == _key(r["truth"])
        if right / i >= target:
            best = r["confidence"]
    return best


def run_dev(args: argparse.Namespace) -> dict:
    if not (DEV / "labels.csv").exists():
        print(f"names-dev not found at {DEV}: skipped", file=sys.stderr)
        return {}
    with open(DEV / "labels.csv", encoding="utf-8") as fh:
        labels = list(csv.DictReader(fh))
    held = [int(r["file"][6:11]) % 5 == 0 for r in labels]
    part = [r for r, h in zip(labels, held) if h == (args.part == "heldout")][:args.limit or None]
    config = load_config().names
    tess, rapid = tesseract_engine(), rapid_engine()
    lexicon = load_lexicon()
    rows, seconds = [], 0.0
    for r in part:
        crop = cv2.imread(str(DEV / r["file"]), cv2.IMREAD_GRAYSCALE)
        start = time.perf_counter()
        found = names.read_name_details(crop, tess, config, rapid, lexicon)
        seconds += time.perf_counter() - start
        rows.append({"truth": r["label"], "value": found.value if found else "", "tess": found.tess if found else "",
                     "rapid": found.rapid if found else "", "confidence": found.confidence if found else 0.0,
                     "features": dict(found.features) if found else {}})
    result = {"part": args.part, **score(rows, config.accept_confidence),
              "ms_per_name": round(1000 * seconds / max(1, len(rows)), 1),
              "reliability": reliability(rows), "threshold_for_99": accept_threshold_for(rows)}
    if args.fit:
        result["calibration"] = fit_calibration([r for r in rows if r["features"]])
    if args.errors:
        for r in rows:
            if _key(r["value"]) != _key(r["truth"]):
                print(f'{r["truth"]:>16} <- {r["value"]:<16} tess={r["tess"]!r} rapid={r["rapid"]!r} '
                      f'conf={r["confidence"]:.2f}', file=sys.stderr)
    return result


class _NoPostal:
    flags: tuple[str, ...] = ()
    valid = False
    commune = ""

    def to_field(self):
        from scan_pipeline.core.records import FieldReading

        return FieldReading("", "", 0.0, "reject")


def run_sheets(args: argparse.Namespace) -> dict:
    from scan_pipeline.core.template import load_template
    from scan_pipeline.run.batch import run_batch
    from scan_pipeline.run.process import WorkerContext
    from scan_pipeline.synth.samples import generate

    out = Path(args.out)
    if not (out / "truth.json").exists():
        generate(out, load_template(), args.sheets, args.seed)
    truth = json.loads((out / "truth.json").read_text(encoding="utf-8"))
    ledger = out.with_suffix(".csv")
    for p in (ledger, ledger.with_suffix(".details.jsonl"), ledger.with_suffix(".pages.jsonl")):
        p.unlink(missing_ok=True)
    from scan_pipeline.run import process as pipeline

    ctx = WorkerContext.build()
    second = rapid_engine()
    if "second" not in pipeline.read_row.__code__.co_names and second is not None:
        # until pipeline.read_row passes the second engine itself
        pipeline.read_name = lambda crop, ink, engine, config: names.read_name(crop, ink, engine, config, second)  # noqa: E731
    real_postal = pipeline.read_postal

    def read_postal(*a, **k):  # names and signatures are measured even while the postal reader is rebuilt
        try:
            return real_postal(*a, **k)
        except MissingDependencyError:
            return _NoPostal()

    pipeline.read_postal = read_postal
    if "row_ink" not in pipeline.read_row.__code__.co_names:
        # until pipeline.read_row takes the row's ink from its cut cells (cells.row_ink)
        from scan_pipeline.page.cells import row_ink
        from scan_pipeline.read.signature import signature_state

        cut: dict[str, object] = {}
        real_read_row = pipeline.read_row

        def read_row(masks, row, cells, *a, **k):
            cut["current"] = cells
            return real_read_row(masks, row, cells, *a, **k)

        pipeline.read_row = read_row
        pipeline.signature_state = lambda share, ink, config: signature_state(  # noqa: E731
            share, row_ink(cut["current"]) if cut.get("current") is not None else ink, config)
    run_batch([str(out)], ledger, context=ctx, reprocess=True)
    with open(ledger, encoding="utf-8") as fh:
        got = {(r["source_file"], int(r["page"]), int(r["row_number"])): r for r in csv.DictReader(fh)}
    accept = load_config().names.accept_confidence
    rows, sig_right, sig_n, empty_right, empty_n, sig_confusion = [], 0, 0, 0, 0, {}
    for f in truth["files"]:
        for page in f["pages"]:
            for t in page["rows"]:
                g = got.get((str(out / f["file"]), page["page"], t["row_number"]))
                if not t["written"]:
                    empty_n += 1
                    empty_right += g is None
                    continue
                state = g["signature"] if g else "empty"
                sig_n += 1
                sig_right += state == t["signature"]
                sig_confusion[f'{t["signature"]}->{state}'] = sig_confusion.get(f'{t["signature"]}->{state}', 0) + 1
                value = g["name"] if g else ""
                conf = float(g["name_confidence"] or 0) if g else 0.0
                # word order ignored, as the ledger's deduplication does
                tw, vw = sorted(_key(t["name"]).split()), sorted(_key(value).split())
                rows.append({"truth": " ".join(tw), "value": " ".join(vw), "confidence": conf,
                             "tess": "", "rapid": ""})
    res = score(rows, accept)
    res.pop("tesseract_exact"), res.pop("rapid_exact")
    return {"sheets": args.sheets, "seed": args.seed, **res, "signature_right": round(sig_right / max(1, sig_n), 4),
            "signature_rows": sig_n, "signature_confusion": sig_confusion,
            "empty_rows_right": round(empty_right / max(1, empty_n), 4), "empty_rows": empty_n,
            "reliability": reliability(rows)}


def _row_cells(name_png: Path, margin: float):
    """A row's cut cells back from the crops the pipeline wrote (each cut with `margin` of the row height
    around its cell), for cells.row_ink as the pipeline calls it."""
    from scan_pipeline.core.records import Box, RowCells

    crops, boxes = [], []
    for column in ("name", "postal_code", "signature"):
        crop = cv2.imread(str(name_png).replace("-name.png", f"-{column}.png"), cv2.IMREAD_GRAYSCALE)
        m = int(crop.shape[0] * margin / (1 + 2 * margin))
        crops.append((column, crop))
        boxes.append((column, Box(0, 0, crop.shape[1] - 2 * m, crop.shape[0] - 2 * m)))
    return RowCells(0, tuple(boxes), tuple(crops), ())


def run_speed(args: argparse.Namespace) -> dict:
    """Name + signature per written row on one core, on crops the pipeline wrote (`process` first)."""
    from scan_pipeline.page.cells import row_ink
    from scan_pipeline.read.signature import signature_state

    crops = sorted(Path(args.crops).glob("*/*-name.png"))[:args.limit or 200]
    config = load_config()
    tess, rapid = tesseract_engine(), rapid_engine()
    load_lexicon()
    total = cpu = 0.0
    for p in crops:
        cells = _row_cells(p, config.cells.margin)
        name, sig = cells.crop("name"), cells.crop("signature")
        start, start_cpu = time.perf_counter(), time.process_time()
        names.read_name(name, True, tess, config.names, rapid)
        width = dict(cells.boxes)["signature"].width
        inner = sig[:, (sig.shape[1] - width) // 2:][:, :width]
        signature_state(float((inner < 200).mean()), row_ink(cells), config.signature)
        total += time.perf_counter() - start
        cpu += time.process_time() - start_cpu
    # CPU seconds of this one-threaded process are the figure for one core; the wall clock also counts
    # the time other processes hold the core
    return {"rows": len(crops), "ms_per_row": round(1000 * total / max(1, len(crops)), 1),
            "cpu_ms_per_row": round(1000 * cpu / max(1, len(crops)), 1), "load_average": os.getloadavg()[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    d = sub.add_parser("dev")
    d.add_argument("--part", choices=["tune", "heldout"], default="tune")
    d.add_argument("--limit", type=int, default=0)
    d.add_argument("--fit", action="store_true")
    d.add_argument("--errors", action="store_true")
    s = sub.add_parser("sheets")
    s.add_argument("--sheets", type=int, default=6)
    s.add_argument("--seed", type=int, default=4)
    s.add_argument("--out", default="build/bench-names")
    sp = sub.add_parser("speed")
    sp.add_argument("--crops", default="build/bench-names.crops")
    sp.add_argument("--limit", type=int, default=200)
    args = parser.parse_args()
    result = {"dev": run_dev, "sheets": run_sheets, "speed": run_speed}[args.what](args)
    print(json.dumps(result, ensure_ascii=False, indent=1, default=lambda v: v if not math.isnan(v) else None))


if __name__ == "__main__":
    main()
