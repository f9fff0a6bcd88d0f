"""The ``kerasgen`` command line. Commands are thin: each parses its arguments and calls
the library. TensorFlow is imported only by commands that train."""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

from kerasgen import __version__
from kerasgen.vocabulary import DIVERGED, DONE, FAILED

DEFAULT_DB = "data/kerasgen.db"


class CLIError(Exception):
    """A user error: printed without a traceback, exit status 2."""


def _number(kind, minimum, what):
    """An argparse type: a finite number of ``kind`` >= ``minimum`` (the error names
    the value, and argparse exits 2 with the usage)."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if not math.isfinite(value) or value < minimum:
            raise argparse.ArgumentTypeError(f"{text!r}: must be {what} >= {minimum:g}")
        return value
    parse.__name__ = what
    return parse


positive_int = _number(int, 1, "an integer")
non_negative_float = _number(float, 0.0, "a number")
positive_float = _number(float, 1e-9, "a positive number")


def _fraction(text: str) -> float:
    """An argparse type: a number strictly between 0 and 1 (a confidence level)."""
    value = _number(float, 1e-9, "a number between 0 and 1")(text)
    if value >= 1.0:
        raise argparse.ArgumentTypeError(f"{text!r}: must be a number between 0 and 1")
    return value


# ---------------------------------------------------------------- run

def _run_options(args):
    from kerasgen.options import RunOptions, onednn_option

    jit = {"auto": "auto", "on": True, "off": False}[args.jit_compile]
    return RunOptions(
        pack_size=args.pack_size, data_dir=args.data_dir, checkpoint_dir=args.checkpoint_dir,
        jit_compile=jit, layout=args.layout, stale_seconds=args.stale_seconds,
        max_attempts=args.max_attempts, steps_per_execution=args.steps_per_execution,
        mirrored=args.mirrored, onednn=onednn_option(args.onednn),
    )


def _spec_from_args(args):
    from kerasgen.spec import load_spec, preset

    if args.spec and args.preset:
        raise CLIError("Give a specification file or --preset, not both.")
    if args.spec:
        spec = load_spec(args.spec)
    else:
        spec = preset(args.preset or "demo")
    changes = {}
    if args.epochs is not None:
        changes["epochs"] = args.epochs
    if args.name:
        changes["name"] = args.name
    return spec.replace(**changes) if changes else spec


def cmd_run(args) -> int:
    from kerasgen import runtime

    options = _run_options(args)
    runtime.set_onednn(options.onednn)
    runtime.quiet_tensorflow()
    spec = _spec_from_args(args)
    if args.backend == "ray":
        from kerasgen.raybackend import run_study_ray

        counts = run_study_ray(spec, args.db, options, address=args.address,
                               cpus_per_pack=args.cpus_per_pack,
                               gpus_per_pack=args.gpus_per_pack,
                               progress=args.progress, retry_failed=args.retry_failed,
                               force=args.force)
    else:
        from kerasgen.worker import run_study

        counts = run_study(spec, args.db, options, workers=args.workers,
                           progress=args.progress, retry_failed=args.retry_failed,
                           force=args.force)
    finished = counts[DONE] + counts[DIVERGED]
    print(f"Study {spec.name!r}: {finished} of {sum(counts.values())} cells finished "
          f"({counts[DONE]} done, {counts[DIVERGED]} diverged, {counts[FAILED]} failed). "
          f"Results: {args.db}")
    print(f"  look:  kerasgen status --db {args.db}    kerasgen report --db {args.db}    "
          f"kerasgen tui --db {args.db}")
    return 1 if counts[FAILED] else 0


# ---------------------------------------------------------------- demo

def cmd_demo(args) -> int:
    """What `make demo` runs: the demo study (live in the dashboard when a terminal is
    attached), then the report and figures."""
    from kerasgen import runtime
    from kerasgen.spec import preset

    db = Path(args.db)
    figures = Path(args.figures or db.with_name(db.stem + "-figures"))
    spec = preset("demo")
    live = args.dashboard == "on" or (args.dashboard == "auto" and sys.stdout.isatty()
                                      and sys.stdin.isatty())
    started = time.monotonic()
    if live:
        code = _demo_with_dashboard(db, args)
        if code:
            return code
    else:
        runtime.set_onednn("auto")
        runtime.quiet_tensorflow()
        from kerasgen.options import RunOptions
        from kerasgen.worker import run_study

        run_study(spec, db, RunOptions(data_dir=args.data_dir, onednn="auto"),
                  progress=args.progress)
    minutes = (time.monotonic() - started) / 60
    from kerasgen.report import render_report, write_figures
    from kerasgen.store import load_results

    frame = load_results(db, study=spec.name)
    print(render_report(frame))
    paths = write_figures(frame, figures)
    print(f"\nDemo finished in {minutes:.1f} min. Results: {db}  Figures: {figures}/ "
          f"({len(paths)} PNG files)")
    print(f"  next:  kerasgen tui --db {db}    kerasgen report --db {db} --format latex    "
          f"sqlite3 {db} 'SELECT * FROM best LIMIT 5'")
    return 0


def _demo_with_dashboard(db: Path, args) -> int:
    """Train in a child process while the dashboard shows the store live; quitting the
    dashboard leaves the training to finish with plain progress."""
    import subprocess

    db.parent.mkdir(parents=True, exist_ok=True)
    log = db.with_suffix(".log")
    with open(log, "a") as out:
        child = subprocess.Popen(
            [sys.executable, "-m", "kerasgen", "run", "--preset", "demo", "--db", str(db),
             "--data-dir", args.data_dir, "--progress", "plain"], stdout=out, stderr=out)
        try:
            # Let the child register the study so the dashboard opens on it.
            for _ in range(600):
                if child.poll() is not None or db.exists():
                    break
                time.sleep(0.1)
            from tui.app import run_dashboard

            run_dashboard(db, study="demo", interval=1.0)
            if child.poll() is None:
                print("Dashboard closed; the demo study keeps training (progress below).")
                from kerasgen.display import ProgressMonitor

                monitor = ProgressMonitor(db, "demo", mode=args.progress)
                monitor.start()
                child.wait()
                monitor.stop()
        except KeyboardInterrupt:
            child.terminate()
            child.wait()
            raise
    if child.returncode:
        print(f"The demo study failed (exit {child.returncode}); see {log}.", file=sys.stderr)
        return child.returncode
    return 0


# ---------------------------------------------------------------- status

def _readonly_note(db) -> None:
    """Say so when this user may only read the store (it is then read as a snapshot)."""
    from kerasgen.store import connect_readonly, readonly_note

    conn = connect_readonly(db)
    try:
        note = readonly_note(conn)
    finally:
        conn.close()
    if note:
        print(f"kerasgen: note: {note}.", file=sys.stderr)


def cmd_status(args) -> int:
    from rich.console import Console
    from rich.text import Text

    from kerasgen.display import progress_table, summary_line
    from kerasgen.progress import study_progress, workers_alive

    _readonly_note(args.db)
    groups = study_progress(args.db)
    if args.study:
        groups = [g for g in groups if g.study == args.study]
    if not groups:
        print(f"{args.db} holds no study" + (f" named {args.study!r}" if args.study else "") + ".")
        return 0
    console = Console()
    for study in sorted({g.study for g in groups}):
        mine = [g for g in groups if g.study == study]
        console.print(progress_table(mine, title=f"study {study}"))
        console.print(Text(summary_line(mine)))
    alive = workers_alive(groups)
    console.print(Text(f"workers training now: {', '.join(alive) if alive else 'none'}"))
    return 0


# ---------------------------------------------------------------- report / tui / bound

def cmd_report(args) -> int:
    from kerasgen.report import render_report, write_figures
    from kerasgen.store import load_results

    _readonly_note(args.db)
    frame = load_results(args.db, study=args.study)
    if frame.empty:
        which = f" of study {args.study!r}" if args.study else ""
        raise CLIError(f"{args.db} holds no cells{which}.")
    text = render_report(frame, fmt=args.format, metric=args.metric, alpha=args.alpha,
                         pvalue=args.pvalue, include_diverged=not args.exclude_diverged,
                         confidence=args.confidence, n_resamples=args.resamples)
    if args.bounds:
        from kerasgen.report.bounds import render_bounds_section

        text += "\n" + render_bounds_section(args.db, study=args.study)
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(text)
        print(f"wrote {args.output}")
    else:
        print(text)
    if args.figures:
        paths = write_figures(frame, args.figures, metric=args.metric)
        if args.bounds:
            from kerasgen.report.bounds import write_bound_figures

            paths += write_bound_figures(args.db, args.figures, study=args.study)
        for path in paths:
            print(f"wrote {path}")
    return 0


def cmd_tui(args) -> int:
    from tui.app import run_dashboard

    return run_dashboard(args.db, study=args.study, interval=args.interval)


def cmd_bound(args) -> int:
    from kerasgen import runtime

    runtime.quiet_tensorflow()
    from kerasgen.curvature import compute_bounds_for_store

    cells = [int(c) for c in args.cells.split(",")] if args.cells else None
    rows = compute_bounds_for_store(args.db, study=args.study, cells=cells, params=args.params,
                                    delta=args.delta, data_dir=args.data_dir,
                                    checkpoint_dir=args.checkpoint_dir,
                                    max_examples=args.max_examples,
                                    recompute=args.recompute)
    print(f"computed bounds for {len(rows)} cells into {args.db} (table bounds); "
          f"see `kerasgen report --db {args.db} --bounds`")
    return 0


def cmd_db(args) -> int:
    from kerasgen.store import SCHEMA_VERSION, inspect_store, load_studies

    info = inspect_store(args.db)
    if not info["exists"] or info["empty"]:
        print(f"{args.db}: no kerasgen store yet")
        return 0
    _readonly_note(args.db)
    print(f"{args.db}: kerasgen store, schema version {info['user_version']} "
          f"(this kerasgen: {SCHEMA_VERSION})")
    studies = load_studies(args.db)
    for _, row in studies.iterrows():
        print(f"  study {row['name']!r}: created {row['created_at']} on {row['host']}, "
              f"kerasgen {row['kerasgen_version']}, TensorFlow {row['tensorflow_version']}, "
              f"Keras {row['keras_version']}")
    return 0


# ---------------------------------------------------------------- parser

def build_parser() -> argparse.ArgumentParser:
    from kerasgen.spec import PRESET_HELP

    parser = argparse.ArgumentParser(
        prog="kerasgen",
        description="Controlled studies of how batch size and learning rate shape "
                    "generalization (He, Liu & Tao, NeurIPS 2019).")
    parser.add_argument("--version", action="version", version=f"kerasgen {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="train every cell of a study into a store (resumable)")
    run.add_argument("spec", nargs="?", help="a TOML specification file")
    run.add_argument("--preset", choices=sorted(PRESET_HELP),
                     help="; ".join(f"{k}: {v}" for k, v in PRESET_HELP.items()))
    run.add_argument("--db", default=DEFAULT_DB, help=f"the store (default {DEFAULT_DB})")
    run.add_argument("--name", help="override the study's name")
    run.add_argument("--epochs", type=positive_int, help="override the study's epochs")
    run.add_argument("--workers", type=positive_int, default=1,
                     help="worker processes on this machine (one per GPU where GPUs exist)")
    run.add_argument("--pack-size", type=positive_int, default=20,
                     help="cells trained together in one fit (1: one cell per fit)")
    run.add_argument("--data-dir", default="data", help="where data sets are (default data/)")
    run.add_argument("--checkpoint-dir", help="default: <db>.checkpoints")
    run.add_argument("--jit-compile", choices=("auto", "on", "off"), default="auto",
                     help="XLA: auto = off on CPU (measured slower), on with a GPU")
    run.add_argument("--layout", choices=("auto", "branches", "fused"), default="auto",
                     help="packed layout: K branches, or copies fused into grouped layers "
                          "(auto: the measured winner for the device)")
    run.add_argument("--onednn", choices=("auto", "default", "on", "off"), default="auto",
                     help="TF_ENABLE_ONEDNN_OPTS for the training processes: auto = on for "
                          "x86-64 CPUs (measured 1.6x faster) unless already exported; "
                          "default = TensorFlow's own choice")
    run.add_argument("--steps-per-execution", type=positive_int, default=1)
    run.add_argument("--mirrored", action="store_true",
                     help="train each cell on all local GPUs (MirroredStrategy, sync BN)")
    run.add_argument("--stale-seconds", type=_number(float, 1.0, "a number of seconds"),
                     default=600.0,
                     help="a claim without heartbeat for this long is reclaimed (at least 1; "
                          "workers beat 4 times within it)")
    run.add_argument("--max-attempts", type=positive_int, default=3,
                     help="a pack that fails this often is marked failed")
    run.add_argument("--force", action="store_true",
                     help="run a grid of more than 100,000 cells")
    run.add_argument("--retry-failed", action="store_true", help="put failed cells back to pending")
    run.add_argument("--progress", choices=("auto", "live", "plain"), default="auto")
    run.add_argument("--backend", choices=("local", "ray"), default="local")
    run.add_argument("--address", help="Ray cluster address (default: start a local one)")
    run.add_argument("--cpus-per-pack", type=non_negative_float, default=1.0)
    run.add_argument("--gpus-per-pack", type=non_negative_float, default=None,
                     help="default: 1 where the cluster has GPUs, else 0")
    run.set_defaults(func=cmd_run)

    demo = sub.add_parser("demo", help="the offline demo study, then its report (make demo)")
    demo.add_argument("--db", default="data/demo.db")
    demo.add_argument("--data-dir", default="data")
    demo.add_argument("--figures", help="default: <db>-figures next to the store")
    demo.add_argument("--dashboard", choices=("auto", "on", "off"), default="auto",
                      help="show the study live in the dashboard (auto: on a terminal)")
    demo.add_argument("--progress", choices=("auto", "live", "plain"), default="auto")
    demo.set_defaults(func=cmd_demo)

    status = sub.add_parser("status", help="progress per model/dataset, workers, ETA")
    status.add_argument("--db", default=DEFAULT_DB)
    status.add_argument("--study")
    status.set_defaults(func=cmd_status)

    report = sub.add_parser("report", help="the paper's Tables 1-3 and Figures 1-2")
    report.add_argument("--db", default=DEFAULT_DB)
    report.add_argument("--study")
    report.add_argument("--format", choices=("markdown", "csv", "latex"), default="markdown")
    report.add_argument("--metric", default="test_accuracy",
                        choices=("test_accuracy", "best_test_accuracy", "final_test_accuracy",
                                 "gap", "loss_gap"),
                        help="test_accuracy: at each cell's kept epoch (the paper's best test "
                             "accuracy under the default best_metric); gap / loss_gap: clean "
                             "train vs test at the kept epoch")
    report.add_argument("--alpha", type=positive_float, default=0.005, help="significance level")
    report.add_argument("--pvalue", choices=("auto", "asymptotic", "exact", "permutation"),
                        default="auto",
                        help="auto: asymptotic (the paper's) for groups of 10+ cells, exact "
                             "below (the t-approximation gives p=0 to 3 perfectly ranked cells)")
    report.add_argument("--confidence", type=_fraction, default=0.95,
                        help="level of the bootstrap intervals (over cells and over seeds)")
    report.add_argument("--resamples", type=_number(int, 99, "a number of resamples"),
                        default=999, help="bootstrap resamples per interval (more: slower, "
                                          "steadier interval ends)")
    report.add_argument("--exclude-diverged", action="store_true")
    report.add_argument("--figures", help="write PNG figures into this directory")
    report.add_argument("--bounds", action="store_true",
                        help="add the PAC-Bayes bound section (after `kerasgen bound`)")
    report.add_argument("--output", "-o", help="write the tables to a file")
    report.set_defaults(func=cmd_report)

    tui = sub.add_parser("tui", help="the live terminal dashboard")
    tui.add_argument("--db", default=DEFAULT_DB)
    tui.add_argument("--study")
    tui.add_argument("--interval", type=_number(float, 0.1, "a number of seconds"), default=2.0,
                     help="seconds between refreshes")
    tui.set_defaults(func=cmd_tui)

    bound = sub.add_parser("bound", help="PAC-Bayes bound terms (Theorems 1-2) of finished cells")
    bound.add_argument("--db", default=DEFAULT_DB)
    bound.add_argument("--study")
    bound.add_argument("--cells", help="comma-separated cell ids (default: every finished cell)")
    bound.add_argument("--params", choices=("classifier", "all"), default="classifier")
    bound.add_argument("--delta", type=positive_float, default=0.05)
    bound.add_argument("--max-examples", type=_number(int, 2, "an integer"), default=None,
                       help="training examples used for A and C (default: all)")
    bound.add_argument("--data-dir", default="data")
    bound.add_argument("--checkpoint-dir")
    bound.add_argument("--recompute", action="store_true")
    bound.set_defaults(func=cmd_bound)

    db = sub.add_parser("db", help="what a store file is: schema version, studies")
    db.add_argument("--db", default=DEFAULT_DB)
    db.set_defaults(func=cmd_db)
    return parser


def main(argv: list[str] | None = None) -> int:
    from kerasgen.checkpoints import DiskFull
    from kerasgen.data import DataError
    from kerasgen.options import OptionsError
    from kerasgen.spec import SpecError
    from kerasgen.store import StoreError
    from kerasgen.worker import StudyError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (CLIError, SpecError, StoreError, DataError, OptionsError, StudyError,
            DiskFull) as exc:
        print(f"kerasgen {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"kerasgen {args.command}: interrupted; run the same command again to resume.",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
