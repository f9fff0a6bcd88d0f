"""Study specifications: TOML files or Python objects, validated, expanded into cells.

A specification says *what* is studied (models x datasets x batch sizes x learning
rates x seeds, how long each cell trains, the optimizer's settings) — everything that
changes the science, all of it recorded in the store. *How* it is run (pack size,
workers, compile mode, checkpoint directory) is not part of it.

TOML::

    name = "my-study"
    models = ["resnet20", "vgg19"]
    datasets = ["cifar10"]
    batch_sizes = { start = 16, stop = 320, step = 16 }   # or a list
    learning_rates = [0.01, 0.05, 0.1]
    seeds = [0]
    epochs = 200                      # the paper's fixed budget

    [stop]                            # optional; default: rule = "epochs"
    rule = "train_loss"               # train until the training loss is below
    threshold = 0.01                  # `threshold`, at most `epochs` epochs
                                      # (Jiang et al., "Fantastic generalization measures")
    [training]                        # optional; defaults shown
    momentum = 0.0                    # plain SGD, as in the paper
    weight_decay = 0.0                # off: the paper disables "all training techniques"
    augment = "default"               # pad-crop-flip for CIFAR, none otherwise; or true/false
    best_metric = "test_accuracy"     # the epoch kept per cell: max test accuracy (the
                                      # paper's measure, chosen on the test set), min
                                      # "test_loss", or "val_accuracy" / "val_loss" on
                                      # the held-out validation images
    validation_size = 0               # images held out of the training set (the same
                                      # for every run) to choose the kept epoch on
    test_every = 1                    # evaluate the test set every n epochs (the paper: 1)
    dtype = "float32"                 # or "float64": variables, computation, optimizer
    train_eval_size = "test"          # clean training metrics on a fixed training subset
                                      # of this many images ("test": as many as the test
                                      # set; "all"; 0: off), no augmentation, BN inference
    last_batch = "keep"               # the last partial batch of an epoch: "keep" (as
                                      # PyTorch's DataLoader) or "drop"
    checkpoint_every = 1              # checkpoint a pack every n epochs (and whenever a
                                      # cell finishes); a resumed pack redoes at most
                                      # n - 1 epochs, with identical results

``checkpoint_every`` changes no number; it is part of the specification because every
worker of a study, on any machine, reads it from the store.
"""

from __future__ import annotations

import math
import numbers
import tomllib
import unicodedata
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

from kerasgen.naming import check_dataset_name, known_train_size
from kerasgen.naming import model_ref as _model_ref

STOP_RULES = ("epochs", "train_loss")
BEST_METRICS = ("test_accuracy", "test_loss", "val_accuracy", "val_loss")
DTYPES = ("float32", "float64", "mixed_bfloat16")
"""``mixed_bfloat16``: Keras's mixed-precision policy (float32 variables and optimizer
update, bfloat16 computation); it changes the numbers, so only the spec asks for it."""
LAST_BATCH = ("keep", "drop")
TRAIN_EVAL_SIZES = ("test", "all")  # or an integer number of images (0: off)


class SpecError(ValueError):
    """An invalid specification; the message names the bad value and the fix."""


@dataclass(frozen=True)
class Stop:
    rule: str = "epochs"
    threshold: float | None = None  # for rule = "train_loss"


@dataclass(frozen=True)
class Training:
    momentum: float = 0.0
    weight_decay: float = 0.0
    augment: str | bool = "default"
    best_metric: str = "test_accuracy"
    test_every: int = 1
    dtype: str = "float32"
    train_eval_size: int | str = "test"
    last_batch: str = "keep"
    checkpoint_every: int = 1
    validation_size: int = 0


