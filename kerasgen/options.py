"""How a study is run (not what it studies): ``RunOptions``. No TensorFlow here.

Everything a driver decides before training starts lives here, so that building the
options, validating a specification and registering a study never load TensorFlow:
settings TensorFlow reads once at import (``TF_ENABLE_ONEDNN_OPTS``) can still be
applied afterwards, in the driver and in every worker process.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass

ONEDNN_CHOICES = ("auto", "default", "on", "off")
LAYOUT_CHOICES = ("auto", "branches", "fused")
KEEP_WEIGHTS_CHOICES = ("final", "none")
PROCESS_CHOICES = ("auto", "new", "this")
KERAS_BACKENDS = ("tensorflow", "jax", "auto")
HEARTBEATS_PER_STALE = 4
"""A claim is refreshed this many times within the stale limit: a live worker whose
heartbeat is late once or twice (a busy machine, a garbage collection) never looks dead."""
MAX_STALE_SECONDS = 30 * 24 * 3600.0
"""The longest stale limit: a month (a longer one would never reclaim a dead worker's
pack; near 1e308 the clock arithmetic overflows)."""
MIN_STALE_SECONDS = 1.0
"""The shortest stale limit accepted (a heartbeat every 0.25 s): below it a busy machine
could delay heartbeats past the limit and workers would take packs from each other."""


class OptionsError(ValueError):
    """A run option with a bad value; the message names it and what it must be."""


@dataclass
class RunOptions:
    """How a study is run: nothing here changes a result (the specification does).

    ``onednn``: ``"auto"`` (on for x86-64 CPUs unless ``TF_ENABLE_ONEDNN_OPTS`` is
    exported), ``True``/``False`` (force), or ``None`` (TensorFlow's own per-CPU
    choice). It takes effect in every process that has not imported TensorFlow yet:
    ``kerasgen run`` sets it before any import, and spawned workers set it first thing.
    """

    pack_size: int = 20
    data_dir: str = "data"
    checkpoint_dir: str | None = None  # default: <db>.checkpoints next to the store
    jit_compile: bool | str = "auto"  # XLA; off under TensorFlow (its op determinism rules
    # it out), "auto" = on under JAX with a GPU; kerasgen.packing.resolve_jit_compile
    layout: str = "auto"  # packed layout: "branches", "fused"; "auto" per device
    stale_seconds: float = 600.0
    heartbeat_seconds: float | None = None  # default: stale_seconds / 4
    max_attempts: int = 3
    steps_per_execution: int = 1
    mirrored: bool = False  # one cell on all local GPUs (MirroredStrategy)
    onednn: bool | str | None = "auto"
    keep_weights: str = "final"  # each finished cell's final weights ("none": not kept)
    verbose: int = 0
    # Where a one-worker study trains: "auto" = in this process, unless a setting read
    # once per process (oneDNN, the Keras backend) was fixed here before with another
    # value (TensorFlow imported earlier): then in one fresh worker process, so the run
    # gets the settings it asked for; "new" = always a fresh worker process; "this" =
    # this process, and such a setting is an error naming both values.
    process: str = "auto"
    # The Keras backend every training process uses (set before Keras is imported):
    # "tensorflow", "jax" (XLA on by default), or "auto": the backend a study's earlier
    # runs used, else the faster one measured on this machine for this network
    # (kerasgen.backends); never mixed within a study without --force.
    keras_backend: str = "tensorflow"
    # Bit-exact packs under JAX: XLA off, so a pack equals its cells run alone bit for bit
    # (with XLA they agree to rounding: tests/test_backends.py measures it).
    exact: bool = False
    # Let runs trained under different kernel settings (backend, oneDNN, XLA, device;
    # settings.KERNEL_SETTINGS) into one study; without it the second kind is refused.
    allow_mixed_settings: bool = False

    def __post_init__(self):
        check_options(self)

    @property
    def heartbeat_interval(self) -> float:
        """Seconds between a training worker's heartbeats."""
        return self.heartbeat_seconds or self.stale_seconds / HEARTBEATS_PER_STALE


def _number(name: str, value, integer: bool, minimum: float) -> None:
    ok = not isinstance(value, bool) and (
        isinstance(value, int) if integer else isinstance(value, (int, float)))
    if not ok or not math.isfinite(value) or value < minimum:
        kind = "an integer" if integer else "a finite number"
        raise OptionsError(f"{name} must be {kind} >= {minimum:g}. Received: {name}={value!r}")


