"""The ``kerasgen`` command line. Commands are thin: each parses its arguments and calls
the library. TensorFlow is imported only by commands that train."""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path

from kerasgen import __version__
from kerasgen.outputs import (
    check_file_output,
    check_not_an_input,
    place_files,
    protected_paths,
    write_file_output,
)
from kerasgen.vocabulary import DIVERGED, DONE, FAILED


class CLIError(Exception):
    """A user error: printed without a traceback, exit status 2."""


class UsageError(CLIError):
    """A user error best answered with the command's usage line (exit status 2)."""


EXIT_STATUS = """exit status:
  0    done
  1    the study ran, but some of its cells failed (kerasgen run)
  2    the input cannot be used: a bad option or specification, a store that is
       missing, empty (no study, no cells), foreign, corrupt, newer, or read-only
       for run; the message names it and what to do
  3    an internal error: kerasgen's own bookkeeping of a pack failed; the message
       names the pack (please report it); running the command again resumes it
  130  interrupted (run the same command again to resume)"""


def _number(kind, minimum, what, maximum=None):
    """An argparse type: a finite number of ``kind`` >= ``minimum`` (and <= ``maximum``
    where given; the error names the value, and argparse exits 2 with the usage)."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if not math.isfinite(value) or value < minimum:
            raise argparse.ArgumentTypeError(f"{text!r}: must be {what} >= {minimum:g}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"{text!r}: must be {what} <= {maximum:g}")
        return value
    parse.__name__ = what
    return parse


positive_int = _number(int, 1, "an integer")
non_negative_float = _number(float, 0.0, "a number")
positive_float = _number(float, 1e-9, "a positive number")


def _fraction(text: str) -> float:
    """An argparse type: a number strictly between 0 and 1 (a level, a confidence)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0.0 < value < 1.0:
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
        keep_weights=args.keep_weights, keras_backend=args.keras_backend, exact=args.exact,
    )


def _spec_from_args(args):
    from kerasgen.spec import load_spec, preset

    if args.spec and args.preset:
        raise CLIError("Give a specification file or --preset, not both.")
    if args.spec:
        spec = load_spec(args.spec)
    elif args.preset:
        spec = preset(args.preset)
    else:
        raise UsageError("give a specification file (my-study.toml) or --preset NAME; the "
                         "offline demo is `kerasgen demo` (or `make demo`)")
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
    log, db = _log_path(args.db), Path(args.db)
    fresh = not log.exists() and not db.exists()
    try:
        with runtime.native_output_to(None if args.verbose else log):
            return _train(args, spec, options)
    except BaseException:
        if fresh and not db.exists():
            # Refused before anything was registered: leave nothing behind (the log held
            # only TensorFlow's start-up lines, if anything).
            log.unlink(missing_ok=True)
        raise


def _log_path(db) -> Path:
    """Where TensorFlow's and CUDA's start-up lines go (``--verbose`` shows them)."""
    return Path(str(db) + ".log")


def _train(args, spec, options) -> int:
    if args.backend == "ray":
        from kerasgen.raybackend import run_study_ray

        counts = run_study_ray(spec, args.db, options, address=args.address,
                               cpus_per_pack=args.cpus_per_pack,
                               gpus_per_pack=args.gpus_per_pack,
                               progress=args.progress, retry_failed=args.retry_failed,
                               force=args.force, extend=args.extend)
    else:
        from kerasgen.worker import run_study

        counts = run_study(spec, args.db, options, workers=args.workers,
                           progress=args.progress, retry_failed=args.retry_failed,
                           force=args.force, extend=args.extend)
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
    check_figures_directory(figures, protected_paths(db))
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

        with runtime.native_output_to(None if args.verbose else _log_path(db)):
            run_study(spec, db, RunOptions(data_dir=args.data_dir, onednn="auto",
                                           keras_backend=args.keras_backend),
                      progress=args.progress)
    minutes = (time.monotonic() - started) / 60
    from kerasgen.report import render_report, write_figures
    from kerasgen.report.html import render_html
    from kerasgen.store import load_epochs, load_results

    frame = load_results(db, study=spec.name)
    report = render_report(frame)
    print(report)
    with tempfile.TemporaryDirectory(prefix="kerasgen-figures-") as scratch:
        drawn = write_figures(frame, scratch, epochs=load_epochs(db, study=spec.name))
        page = Path(scratch) / "report.html"
        page.write_text(render_html(report, drawn, subtitle=f"{db}: {spec.name}"))
        placed = place_files([*drawn, page], figures, "kerasgen demo", protected_paths(db))
    paths, page = placed[:-1], placed[-1]
    print(f"\nDemo finished in {minutes:.1f} min. Results: {db}  Figures: {figures}/ "
          f"({len(paths)} PNG files)")
    print(f"  the report as one page (open it in a browser): {page}")
    print(f"  next:  kerasgen tui --db {db}    kerasgen report --db {db} --format latex    "
          f"sqlite3 {db} 'SELECT * FROM best LIMIT 5'")
    return 0