@dataclass(frozen=True)
class Spec:
    name: str
    models: tuple[str, ...]
    datasets: tuple[str, ...]
    batch_sizes: tuple[int, ...]
    learning_rates: tuple[float, ...]
    seeds: tuple[int, ...] = (0,)
    epochs: int = 200
    stop: Stop = field(default_factory=Stop)
    training: Training = field(default_factory=Training)
    # Keyword arguments of a network of your own: {"package.module:function": {...}}.
    model_args: dict = field(default_factory=dict)
    # Where a registered model name's builder is imported from ({"mynet": "pkg.mod:fn"}):
    # filled from kerasgen.register_model when the spec is made, so that a worker process
    # (or a Ray worker) that never ran the registration finds the same network.
    model_targets: dict = field(default_factory=dict)

    def __post_init__(self):
        # As the TOML takes them: lists, ranges ({start, stop, step} or a Python range),
        # and the [stop]/[training] tables as dicts; as NumPy and pandas users pass them:
        # any sequence or array, NumPy scalars. Stored as tuples (the spec is frozen).
        for key in ("models", "datasets", "batch_sizes", "learning_rates", "seeds"):
            value = getattr(self, key)
            if isinstance(value, dict):
                value = _expand_range(value, key)
            value = _as_sequence(value)
            if isinstance(value, (list, range)):
                object.__setattr__(self, key, tuple(_plain(v) for v in value))
        object.__setattr__(self, "epochs", _plain(self.epochs))
        for key, kind in (("stop", Stop), ("training", Training)):
            value = getattr(self, key)
            if isinstance(value, dict):
                _reject_unknown(value, set(kind.__dataclass_fields__), f"specification [{key}]")
                object.__setattr__(self, key, kind(**{k: _plain(v) for k, v in value.items()}))
        for key in ("model_args", "model_targets"):
            if not isinstance(getattr(self, key), dict):
                raise SpecError(f"{key} must be a table. Received: {key}={getattr(self, key)!r}")
        targets = dict(self.model_targets)
        for m in self.models if isinstance(self.models, tuple) else ():
            try:
                ref = _model_ref(m, targets)
            except ValueError:
                continue  # named by validate() below
            if ref.kind == "registered" and ref.target and m not in targets:
                targets[m] = ref.target
        object.__setattr__(self, "model_targets", dict(sorted(targets.items())))
        object.__setattr__(self, "model_args", {
            k: {a: _plain(v) for a, v in sorted(args.items())} if isinstance(args, dict) else args
            for k, args in sorted(self.model_args.items())})
        validate(self)

    # -- derived
    def cells(self) -> list[dict]:
        """Every cell, in the order workers claim them."""
        return [
            {"model": m, "dataset": d, "batch_size": b, "learning_rate": lr, "seed": s}
            for m in self.models for d in self.datasets for s in self.seeds
            for b in self.batch_sizes for lr in self.learning_rates
        ]

    @property
    def cell_count(self) -> int:
        return (len(self.models) * len(self.datasets) * len(self.seeds)
                * len(self.batch_sizes) * len(self.learning_rates))

    def to_dict(self) -> dict:
        """The normalized form stored in the database (and compared on re-runs)."""
        out = asdict(self)
        for key in ("models", "datasets", "batch_sizes", "learning_rates", "seeds"):
            out[key] = list(out[key])
        return out

    def model(self, name: str):
        """The ``models`` entry ``name`` parsed (``kerasgen.naming.ModelRef``), with its
        ``model_args`` and the import path a worker process finds it by."""
        return _model_ref(name, self.model_targets).with_args(self.model_args.get(name))

    def replace(self, **changes: Any) -> "Spec":
        data = self.to_dict()
        data.update(changes)
        return from_dict(data)


# ---------------------------------------------------------------- building

_TOP_KEYS = {"name", "models", "datasets", "batch_sizes", "learning_rates", "seeds", "epochs",
             "stop", "training", "model_args", "model_targets"}
_STOP_KEYS = {"rule", "threshold"}
_TRAINING_KEYS = set(Training.__dataclass_fields__)


