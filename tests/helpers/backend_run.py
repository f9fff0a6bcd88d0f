"""Train a tiny study in float64 under the Keras backend named by KERAS_BACKEND — as one
pack of two (branches), one fused pack, and two packs of one — and print each run's
epoch rows as JSON. The backend must be chosen before Keras is imported.

Usage: backend_run.py TMPDIR [INITIAL_WEIGHTS_DIR] [LABELS]   (LABELS: comma-separated
subset of branches,fused,separate; default all three)
"""

import json
import os
import shutil
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("JAX_ENABLE_X64", "1")

import keras  # noqa: E402

keras.config.set_floatx("float64")
keras.config.set_dtype_policy("float64")

from kerasgen.options import RunOptions  # noqa: E402
from kerasgen.spec import Spec, Training  # noqa: E402
from kerasgen.store import load_epochs  # noqa: E402
from kerasgen.worker import run_study  # noqa: E402

tmp = sys.argv[1]
init_from = sys.argv[2] if len(sys.argv) > 2 and sys.argv[2] != "-" else None
labels = sys.argv[3].split(",") if len(sys.argv) > 3 else ["branches", "fused", "separate"]
spec = Spec(name="b", models=("resnet8",), datasets=("synthetic-8-1-10-64",), batch_sizes=(16,),
            learning_rates=(0.05, 0.2), epochs=2, training=Training(dtype="float64"))
out = {"backend": keras.backend.backend()}
for label, layout, pack_size in (("branches", "branches", 2), ("fused", "fused", 2),
                                 ("separate", "branches", 1)):
    if label not in labels:
        continue
    db = os.path.join(tmp, f"{keras.backend.backend()}-{label}.db")
    init = init_from or (os.path.join(tmp, f"{keras.backend.backend()}-branches.db.checkpoints")
                         if label != "branches" else None)
    if init:
        # Every run starts from the same saved initial weights (each backend draws its
        # own random numbers; the runner loads a group's saved weights, never redraws).
        shutil.copytree(os.path.join(init, "initial"), db + ".checkpoints/initial")
    run_study(spec, db, RunOptions(pack_size=pack_size, layout=layout, data_dir=tmp),
              progress=False)
    rows = load_epochs(db)[["learning_rate", "epoch", "train_loss", "train_accuracy",
                            "test_loss", "test_accuracy", "train_eval_loss",
                            "train_eval_accuracy"]].sort_values(["learning_rate", "epoch"])
    out[label] = rows.to_dict(orient="records")
print(json.dumps(out))
