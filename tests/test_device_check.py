"""scripts/device_check.py, the GPU check, cannot rot: its --smoke run (the same code on
tiny networks) runs here as on the GPU machine, under JAX with TensorFlow unimportable,
and every configuration must come out with a finite rate and a ratio to K = 1, and the
projection of the paper preset must be printed."""

import importlib.util
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "device_check.py"

# The GPU machine has JAX but no TensorFlow: run the script where importing TensorFlow
# fails (Keras and JAX stay importable, unlike under tests/helpers/no_tensorflow.py).
WITHOUT_TENSORFLOW = """
import importlib.abc, runpy, sys

class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("tensorflow", "tensorflow_datasets", "tf_keras"):
            raise ImportError(f"this process must not import {name}")
        return None

sys.meta_path.insert(0, Refuse())
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""

SMOKE_CONFIGS = (
    {(model, layout, True, k) for model in ("resnet8", "vgg11_w8")
     for layout, k in (("bare", 1), ("branches", 1), ("branches", 2), ("fused", 1), ("fused", 2))}
    | {("vgg11_w8", layout, False, k)
       for layout, k in (("bare", 1), ("branches", 1), ("branches", 2), ("fused", 1), ("fused", 2))}
)


def load_script():
    if "device_check" in sys.modules:
        return sys.modules["device_check"]
    spec = importlib.util.spec_from_file_location("device_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["device_check"] = module  # its dataclass looks itself up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_smoke_measures_every_configuration_under_jax_without_tensorflow(tmp_path):
    out = tmp_path / "device_check.json"
    env = {**os.environ, "KERAS_BACKEND": "jax", "PYTHONPATH": str(ROOT),
           "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run(
        [sys.executable, "-c", WITHOUT_TENSORFLOW, str(SCRIPT), "--smoke", "--json", str(out)],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    log = proc.stdout[-4000:] + proc.stderr[-4000:]
    assert proc.returncode == 0, log
    result = json.loads(out.read_text())
    assert result["facts"]["backend"] == "jax"
    assert result["facts"]["tensorflow_imported"] is False
    assert re.search(r"^# device: cpu", proc.stdout, re.M), log

    rows = result["rows"]
    assert {(r["model"], r["layout"], r["jit"], r["copies"]) for r in rows} == SMOKE_CONFIGS
    for r in rows:
        name = f"{r['model']} {r['layout']} jit={r['jit']} K={r['copies']}"
        assert r["status"] == "measured", (name, r["note"])
        assert len(r["rates"]) == 2, name  # two interleaved rounds
        for key in ("min", "median", "max", "ratio_to_k1"):
            assert r[key] is not None and math.isfinite(r[key]) and r[key] > 0, (name, key)
        if r["copies"] == 1:
            assert r["ratio_to_k1"] == 1.0
        # ... and the same figures in the printed table
        line = re.search(rf"^{r['model']}\s+{r['layout']}\s+{'on' if r['jit'] else 'off'}\s+"
                         rf"{r['copies']}\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+\d+\s+"
                         r"[\d.]+\s+([\d.]+)\s+([\d.]+)\s+measured$", proc.stdout, re.M)
        assert line, (name, log)
        assert float(line.group(2)) == pytest.approx(r["median"], abs=0.06)
        assert float(line.group(4)) == pytest.approx(r["ratio_to_k1"], abs=0.006)
        # the long fit, fed as the runner feeds a study, beside the short fits
        assert r["long_rate"] > 0 and r["long_steps"] >= 10, name
        assert float(line.group(5)) == pytest.approx(r["long_rate"], abs=0.06)
        assert float(line.group(6)) == pytest.approx(r["long_rate"] / r["median"], abs=0.006)

    projection = result["projection"]
    assert set(projection["networks"]) == {"resnet110", "vgg19"}
    assert math.isfinite(projection["hours_best"]) and projection["hours_best"] > 0
    assert math.isfinite(projection["hours_unpacked"]) and projection["hours_unpacked"] > 0
    for name in ("resnet110", "vgg19"):
        assert re.search(rf"^projection {name}: best [\d,]+ device-hours at [\d,.]+ "
                         r"model-images/s \(.*, long fit; short fits [\d,.]+; .* one cell at "
                         r"a time [\d,]+ device-hours", proc.stdout, re.M), log
        # the projection is the steady state: the best configuration's own long fit
        row = projection["networks"][name]
        best = next(r for r in rows if f"{r['model']} {r['layout']} "
                    f"xla={'on' if r['jit'] else 'off'} K={r['copies']}" == row["best"])
        assert row["best_rate"] == pytest.approx(best["long_rate"] * row["flop_scale"])
    assert re.search(r"^projection total: best [\d,]+ device-hours", proc.stdout, re.M), log


def test_flop_count_matches_the_built_networks():
    """The projection's FLOPs, counted from the architecture, equal those of the built
    Keras layers; ResNet-110 and VGG-19 have their published 253 M / 398 M multiply-adds."""
    from kerasgen.models import build_model

    check = load_script()
    for model, shape in (("resnet20", (32, 32, 3)), ("resnet8", (8, 8, 1)),
                         ("vgg11_w8", (32, 32, 3)), ("vgg11_w8", (8, 8, 3))):
        net = build_model(model, 10, shape)
        macs = 0
        for layer in net.layers:
            if type(layer).__name__ == "Conv2D":
                _, h, w, c_out = layer.output.shape
                kh, kw, c_in, _ = layer.kernel.shape
                macs += h * w * kh * kw * c_in * c_out
            elif type(layer).__name__ == "Dense":
                macs += layer.kernel.shape[0] * layer.kernel.shape[1]
        assert check.train_flops_per_image(model, shape) == 6 * macs, (model, shape)
    assert check.train_flops_per_image("resnet110") / 6 == 253_149_824
    assert check.train_flops_per_image("vgg19") / 6 == 398_136_320


def test_plan_puts_xla_first_and_says_why_a_configuration_is_missing(capsys):
    """The order the budget cuts from (XLA on first, the bare fit first per network), and
    a failed or skipped configuration reported in the table, not raised."""
    check = load_script()
    args = check.parse_args(["--models", "resnet110,vgg19", "--xla-off-models", "vgg19"])
    configs = check.plan(args)
    keys = [(c.model, c.layout, c.jit, c.copies) for c in configs]
    assert keys[:7] == [("resnet110", "bare", True, 1), ("resnet110", "branches", True, 1),
                        ("resnet110", "branches", True, 4), ("resnet110", "branches", True, 20),
                        ("resnet110", "fused", True, 1), ("resnet110", "fused", True, 4),
                        ("resnet110", "fused", True, 20)]
    assert all(not c.jit for c in configs[14:]) and {c.model for c in configs[14:]} == {"vgg19"}
    assert len(configs) == 21

    measured, failed, skipped = configs[1], configs[2], configs[3]
    measured.status, measured.rates, measured.build_s, measured.steps = "measured", [10.0], 1, 5
    measured.step_s = 0.1
    failed.status, failed.note = "failed", "UnimplementedError: grouped convolution"
    # the next K of a layout is predicted from the last (branches: build cost x K)
    assert check.predicted_seconds(skipped, [measured], args) == pytest.approx(
        1 * 20 + max(args.seconds, args.min_steps * 2.0) + 2.0)
    skipped.status, skipped.note = "skipped", "over budget"
    facts = {"device": "cpu", "backend": "jax", "keras": "3", "python": "3", "host_cpus": 2,
             "accelerator": False}
    result = check.report(configs[:4], facts, {"rounds": 1, "shape": (32, 32, 3)}, args)
    table = capsys.readouterr().out
    assert re.search(r"^resnet110\s+branches\s+on\s+4\s+-\s+-\s+-\s+-\s+-\s+-\s+-\s+-\s+failed: "
                     "UnimplementedError: grouped convolution$", table, re.M), table
    assert re.search(r"^resnet110\s+branches\s+on\s+20 .*skipped: over budget$", table, re.M)
    assert [r["status"] for r in result["rows"]] == ["pending", "measured", "failed", "skipped"]


def test_the_long_fit_is_fed_as_the_runner_feeds_a_study():
    """The long fit's batches are the runner's: kerasgen.data's stream (tf.data under
    TensorFlow), augmented, each epoch in its own order, labels repeated per copy; a fit
    longer than one epoch's images spans epochs, as a study does."""
    import keras
    import numpy as np

    from kerasgen import data as data_lib

    check = load_script()
    stream, per_epoch, epochs = check.runner_feed(4, 10, 2, (8, 8, 3), max_images=16)
    assert (per_epoch, epochs) == (4, 3)  # 16 images an epoch: 4 steps, 3 epochs for 10
    batches = [(np.asarray(x), [np.asarray(y) for y in ys]) for x, ys in stream]
    assert len(batches) == per_epoch * epochs
    if keras.backend.backend() == "tensorflow":
        assert type(stream).__module__.startswith("tensorflow")
    x0, (a, b) = batches[0]
    assert x0.shape == (4, 8, 8, 3) and np.array_equal(a, b)
    # epoch 0 and epoch 1 differ (another order and other crops), and the images are the
    # augmented ones: equal to kerasgen.data's numpy reference of the same data set
    assert not np.array_equal(batches[0][0], batches[per_epoch][0])
    rng = np.random.default_rng(1)
    ds = data_lib.Dataset("long-fit", rng.random((16, 8, 8, 3), dtype=np.float32),
                          rng.integers(0, 10, 16), np.zeros((4, 8, 8, 3), np.float32),
                          np.zeros(4, int), 10, (0.5,) * 3, (0.25,) * 3, augment=True)
    reference = list(data_lib.numpy_batches(ds, 0, 1, 4, drop_last=True))
    assert np.allclose(batches[per_epoch][0], reference[0][0], atol=1e-6)
    assert not np.allclose(reference[0][0], ds.normalize(ds.x_train[:4]), atol=1e-3)