def from_dict(data: dict, source: str = "specification") -> Spec:
    """Build a Spec from plain data (as parsed from TOML), rejecting unknown keys."""
    if not isinstance(data, dict):
        raise SpecError(f"The {source} must be a table of keys, not {type(data).__name__}.")
    _reject_unknown(data, _TOP_KEYS, source)
    missing = [k for k in ("name", "models", "datasets", "batch_sizes", "learning_rates")
               if k not in data]
    if missing:
        raise SpecError(f"The {source} lacks {', '.join(missing)}.")
    stop = data.get("stop", {})
    training = data.get("training", {})
    for key, table in (("stop", stop), ("training", training)):
        if not isinstance(table, dict):
            raise SpecError(f"{key} must be a table ([{key}] in TOML). Received: {table!r}")
    _reject_unknown(stop, _STOP_KEYS, f"{source} [stop]")
    _reject_unknown(training, _TRAINING_KEYS, f"{source} [training]")
    return Spec(
        name=data["name"],
        models=_as_tuple(data["models"], "models"),
        datasets=_as_tuple(data["datasets"], "datasets"),
        batch_sizes=_as_tuple(_expand_range(data["batch_sizes"], "batch_sizes"), "batch_sizes"),
        learning_rates=_as_tuple(_expand_range(data["learning_rates"], "learning_rates"),
                                 "learning_rates"),
        seeds=_as_tuple(data.get("seeds", [0]), "seeds"),
        epochs=data.get("epochs", 200),
        stop=Stop(**stop),
        training=Training(**training),
        model_args=data.get("model_args", {}),
        model_targets=data.get("model_targets", {}),
    )


spec_from_dict = from_dict  # the public name: kerasgen.spec_from_dict


def load_spec(path: str | Path) -> Spec:
    """Read a TOML specification file."""
    path = Path(path)
    if not path.exists():
        raise SpecError(f"Specification file {path} does not exist.")
    if path.is_dir():
        raise SpecError(f"Specification file {path} is a directory; give a TOML file.")
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise SpecError(f"Specification file {path} cannot be read ({exc.strerror or exc}).") \
            from None
    except UnicodeDecodeError:
        raise SpecError(f"Specification file {path} is not text (not UTF-8): give a TOML "
                        "file.") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"{path} is not valid TOML: {exc}") from exc
    return from_dict(data, source=str(path))


def _reject_unknown(data: dict, allowed: set, where: str) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        import difflib

        hints = []
        for key in unknown:
            close = difflib.get_close_matches(key, sorted(allowed), n=1)
            hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise SpecError(f"Unknown key(s) in the {where}: {', '.join(hints)}. "
                        f"Allowed: {', '.join(sorted(allowed))}.")


def _as_tuple(value, key: str) -> tuple:
    value = _as_sequence(value)
    if isinstance(value, (list, tuple, range)):
        return tuple(_plain(v) for v in value)
    raise SpecError(f"{key} must be a list. Received: {key}={value!r}")


def _as_sequence(value):
    """An array or any other non-text sequence (a NumPy array, a pandas Series, a tuple)
    as a list; anything else as it is (and refused by validation, naming it)."""
    if isinstance(value, (str, bytes, dict)) or value is None:
        return value
    if hasattr(value, "tolist") and callable(value.tolist):
        listed = value.tolist()
        return listed if isinstance(listed, list) else value
    if isinstance(value, (tuple, range)):
        return list(value)
    if isinstance(value, Sequence):
        return list(value)
    return value


def _plain(value):
    """A NumPy (or other numbers-ABC) scalar as the Python int or float it stands for;
    anything else as it is. Booleans stay booleans (and are refused where a number is
    meant)."""
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if hasattr(value, "item") and getattr(value, "shape", None) == ():
        return _plain(value.item())
    return value


