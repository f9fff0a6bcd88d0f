"""Under KERAS_BACKEND=jax (set by the caller, before Keras loads): one tiny study trained
as packs of two and as packs of one, with XLA (the default) and with ``exact``; the clean
training metrics checked against a separate ``model.evaluate``. Prints JSON.

Usage: jax_study.py TMPDIR [INITIAL_WEIGHTS_DIR]
"""

import json
import os
import shutil
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import keras  # noqa: E402

from kerasgen import data  # noqa: E402
from kerasgen.checkpoints import load_cell_weights, study_files  # noqa: E402
from kerasgen.models import build_model  # noqa: E402
from kerasgen.options import RunOptions  # noqa: E402
from kerasgen.spec import Spec  # noqa: E402
from kerasgen.store import load_epochs, load_results  # noqa: E402
from kerasgen.worker import run_study  # noqa: E402

tmp = sys.argv[1]
initial = sys.argv[2] if len(sys.argv) > 2 else None
spec = Spec(name="b", models=("resnet8",), datasets=("synthetic-8-1-10-64",), batch_sizes=(16,),
            learning_rates=(0.05, 0.2), epochs=2)
cols = ["learning_rate", "epoch", "train_loss", "train_accuracy", "test_loss", "test_accuracy",
        "train_eval_loss", "train_eval_accuracy"]
out = {"backend": keras.backend.backend()}
for label, pack_size, exact in (("pack", 2, False), ("alone", 1, False), ("pack_exact", 2, True),
                                ("alone_exact", 1, True)):
    db = os.path.join(tmp, f"{label}.db")
    if initial:
        shutil.copytree(os.path.join(initial, "initial"), db + ".checkpoints/initial")
    run_study(spec, db, RunOptions(pack_size=pack_size, data_dir=tmp, keras_backend="jax",
                                   exact=exact), progress=False)
    out[label] = load_epochs(db)[cols].sort_values(cols[:2]).to_dict(orient="records")
    env = json.loads(__import__("sqlite3").connect(db).execute(
        "SELECT environment_json FROM studies").fetchone()[0])
    out[f"{label}_jit"] = [v["jit_compile"] for k, v in env.items() if k.startswith("worker ")]
# The clean training metrics are the final weights evaluated as the test set is.
db = os.path.join(tmp, "pack.db")
ds = data.load_dataset("synthetic-8-1-10-64")
subset = data.train_eval_indices(0, ds.train_size, "test", len(ds.y_test))
x, y = data.train_eval_arrays(ds, subset)
epochs = load_epochs(db)
clean = []
for cell in load_results(db).itertuples():
    model = build_model("resnet8", ds.num_classes, ds.input_shape)
    model.set_weights(load_cell_weights(study_files(db, "b"), cell.cell_id))
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    loss, accuracy = model.evaluate(x, y, batch_size=1000, verbose=0)
    last = epochs[epochs.cell_id == cell.cell_id].sort_values("epoch").iloc[-1]
    clean.append([float(last["train_eval_loss"]), loss, float(last["train_eval_accuracy"]),
                  accuracy])
out["clean"] = clean
print(json.dumps(out))
