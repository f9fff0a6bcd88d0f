"""The words kerasgen shows and stores, defined once: cell statuses, the metrics a
report or the dashboard analyses and their labels, display names of models and data sets.

Plain Python (no pandas, no TensorFlow): the dashboard's lightest modules import it.
"""

from __future__ import annotations

import re

# ---------------------------------------------------------------- statuses

PENDING, RUNNING, DONE, DIVERGED, FAILED = "pending", "running", "done", "diverged", "failed"
STATUSES: tuple[str, ...] = (PENDING, RUNNING, DONE, DIVERGED, FAILED)
"""A cell's status (the store's ``cells.status``; its SQL spells the same words)."""
FINISHED: tuple[str, ...] = (DONE, DIVERGED)
"""Statuses of a cell whose numbers count (a diverged cell with those before it)."""

# ---------------------------------------------------------------- metrics

PAPER_METRIC = "test_accuracy"
"""The test accuracy at each cell's kept epoch. With the default ``best_metric``
(``test_accuracy``) that is the highest test accuracy over all epochs, the paper's
measure; with ``best_metric = "test_loss"`` it is read at the epoch of lowest test loss."""

EXAMPLE_LOSS = "example_loss"
"""The runner's per-cell loss metric (``packing.example_loss``): the cross-entropy averaged
over the examples of an epoch (or of an evaluation), recorded as ``train_loss`` and
``test_loss`` whatever the pack size."""

METRICS: tuple[str, ...] = ("test_accuracy", "final_test_accuracy", "gap", "loss_gap")
"""What the report and the dashboard analyse: the paper's measure, the last epoch's test
accuracy, and the generalization gaps at the kept epoch, measured with the clean training
metrics (a fixed training subset evaluated as the test set): ``gap = train_eval_accuracy -
test_accuracy``, the 0-1 error gap, the nearest of these to what Theorems 1-2 bound (a
[0, 1] loss averaged over the posterior Q), and ``loss_gap = test_loss - train_eval_loss``
(cross-entropy at one point of weight space: not what the theorems bound)."""

METRIC_LABELS: dict[str, str] = {
    "test_accuracy": "test accuracy (kept epoch)",
    "best_test_accuracy": "best test accuracy (highest of any epoch)",
    "final_test_accuracy": "final test accuracy (last epoch)",
    "gap": "generalization gap (clean train acc. - test acc., kept epoch)",
    "loss_gap": "loss gap (test loss - clean train loss, kept epoch)",
    "train_eval_accuracy": "clean train accuracy (kept epoch)",
    "train_eval_loss": "clean train loss (kept epoch)",
    "val_accuracy": "validation accuracy (held-out training images, kept epoch)",
    "val_loss": "validation loss (held-out training images, kept epoch)",
    "test_loss": "test loss (kept epoch)",
    "final_train_accuracy": "running train accuracy (Keras, last epoch)",
    "final_train_loss": "running train loss (Keras, last epoch)",
    "final_test_loss": "final test loss (last epoch)",
}

METRIC_SHORT: dict[str, str] = {
    "test_accuracy": "test accuracy",
    "best_test_accuracy": "best test accuracy",
    "final_test_accuracy": "final test accuracy",
    "gap": "generalization gap",
    "loss_gap": "loss gap",
    "train_eval_accuracy": "clean train accuracy",
}

GROWING_METRICS: tuple[str, ...] = ("gap", "loss_gap", "test_loss", "final_test_loss")
"""Metrics the paper predicts to grow with the ratio (accuracies fall)."""

UNDERFIT_SIGN: dict[str, int] = {"gap": -1, "loss_gap": -1, "test_loss": 1,
                                 "final_test_loss": 1}
"""How a metric moves in a cell that under-fits (fits its training set worse): an
accuracy falls (-1, the default), a test loss rises (+1), and a generalization gap
shrinks (-1: an under-fitted network has less training accuracy to lose on the test set).
So under-training at large ratios explains an accuracy that falls with the ratio (the
paper's direction) but a gap that falls with it (against the paper's)."""