def _expand_range(value, key: str):
    """``{start, stop, step}`` (inclusive stop) -> list; lists pass through."""
    if not isinstance(value, dict):
        return value
    _reject_unknown(value, {"start", "stop", "step"}, f"range of {key}")
    try:
        start, stop, step = value["start"], value["stop"], value["step"]
    except KeyError as exc:
        raise SpecError(f"The range of {key} needs start, stop and step; {exc} is "
                        "missing.") from None
    for name, number in (("start", start), ("stop", stop), ("step", step)):
        if isinstance(number, bool) or not isinstance(number, (int, float)):
            raise SpecError(f"{key}.{name} must be a number. Received: {number!r}")
    if step <= 0 or stop < start:
        raise SpecError(f"The range of {key} must have step > 0 and stop >= start. "
                        f"Received: {value!r}")
    count = int(math.floor((stop - start) / step + 1e-9)) + 1
    if count > 10_000:
        raise SpecError(f"The range of {key} has {count} values; that is not a grid "
                        "anyone can train.")
    values = [start + i * step for i in range(count)]
    if all(isinstance(v, int) for v in (start, stop, step)):
        return values
    return [float(f"{v:.12g}") for v in values]


# ---------------------------------------------------------------- growth

GROWING_AXES = ("models", "datasets", "batch_sizes", "learning_rates", "seeds")


@dataclass(frozen=True)
class Growth:
    """How a specification grows a stored one (``kerasgen run --extend``): the values it
    adds to each axis, and the epochs it raises (old, new) under the epochs rule."""

    added: dict
    epochs: tuple[int, int] | None

    def describe(self) -> str:
        parts = [f"+ {key.replace('_', ' ')} {list(values)}"
                 for key, values in self.added.items() if values]
        if self.epochs:
            parts.append(f"epochs {self.epochs[0]} -> {self.epochs[1]} (finished cells "
                         "continue from their final weights)")
        return "; ".join(parts) or "nothing"


def growth(old: "Spec", new: "Spec") -> tuple[Growth | None, list[str]]:
    """(Growth, []) when ``new`` only adds values to the grid's axes (models, data sets,
    batch sizes, learning rates, seeds), arguments of added models, or raises the
    epochs under the ``epochs`` stop rule; else (None, the keys that would alter numbers
    already recorded)."""
    problems = []
    added = {}
    for key in GROWING_AXES:
        before, after = getattr(old, key), getattr(new, key)
        marker = (lambda v: round(v, 12)) if key == "learning_rates" else (lambda v: v)
        lost = [v for v in before if marker(v) not in {marker(a) for a in after}]
        if lost:
            problems.append(f"{key} drops {lost}")
        added[key] = [v for v in after if marker(v) not in {marker(b) for b in before}]
    for key in ("name", "stop", "training"):
        if getattr(old, key) != getattr(new, key):
            problems.append(f"{key}: {getattr(old, key)!r} in the store, {getattr(new, key)!r} now")
    for key in ("model_args", "model_targets"):
        for model in old.models:
            if getattr(old, key).get(model) != getattr(new, key).get(model):
                problems.append(f"{key}.{model}: {getattr(old, key).get(model)!r} in the store, "
                                f"{getattr(new, key).get(model)!r} now")
    epochs = None
    if new.epochs < old.epochs:
        problems.append(f"epochs: {old.epochs} in the store, {new.epochs} now (a study grows, "
                        "it never shrinks)")
    elif new.epochs > old.epochs:
        if old.stop.rule != "epochs":
            problems.append(f"epochs: {old.epochs} -> {new.epochs} under the {old.stop.rule!r} "
                            "stop rule (only the epochs rule continues finished cells)")
        else:
            epochs = (old.epochs, new.epochs)
    return (None, problems) if problems else (Growth(added, epochs), [])


# ---------------------------------------------------------------- validation

MAX_NAME_LENGTH = 128
MIN_LEARNING_RATE = 1e-30
MAX_LEARNING_RATE = 1e30
"""Learning rates a float32 network can train with: below, an update underflows (1e-310
is zero in float32, and far below float32's smallest normal number); above, it overflows."""
MAX_SEED = 2**32 - 1  # numpy's and Keras's seeding take 32-bit seeds

# What each list holds: (test, what to say).
_ELEMENTS = {
    "models": (lambda v: isinstance(v, str), "names (strings)"),
    "datasets": (lambda v: isinstance(v, str), "names (strings)"),
    "batch_sizes": (lambda v: isinstance(v, int) and not isinstance(v, bool), "integers"),
    "learning_rates": (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
                       "numbers"),
    "seeds": (lambda v: isinstance(v, int) and not isinstance(v, bool), "integers"),
}


