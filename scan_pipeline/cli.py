"""The `scan-pipeline` command: parse arguments, call the stages, report, map errors to exit codes."""

from __future__ import annotations

import csv
import functools
import io
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from scan_pipeline import __version__
from scan_pipeline.core.errors import EXIT_CODE_HELP, ExitCode, PipelineError
from scan_pipeline.core.text import display_path, printable
from scan_pipeline.synth.samples import ALL_MODES, FORMATS, MODES


# Usage lines that read as words, as click writes them (`INPUT...`, `--id ID`): typer 0.29's own
# plain help shows `{inputs}...`, `<list[str]>`, `<int range>`. Its parameter classes take no
# formatter, so the three methods that write those are replaced here (tests/test_cli_help.py
# checks the words; pyproject pins typer below 0.30 so that a new layout is seen first).
def _word(param: Any) -> str:
    return param.metavar or param.name.upper()


def _argument_usage(self: Any) -> str:
    name = _word(self) + ("..." if self.nargs != 1 else "")
    return name if self.required else f"[{name}]"


def _option_value(self: Any, ctx: Any) -> str | None:
    if self.metavar is not None:
        return str(self.metavar)
    long = max(self.opts, key=len).lstrip("-/")
    return long.upper().replace("-", "_") + ("..." if self.nargs != 1 else "")


typer.core.TyperArgument._usage_display_name = _argument_usage  # type: ignore[method-assign]
typer.core.TyperArgument._rich_display_name = _argument_usage  # type: ignore[method-assign]
typer.core.TyperArgument.display_type_rich = lambda self, ctx: None  # type: ignore[method-assign]
typer.core.TyperOption.display_type_rich = _option_value  # type: ignore[method-assign]

# no markup unless asked for: a path or a reading may hold [brackets]
err = Console(stderr=True, highlight=False, soft_wrap=True, markup=False)
out = Console(highlight=False, soft_wrap=True, markup=False)

app = typer.Typer(
    name="scan-pipeline",
    help="Turn scanned petition signature sheets into a clean, deduplicated CSV ledger.\n\n\b\n" + EXIT_CODE_HELP,
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)
sheet_app = typer.Typer(help="The printed sheet: blank PDFs and template checks.", no_args_is_help=True)
samples_app = typer.Typer(help="Generated sample sheets with their ground truth.", no_args_is_help=True)
config_app = typer.Typer(help="Thresholds the pipeline decides with.", no_args_is_help=True)
ledger_app = typer.Typer(help="The ledger CSV and its sidecar files.", no_args_is_help=True)
app.add_typer(sheet_app, name="sheet")
app.add_typer(samples_app, name="samples")
app.add_typer(config_app, name="config")
app.add_typer(ledger_app, name="ledger")

F = TypeVar("F", bound=Callable[..., Any])

TemplateOpt = Annotated[Path | None, typer.Option("--template", "-t", metavar="FILE",
                                                  help="Sheet template JSON (default: the bundled sheet).")]
ConfigOpt = Annotated[Path | None, typer.Option("--config", metavar="FILE",
                                                help="Thresholds TOML overriding the bundled ones.")]


