"""What a study will occupy on disk, known before it starts (no TensorFlow, no data).

A network's parameter count follows from its registry name and the data set's image
shape (``parameter_count``: the same layers ``kerasgen.models`` builds, counted, and held
equal to Keras's counts by the tests). From it, ``project_disk`` gives the files a study
writes under its checkpoint root (``kerasgen.checkpoints``):

- *checkpoints in flight*: each worker holds one pack checkpoint (every copy's weights,
  batch-norm statistics and optimizer slots), twice for the moment a new one is written
  before the old one is deleted; a pack's checkpoints are removed when it finishes;
- *kept weights*: one final-weights file per cell (``--keep-weights final``; none with
  ``none``), which ``kerasgen bound`` reads;
- *initial weights*: one network per (model, data set, seed) group.

``kerasgen run`` prints the projection and refuses to start when the checkpoint
directory's free space is below what is still to be written (``--force`` overrides).
"""

from __future__ import annotations

from dataclasses import dataclass

from kerasgen.naming import (
    RESNET_STAGES,
    VGG_CONFIGS,
    check_dataset_name,
    check_model_name,
    model_width,
    synthetic_args,
)

CIFAR_CLASSES = {"cifar10": 10, "cifar100": 100}
NPZ_ARRAY_OVERHEAD = 256
"""Bytes an ``.npz`` file spends per array beyond its data (zip and npy headers), rounded up."""


def dataset_shape(name: str) -> tuple[tuple[int, int, int], int]:
    """(image shape, number of classes) of a data set, from its name alone."""
    check_dataset_name(name)
    if name in CIFAR_CLASSES:
        return (32, 32, 3), CIFAR_CLASSES[name]
    if name == "digits":
        return (8, 8, 1), 10
    args = {"size": 8, "channels": 3, "num_classes": 10, **synthetic_args(name)}
    return (args["size"], args["size"], args["channels"]), args["num_classes"]


def _bn(channels: int) -> tuple[int, int]:
    return 2 * channels, 2 * channels  # gamma, beta; moving mean, moving variance


def parameter_count(model: str, input_shape, num_classes: int) -> tuple[int, int]:
    """(trainable, non-trainable) parameters of one network, as Keras counts them; the
    non-trainable ones are batch norm's moving statistics. ``input_shape`` is
    (height, width, channels)."""
    family, depth, batch_norm = check_model_name(model)
    height, width, channels = (int(s) for s in input_shape)
    trainable = fixed = 0

    def add(pair):
        nonlocal trainable, fixed
        trainable, fixed = trainable + pair[0], fixed + pair[1]

    if family == "resnet":
        blocks = (depth - 2) // 6
        add((9 * channels * RESNET_STAGES[0], 0))
        add(_bn(RESNET_STAGES[0]))
        previous = RESNET_STAGES[0]
        for stage, filters in enumerate(RESNET_STAGES):
            for block in range(blocks):
                stride = 2 if (stage > 0 and block == 0) else 1
                add((9 * previous * filters + 9 * filters * filters, 0))
                add(_bn(filters))
                add(_bn(filters))
                if stride != 1 or previous != filters:
                    add((previous * filters, 0))
                    add(_bn(filters))
                previous = filters
        add((previous * num_classes + num_classes, 0))
        return trainable, fixed
    base = model_width(model)
    previous = channels
    for item in VGG_CONFIGS[depth]:
        if item == "M":
            if height >= 2 and width >= 2:
                height, width = height // 2, width // 2
            continue
        filters = item * base // 64
        add((9 * previous * filters + filters, 0))
        if batch_norm:
            add(_bn(filters))
        previous = filters
    add((previous * height * width * num_classes + num_classes, 0))
    return trainable, fixed


def variable_count(model: str) -> int:
    """How many arrays one network's weights are (for the per-array file overhead)."""
    family, depth, batch_norm = check_model_name(model)
    if family == "resnet":
        blocks = (depth - 2) // 6
        # stem conv + BN(4); per block 2 convs + 2 BNs; two projection shortcuts; head 2
        return 1 + 4 + 3 * blocks * (2 + 8) + 2 * (1 + 4) + 2
    convs = sum(1 for item in VGG_CONFIGS[depth] if item != "M")
    return convs * (2 + (4 if batch_norm else 0)) + 2