def check_name(name) -> None:
    """A study name is data: any printable text up to MAX_NAME_LENGTH characters (it never
    forms a path; see kerasgen.checkpoints). Control characters (a NUL, a newline) are
    refused: they would garble every table and log that prints the name."""
    if not isinstance(name, str) or not name.strip():
        raise SpecError(f"name must be a non-empty string. Received: name={name!r}")
    if len(name) > MAX_NAME_LENGTH:
        raise SpecError(f"name must be at most {MAX_NAME_LENGTH} characters; it has "
                        f"{len(name)}. Received: name={name[:40]!r}...")
    bad = [c for c in name if unicodedata.category(c) in ("Cc", "Cf", "Cs", "Co", "Zl", "Zp")]
    if bad:
        raise SpecError(f"name must be printable text; it contains {bad[0]!r}. "
                        f"Received: name={name!r}")


def validate(spec: Spec) -> None:
    """Raise SpecError naming the first bad value."""
    check_name(spec.name)
    for key in ("models", "datasets", "batch_sizes", "learning_rates", "seeds"):
        values = getattr(spec, key)
        if not isinstance(values, tuple):
            raise SpecError(f"{key} must be a list. Received: {key}={values!r}")
        if not values:
            raise SpecError(f"{key} must not be empty.")
        ok, what = _ELEMENTS[key]
        for v in values:  # before anything hashes them: a nested list is a message
            if not ok(v):
                raise SpecError(f"{key} must be a list of {what}. Received: {v!r} in "
                                f"{key}={list(values)!r}")
        seen = set()
        for v in values:
            marker = round(v, 12) if isinstance(v, float) else v
            if marker in seen:
                raise SpecError(f"{key} lists {v!r} twice; each value may appear once.")
            seen.add(marker)
    for m in spec.models:
        try:
            _model_ref(m, spec.model_targets)
        except ValueError as exc:
            raise SpecError(str(exc)) from None
    for key, args in spec.model_args.items():
        if key not in spec.models:
            raise SpecError(f"model_args names {key!r}, which is not in models "
                            f"{list(spec.models)}: give the arguments to one of them.")
        if not isinstance(args, dict) or not all(
                isinstance(a, str) and (v is None or isinstance(v, (str, bool, int, float)))
                for a, v in args.items()):
            raise SpecError(f"model_args.{key!r} must be a table of names to text, numbers or "
                            f"true/false. Received: {args!r}")
        if _model_ref(key, spec.model_targets).builtin:
            raise SpecError(f"model_args.{key!r}: a built-in network takes no arguments (its "
                            "name says its depth and width).")
    for d in spec.datasets:
        try:
            check_dataset_name(d)
        except ValueError as exc:
            raise SpecError(str(exc)) from None
    for b in spec.batch_sizes:
        if b < 1:
            raise SpecError(f"batch_sizes must be positive. Received: {b!r}")
    for d in spec.datasets:
        size = known_train_size(d)
        if size is not None and max(spec.batch_sizes) > size:
            raise SpecError(
                f"Batch size {max(spec.batch_sizes)} is larger than the {size} training "
                f"examples of {d!r}; use batch sizes up to {size}.")
    for lr in spec.learning_rates:
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr):
            raise SpecError(f"learning_rates must be numbers. Received: {lr!r}")
        if lr <= 0:
            raise SpecError(f"learning_rates must be positive. Received: {lr!r}")
        if not MIN_LEARNING_RATE <= lr <= MAX_LEARNING_RATE:
            raise SpecError(
                f"learning_rates must be between {MIN_LEARNING_RATE:g} and "
                f"{MAX_LEARNING_RATE:g}: the networks train in float32, where {lr!r} "
                f"{'rounds to zero or loses its precision' if lr < 1 else 'overflows every update'}"
                f". Received: {lr!r}")
    for s in spec.seeds:
        if not 0 <= s <= MAX_SEED:
            raise SpecError(f"seeds must be integers from 0 to {MAX_SEED} (2**32 - 1). "
                            f"Received: {s!r}")
    if isinstance(spec.epochs, bool) or not isinstance(spec.epochs, int):
        raise SpecError(f"epochs must be an integer. Received: epochs={spec.epochs!r}")
    if spec.epochs < 1:
        raise SpecError(f"epochs must be >= 1. Received: epochs={spec.epochs!r}")
    if not isinstance(spec.stop, Stop):
        raise SpecError(f"stop must be a table (rule, threshold). Received: stop={spec.stop!r}")
    if not isinstance(spec.training, Training):
        raise SpecError("training must be a table of training settings (momentum, "
                        f"weight_decay, ...). Received: training={spec.training!r}")
    _validate_stop(spec.stop)
    _validate_training(spec.training)
    if spec.training.test_every > spec.epochs:
        raise SpecError(
            f"training.test_every = {spec.training.test_every} is more than the "
            f"{spec.epochs} epochs: no epoch would be tested, and every cell would end with "
            f"no test metric. Use test_every <= epochs.")
    size = spec.training.train_eval_size
    held = spec.training.validation_size
    for d in spec.datasets:
        n = known_train_size(d)
        if n is None:
            continue
        if held and n - held < max(spec.batch_sizes):
            raise SpecError(
                f"training.validation_size = {held} leaves {n - held} of the {n} training "
                f"examples of {d!r}, fewer than batch size {max(spec.batch_sizes)}; hold "
                "out fewer images.")
        if isinstance(size, int) and not isinstance(size, bool) and size > n - held:
            raise SpecError(
                f"training.train_eval_size = {size} is larger than the {n - held} training "
                f"examples of {d!r}" + (f" left after the {held} held out for validation"
                                        if held else "")
                + f"; use at most {n - held}, or \"all\".")