def handles_errors(fn: F) -> F:
    """Map the pipeline's errors to their exit codes, with the message and hint on stderr."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except PipelineError as exc:
            # a path may hold [brackets] or a terminal escape: neither is ever sent raw
            err.print(f"[bold red]error:[/] {escape(printable(str(exc)))}", markup=True)
            raise typer.Exit(int(exc.exit_code)) from None
        except KeyboardInterrupt:
            err.print("interrupted: the ledger holds every file finished before the interruption")
            raise typer.Exit(int(ExitCode.INTERRUPTED)) from None

    return wrapper  # type: ignore[return-value]


def _version(value: bool) -> None:
    if value:
        out.print(f"scan-pipeline {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Show the version and exit.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log each stage (may show names).")] = False,
) -> None:
    from scan_pipeline.core.logs import configure_logging

    configure_logging(logging.DEBUG if verbose else logging.WARNING)


# --- process --------------------------------------------------------------------------------

@app.command()
@handles_errors
def process(
    inputs: Annotated[list[str], typer.Argument(metavar="INPUT", show_default=False,
                                                help="Scans (PDF, TIFF, JPEG, PNG, HEIC) or folders of them.")],
    ledger: Annotated[Path, typer.Option("--ledger", "-l", help="The ledger CSV to create or add to.")],
    template: TemplateOpt = None,
    config: ConfigOpt = None,
    workers: Annotated[int | None, typer.Option(
        "--workers", "-w", min=1, max=256, help="Pages read at once, one process each [default: the cores]",
        show_default=False)] = None,
    executor: Annotated[str, typer.Option(
        "--executor", help="Where pages are read: local (processes on this machine) or dask (a Dask cluster; "
                           "needs the dask extra).")] = "local",
    scheduler: Annotated[str | None, typer.Option(
        "--scheduler", help="With --executor dask: the cluster's scheduler, tcp://HOST:PORT "
                            "(default: a cluster of --workers processes on this machine).")] = None,
    report_html: Annotated[Path | None, typer.Option(
        "--report", help="Write a self-contained HTML report of the run here (figures, failures, pages, "
                         "flagged rows).")] = None,
    debug_dir: Annotated[Path | None, typer.Option(
        "--debug-dir", help="Write a grid overlay PNG per page here.")] = None,
    reprocess: Annotated[bool, typer.Option(
        "--reprocess", help="Replace the rows of pages already in the ledger.")] = False,
    quiet: Annotated[bool, typer.Option(
        "--quiet", "-q", help="No progress bar (failures and summary still shown).")] = False,
    wait: Annotated[bool, typer.Option(
        "--wait", help="If another run is writing the ledger, wait for it (else stop at once, exit 6).")] = False,
) -> None:
    """Read every page of each INPUT and add its signatures to the ledger.

    Folders are searched recursively for .pdf .tif .tiff .png .jpg .jpeg .heic .heif files (any
    case). Pages already in the ledger are skipped, so running the same command again adds nothing,
    and a run that was interrupted continues where it stopped. Each row's cell images are written
    beside the ledger (LEDGER.crops/) for review. A file or page that cannot be read is listed on
    stderr with the reason; the others are processed (exit code 10).
    """
    import signal

    from scan_pipeline.core.config import load_config
    from scan_pipeline.core.template import load_template
    from scan_pipeline.run.batch import run_batch
    from scan_pipeline.run.pool import check_executor, default_workers

    tpl = load_template(template)
    cfg = load_config(config)
    chosen = check_executor(executor, scheduler)
    n_workers = workers or default_workers()
    # `kill` (SIGTERM) stops like Ctrl-C: finished pages are written first
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    show = not quiet and err.is_terminal
    bar = _progress_bar(show)
    with bar:
        task = bar.add_task("pages", total=None, rows=0, rate="")

        def step(event: Any) -> None:
            rep = event.report
            seen = rep.pages_done + rep.pages_skipped + rep.pages_failed
            minutes = max(time.perf_counter() - started, 1e-6) / 60
            bar.update(task, completed=seen, total=rep.pages_total or None, rows=rep.rows_read,
                       rate=f"{rep.pages_done / minutes:.0f} pages/min" if rep.pages_done else "")

        started = time.perf_counter()
        try:
            report = run_batch(inputs, ledger, template=tpl, config=cfg, debug_dir=debug_dir, reprocess=reprocess,
                               progress=step, workers=n_workers, executor=chosen, scheduler=scheduler,
                               keep_overlays=report_html is not None, wait=wait)
        except KeyboardInterrupt as exc:
            interrupted = exc.args[0] if exc.args else None
            bar.stop()
            if interrupted is not None:
                _print_summary(interrupted, ledger, debug_dir)
            err.print("interrupted: every page finished before the interruption is in the ledger; "
                      "run the same command again to continue")
            raise typer.Exit(int(ExitCode.INTERRUPTED)) from None
    _print_summary(report, ledger, debug_dir)
    if report_html is not None:
        from scan_pipeline.report.html import write_report

        write_report(report_html, report, ledger)
        err.print(f"report:   {display_path(report_html)}")
    if report.failures:
        raise typer.Exit(int(ExitCode.PAGES_FAILED))


def _progress_bar(show: bool) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[rows]} rows"), TextColumn("{task.fields[rate]}"),
                    TimeElapsedColumn(), TimeRemainingColumn(), console=err, transient=True, disable=not show)


def _print_summary(report: Any, ledger: Path, debug_dir: Path | None) -> None:
    """One screen at the end, on stderr: failures first (always shown), then the figures (a table on a
    terminal, one line otherwise)."""
    for failure in report.failures:
        err.print(f"[red]failed:[/] {escape(str(failure))}", markup=True)
    for retake in report.retakes:
        err.print(f"[yellow]read twice:[/] {escape(str(retake))}", markup=True)
    table = Table(show_header=False, box=None, pad_edge=False)
    rate = f" ({report.pages_per_minute:.0f} pages/min, {report.workers} {report.executor} worker(s))" \
        if report.pages_per_minute else ""
    for label, value in (
        ("pages processed", f"{report.pages_done}{rate}"),
        ("already in the ledger", str(report.pages_skipped)),
        ("pages failed", str(report.pages_failed)),
        ("signature rows added", str(report.rows_added)),
        ("flagged for review", str(report.flagged)),
        ("duplicates", str(report.duplicates)),
        ("sheets read twice", str(len(report.retakes))),
        ("time", f"{report.seconds:.1f} s"),
    ):
        table.add_row(label, value)
    if err.is_terminal:
        err.print(table)
    else:  # a log file or a script: one line, easy to grep
        err.print(
            f"{report.pages_done} page(s) processed{rate}, {report.pages_skipped} already in the ledger, "
            f"{report.pages_failed} failed; {report.rows_added} signature row(s) added, {report.flagged} flagged "
            f"for review, {report.duplicates} duplicate(s), {len(report.retakes)} sheet(s) read twice; "
            f"{report.seconds:.1f} s")
    if report.decisions_kept or report.decisions_unmatched:
        err.print(f"{report.decisions_kept + report.decisions_unmatched} reviewed row(s) kept their decision; "
                  f"{report.decisions_differ} now read otherwise (flag row_reread_differs), "
                  f"{report.decisions_unmatched} not found again (kept, flag row_reread_missing)")
    err.print(f"ledger:   {display_path(ledger)}\ncrops:    {display_path(ledger.with_suffix('.crops'))}/"
              + (f"\noverlays: {display_path(debug_dir)}/" if debug_dir else ""))


# --- sheet ----------------------------------------------------------------------------------

@sheet_app.command("blank")
@handles_errors
def sheet_blank(
    out_pdf: Annotated[Path, typer.Argument(help="The PDF to write.", show_default=False)],
    template: TemplateOpt = None,
    dpi: Annotated[int, typer.Option(min=100, max=600, help="Print resolution.")] = 300,
) -> None:
    """Write the empty sheet (every page, A4) as a PDF ready to print."""
    from scan_pipeline.core.template import load_template
    from scan_pipeline.synth.sheet import write_blank_sheet

    pages = write_blank_sheet(load_template(template), out_pdf, dpi)
    err.print(f"wrote {display_path(out_pdf)} ({pages} pages)")


@sheet_app.command("validate")
@handles_errors
def sheet_validate(
    template: Annotated[Path, typer.Argument(help="Template JSON to check.", show_default=False)],
) -> None:
    """Check a template against schemas/template.schema.json; list every problem with its JSON path."""
    from scan_pipeline.core.template import load_template

    tpl = load_template(template)
    rows = _ranges(n for _, r in tpl.blocks for n in r)
    err.print(f"{display_path(template)}: valid ({len(tpl.pages)} pages, rows {rows})")


def _ranges(numbers: Any) -> str:
    nums = sorted(numbers)
    parts, start = [], nums[0]
    for a, b in zip(nums, nums[1:] + [None]):
        if b != a + 1:
            parts.append(f"{start}" if start == a else f"{start}-{a}")
            start = b
    return ", ".join(parts)


# --- samples --------------------------------------------------------------------------------

def _choices(value: str, allowed: tuple[str, ...], option: str) -> tuple[str, ...]:
    items = tuple(v.strip() for v in value.split(",") if v.strip())
    bad = [v for v in items if v not in allowed]
    if bad or not items:
        raise typer.BadParameter(f"{', '.join(bad) or 'nothing'} not in {','.join(allowed)}", param_hint=option)
    return items


@samples_app.command("generate")
@handles_errors
def samples_generate(
    out_dir: Annotated[Path, typer.Argument(help="Folder to write the sheets and truth.json into.",
                                            show_default=False)],
    sheets: Annotated[int, typer.Option(min=1, max=10000, help="How many two-page sheets.")] = 4,
    seed: Annotated[int, typer.Option(help="Random seed: the same seed gives the same files.")] = 1,
    modes: Annotated[str, typer.Option(help="Comma-separated: scan,gray,bilevel,photo, or hardphoto (phone "
                                            "photos taken in a hurry).")] = ",".join(MODES),
    formats: Annotated[str, typer.Option(help="Comma-separated: pdf,png,jpg,tiff.")] = ",".join(FORMATS),
    dpi: Annotated[int | None, typer.Option(
        min=100, max=600, help="Scan resolution of every sheet but photos [default: 150-300, varied]",
        show_default=False)] = None,
    name_crops: Annotated[Path | None, typer.Option(
        help="A CSV (file,label) of crops of real handwritten words: half the signers write their name "
             "with two of them instead of a font (benchmarks on real handwriting).", show_default=False,
        exists=True, dir_okay=False)] = None,
    template: TemplateOpt = None,
) -> None:
    """Render filled sheets (invented people) and OUT_DIR/truth.json, for tests and benchmarks."""
    from scan_pipeline.core.template import load_template
    from scan_pipeline.synth.samples import NameCrops, generate

    chosen_modes = _choices(modes, ALL_MODES, "--modes")
    chosen_formats = _choices(formats, FORMATS, "--formats")
    crops = NameCrops.read(name_crops) if name_crops else None
    truth = generate(out_dir, load_template(template), sheets, seed, chosen_modes, chosen_formats, dpi=dpi,
                     name_crops=crops)
    pages = sum(len(f["pages"]) for f in truth["files"])
    err.print(f"wrote {len(truth['files'])} file(s), {pages} page(s) and truth.json to {display_path(out_dir)}")


# --- config, ledger ---------------------------------------------------------------------------

@config_app.command("show")
@handles_errors
def config_show(config: ConfigOpt = None) -> None:
    """Print the bundled thresholds (with their meaning), or check and print an override file."""
    from scan_pipeline.core.config import bundled_config_text, load_config

    if config is None:
        out.print(bundled_config_text(), markup=False, end="")
    else:
        out.print(repr(load_config(config)), markup=False)


@ledger_app.command("validate")
@handles_errors
def ledger_validate(
    ledger: Annotated[Path, typer.Argument(help="The ledger CSV.", show_default=False)],
) -> None:
    """Check a ledger against schemas/ledger.schema.json; list every problem with its row and column."""
    from scan_pipeline.core.errors import LedgerError
    from scan_pipeline.ledger.store import read_ledger

    if not ledger.exists():
        raise LedgerError(f"{ledger} does not exist", hint="give the path of a ledger CSV")
    df = read_ledger(ledger)
    neutralised = df.attrs.get("neutralised", 0)
    err.print(f"{display_path(ledger)}: valid ({len(df)} rows)" + (
        f"; {neutralised} value(s) of ledger contract 1 read neutralised (control characters, formula leads): "
        "the next command that writes the ledger stores them so" if neutralised else ""))


@ledger_app.command("merge")
@handles_errors
def ledger_merge(
    inputs: Annotated[list[Path], typer.Argument(metavar="LEDGER", help="Ledger CSVs of several groups.",
                                                 show_default=False)],
    out_csv: Annotated[Path, typer.Option("--out", "-o", help="The merged ledger to write (or to merge into).")],
    wait: Annotated[bool, typer.Option("--wait", help="If another run is writing OUT, wait for it.")] = False,
    config: ConfigOpt = None,
) -> None:
    """Merge ledgers into one, deduplicated across them (provenance in OUT.details.jsonl, crops copied).

    Into an existing OUT, its rows and the decisions made on it are kept; the most recently
    reviewed version of a row wins.
    """
    from scan_pipeline.core.config import load_config
    from scan_pipeline.ledger.merge import merge_ledgers

    summary = merge_ledgers(inputs, out_csv, dedup_config=load_config(config).dedup, wait=wait)
    err.print(f"{summary.inputs} ledger(s), {summary.rows_read} row(s) read, {summary.same_rows} present in "
              f"several inputs (kept once), {summary.erased_skipped} erased before; wrote {summary.rows_total} "
              f"row(s): {summary.duplicates} duplicate(s), {summary.possible_duplicates} possible duplicate(s) "
              f"to review, {summary.crops_copied} crop(s) copied; {summary.seconds['total']:.1f} s")
    for retake in summary.retakes:
        err.print(f"[yellow]read twice:[/] {escape(str(retake))}", markup=True)
    if summary.decisions_conflicting:
        err.print(f"{summary.decisions_conflicting} row(s) were decided differently in two inputs: the later "
                  "decision (reviewed_at) was kept")
    err.print(f"ledger: {display_path(out_csv)}")


@ledger_app.command("stats")
@handles_errors
def ledger_stats_cmd(
    ledger: Annotated[Path, typer.Argument(help="The ledger CSV.", show_default=False)],
    as_json: Annotated[bool, typer.Option("--json", help="Print the figures as JSON on stdout.")] = False,
    chart: Annotated[Path | None, typer.Option(
        "--chart", help="Write a PNG bar chart of unique signers by département (needs matplotlib).")] = None,
) -> None:
    """Signatures, unique signers, duplicates and flagged rows, by département and by source file."""
    import json

    from rich.table import Table

    from scan_pipeline.core.errors import LedgerError
    from scan_pipeline.ledger.stats import departement_chart, ledger_stats
    from scan_pipeline.ledger.store import read_ledger

    if not ledger.exists():
        raise LedgerError(f"{ledger} does not exist", hint="give the path of a ledger CSV")
    stats = ledger_stats(read_ledger(ledger))
    if chart is not None:
        departement_chart(stats, chart)
        err.print(f"chart: {display_path(chart)}")
    if as_json:
        out.print(json.dumps(stats, ensure_ascii=False, indent=2), markup=False)
        return
    summary = Table(title=display_path(ledger), show_header=False)
    for key in ("signatures", "unique_signers", "duplicates", "possible_duplicates", "flagged", "review",
                "rejected", "struck"):
        summary.add_row(key.replace("_", " "), str(stats[key]))
    out.print(summary)
    for title, key in (("by département", "by_departement"), ("by source", "by_source")):
        table = Table(title=title)
        for column in (title.split()[-1], "signatures", "unique signers", "duplicates"):
            table.add_column(column, justify="left" if column == title.split()[-1] else "right")
        for name, row in stats[key].items():
            table.add_row(name, str(row["signatures"]), str(row["unique_signers"]), str(row["duplicates"]))
        out.print(table)


def _postal_option(code: str | None) -> str | None:
    """A --postal-code given: five digits, a French postal code (else a usage error, exit 2)."""
    if code is None:
        return None
    from scan_pipeline.core.postcodes import load_postal_list

    code = code.strip()
    if not (len(code) == 5 and code.isdigit()):
        raise typer.BadParameter(f"{code!r} is not five digits (e.g. 01000)", param_hint="--postal-code")
    if code not in load_postal_list():
        raise typer.BadParameter(f"{code} is not a French postal code", param_hint="--postal-code")
    return code


@ledger_app.command("find")
@handles_errors
def ledger_find(
    ledger: Annotated[Path, typer.Argument(help="The ledger CSV.", show_default=False)],
    name: Annotated[str | None, typer.Option(
        "--name", help="The name to look for (any order, accents, case); one word: a surname alone.")] = None,
    postal_code: Annotated[str | None, typer.Option(
        "--postal-code", help="Only rows of this postal code (alone: every row of it).")] = None,
    config: ConfigOpt = None,
) -> None:
    """Print the rows whose name matches NAME (the deduplication's fuzzy match) as CSV, best first.

    This command shows names: you asked for them.
    """
    from scan_pipeline.core.config import load_config
    from scan_pipeline.core.errors import LedgerError
    from scan_pipeline.ledger.find import find_rows
    from scan_pipeline.ledger.store import read_ledger

    if not name and not postal_code:
        raise typer.BadParameter("give --name NAME, --postal-code CODE, or both")
    postal_code = _postal_option(postal_code)
    if not ledger.exists():
        raise LedgerError(f"{ledger} does not exist", hint="give the path of a ledger CSV")
    found = find_rows(read_ledger(ledger), name, postal_code, cfg=load_config(config).dedup)
    columns = ["score", "signature_id", "name", "postal_code", "status", "duplicate_of", "source_file", "page",
               "row_number"]
    if len(found):
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(columns)
        for _, row in found.iterrows():
            writer.writerow([f"{row['score']:.0f}", *(row[c] for c in columns[1:])])
        out.print(buffer.getvalue(), markup=False, end="")
    err.print(f"{len(found)} matching row(s)")


@ledger_app.command("erase")
@handles_errors
def ledger_erase(
    ledger: Annotated[Path, typer.Argument(help="The ledger CSV.", show_default=False)],
    ids: Annotated[list[str] | None, typer.Option("--id", help="A signature_id to erase (repeat the option).")] = None,
    name: Annotated[str | None, typer.Option("--name", help="Erase every row of this signer ...")] = None,
    postal_code: Annotated[str | None, typer.Option("--postal-code", help="... of this postal code.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Say what would be erased; change nothing.")] = False,
    config: ConfigOpt = None,
) -> None:
    """Erase signatures for good: rows, crops, details, and every file written for the ledger that
    shows them (review workbooks blanked, run reports and overlays deleted); the audit log keeps no
    name. Re-processing the same scans never brings an erased signature back.

    With --name, close names of the same postal code are listed, not erased: erase them by --id
    if they are the same person. This command shows names: you asked for them.
    """
    from scan_pipeline.core.config import load_config
    from scan_pipeline.ledger.erase import erase
    from scan_pipeline.review.redact import redact_workbook

    if not ids and not name:
        raise typer.BadParameter("give --id ID (one or more) or --name NAME --postal-code CODE")
    if name and not postal_code:
        raise typer.BadParameter("--name needs --postal-code (so that only that signer is erased)")
    postal_code = _postal_option(postal_code)
    summary = erase(ledger, ids=tuple(ids or ()), name=name, postal_code=postal_code, dry_run=dry_run,
                    dedup_config=load_config(config).dedup, redact=redact_workbook)
    would = "would be " if dry_run else ""
    for sid in summary.already_erased:
        err.print(f"skipped: {sid} was erased before")
    for path, what in summary.outputs:
        err.print(f"{display_path(path)}: {'would be ' + what if dry_run else what}")
    err.print(f"{summary.rows_erased} row(s) {would}erased, {summary.crops_removed} crop(s) {would}removed, "
              f"{summary.repointed} duplicate(s) re-pointed; {summary.rows_total} row(s) left")
    if summary.near:
        err.print(f"{len(summary.near)} close name(s) in {postal_code}, not erased (erase with --id if it is the "
                  "same person):")
        for row in summary.near:
            out.print(f"{row['signature_id']},{printable(row['name'])},{row['postal_code']}")
    if dry_run:
        err.print("dry run: nothing was changed")


# --- review: the volunteers' spreadsheet --------------------------------------------------------

review_app = typer.Typer(help="The volunteers' review spreadsheet: flagged rows out, corrections back in.",
                         no_args_is_help=True)
app.add_typer(review_app, name="review")


@review_app.command("export")
@handles_errors
def review_export(
    ledger: Annotated[Path, typer.Option("--ledger", "-l", help="The ledger CSV to review.")],
    out_xlsx: Annotated[Path, typer.Option("--out", "-o", help="The workbook to write (.xlsx).")],
    all_rows: Annotated[bool, typer.Option("--all", help="Every row, not only the rows to review.")] = False,
    limit: Annotated[int | None, typer.Option(min=1, help="At most this many rows (in paper order).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace OUT if it exists.")] = False,
) -> None:
    """Write the rows to review (status review) to a workbook for volunteers.

    Each line shows the images of the name, postal-code and signature cells (from LEDGER.crops/),
    the machine's readings with their confidence and other readings, the flags in words, and
    yellow cells to correct name, postal_code, signature and choose a decision. It opens in
    LibreOffice and Excel; send it back and run `scan-pipeline review import`.
    """
    from scan_pipeline.review.export import export_review

    summary = export_review(ledger, out_xlsx, all_rows=all_rows, limit=limit, force=force)
    missing = f", {summary.images_missing} image(s) missing" if summary.images_missing else ""
    err.print(f"{summary.rows} line(s) written ({summary.to_review} row(s) to review in the ledger), "
              f"{summary.images} image(s){missing}; {summary.seconds:.1f} s")
    err.print(f"review file: {display_path(summary.path)}")


@review_app.command("import")
@handles_errors
def review_import(
    review_file: Annotated[Path, typer.Argument(help="The returned file: .xlsx, .ods or .csv.", show_default=False)],
    ledger: Annotated[Path, typer.Option("--ledger", "-l", help="The ledger the file was exported from.")],
    reviewer: Annotated[str | None, typer.Option(
        "--reviewer", help="Who reviewed (default: the name typed in the file, else your user name).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Check and show what would change; write nothing.")
                       ] = False,
    skip_invalid: Annotated[bool, typer.Option(
        "--skip-invalid", help="Apply the valid lines even when others are invalid (those are listed).")] = False,
    config: ConfigOpt = None,
) -> None:
    """Apply a returned review file to the ledger.

    Lines are matched by signature_id (sorted or deleted lines are fine); an empty line changes
    nothing. Every line is checked first: if any is invalid, all problems are listed with their
    spreadsheet row and nothing is applied (exit 7), unless --skip-invalid. Importing the same
    file twice changes nothing.
    """
    from scan_pipeline.core.config import load_config
    from scan_pipeline.review.apply import import_review
    from scan_pipeline.review.checks import shown_problem

    summary = import_review(review_file, ledger, reviewer=reviewer, dry_run=dry_run, skip_invalid=skip_invalid,
                            dedup_config=load_config(config).dedup)
    for problem in summary.invalid:
        err.print(f"[yellow]skipped:[/] {escape(printable(shown_problem(problem)))}", markup=True)
    err.print(f"{summary.lines} line(s) read, {summary.blank} left empty; {summary.confirmed} confirmed, "
              f"{summary.corrected} corrected, {summary.rejected} rejected, {summary.duplicates} marked duplicate, "
              f"{summary.unchanged} already in the ledger" + (f", {len(summary.invalid)} skipped as invalid"
                                                             if summary.invalid else ""))
    if summary.sent_back:
        err.print(f"{summary.sent_back} of them may repeat another row now (status review: export again)")
    if summary.other_rows:
        err.print(f"{summary.other_rows} other row(s) changed by deduplication")
    if summary.dry_run:
        err.print("dry run: nothing was written")
    elif summary.written:
        err.print(f"ledger: {display_path(ledger)} (reviewed by {printable(summary.reviewer)})")
    else:
        err.print("nothing to change: the ledger was not written")


def run() -> None:
    app()


if __name__ == "__main__":
    run()