def _demo_with_dashboard(db: Path, args) -> int:
    """Train in a child process while the dashboard shows the store live; quitting the
    dashboard leaves the training to finish with plain progress."""
    import subprocess

    db.parent.mkdir(parents=True, exist_ok=True)
    log = _log_path(db)
    with open(log, "a") as out:
        child = subprocess.Popen(
            [sys.executable, "-m", "kerasgen", "run", "--preset", "demo", "--db", str(db),
             "--data-dir", args.data_dir, "--progress", "plain", "--keras-backend",
             args.keras_backend], stdout=out, stderr=out)
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
    from kerasgen.progress import study_progress, workers_alive, workers_lost

    _readonly_note(args.db)
    groups = study_progress(args.db)
    if args.study:
        groups = [g for g in groups if g.study == args.study]
    if not groups:
        which = f" named {args.study!r}" if args.study else ""
        raise CLIError(f"{args.db} holds no study{which}.")
    # Piped (grep, a file, a notebook cell): no terminal width to fit, so nothing is cut
    # ("resne…"); the tables take the width they need.
    console = Console() if sys.stdout.isatty() else Console(width=10_000)
    for study in sorted({g.study for g in groups}):
        mine = [g for g in groups if g.study == study]
        console.print(progress_table(mine, title=f"study {study}"))
        console.print(Text(summary_line(mine)))
    alive = workers_alive(groups)
    console.print(Text(f"workers training now: {', '.join(alive) if alive else 'none'}"))
    lost = workers_lost(groups)
    if lost:
        console.print(Text(f"workers lost (no heartbeat within their stale limit, or their "
                           f"process is gone; their packs are reclaimed by the next worker): "
                           f"{', '.join(lost)}"))
    return 0


# ---------------------------------------------------------------- report / tui / bound / measures

