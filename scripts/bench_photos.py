"""Benchmark the pipeline on phone photos taken in a hurry (the generator's hardphoto mode, #23).

    python scripts/bench_photos.py --sheets 4 --seed 2051 --out bench-photos.json
    python scripts/bench_photos.py --factors all --sheets 40 --seed 2052   # >= 1,000 written rows

Per factor of `synth.photos.FACTORS` alone, then all together ("all"), `--sheets` sheets are
generated (JPEG, one photo a page), read by the real `scan-pipeline process`, and scored against
the truth by scripts/bench.py's scoring: rows localised, rows in the ledger that match no truth
row (spurious), blank rows written, postal codes and names exact, pages failed, and each failed
page's reason, and the geometry's CPU time a photo beside Tesseract's for a whole photo. Seeds
looked at while tuning the geometry: 11, 2030, 2032, 2033, 2040 and the tests' (41-44, 60-61,
70-89); measure on others (make bench: 2051 for each factor, 2052 for 40 sheets of all of them).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from scan_pipeline.core.template import load_template
from scan_pipeline.ledger.paths import sidecar_paths
from scan_pipeline.synth.photos import FACTORS
from scan_pipeline.synth.samples import generate

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("bench", REPO / "scripts" / "bench.py")
assert _spec is not None and _spec.loader is not None
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)

SHOWN = (("rows_localised", "rows localised"), ("ledger_rows_unmatched", "spurious rows"),
         ("empty_rows_right", "blank rows kept out"), ("postal_exact", "postal exact"),
         ("name_exact", "name exact"), ("pages_failed", "pages failed"))


def run_factor(name: str, factors: tuple[str, ...], sheets: int, seed: int, work: Path) -> dict[str, Any]:
    corpus, ledger = work / name / "corpus", work / name / "out" / "ledger.csv"
    if not (corpus / "truth.json").exists():
        generate(corpus, load_template(None), sheets, seed, ("hardphoto",), ("jpg",), photo_factors=factors)
    shutil.rmtree(ledger.parent, ignore_errors=True)  # the ledger and its sidecars: every page read again
    cli, env = bench.cli_command()
    start = time.perf_counter()
    done = subprocess.run([*cli, "process", str(corpus), "--ledger", str(ledger)], capture_output=True,
                          text=True, env=env)
    seconds = time.perf_counter() - start
    reasons = Counter(line.split(": ", 2)[-1].split(" (")[0] for line in done.stderr.splitlines()
                      if ":page " in line or line.endswith(".jpg") or ".jpg:" in line)
    scored = bench.score_files(corpus, ledger) if ledger.exists() else {"metrics": {}}
    overall = scored["metrics"].get("overall", {})
    return {"factors": list(factors), "seconds": round(seconds, 1), "exit": done.returncode,
            "metrics": {k: overall.get(k) for k, _ in SHOWN}, "failure_reasons": dict(reasons.most_common(5)),
            "geometry_cpu_seconds": geometry_cpu(ledger), "tesseract_page_cpu_seconds": tesseract_cpu(corpus)}


def geometry_cpu(ledger: Path) -> dict[str, float] | None:
    """The geometry's CPU time a photo (load not included), from the pages log: each worker runs one
    thread (OpenCV, Tesseract), so this is the time on one core."""
    log = sidecar_paths(ledger).pages
    if not log.exists():
        return None
    xs = sorted(r["geometry_cpu_seconds"] for r in map(json.loads, log.read_text(encoding="utf-8").splitlines())
                if "geometry_cpu_seconds" in r)
    if not xs:
        return None
    return {"mean": round(sum(xs) / len(xs), 3), "median": xs[len(xs) // 2], "max": xs[-1], "n": len(xs)}


def tesseract_cpu(corpus: Path, photos: int = 3) -> float | None:
    """Tesseract's own CPU time to read a whole photo (`tesseract PHOTO - -l fra`, one thread), the
    yardstick the geometry's time is quoted beside."""
    chosen = sorted(corpus.glob("*.jpg"))[:photos]
    if not chosen or shutil.which("tesseract") is None:
        return None
    env = {**os.environ, "OMP_THREAD_LIMIT": "1"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    for photo in chosen:
        subprocess.run(["tesseract", str(photo), "-", "-l", "fra"], capture_output=True, env=env, check=False)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return round((after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime) / len(chosen), 3)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sheets", type=int, default=4)
    ap.add_argument("--seed", type=int, default=2031)
    ap.add_argument("--factors", default="each,all", help="each (every factor alone), all, or a list: bow,fold")
    ap.add_argument("--work", type=Path, default=Path("build/bench-photos"))
    ap.add_argument("--out", type=Path, default=Path("bench-photos.json"))
    args = ap.parse_args(argv)
    runs: list[tuple[str, tuple[str, ...]]] = []
    for part in args.factors.split(","):
        if part == "each":
            runs += [(f, (f,)) for f in FACTORS]
        elif part == "all":
            runs.append(("all", FACTORS))
        elif part in FACTORS:
            runs.append((part, (part,)))
        else:
            ap.error(f"unknown factor {part!r}: choose each, all or some of {', '.join(FACTORS)}")
    results = {}
    print(f"{'factors':<12}" + "".join(f"{label:>22}" for _, label in SHOWN) + "   reasons")
    for name, factors in runs:
        res = results[name] = run_factor(name, factors, args.sheets, args.seed, args.work)
        cells = [bench.format_value("count" if k in ("ledger_rows_unmatched", "pages_failed") else "",
                                    res["metrics"].get(k)) for k, _ in SHOWN]
        print(f"{name:<12}" + "".join(f"{c:>22}" for c in cells) + "   " + json.dumps(res["failure_reasons"]),
              flush=True)
        cpu = res["geometry_cpu_seconds"]
        if cpu:
            print(f"{'':<12}geometry CPU a photo (one core): mean {cpu['mean']:.2f} s, median {cpu['median']:.2f} s, "
                  f"max {cpu['max']:.2f} s over {cpu['n']}; Tesseract reading a whole photo: "
                  f"{res['tesseract_page_cpu_seconds']} s CPU", flush=True)
    payload = {"sheets": args.sheets, "seed": args.seed, "runs": results}
    args.out.write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
