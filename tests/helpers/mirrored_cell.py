"""Train one cell twice, on one device and mirrored on two logical CPU devices; print
both runs' epoch rows as JSON. Run as a subprocess: logical devices must be configured
before TensorFlow initializes."""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])
keras.config.set_floatx("float64")
keras.config.set_dtype_policy("float64")

from kerasgen.options import RunOptions  # noqa: E402
from kerasgen.spec import Spec, Training  # noqa: E402
from kerasgen.store import load_epochs  # noqa: E402
from kerasgen.worker import run_study  # noqa: E402

tmp = sys.argv[1]
spec = Spec(name="m", models=("resnet8",), datasets=("synthetic-8-1-10-64",),
            batch_sizes=(16,), learning_rates=(0.1,), epochs=2,
            training=Training(dtype="float64"))
out = {}
for mirrored in (False, True):
    db = os.path.join(tmp, f"mirrored-{mirrored}.db")
    run_study(spec, db, RunOptions(pack_size=1, mirrored=mirrored, data_dir=tmp), progress=False)
    rows = load_epochs(db)[["epoch", "train_loss", "train_accuracy", "test_loss", "test_accuracy"]]
    out[str(mirrored)] = rows.to_dict(orient="records")
out["replicas"] = len(tf.config.list_logical_devices("CPU"))
print(json.dumps(out))