def cmd_report(args) -> int:
    from kerasgen.report import render_report, write_figures
    from kerasgen.store import load_epochs, load_results

    _readonly_note(args.db)
    frame = load_results(args.db, study=args.study)
    if frame.empty:
        which = f" of study {args.study!r}" if args.study else ""
        raise CLIError(f"{args.db} holds no cells{which}.")
    output = Path(args.output) if args.output else None
    protected = protected_paths(args.db)
    if output is not None:
        check_file_output(output, REPORT_COMMAND, args.force, protected)
    figures_dir = Path(args.figures) if args.figures else None
    if figures_dir is not None:
        check_figures_directory(figures_dir, protected)
    if args.format == "summary":
        from kerasgen.report.headline import headline, summary_text

        text = summary_text(headline(frame, metric=args.metric, alpha=args.alpha,
                                     pvalue=args.pvalue,
                                     include_diverged=not args.exclude_diverged,
                                     permutations=args.permutations,
                                     confidence=args.confidence))
        if output is not None:
            _write_output(output, text, REPORT_COMMAND)
            print(f"wrote {output} ({_size(output)})")
        else:
            print(text, end="")
        return 0
    html = args.format == "html"

    def report_text(figures: list[Path] | None) -> str:
        text = render_report(frame, fmt="markdown" if html else args.format,
                             metric=args.metric, alpha=args.alpha, pvalue=args.pvalue,
                             include_diverged=not args.exclude_diverged,
                             confidence=args.confidence, permutations=args.permutations,
                             figures=figures)
        if args.bounds:
            from kerasgen.report.bounds import render_bounds_section

            text += "\n" + render_bounds_section(args.db, study=args.study)
        if args.measures:
            from kerasgen.report.measures import render_measures_section

            text += "\n" + render_measures_section(args.db, study=args.study,
                                                    alpha=args.alpha)
        return text

    paths: list[Path] = []
    with tempfile.TemporaryDirectory(prefix="kerasgen-figures-") as scratch:
        if figures_dir or html:
            # Drawn in a scratch directory, then placed into --figures (never over a file
            # the command did not write); an HTML page embeds them.
            paths = write_figures(frame, scratch, metric=args.metric,
                                  include_diverged=not args.exclude_diverged,
                                  epochs=load_epochs(args.db, study=args.study),
                                  alpha=args.alpha, pvalue=args.pvalue)
            if args.bounds:
                from kerasgen.report.bounds import write_bound_figures

                paths += write_bound_figures(args.db, scratch, study=args.study)
            if args.measures:
                from kerasgen.report.measures import write_measure_figures

                paths += write_measure_figures(args.db, scratch, study=args.study)
        if html:
            from kerasgen.report.html import render_html

            studies = ", ".join(sorted(map(str, frame["study"].unique())))
            text = render_html(report_text(None), paths, subtitle=f"{args.db}: {studies}")
        if figures_dir is not None:
            paths = place_files(paths, figures_dir, REPORT_COMMAND, protected)
        if not html:  # the Markdown and LaTeX name the figures where they were placed
            text = report_text(paths if figures_dir is not None else None)
        if output is not None:
            _write_output(output, text, REPORT_COMMAND)
            print(f"wrote {output} ({_size(output)})")
        else:
            print(text)
    if figures_dir:
        for path in paths:
            print(f"wrote {path}")
    return 0


REPORT_COMMAND = "kerasgen report"


def check_figures_directory(path: Path, protected) -> None:
    """A --figures directory that cannot hold the figures, refused before any work."""
    check_not_an_input(path, protected, "--figures")
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        raise CLIError(f"--figures {path} is not a directory; choose another --figures.")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise CLIError(f"--figures {path} cannot be written by this user ({probe} is "
                       "read-only); choose another --figures.")


def _write_output(path: Path, text: str, command: str) -> None:
    """Write ``text`` to ``path`` atomically (a reader sees the old file or the new one),
    with its manifest (``kerasgen.outputs``)."""
    try:
        write_file_output(path, text, command)
    except OSError as exc:
        raise CLIError(f"cannot write {path} ({exc.strerror or exc}); choose another "
                       "--output.") from None


def cmd_tui(args) -> int:
    from tui.app import main_from_args

    return main_from_args(args.parser, args)


def cmd_bound(args) -> int:
    from kerasgen import runtime

    runtime.quiet_tensorflow()
    from kerasgen.curvature import compute_bounds_for_store

    cells = _cell_ids(args.cells) if args.cells else None
    with runtime.native_output_to(None if args.verbose else _log_path(args.db)):
        rows = compute_bounds_for_store(args.db, study=args.study, cells=cells,
                                        params=args.params, delta=args.delta,
                                        data_dir=args.data_dir,
                                        checkpoint_dir=args.checkpoint_dir,
                                        max_examples=args.max_examples,
                                        recompute=args.recompute)
    print(f"computed bounds for {len(rows)} cells into {args.db} (table bounds); "
          f"see `kerasgen report --db {args.db} --bounds`")
    return 0