def underfit_sign(metric: str) -> int:
    """:data:`UNDERFIT_SIGN` of a metric (-1 for the accuracies)."""
    return UNDERFIT_SIGN.get(metric, -1)


POINT_METRICS: tuple[str, ...] = ("test_accuracy", "best_test_accuracy", "final_test_accuracy",
                                  "gap", "train_eval_accuracy", "final_train_accuracy")
"""Metrics that are fractions of a data set (accuracies and the accuracy gap): their
differences are shown in percentage points (0.0123 -> 1.23 points)."""


def metric_amount(metric: str, value: float, signed: bool = False) -> str:
    """A difference (a standard deviation, a range, a slope) of ``metric`` in words:
    ``1.23 points`` for accuracies and the accuracy gap, ``0.0123`` otherwise (losses);
    ``signed`` prints the sign (``+1.23 points``)."""
    sign = "+" if signed else ""
    if metric in POINT_METRICS:
        return f"{100.0 * value:{sign}.2f} points"
    return f"{value:{sign}.3g}"


KEPT_EPOCH_RULES: dict[str, str] = {
    "test_accuracy": "highest test accuracy",
    "test_loss": "lowest test loss",
    "val_accuracy": "highest validation accuracy",
    "val_loss": "lowest validation loss",
}

TEST_SELECTED: tuple[str, ...] = ("test_accuracy", "test_loss")
"""``best_metric`` rules that choose the kept epoch on the test set itself (the paper's):
the test numbers read at that epoch are then selected on the data they are reported on."""
"""``training.best_metric`` -> how the kept epoch is chosen, in words."""


def metric_label(metric: str, best_metric: str | None = None) -> str:
    """A metric's label; for the kept-epoch test accuracy it names the rule that chose
    the epoch (under the paper's rule, the paper's "best test accuracy")."""
    if metric == "test_accuracy" and best_metric in KEPT_EPOCH_RULES:
        if best_metric == "test_accuracy":
            return "best test accuracy (kept epoch: highest test accuracy)"
        return f"test accuracy (kept epoch: {KEPT_EPOCH_RULES[best_metric]})"
    return METRIC_LABELS.get(metric, metric)


def short_label(metric: str, best_metric: str | None = None) -> str:
    """A label short enough for an axis or a narrow screen."""
    if metric == "test_accuracy" and best_metric == "test_accuracy":
        return "best test accuracy"
    return METRIC_SHORT.get(metric, metric_label(metric, best_metric).split(" (")[0])


# ---------------------------------------------------------------- names

def display_name(name: str) -> str:
    """Human name of a model or data set: ``resnet110`` -> ``ResNet-110``,
    ``vgg19`` -> ``VGG-19``, ``vgg11_w16`` -> ``VGG-11 (width 16)``, ``cifar100`` ->
    ``CIFAR-100``; others unchanged. Model names are read with the registry's own grammar
    (``kerasgen.naming``)."""
    from kerasgen.naming import check_model_name, model_width

    try:
        family, depth, batch_norm = check_model_name(name)
    except ValueError:
        family = None
    if family == "resnet":
        return f"ResNet-{depth}"
    if family == "vgg":
        width = model_width(name)
        extras = (["no BN"] if not batch_norm else []) + ([f"width {width}"] if width != 64 else [])
        return f"VGG-{depth}" + (f" ({', '.join(extras)})" if extras else "")
    match = re.fullmatch(r"cifar-?([0-9]+)", str(name).lower())
    if match:
        return f"CIFAR-{match.group(1)}"
    if str(name).lower() in ("mnist", "svhn"):
        return str(name).upper()
    return str(name)


__all__ = ["DIVERGED", "DONE", "EXAMPLE_LOSS", "FAILED", "FINISHED", "GROWING_METRICS",
           "KEPT_EPOCH_RULES",
           "METRICS", "METRIC_LABELS", "METRIC_SHORT", "PAPER_METRIC", "PENDING", "POINT_METRICS",
           "RUNNING", "STATUSES", "TEST_SELECTED", "UNDERFIT_SIGN", "display_name",
           "metric_amount",
           "metric_label", "short_label", "underfit_sign"]