def _validate_stop(stop: Stop) -> None:
    if stop.rule not in STOP_RULES:
        raise SpecError(f"stop.rule must be one of {STOP_RULES}. Received: {stop.rule!r}")
    if stop.rule == "train_loss":
        t = stop.threshold
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not (t > 0):
            raise SpecError("stop.threshold must be a positive number when "
                            f"stop.rule = 'train_loss'. Received: threshold={t!r}")
    elif stop.threshold is not None:
        raise SpecError("stop.threshold only applies to stop.rule = 'train_loss'. "
                        f"Received: threshold={stop.threshold!r} with rule {stop.rule!r}")


def _validate_training(t: Training) -> None:
    for key in ("momentum", "weight_decay"):
        v = getattr(t, key)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise SpecError(f"training.{key} must be a number. Received: {v!r}")
    if not 0.0 <= t.momentum < 1.0:
        raise SpecError(f"training.momentum must be in [0, 1). Received: {t.momentum!r}")
    if t.weight_decay < 0:
        raise SpecError(f"training.weight_decay must be >= 0. Received: {t.weight_decay!r}")
    if t.augment not in ("default", True, False):
        raise SpecError("training.augment must be \"default\", true or false. "
                        f"Received: {t.augment!r}")
    if t.best_metric not in BEST_METRICS:
        raise SpecError(f"training.best_metric must be one of {BEST_METRICS}. "
                        f"Received: {t.best_metric!r}")
    held = t.validation_size
    if isinstance(held, bool) or not isinstance(held, int) or held < 0:
        raise SpecError("training.validation_size must be a number of images >= 0 (0: no "
                        f"validation images). Received: {held!r}")
    if t.best_metric.startswith("val_") and held == 0:
        raise SpecError(f"training.best_metric = {t.best_metric!r} chooses the kept epoch on "
                        "validation images: set training.validation_size (e.g. 5000 for "
                        "CIFAR) to hold them out of the training set.")
    if isinstance(t.test_every, bool) or not isinstance(t.test_every, int) or t.test_every < 1:
        raise SpecError(f"training.test_every must be an integer >= 1. Received: {t.test_every!r}")
    if isinstance(t.checkpoint_every, bool) or not isinstance(t.checkpoint_every, int) \
            or t.checkpoint_every < 1:
        raise SpecError("training.checkpoint_every must be an integer >= 1 (epochs between "
                        f"checkpoints). Received: {t.checkpoint_every!r}")
    if t.dtype not in DTYPES:
        raise SpecError(f"training.dtype must be one of {DTYPES}. Received: {t.dtype!r}")
    if t.last_batch not in LAST_BATCH:
        raise SpecError(f"training.last_batch must be one of {LAST_BATCH}. "
                        f"Received: {t.last_batch!r}")
    size = t.train_eval_size
    if isinstance(size, bool) or not (size in TRAIN_EVAL_SIZES or isinstance(size, int)) \
            or (isinstance(size, int) and size < 0):
        raise SpecError("training.train_eval_size must be \"test\" (as many images as the "
                        "test set), \"all\", or a number of images >= 0 (0: off). "
                        f"Received: {size!r}")