def test_the_projection_runs_at_the_steady_state():
    """A configuration's own long fit sets its projected rate; one without takes its short
    figure times the bare fit's long/short ratio; the projection says which it used."""
    check = load_script()
    args = check.parse_args(["--models", "resnet110", "--jit", "on"])
    bare, packed = check.Config("resnet110", "bare", True, 1), \
        check.Config("resnet110", "branches", True, 4)
    for c, rate in ((bare, 100.0), (packed, 300.0)):
        c.status, c.rates = "measured", [rate]
    bare.long_rate = 150.0  # the steady state is 1.5x the short fits
    assert check.steady_rate(bare, [bare, packed]) == (150.0, "long fit")
    rate, basis = check.steady_rate(packed, [bare, packed])
    assert rate == pytest.approx(450.0) and "x 1.50" in basis
    proj = check.projection([bare, packed], args, (32, 32, 3))["networks"]["resnet110"]
    assert proj["best"] == packed.label and proj["best_rate"] == pytest.approx(450.0)
    assert proj["unpacked_rate"] == pytest.approx(150.0)
    packed.long_rate = 200.0  # its own long fit wins over the bare fit's ratio
    proj = check.projection([bare, packed], args, (32, 32, 3))["networks"]["resnet110"]
    assert proj["best_rate"] == pytest.approx(200.0) and proj["best_basis"] == "long fit"