@dataclass(frozen=True)
class DiskProjection:
    """Bytes a study writes under its checkpoint root (see the module docstring)."""

    checkpoint: int          # the largest pack checkpoint (one file)
    in_flight: int           # checkpoints held at once: workers x 2 x the largest
    kept_weights: int        # final weights still to be written
    kept_weights_total: int  # final weights of the whole study
    initial_weights: int
    workers: int
    keep_weights: str

    @property
    def needed(self) -> int:
        """What is still to be written: the disk must have this much free."""
        return self.in_flight + self.kept_weights + self.initial_weights

    @property
    def total(self) -> int:
        """The study's peak use: every cell's weights kept, checkpoints in flight."""
        return self.in_flight + self.kept_weights_total + self.initial_weights

    def describe(self) -> str:
        kept = (f"final weights {human_bytes(self.kept_weights_total)}"
                if self.keep_weights == "final" else "final weights not kept (--keep-weights "
                "none)")
        return (f"disk: at most {human_bytes(self.total)} under the checkpoint directory: "
                f"checkpoints in flight {human_bytes(self.in_flight)} ({self.workers} "
                f"worker{'s' if self.workers != 1 else ''} x 2 x {human_bytes(self.checkpoint)}"
                f" per pack, removed when a pack finishes), {kept}, initial weights "
                f"{human_bytes(self.initial_weights)}")


def human_bytes(count: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(count) < 1000 or unit == "TB":
            return f"{count:,.0f} {unit}" if unit == "B" else f"{count:,.1f} {unit}"
        count /= 1000
    raise AssertionError("unreachable")


def network_bytes(model: str, dataset: str, dtype_bytes: int, momentum: float = 0.0,
                  optimizer: bool = True, measured: dict | None = None) -> int:
    """One copy's share of a file: weights and moving statistics, plus the optimizer's
    momentum slot when there is one; with the npz per-array overhead. ``measured``:
    (model, dataset) -> (trainable, fixed, arrays) of networks counted by building them
    (yours, or any on a data set whose shape only loading tells)."""
    if measured and (model, dataset) in measured:
        trainable, fixed, arrays = measured[(model, dataset)]
    else:
        shape, classes = dataset_shape(dataset)
        trainable, fixed = parameter_count(model, shape, classes)
        arrays = variable_count(model)
    values = trainable + fixed
    if optimizer and momentum:
        values += trainable
        arrays += arrays
    return values * dtype_bytes + arrays * NPZ_ARRAY_OVERHEAD


def project_disk(spec, pack_size: int, workers: int = 1, keep_weights: str = "final",
                 finished_cells: int = 0, measured: dict | None = None) -> DiskProjection:
    """The disk a study needs (``spec``: a ``kerasgen.spec.Spec``); ``finished_cells``
    of its cells already have their final weights on disk; ``measured``: see
    ``network_bytes``."""
    dtype_bytes = 8 if spec.training.dtype == "float64" else 4
    momentum = spec.training.momentum
    copies = min(int(pack_size), len(spec.learning_rates))
    per_cell = {(m, d): network_bytes(m, d, dtype_bytes, momentum, measured=measured)
                for m in spec.models for d in spec.datasets}
    weights = {(m, d): network_bytes(m, d, dtype_bytes, optimizer=False, measured=measured)
               for m in spec.models for d in spec.datasets}
    checkpoint = max(copies * size for size in per_cell.values())
    cells_per_group = len(spec.batch_sizes) * len(spec.learning_rates) * len(spec.seeds)
    kept_total = sum(cells_per_group * size for size in weights.values()) \
        if keep_weights == "final" else 0
    if keep_weights == "final" and spec.cell_count:
        kept = round(kept_total * max(spec.cell_count - finished_cells, 0) / spec.cell_count)
    else:
        kept = 0
    # Initial weights are stored in float32 (drawn once, cast when trained in float64).
    initial = sum(len(spec.seeds) * network_bytes(m, d, 4, optimizer=False, measured=measured)
                  for m in spec.models for d in spec.datasets)
    concurrent = max(1, min(int(workers), spec.cell_count))
    return DiskProjection(checkpoint=checkpoint, in_flight=concurrent * 2 * checkpoint,
                          kept_weights=kept, kept_weights_total=kept_total,
                          initial_weights=initial, workers=concurrent,
                          keep_weights=keep_weights)


__all__ = ["DiskProjection", "dataset_shape", "human_bytes", "network_bytes",
           "parameter_count", "project_disk", "variable_count"]
