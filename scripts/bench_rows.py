"""Written rows: blank rows with artefacts must stay out of the ledger, rows written with light pens in.

    python scripts/bench_rows.py [--pages 8] [--seed 2027] [--modes scan,gray,bilevel,photo]
                                 [--work build/bench-rows] [--out bench-rows.json]

A row is written when any of its cells holds writing (../shared/DESIGN.md, "Written row"); specks,
ruled-line fragments, shadow edges, folds and a stray pen touch are not writing. For each mode,
--pages generated pages (page 2 of the sheet: 24 rows) are written by the sample generator
(`synth.make_page`) like this: the first third of the rows ordinarily (any signer, any pen, ~4 %
left blank); then, in the other rows, blank rows carrying one artefact each (`synth.ARTEFACTS`, in
turn), rows written with a hairline (1 px) or a faint (pencil gray) pen (`synth.PENS`, in turn:
name, postal code and signature), and a few ordinary blank rows. Each page is saved as the mode's
file format, loaded (`load.iter_pages`) and read by the real page function
(`pipeline.process_page`, `WorkerContext.build()`, in this process). A row goes in the ledger
when its RowReading is not `is_blank`. Printed, per mode:

- blank rows with an artefact written to the ledger, per artefact kind (target 0);
- rows written with a hairline or faint pen kept in the ledger, per pen (target all), and how many
  of them had their name, postal code and signature seen (a name or code read, the signature not
  empty when it was signed or struck); in bilevel, how many still have their writing in the image
  at all (a faint pen lighter than the scanner's threshold leaves nothing, or a few dots);
- the plain rows: ordinary blank rows written, ordinary written rows kept.

Seeds: thresholds were tuned on seed 7 (`--seed 7`); the figures reported (docs/benchmarks.md) are
on the default seed 2027, never tuned on. The exit code is 0 whatever the figures.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_THREAD_LIMIT", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from datetime import UTC, datetime  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

from scan_pipeline.core.config import load_config
from scan_pipeline.core.postcodes import load_postal_list
from scan_pipeline.core.template import load_template
from scan_pipeline.page.load import InputFile, iter_pages
from scan_pipeline.run.process import WorkerContext, process_page
from scan_pipeline.synth import samples as synth

MODES = ("scan", "gray", "bilevel", "photo")
FORMAT = {"scan": "png", "gray": "png", "bilevel": "tiff", "photo": "jpg"}
SHEET_PAGE = 2  # 24 rows
ORDINARY_SHARE = 1 / 3  # the first third of the rows is written as the generator writes any sheet
ARTEFACT_ROWS, PEN_ROWS = 8, 6  # of the 16 other rows; the rest stay plainly blank
BLACK_LEFT = 60  # black pixels in a bilevel pen row's cells for its writing to count as still there


def plan_page(numbers: list[int], k: int) -> tuple[list[tuple[int, str]], list[tuple[int, str]], list[int]]:
    """The artefact rows, pen rows and plain blank rows of the k-th page of a mode (kinds in turn)."""
    rest = numbers[int(round(len(numbers) * ORDINARY_SHARE)):]
    arts = [(n, synth.ARTEFACTS[(k * ARTEFACT_ROWS + i) % len(synth.ARTEFACTS)])
            for i, n in enumerate(rest[0:2 * ARTEFACT_ROWS:2])]
    others = [n for n in rest if n not in dict(arts)]
    pens = [(n, synth.PENS[(k * PEN_ROWS + i) % len(synth.PENS)]) for i, n in enumerate(others[:PEN_ROWS])]
    return arts, pens, others[PEN_ROWS:]


def _new_tally() -> dict[str, Any]:
    return {"artefacts": {a: [0, 0] for a in synth.ARTEFACTS},  # [written to the ledger, rows]
            "pens": {p: {"kept": 0, "rows": 0, "name_seen": 0, "postal_seen": 0, "signature_seen": 0,
                         "signed_rows": 0} for p in synth.PENS},
            "plain_blank": [0, 0], "plain_written": [0, 0], "pages_failed": 0, "pages": 0}


def ink_left(image: Any, row: dict) -> bool:
    """Whether a pen row's writing is still in a bilevel image: some black pixels inside its cells
    (a faint pen's ink lighter than the scanner's threshold is gone)."""
    import cv2

    px = np.asarray(image.convert("L"))
    black = 0
    for column in ("name", "postal_code", "signature"):
        x0, y0, x1, y1 = row["cells"][column]
        ink = (px[max(0, y0):y1, max(0, x0):x1] < 128).astype(np.uint8)
        # the ruled lines (the boxes of a turned page take them in) are long straight runs
        lines = cv2.morphologyEx(ink, cv2.MORPH_OPEN, np.ones((1, 25), np.uint8)) | \
            cv2.morphologyEx(ink, cv2.MORPH_OPEN, np.ones((25, 1), np.uint8))
        black += int((ink & ~cv2.dilate(lines, np.ones((5, 5), np.uint8)).astype(bool)).sum())
    return black >= BLACK_LEFT


def score_page(tally: dict[str, Any], truth_rows: list[dict], result: Any, image: Any = None) -> None:
    found = {r.row_number: r for r in result.rows}
    tally["pages"] += 1
    if not result.rows:
        tally["pages_failed"] += 1
    for t in truth_rows:
        r = found.get(t["row_number"])
        in_ledger = r is not None and not r.is_blank
        if t.get("artefacts"):
            cell = tally["artefacts"][t["artefacts"][0]]
            cell[0] += in_ledger
            cell[1] += 1
        elif t.get("pen"):
            p = tally["pens"][t["pen"]]
            p["rows"] += 1
            p["kept"] += in_ledger
            if image is not None:
                p["ink_left"] = p.get("ink_left", 0) + ink_left(image, t)
            if r is not None:
                p["name_seen"] += bool(r.name.value or r.name.raw)
                p["postal_seen"] += bool(r.postal.raw)
            if t["signature"] != "empty":
                p["signed_rows"] += 1
                p["signature_seen"] += r is not None and r.signature != "empty"
        elif t["written"]:
            tally["plain_written"][0] += in_ledger
            tally["plain_written"][1] += 1
        else:
            tally["plain_blank"][0] += in_ledger
            tally["plain_blank"][1] += 1


def run_mode(mode: str, pages: int, seed: int, work: Path, ctx: WorkerContext, codes: tuple[str, ...],
             template: Any) -> dict[str, Any]:
    tally = _new_tally()
    numbers = list(template.rows_on_page(SHEET_PAGE))
    fill_to = ORDINARY_SHARE
    for k in range(pages):
        rng = np.random.default_rng((seed, MODES.index(mode), k))
        people = synth.people_from(codes, rng)
        style = synth._style(rng, template)
        dpi = synth._dpi_for(mode, rng)
        arts, pens, _ = plan_page(numbers, k)
        conditions = synth.Conditions(artefacts=tuple(arts), pens=tuple(pens), marks_seed=seed * 1000 + k)
        image, info = synth.make_page(template, SHEET_PAGE, mode, rng, people, style, dpi, fill_to, conditions)
        path = work / f"{mode}-{k:03d}.{FORMAT[mode]}"
        image_dpi = image.width / (template.paper_mm[0] / 25.4) if mode == "photo" else dpi
        synth._save([image], path, FORMAT[mode], image_dpi)
        page = next(iter_pages(InputFile(path, str(path))))
        score_page(tally, info["rows"], process_page(page, ctx), image if mode == "bilevel" else None)
    return tally


def _share(a: int, n: int) -> str:
    return f"{a}/{n}" if n else "-"


def show(results: dict[str, dict[str, Any]]) -> None:
    modes = list(results)
    head = f"{'':34s}" + "".join(f"{m:>12s}" for m in modes)
    print("\nblank rows with an artefact written to the ledger (target 0)")
    print(head)
    for a in synth.ARTEFACTS:
        print(f"  {a:32s}" + "".join(f"{_share(*results[m]['artefacts'][a]):>12s}" for m in modes))
    print("\nrows written with a light pen kept in the ledger (target all)")
    print(head)
    for p in synth.PENS:
        print(f"  {p:32s}" + "".join(
            f"{_share(results[m]['pens'][p]['kept'], results[m]['pens'][p]['rows']):>12s}" for m in modes))
        if any("ink_left" in results[m]["pens"][p] for m in modes):
            print(f"{'    bilevel: writing left in image':34s}" + "".join(
                f"{_share(results[m]['pens'][p]['ink_left'], results[m]['pens'][p]['rows']):>12s}"
                if "ink_left" in results[m]["pens"][p] else f"{'':>12s}" for m in modes))
        for what, n in (("name_seen", "rows"), ("postal_seen", "rows"), ("signature_seen", "signed_rows")):
            label = f"    {what.replace('_', ' ')}"
            print(f"{label:34s}" + "".join(
                f"{_share(results[m]['pens'][p][what], results[m]['pens'][p][n]):>12s}" for m in modes))
    print("\nplain rows")
    print(head)
    print(f"  {'blank rows written (target 0)':32s}" + "".join(
        f"{_share(*results[m]['plain_blank']):>12s}" for m in modes))
    print(f"  {'written rows kept (target all)':32s}" + "".join(
        f"{_share(*results[m]['plain_written']):>12s}" for m in modes))
    print(f"  {'pages without rows read':32s}" + "".join(
        f"{_share(results[m]['pages_failed'], results[m]['pages']):>12s}" for m in modes))


def totals(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    art = [sum(r["artefacts"][a][i] for r in results.values() for a in synth.ARTEFACTS) for i in (0, 1)]
    kept = [sum(r["pens"][p][k] for r in results.values() for p in synth.PENS) for k in ("kept", "rows")]
    return {"artefact_rows_written": art[0], "artefact_rows": art[1], "pen_rows_kept": kept[0],
            "pen_rows": kept[1],
            "plain_blank_written": sum(r["plain_blank"][0] for r in results.values()),
            "plain_blank_rows": sum(r["plain_blank"][1] for r in results.values()),
            "plain_written_kept": sum(r["plain_written"][0] for r in results.values()),
            "plain_written_rows": sum(r["plain_written"][1] for r in results.values())}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pages", type=int, default=8, help="pages per mode (default 8)")
    ap.add_argument("--seed", type=int, default=2027, help="generator seed (default 2027; tuned on 7)")
    ap.add_argument("--modes", default=",".join(MODES), help="comma-separated, of " + ", ".join(MODES))
    ap.add_argument("--work", type=Path, default=Path("build/bench-rows"),
                    help="the page files (default build/bench-rows)")
    ap.add_argument("--out", type=Path, default=Path("bench-rows.json"), help="results JSON")
    ap.add_argument("--config", type=Path, help="a config override file (thresholds to try)")
    args = ap.parse_args(argv)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        ap.error(f"unknown mode(s): {', '.join(unknown)}")
    args.work.mkdir(parents=True, exist_ok=True)
    import cv2

    cv2.setNumThreads(1)
    template = load_template()
    ctx = WorkerContext.build(template, load_config(args.config))
    codes = tuple(load_postal_list().codes)
    results, seconds = {}, {}
    for mode in modes:
        start = time.perf_counter()
        results[mode] = run_mode(mode, args.pages, args.seed, args.work, ctx, codes, template)
        seconds[mode] = round(time.perf_counter() - start, 1)
        print(f"{mode}: {args.pages} pages in {seconds[mode]} s", flush=True)
    show(results)
    summary = totals(results)
    print(f"\nall modes: artefact rows written {summary['artefact_rows_written']}/{summary['artefact_rows']}, "
          f"light-pen rows kept {summary['pen_rows_kept']}/{summary['pen_rows']}, plain blank rows written "
          f"{summary['plain_blank_written']}/{summary['plain_blank_rows']}, plain written rows kept "
          f"{summary['plain_written_kept']}/{summary['plain_written_rows']}")
    out = {"command": " ".join(["scripts/bench_rows.py", *(argv if argv is not None else sys.argv[1:])]),
           "seed": args.seed, "pages_per_mode": args.pages, "date": datetime.now(UTC).isoformat(timespec="seconds"),
           "python": platform.python_version(), "seconds": seconds, "totals": summary, "by_mode": results}
    args.out.write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