# ---------------------------------------------------------------- presets

def _paper() -> Spec:
    return Spec(
        name="paper",
        models=("resnet110", "vgg19"),
        datasets=("cifar10", "cifar100"),
        batch_sizes=tuple(range(16, 321, 16)),
        learning_rates=tuple(round(0.01 * i, 2) for i in range(1, 21)),
        seeds=(0,),
        epochs=200,
    )


def _demo() -> Spec:
    return Spec(
        name="demo",
        models=("resnet8", "vgg11_w16"),
        datasets=("digits",),
        batch_sizes=(16, 32, 64, 128),
        learning_rates=(0.025, 0.05, 0.1, 0.2),
        # Two seeds: every cell is a mean over replicates, so the report can say how
        # much of each coefficient is seed noise (intervals over seeds, noise floor).
        seeds=(0, 1),
        epochs=30,
        # A fixed budget leaves the large-ratio cells of small data under-trained (the
        # very confound the report checks); train each cell to a low loss instead.
        stop=Stop(rule="train_loss", threshold=0.05),
        # 1,347 training images end every epoch of batch 16, 32 and 64 with a batch of 3,
        # whose batch-norm statistics weigh 10% in the moving averages the test uses
        # (VGG's 1x1 feature maps made its batch-64 row test at 0.78-0.96): drop it.
        training=Training(last_batch="drop"),
    )


def _smoke() -> Spec:
    return Spec(
        name="smoke",
        models=("resnet8",),
        datasets=("synthetic",),
        batch_sizes=(32, 64),
        learning_rates=(0.05, 0.1),
        seeds=(0,),
        epochs=2,
    )


PRESETS = {"paper": _paper, "demo": _demo, "smoke": _smoke}
PRESET_HELP = {
    "paper": "the paper's grid: ResNet-110 and VGG-19 x CIFAR-10/100 x 20 batch sizes "
             "(16..320) x 20 learning rates (0.01..0.20), plain SGD, 200 epochs, 1,600 cells",
    "demo": "offline: real 8x8 digits, ResNet-8 and a narrow VGG-11, 4 batch sizes x 4 "
            "learning rates x 2 seeds (64 runs of 32 cells), each trained to loss < 0.05 "
            "(at most 30 epochs, last partial batch dropped), about ten minutes on 2 CPU "
            "cores",
    "smoke": "seconds: ResNet-8 on synthetic 8x8 images, 2 x 2 grid, 2 epochs",
}


def preset(name: str) -> Spec:
    """A named study: ``paper``, ``demo`` or ``smoke``."""
    try:
        return PRESETS[name]()
    except KeyError:
        raise SpecError(f"Unknown preset {name!r}: choose one of {', '.join(PRESETS)}.") from None


__all__ = ["GROWING_AXES", "Growth", "PRESETS", "Spec", "SpecError", "Stop", "Training",
           "check_name", "from_dict", "growth",
           "load_spec", "preset", "spec_from_dict", "validate"]
