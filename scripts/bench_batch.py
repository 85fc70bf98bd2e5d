"""Batch throughput: pages per minute on all cores, memory per worker, and scaling with batch size.

    python scripts/bench_batch.py [--pages 100] [--runs local:10,local:16,local:100,dask:16] [--workers 2]
                                  [--repeat-small 3] [--repeat-large 3] [--dpi 300] [--seed 7] [--tesseract-pages 16]
                                  [--work build/bench-batch] [--out bench-batch.json] [--keep]

1. Generates a corpus of --pages pages (--pages/2 sheets, every mode and format, scans at --dpi);
   a run `EXECUTOR:N` processes its first N pages (whole files).
2. Times the whole command `scan-pipeline process PAGES --ledger L --workers W --executor E -q` of
   each run (wall clock, start-up included: a fresh ledger each time), sampling every process of the
   command in /proc four times a second for its peak resident memory. Every run is repeated and its
   median reported, with every attempt in --out: the machine's noise moves a 100-page run by about
   ±1 % from one attempt to the next. Runs of more than 20 pages are made --repeat-large times, one
   after another; shorter ones --repeat-small times, taking turns (local, dask, local, dask...);
   the Dask executor's pages per minute against the local pool's is printed for the same size.
3. Times `tesseract PAGE - -l fra` on --tesseract-pages of the same pages, spread over the batch
   (converted to PNG first, untimed), one OpenMP thread as the pipeline's engines, two ways: plain
   (one page after another) and parallel (N at a time, the most plain Tesseract can do with the
   same cores: throughput against throughput, the stricter). The ratios of the pipeline's wall time
   per page to them hardly depend on the machine; both are printed ("x plain", "x parallel"). (Left
   to its own OpenMP threads, Tesseract 5.3 took 6.6 s a page on a 2-core machine instead of 1.0:
   not a baseline.)

Prints a table and writes --out (JSON). Exit code 0 whatever the figures; non-zero when a command
fails to run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import page_png  # noqa: E402  (a sibling script)

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent / "scan-pipeline"


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):  # a child started from any thread (Dask's nannies)
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return out


def _tree(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(_children(p))
    return out


def _rss_kib(pid: int) -> tuple[int, str]:
    try:
        with open(f"/proc/{pid}/status") as fh:
            fields = dict(line.split(":", 1) for line in fh if ":" in line)
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            cmd = fh.read().replace(b"\0", b" ").decode(errors="replace")
        return int(fields.get("VmHWM", "0 kB").split()[0]), cmd
    except (OSError, ValueError):
        return 0, ""


def timed_command(cmd: list[str], log: Path) -> dict[str, Any]:
    """Run a command; its wall seconds, exit code, and the peak memory of each of its processes."""
    peaks: dict[int, tuple[int, str]] = {}
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with log.open("wb") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT)
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                for pid in _tree(proc.pid):
                    kib, name = _rss_kib(pid)
                    if kib and kib >= peaks.get(pid, (0, ""))[0]:
                        peaks[pid] = (kib, name)
                done.wait(0.25)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        code = proc.wait()
        done.set()
        sampler.join()
    seconds = time.perf_counter() - start
    parent = peaks.pop(proc.pid, (0, ""))[0]
    workers = [kib for kib, name in peaks.values() if "forkserver" in name or "dask" in name or "spawn" in name]
    return {"exit_code": code, "seconds": round(seconds, 2), "parent_peak_mib": round(parent / 1024, 1),
            "worker_peak_mib": round(max(workers) / 1024, 1) if workers else None,
            "processes": len(peaks) + 1}


def count_pages(truth: dict[str, Any], files: list[str] | None = None) -> int:
    return sum(len(f["pages"]) for f in truth["files"] if files is None or f["file"] in files)


def make_corpus(args: argparse.Namespace, work: Path) -> tuple[Path, dict[str, Any]]:
    corpus = work / "corpus"
    truth_path = corpus / "truth.json"
    sheets = max(1, args.pages // 2)
    if not (args.keep and truth_path.exists()):
        shutil.rmtree(corpus, ignore_errors=True)
        cmd = [str(BIN), "samples", "generate", str(corpus), "--sheets", str(sheets), "--seed", str(args.seed),
               "--dpi", str(args.dpi)]
        subprocess.run(cmd, check=True, capture_output=True, timeout=3600)
    return corpus, json.loads(truth_path.read_text(encoding="utf-8"))


def subset(corpus: Path, truth: dict[str, Any], pages: int, target: Path) -> int:
    """The first files of the corpus holding `pages` pages (or a little more: files are whole)."""
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    n = 0
    for f in truth["files"]:
        if n >= pages:
            break
        os.link(corpus / f["file"], target / f["file"])
        n += len(f["pages"])
    return n


def time_tesseract(truth: dict[str, Any], corpus: Path, work: Path, pages: int, parallel: int) -> dict[str, Any]:
    """Wall seconds per page of `tesseract PAGE - -l fra` on the same pages, two ways:

    - plain: one page after another, one OpenMP thread (as every engine of the pipeline runs). Left to
      its own OpenMP threads, Tesseract 5.3 took 6.6 s a page here instead of 1.0 (its threads spin
      waiting for each other on a 2-core machine): no baseline to compare with;
    - parallel: `parallel` at a time with one OpenMP thread each, the most plain Tesseract can do with
      the same cores (the stricter baseline: throughput against throughput)."""
    every = [(f["file"], p["page"]) for f in truth["files"] for p in f["pages"]]
    # spread over the whole batch (its files come in modes: scans, photos, PDFs...), not its first pages
    want = min(pages, len(every))
    picked = sorted({round(k * (len(every) - 1) / max(want - 1, 1)) for k in range(want)})
    pngs = [page_png(corpus / name, page, work / "tesseract" / f"{Path(name).stem}-p{page}.png")
            for name, page in (every[i] for i in picked)]
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_THREAD_LIMIT", "OMP_NUM_THREADS")}
    env["OMP_THREAD_LIMIT"] = "1"

    def one(png: Path) -> int:
        return subprocess.run(["tesseract", str(png), "-", "-l", "fra"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, env=env, timeout=900).returncode

    def timed(at_once: int) -> tuple[float, int]:
        start = time.perf_counter()
        with ThreadPoolExecutor(at_once) as pool:
            codes = list(pool.map(one, pngs))
        return time.perf_counter() - start, sum(1 for c in codes if c)

    plain, plain_failed = timed(1)
    par, par_failed = timed(parallel)
    n = len(pngs) or 1
    return {"pages": len(pngs), "failed": plain_failed + par_failed,
            "plain": {"seconds": round(plain, 2), "seconds_per_page": plain / n,
                      "command": "OMP_THREAD_LIMIT=1 tesseract PAGE.png - -l fra   (one page after another)"},
            "parallel": {"seconds": round(par, 2), "seconds_per_page": par / n, "at_once": parallel,
                         "command": f"OMP_THREAD_LIMIT=1 tesseract PAGE.png - -l fra   ({parallel} at a time)"}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pages", type=int, default=100, help="pages in the big corpus (default 100)")
    ap.add_argument("--runs", default="local:10,local:16,local:100,dask:16",
                    help="comma-separated EXECUTOR:PAGES runs (default local:10,local:16,local:100,dask:16)")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2, help="workers (default: the cores)")
    ap.add_argument("--dpi", type=int, default=300, help="scan resolution of the corpus (default 300)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--tesseract-pages", type=int, default=16)
    ap.add_argument("--repeat-small", type=int, default=3,
                    help="times each run of at most 20 pages is made, in turns; the median is reported (default 3)")
    ap.add_argument("--repeat-large", type=int, default=3,
                    help="times each longer run is made, one after another; the median is reported (default 3)")
    ap.add_argument("--work", type=Path, default=REPO / "build" / "bench-batch")
    ap.add_argument("--out", type=Path, default=REPO / "bench-batch.json")
    ap.add_argument("--keep", action="store_true", help="reuse the corpus of an earlier run")
    args = ap.parse_args(argv)

    work = args.work
    corpus, truth = make_corpus(args, work)
    specs = [r.strip() for r in args.runs.split(",") if r.strip()]
    small = [spec for spec in specs if int(spec.partition(":")[2] or args.pages) <= 20]
    large = [spec for spec in specs if spec not in small]
    order = large * max(1, args.repeat_large) + small * max(1, args.repeat_small)
    attempts: dict[str, list[dict[str, Any]]] = {}
    shutil.rmtree(work / "runs", ignore_errors=True)
    for spec in order:
        executor, _, size = spec.partition(":")
        folder = work / "pages" / spec.replace(":", "-")
        pages = subset(corpus, truth, int(size or args.pages), folder)
        # a fresh folder per attempt: removing the last attempt's thousands of crops right before a run
        # made the file system slow to create this one's (up to 12 % of a 100-page run)
        ledger = work / "runs" / spec.replace(":", "-") / f"attempt-{len(attempts.get(spec, [])) + 1}" / "ledger.csv"
        os.sync()  # the last attempt's writes reach the disk before the clock starts
        cmd = [str(BIN), "process", str(folder), "--ledger", str(ledger), "--workers", str(args.workers),
               "--executor", executor, "-q"]
        got = timed_command(cmd, ledger.parent / "process.log")
        if got["exit_code"] not in (0, 10):
            print(f"{' '.join(cmd)} failed with exit code {got['exit_code']}; see {ledger.parent}/process.log")
            return 1
        got.update(pages=pages, command=" ".join(cmd))
        attempts.setdefault(spec, []).append(got)
    runs: dict[str, Any] = {}
    for spec in specs:
        tries = sorted(attempts[spec], key=lambda a: a["seconds"])
        got = dict(tries[(len(tries) - 1) // 2])  # the median (the lower one of an even count)
        got.update(seconds_per_page=round(got["seconds"] / got["pages"], 3),
                   pages_per_min=round(got["pages"] / got["seconds"] * 60, 1),
                   attempts_seconds=[a["seconds"] for a in attempts[spec]])
        runs[spec] = got
    tess = time_tesseract(truth, corpus, work, args.tesseract_pages, args.workers)

    print(f"\nbatch benchmark: generated pages, scans at {args.dpi} dpi (photos ~100-145 dpi), "
          f"{args.workers} workers, {os.cpu_count()} cores\n")
    print(f"{'run':<14}{'pages':>6}{'seconds':>9}{'s/page':>8}{'pages/min':>10}{'parent MiB':>11}"
          f"{'worker MiB':>11}{'x plain':>9}{'x parallel':>11}")
    for key, r in runs.items():
        r["ratio_to_tesseract"] = round(r["seconds_per_page"] / tess["plain"]["seconds_per_page"], 3)
        r["ratio_to_tesseract_parallel"] = round(r["seconds_per_page"] / tess["parallel"]["seconds_per_page"], 3)
        print(f"{key:<14}{r['pages']:>6}{r['seconds']:>9.1f}{r['seconds_per_page']:>8.2f}{r['pages_per_min']:>10.1f}"
              f"{r['parent_peak_mib']:>11.0f}{(r['worker_peak_mib'] or 0):>11.0f}"
              f"{r['ratio_to_tesseract']:>9.2f}{r['ratio_to_tesseract_parallel']:>11.2f}")
    print(f"\ntesseract on {tess['pages']} of the same pages, wall time per page:\n"
          f"  plain     {tess['plain']['seconds_per_page']:.2f} s  ({tess['plain']['command']})\n"
          f"  parallel  {tess['parallel']['seconds_per_page']:.2f} s  ({tess['parallel']['command']})")
    for spec, got in runs.items():
        executor, _, size = spec.partition(":")
        local = runs.get(f"local:{size}")
        if executor == "dask" and local:
            got["pages_per_min_vs_local"] = round(got["pages_per_min"] / local["pages_per_min"], 3)
            print(f"dask against the local pool, {got['pages']} pages: {got['pages_per_min_vs_local']:.2f} of its "
                  f"pages per minute (medians; seconds dask {got['attempts_seconds']}, "
                  f"local {local['attempts_seconds']})")
    payload = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "args": {k: str(v) for k, v in
                                                                                vars(args).items()},
               "runs": runs, "tesseract": tess, "cores": os.cpu_count()}
    args.out.write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