def cmd_measures(args) -> int:
    from kerasgen.measures.catalogue import MEASURES, check_measure_names

    if args.list:
        for name, m in MEASURES.items():
            where = {"network": "computed" + (" (default)" if m.default else ""),
                     "store": "from the epochs", "bounds": "from kerasgen bound",
                     "grid": "the reference"}[m.source]
            print(f"{name:24} {m.family:13} {where:20} {m.description}")
        return 0
    names = check_measure_names(args.measures or ["default"])  # before TensorFlow
    cells = _cell_ids(args.cells) if args.cells else None
    if not Path(args.db).exists():  # before a log is opened beside it
        raise CLIError(f"{args.db} does not exist; train a study first (kerasgen run)")
    from kerasgen import runtime

    runtime.quiet_tensorflow()
    from kerasgen.measures.runs import MeasureConfig, compute_measures_for_store

    config = MeasureConfig(max_examples=args.max_examples, seed=args.seed)
    with runtime.native_output_to(None if args.verbose else _log_path(args.db)):
        rows = compute_measures_for_store(args.db, study=args.study, cells=cells,
                                          measures=names, data_dir=args.data_dir,
                                          checkpoint_dir=args.checkpoint_dir, config=config,
                                          recompute=args.recompute)
    runs = len({r["cell_id"] for r in rows})
    print(f"computed {len(rows)} measures of {runs} runs into {args.db} (table measures); "
          f"see `kerasgen report --db {args.db} --measures`")
    return 0


def _cell_ids(text: str) -> list[int]:
    """``--cells 1,2,5`` as ids; anything else is a usage error naming the bad entry."""
    ids = []
    for part in text.split(","):
        part = part.strip()
        if not part.isdigit() or int(part) < 1:
            raise UsageError(f"--cells takes cell ids (integers >= 1) separated by commas; "
                             f"{part!r} in {text!r} is not one")
        ids.append(int(part))
    return ids


def cmd_export(args) -> int:
    from kerasgen.export import export_tables, export_tensorboard

    _readonly_note(args.db)
    if args.format == "tensorboard":
        done = export_tensorboard(args.db, args.out, study=args.study, force=args.force)
        print(f"wrote {done['trials']} trials (cells, the mean over seeds) of {done['runs']} "
              f"runs (seeds, {done['epochs']} epochs) into {args.out} "
              f"({_size(args.out)}); view: tensorboard --logdir {args.out}")
    else:
        for path in export_tables(args.db, args.out, args.format, study=args.study,
                                  force=args.force):
            print(f"wrote {path} ({_size(path)})")
    return 0


def _size(path) -> str:
    from kerasgen.footprint import human_bytes

    path = Path(path)
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return human_bytes(sum(p.stat().st_size for p in files))


def cmd_db(args) -> int:
    from kerasgen.store import SCHEMA_VERSION, inspect_store, load_studies

    if args.action == "clean":
        return _db_clean(args)
    info = inspect_store(args.db)
    if not info["exists"]:
        raise CLIError(f"{args.db} does not exist: no study has been run into it yet.")
    if info["empty"]:
        raise CLIError(f"{args.db} is empty: no study has been run into it yet.")
    _readonly_note(args.db)
    studies = load_studies(args.db)
    if studies.empty:
        raise CLIError(f"{args.db} is a kerasgen store (schema version "
                       f"{info['user_version']}) that holds no study yet.")
    print(f"{args.db}: kerasgen store, schema version {info['user_version']} "
          f"(this kerasgen: {SCHEMA_VERSION})")
    for _, row in studies.iterrows():
        print(f"  study {row['name']!r}: created {row['created_at']} on {row['host']}, "
              f"kerasgen {row['kerasgen_version']}, TensorFlow {row['tensorflow_version']}, "
              f"Keras {row['keras_version']}")
    return 0


DB_ACTIONS = ("info", "clean")


