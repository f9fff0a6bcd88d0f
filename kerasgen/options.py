"""How a study is run (not what it studies): ``RunOptions``. No TensorFlow here.

Everything a driver decides before training starts lives here, so that building the
options, validating a specification and registering a study never load TensorFlow:
settings TensorFlow reads once at import (``TF_ENABLE_ONEDNN_OPTS``) can still be
applied afterwards, in the driver and in every worker process.
"""

from __future__ import annotations

from dataclasses import dataclass

ONEDNN_CHOICES = ("auto", "default", "on", "off")


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
    jit_compile: bool | str = "auto"  # "auto": off on CPU (measured slower), on for GPU
    layout: str = "auto"  # packed layout: "branches", "fused"; "auto" per device
    stale_seconds: float = 600.0
    heartbeat_seconds: float | None = None  # default: stale_seconds / 4
    max_attempts: int = 3
    steps_per_execution: int = 1
    mirrored: bool = False  # one cell on all local GPUs (MirroredStrategy)
    onednn: bool | str | None = "auto"
    verbose: int = 0


def onednn_option(choice: str) -> bool | str | None:
    """The command line's ``--onednn auto|default|on|off`` as a ``RunOptions.onednn``."""
    return {"auto": "auto", "default": None, "on": True, "off": False}[choice]


__all__ = ["ONEDNN_CHOICES", "RunOptions", "onednn_option"]