def check_options(options: "RunOptions") -> None:
    """Raise OptionsError naming the first bad value (before anything is claimed)."""
    _number("pack_size", options.pack_size, True, 1)
    _number("max_attempts", options.max_attempts, True, 1)
    _number("steps_per_execution", options.steps_per_execution, True, 1)
    _number("stale_seconds", options.stale_seconds, False, MIN_STALE_SECONDS)
    if options.stale_seconds > MAX_STALE_SECONDS:
        raise OptionsError(f"stale_seconds must be at most {MAX_STALE_SECONDS:g} (30 days). "
                           f"Received: stale_seconds={options.stale_seconds!r}")
    if options.heartbeat_seconds is not None:
        _number("heartbeat_seconds", options.heartbeat_seconds, False, 0.01)
        if options.heartbeat_seconds * 3 > options.stale_seconds:
            raise OptionsError(
                f"heartbeat_seconds={options.heartbeat_seconds!r} must be at most a third of "
                f"stale_seconds={options.stale_seconds!r}: a live worker must beat several "
                "times before its claim looks stale")
    if options.layout not in LAYOUT_CHOICES:
        raise OptionsError(f"layout must be one of {LAYOUT_CHOICES}. Received: "
                           f"layout={options.layout!r}")
    if options.jit_compile not in (True, False, "auto"):
        raise OptionsError("jit_compile must be True, False or 'auto'. Received: "
                           f"jit_compile={options.jit_compile!r}")
    if options.keep_weights not in KEEP_WEIGHTS_CHOICES:
        raise OptionsError(f"keep_weights must be one of {KEEP_WEIGHTS_CHOICES}. Received: "
                           f"keep_weights={options.keep_weights!r}")
    if options.keras_backend not in KERAS_BACKENDS:
        raise OptionsError(f"keras_backend must be one of {KERAS_BACKENDS}. Received: "
                           f"keras_backend={options.keras_backend!r}")
    if options.process not in PROCESS_CHOICES:
        raise OptionsError(f"process must be one of {PROCESS_CHOICES}. Received: "
                           f"process={options.process!r}")
    if options.onednn not in ("auto", True, False, None):
        raise OptionsError("onednn must be 'auto', True, False or None. Received: "
                           f"onednn={options.onednn!r}")


def onednn_option(choice: str) -> bool | str | None:
    """The command line's ``--onednn auto|default|on|off`` as a ``RunOptions.onednn``."""
    return {"auto": "auto", "default": None, "on": True, "off": False}[choice]


__all__ = ["DEFAULT_DB", "HEARTBEATS_PER_STALE", "HelpFormatter", "KEEP_WEIGHTS_CHOICES",
           "MAX_STALE_SECONDS",
           "add_store_arguments",
           "store_path", "LAYOUT_CHOICES", "MIN_STALE_SECONDS", "ONEDNN_CHOICES",
           "KERAS_BACKENDS", "OptionsError", "PROCESS_CHOICES", "RunOptions", "check_options",
           "onednn_option"]


# ---------------------------------------------------------------- the command lines

DEFAULT_DB = "data/kerasgen.db"


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Every option's help ends with its default, stated once: a help that already says
    its default ("(default: <db>.checkpoints)") is left alone. Descriptions keep their
    line breaks."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default:" in text or "%(default)" in text or action.default is argparse.SUPPRESS:
            return text
        return super()._get_help_string(action)


def add_store_arguments(parser: argparse.ArgumentParser, default: str = DEFAULT_DB) -> None:
    """The store of a command, given as ``DB`` or ``--db DB`` (the same for every command,
    ``kerasgen`` and ``python -m tui`` alike)."""
    parser.add_argument("db_path", nargs="?", metavar="DB", default=None,
                        help="the store (a .db file); the same as --db")
    parser.add_argument("--db", default=default, help="the store (a .db file)")


def store_path(parser: argparse.ArgumentParser, args: argparse.Namespace) -> str:
    """The store a command was given (``DB`` wins over the default of ``--db``; both
    given and different is an error)."""
    explicit = args.db != parser.get_default("db")
    if args.db_path and explicit and args.db_path != args.db:
        parser.error(f"two stores given: {args.db_path} and --db {args.db}; give one")
    return args.db_path or args.db
