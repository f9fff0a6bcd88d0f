"""What a measure costs at paper size, projected from what it cost on a small network.

A measure's time scales with what it touches (``Measure.cost`` in the catalogue):
``params`` (norms of the weights: with the parameter count), ``forward`` / ``backward`` /
``hvp`` (passes over a fixed number of examples: with the network's multiply-adds per
example; the measures use ``max_examples`` images whatever the data set, so the example
count does not change), ``none`` (read from the store). :func:`model_cost` counts
parameters and forward multiply-adds of the built-in networks from the architecture
alone (no Keras; the tests check it against the built layers), and
:func:`project_seconds` scales a measured time by the ratio.

On one GPU: the projected CPU time divided by ``GPU_OVER_CPU``, the ratio of an H200 at
a quarter of its fp32 peak (67 TFLOP/s, the convention of scripts/bench_checkpoint.py)
to the training rate measured on this project's 2-core CPU (ResNet-20, 230 images/s x
0.25 GFLOP per training image = 57 GFLOP/s, README "Speed"): 16.75e12 / 57e9 = about
300. A stated guess, not a measurement; ``scripts/bench_measures.py`` measures this
machine's rate and takes the GPU's rate as an option.
"""

from __future__ import annotations

from kerasgen.measures.catalogue import MEASURES
from kerasgen.naming import RESNET_STAGES, VGG_CONFIGS, check_model_name, model_width

GPU_OVER_CPU = 300.0
PRACTICAL_GPU_SECONDS = 60.0  # per run: the paper's 1,600 runs in about a day
PAPER_NETWORKS = (("resnet110", (32, 32, 3), 10), ("vgg19", (32, 32, 3), 10))


def model_cost(model: str, input_shape=(32, 32, 3), num_classes: int = 10) -> dict:
    """``params`` (trainable) and ``macs`` (forward multiply-adds per example, convolutions
    and the dense head) of a built-in network."""
    family, depth, batch_norm = check_model_name(model)
    h, w, c = (int(s) for s in input_shape)
    macs = params = 0
    if family == "resnet":
        f0 = RESNET_STAGES[0]
        macs += h * w * 9 * c * f0
        params += 9 * c * f0 + 2 * f0
        c = f0
        for stage, f in enumerate(RESNET_STAGES):
            for block in range((depth - 2) // 6):
                stride = 2 if stage > 0 and block == 0 else 1
                if stride == 2:
                    h, w = (h - 1) // 2 + 1, (w - 1) // 2 + 1
                macs += h * w * 9 * c * f + h * w * 9 * f * f
                params += 9 * c * f + 9 * f * f + 4 * f
                if stride != 1 or c != f:
                    macs += h * w * c * f
                    params += c * f + 2 * f
                c = f
        macs += c * num_classes
        params += c * num_classes + num_classes
    else:
        width = model_width(model)
        for item in VGG_CONFIGS[depth]:
            if item == "M":
                if h >= 2 and w >= 2:
                    h, w = h // 2, w // 2
                continue
            out = item * width // 64
            macs += h * w * 9 * c * out
            params += 9 * c * out + out + (2 * out if batch_norm else 0)
            c = out
        macs += h * w * c * num_classes
        params += h * w * c * num_classes + num_classes
    return {"params": int(params), "macs": int(macs)}


def scale_factor(measure: str, small: dict, large: dict) -> float:
    """How much longer ``measure`` takes on ``large`` than on ``small`` (model_cost dicts)."""
    kind = MEASURES[measure.partition("@")[0]].cost if measure.partition("@")[0] in MEASURES \
        else "none"
    if kind == "params":
        return large["params"] / small["params"]
    if kind in ("forward", "backward", "hvp"):
        return large["macs"] / small["macs"]
    return 1.0


def project_seconds(measure: str, seconds: float, small: dict, large: dict,
                    gpu_over_cpu: float = GPU_OVER_CPU) -> dict:
    """``cpu``: the seconds ``measure`` would take on ``large`` on the machine it took
    ``seconds`` on ``small``; ``gpu``: that over ``gpu_over_cpu``; ``practical``: the GPU
    time is at most ``PRACTICAL_GPU_SECONDS`` per run."""
    cpu = seconds * scale_factor(measure, small, large)
    gpu = cpu / gpu_over_cpu
    return {"cpu": cpu, "gpu": gpu, "practical": gpu <= PRACTICAL_GPU_SECONDS}


__all__ = ["GPU_OVER_CPU", "PAPER_NETWORKS", "PRACTICAL_GPU_SECONDS", "model_cost",
           "project_seconds", "scale_factor"]