def _db_clean(args) -> int:
    """``kerasgen db clean``: remove the checkpoint directories of finished packs (left by
    a kill between a pack's last result and their removal), saying what was removed."""
    from kerasgen.checkpoints import clean_finished_packs, default_root
    from kerasgen.footprint import human_bytes
    from kerasgen.store import Store, inspect_store

    info = inspect_store(args.db)
    if not info["exists"] or info["empty"]:
        raise CLIError(f"{args.db} is not a kerasgen store with studies: nothing to clean.")
    root = default_root(args.db, args.checkpoint_dir)
    with Store(args.db, create=False) as store:
        removed, kept = clean_finished_packs(store, root)
    for path, size in removed:
        print(f"removed {path} ({human_bytes(size)})")
    for sentence in kept:
        print(sentence)
    total = human_bytes(sum(size for _, size in removed))
    print(f"{len(removed)} finished pack checkpoint director{'y' if len(removed) == 1 else 'ies'}"
          f" removed from {root} ({total} freed)"
          + (f"; {len(kept)} left (see above)" if kept else ""))
    return 0


# ---------------------------------------------------------------- parser

def build_parser() -> argparse.ArgumentParser:
    from kerasgen.options import DEFAULT_DB, MAX_STALE_SECONDS, HelpFormatter, add_store_arguments
    from kerasgen.spec import PRESET_HELP
    from tui.app import add_arguments as add_dashboard_arguments

    parser = argparse.ArgumentParser(
        prog="kerasgen", formatter_class=HelpFormatter, epilog=EXIT_STATUS,
        description="Controlled studies of how batch size and learning rate shape "
                    "generalization (He, Liu & Tao, NeurIPS 2019).")
    parser.add_argument("--version", action="version", version=f"kerasgen {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, help: str, **kwargs):
        p = sub.add_parser(name, help=help, description=help[0].upper() + help[1:] + ".",
                           formatter_class=HelpFormatter, epilog=EXIT_STATUS, **kwargs)
        p.set_defaults(parser=p)
        return p

    run = command("run", "train every cell of a study into a store (resumable)")
    run.add_argument("spec", nargs="?", default=None,
                     help="a TOML specification file (or give --preset)")
    run.add_argument("--preset", choices=sorted(PRESET_HELP), default=None,
                     help="a named study instead of a file ("
                          + "; ".join(f"{k}: {v}" for k, v in PRESET_HELP.items()) + ")")
    run.add_argument("--db", default=DEFAULT_DB, help="the store (a .db file)")
    run.add_argument("--name", default=None, help="override the study's name")
    run.add_argument("--epochs", type=positive_int, default=None,
                     help="override the study's epochs")
    run.add_argument("--workers", type=positive_int, default=1,
                     help="worker processes on this machine (one per GPU where GPUs exist)")
    run.add_argument("--pack-size", type=positive_int, default=20,
                     help="cells trained together in one fit (1: one cell per fit)")
    run.add_argument("--data-dir", default="data", help="where data sets are")
    run.add_argument("--checkpoint-dir", default=None,
                     help="where checkpoints and weights go (default: <db>.checkpoints)")
    run.add_argument("--jit-compile", choices=("auto", "on", "off"), default="auto",
                     help="XLA: never under TensorFlow (its op determinism, which makes "
                          "resumes exact, rules XLA out); auto = on under JAX unless --exact")
    run.add_argument("--layout", choices=("auto", "branches", "fused"), default="auto",
                     help="packed layout: K branches, or copies fused into grouped layers "
                          "(auto: the measured winner for the device)")
    run.add_argument("--keras-backend", choices=("auto", "tensorflow", "jax"), default="auto",
                     help="the Keras backend of every training process: auto = the one the "
                          "study's earlier runs used, else the faster one measured on this "
                          "machine for the study's network (measured when that costs at most "
                          "2%% of the study, compilations counted; else TensorFlow)")
    run.add_argument("--exact", action="store_true",
                     help="under JAX, compile without XLA so that a pack equals its cells "
                          "run alone bit for bit (with XLA they agree to rounding)")
    run.add_argument("--onednn", choices=("auto", "default", "on", "off"), default="auto",
                     help="TF_ENABLE_ONEDNN_OPTS for every training process: auto = on for "
                          "x86-64 CPUs unless already exported; default = TensorFlow's "
                          "own choice")
    run.add_argument("--steps-per-execution", type=positive_int, default=1,
                     help="training steps per call into the compiled function")
    run.add_argument("--mirrored", action="store_true",
                     help="train each cell on all local GPUs (MirroredStrategy, sync BN)")
    run.add_argument("--stale-seconds", type=_number(float, 1.0, "a number of seconds",
                                                      MAX_STALE_SECONDS),
                     default=600.0,
                     help="a claim without heartbeat for this long is reclaimed (at least 1; "
                          "workers beat 4 times within it)")
    run.add_argument("--max-attempts", type=positive_int, default=3,
                     help="a pack that fails this often is marked failed")
    run.add_argument("--retry-failed", action="store_true",
                     help="put failed cells back to pending first")
    run.add_argument("--keep-weights", choices=("final", "none"), default="final",
                     help="keep each finished cell's final weights (kerasgen bound needs "
                          "them) or none")
    run.add_argument("--force", action="store_true",
                     help="run a grid of more than 100,000 cells, with less free disk "
                          "than the projected use, or with other kernel settings (backend, "
                          "oneDNN, XLA, device) than the study's earlier runs")
    run.add_argument("--extend", action="store_true",
                     help="grow an existing study: a specification that only adds models, "
                          "data sets, batch sizes, learning rates or seeds, or raises the "
                          "epochs under the epochs rule (finished cells continue from their "
                          "final weights); it prints what is added")
    run.add_argument("--progress", choices=("auto", "live", "plain"), default="auto",
                     help="the progress display: auto = live on a terminal, plain lines "
                          "otherwise")
    run.add_argument("--verbose", action="store_true",
                     help="show TensorFlow's and CUDA's start-up lines (else they go to "
                          "<db>.log)")
    run.add_argument("--backend", choices=("local", "ray"), default="local",
                     help="local: workers on this machine; ray: packs as Ray tasks")
    run.add_argument("--address", default=None,
                     help="Ray cluster address (default: start a local Ray)")
    run.add_argument("--cpus-per-pack", type=non_negative_float, default=1.0,
                     help="Ray: CPUs each pack's task asks for")
    run.add_argument("--gpus-per-pack", type=non_negative_float, default=None,
                     help="Ray: GPUs each pack's task asks for (default: 1 where the "
                          "cluster has GPUs, else 0)")
    run.set_defaults(func=cmd_run)

    demo = command("demo", "the offline demo study, then its report (what make demo runs)")
    demo.add_argument("--db", default="data/demo.db", help="the store (a .db file)")
    demo.add_argument("--data-dir", default="data", help="where data sets are")
    demo.add_argument("--figures", default=None,
                      help="where the figures go (default: <db>-figures next to the store)")
    demo.add_argument("--dashboard", choices=("auto", "on", "off"), default="auto",
                      help="show the study live in the dashboard (auto: on a terminal)")
    demo.add_argument("--progress", choices=("auto", "live", "plain"), default="auto",
                      help="the progress display without the dashboard")
    demo.add_argument("--keras-backend", choices=("auto", "tensorflow", "jax"), default="auto",
                      help="the Keras backend (auto: the faster one this machine offers; see "
                           "kerasgen run --keras-backend)")
    demo.add_argument("--verbose", action="store_true",
                      help="show TensorFlow's start-up lines (else they go to <db>.log)")
    demo.set_defaults(func=cmd_demo)

    status = command("status", "progress per model and data set, workers, ETA")
    add_store_arguments(status)
    status.add_argument("--study", default=None, help="only this study (default: all)")
    status.set_defaults(func=cmd_status)

    report = command("report", "the paper's Tables 1-3 and Figures 1-2 of a store")
    add_store_arguments(report)
    report.add_argument("--study", default=None, help="only this study (default: all)")
    report.add_argument("--format", choices=("markdown", "html", "csv", "latex", "summary"),
                        default="markdown",
                        help="markdown: the whole report; html: the whole report with every "
                             "figure embedded, one self-contained page; csv: every test, "
                             "tidy; latex: the findings and Tables 1-3; summary: one line "
                             "per grid, the headline numbers (kerasgen.summary(db))")
    from kerasgen.vocabulary import METRICS

    # The metrics the report and the dashboard analyse (best_test_accuracy is the kept
    # epoch's test_accuracy under the default rule: one name for one column).
    report.add_argument("--metric", default="test_accuracy", choices=METRICS,
                        help="test_accuracy: at each cell's kept epoch (the paper's best "
                             "test accuracy under the default best_metric); gap / loss_gap: "
                             "clean train vs test at the kept epoch")
    report.add_argument("--alpha", type=_fraction, default=0.005,
                        help="significance level of each test (the paper's)")
    report.add_argument("--pvalue", choices=("auto", "asymptotic", "exact", "permutation"),
                        default="auto",
                        help="auto: asymptotic (the paper's) for groups of 10+ cells, exact "
                             "below (the t-approximation gives p=0 to 3 perfectly ranked cells)")
    report.add_argument("--confidence", type=_fraction, default=0.95,
                        help="level of the intervals (the jackknife over seeds, from 3 seeds)")
    report.add_argument("--permutations", type=_number(int, 99, "a number of permutations"),
                        default=9999, help="Monte Carlo permutations per p-value of the "
                                           "verdicts (more: slower, smaller p reachable)")
    report.add_argument("--exclude-diverged", action="store_true",
                        help="leave diverged cells out of the tests (default: counted with "
                             "the accuracy reached before diverging)")
    report.add_argument("--figures", default=None,
                        help="write PNG figures into this directory (default: none)")
    report.add_argument("--bounds", action="store_true",
                        help="add the PAC-Bayes bound section (after `kerasgen bound`)")
    report.add_argument("--measures", action="store_true",
                        help="add the generalization measures section (ranked as Jiang et al. "
                             "2020; after `kerasgen measures`) and steps and compute (Table 3 "
                             "at matched SGD steps)")
    report.add_argument("--output", "-o", default=None,
                        help="write the report to this file (default: print it)")
    report.add_argument("--force", action="store_true",
                        help="replace an --output file that exists")
    report.set_defaults(func=cmd_report)

    tui = command("tui", "the live terminal dashboard (also: python -m tui)")
    add_dashboard_arguments(tui)
    tui.set_defaults(func=cmd_tui)

    bound = command("bound", "PAC-Bayes bound terms (Theorems 1-2) of finished cells")
    add_store_arguments(bound)
    bound.add_argument("--study", default=None, help="only this study (default: all)")
    bound.add_argument("--cells", default=None,
                       help="comma-separated cell ids (default: every finished cell)")
    bound.add_argument("--params", choices=("classifier", "all"), default="classifier",
                       help="the parameters A and C are taken over: the classifier layer "
                            "(exact) or the whole network (Lanczos/CG/SLQ)")
    bound.add_argument("--delta", type=positive_float, default=0.05,
                       help="the bound's confidence parameter")
    bound.add_argument("--max-examples", type=_number(int, 2, "an integer"), default=None,
                       help="training examples used for A and C (default: all)")
    bound.add_argument("--data-dir", default="data", help="where data sets are")
    bound.add_argument("--checkpoint-dir", default=None,
                       help="where the run kept its weights (default: <db>.checkpoints)")
    bound.add_argument("--recompute", action="store_true",
                       help="recompute cells that already have bound terms")
    bound.add_argument("--verbose", action="store_true",
                       help="show TensorFlow's start-up lines (else they go to <db>.log)")
    bound.set_defaults(func=cmd_bound)

    measures = command("measures", "generalization measures of finished runs (norms, "
                                   "sharpness, noise scale, margin), for ranking")
    add_store_arguments(measures)
    measures.add_argument("--study", default=None, help="only this study (default: all)")
    measures.add_argument("--measures", nargs="+", default=None, metavar="NAME",
                          help="measures, families (norm, sharpness, noise), 'default' or "
                               "'all' (default: the default set; --list shows them)")
    measures.add_argument("--cells", default=None,
                          help="comma-separated run ids (default: every finished run)")
    measures.add_argument("--max-examples", type=_number(int, 2, "an integer"), default=256,
                          help="examples of each run's clean training subset the data "
                               "measures use")
    measures.add_argument("--seed", type=_number(int, 0, "an integer"), default=0,
                          help="seed of the example subset, probes and noise draws")
    measures.add_argument("--data-dir", default="data", help="where data sets are")
    measures.add_argument("--checkpoint-dir", default=None,
                          help="where the run kept its weights (default: <db>.checkpoints)")
    measures.add_argument("--recompute", action="store_true",
                          help="recompute measures already stored with the same settings")
    measures.add_argument("--list", action="store_true",
                          help="list every measure with its family and source, then exit")
    measures.add_argument("--verbose", action="store_true",
                          help="show TensorFlow's start-up lines (else they go to <db>.log)")
    measures.set_defaults(func=cmd_measures)

    export = command("export", "a store's study as TensorBoard runs (HParams), CSV or Parquet")
    export.add_argument("format", choices=("tensorboard", "csv", "parquet"),
                        help="tensorboard: one run per cell with its hyper-parameters, "
                             "metrics and epoch scalars (tensorboard --logdir OUT); csv / "
                             "parquet: the cells, epochs and studies tables")
    add_store_arguments(export)
    export.add_argument("--out", "-o", required=True,
                        help="the directory to write (created; replaced only with --force)")
    export.add_argument("--study", default=None, help="only this study (default: all)")
    export.add_argument("--force", action="store_true",
                        help="replace an --out directory that already holds files")
    export.set_defaults(func=cmd_export)

    db = command("db", "what a store file is (schema version, studies); db clean: remove "
                       "finished packs' leftover checkpoints")
    db.add_argument("action", nargs="?", default="info", metavar="{info,clean}",
                    help="info: the store's schema and studies; clean: remove the checkpoint "
                         "directories of finished packs, saying what was removed")
    add_store_arguments(db)
    db.add_argument("--checkpoint-dir", default=None,
                    help="the store's checkpoint directory (default: <db>.checkpoints)")
    db.set_defaults(func=cmd_db)
    return parser


def main(argv: list[str] | None = None) -> int:
    from kerasgen.checkpoints import DiskFull
    from kerasgen.claims import ClaimError
    from kerasgen.data import DataError
    from kerasgen.export import ExportError
    from kerasgen.measures.catalogue import MeasureError
    from kerasgen.naming import ModelError
    from kerasgen.options import OptionsError
    from kerasgen.outputs import OutputError
    from kerasgen.settings import SettingsMismatch
    from kerasgen.spec import SpecError
    from kerasgen.store import StoreError
    from kerasgen.worker import StudyError

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "db" and args.action not in DB_ACTIONS:
        # `kerasgen db STORE`: the one positional is the store, not an action.
        if args.db_path is not None:
            args.parser.error(f"argument action: invalid choice: {args.action!r} (choose "
                              f"from {', '.join(DB_ACTIONS)})")
        args.db_path, args.action = args.action, "info"
    if hasattr(args, "db_path"):
        from kerasgen.options import store_path

        args.db = store_path(args.parser, args)
    try:
        return int(args.func(args) or 0)
    except UsageError as exc:
        args.parser.print_usage(sys.stderr)
        print(f"kerasgen {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except (CLIError, SpecError, StoreError, DataError, OptionsError, StudyError,
            DiskFull, ExportError, SettingsMismatch, OutputError, ModelError,
            MeasureError) as exc:
        print(f"kerasgen {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except ClaimError as exc:
        print(f"kerasgen {args.command}: internal error: {exc}", file=sys.stderr)
        return 3
    except BrokenPipeError:
        # The reader of our output went away (`kerasgen report | head`): end quietly.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print(f"kerasgen {args.command}: interrupted; run the same command again to resume.",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
