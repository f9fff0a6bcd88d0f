"""Import TensorFlow with oneDNN off (as TensorFlow's own choice is on some AMD CPUs),
forget the variable, then run a tiny study in this process asking for oneDNN on: the run
cannot get its setting here. Prints what happened as JSON.

Usage: preloaded_tf.py TMPDIR PROCESS   (PROCESS: RunOptions.process, "auto" or "this")
"""

import json
import os
import sys

os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
os.environ["TF_ENABLE_ONEDNN_OPTS"] = "0"
import tensorflow  # noqa: E402,F401

del os.environ["TF_ENABLE_ONEDNN_OPTS"]

from kerasgen.options import RunOptions  # noqa: E402
from kerasgen.runtime import onednn_in_effect  # noqa: E402
from kerasgen.spec import Spec  # noqa: E402
from kerasgen.store import Store  # noqa: E402
from kerasgen.worker import StudyError, run_study  # noqa: E402

tmp, process = sys.argv[1], sys.argv[2]
db = os.path.join(tmp, f"{process}.db")
spec = Spec(name="pre", models=("resnet8",), datasets=("synthetic-8-1-10-32",),
            batch_sizes=(16,), learning_rates=(0.1,), epochs=1)
out = {"here": onednn_in_effect(), "pid": os.getpid()}
try:
    run_study(spec, db, RunOptions(onednn=True, data_dir=tmp, process=process),
              progress=False)
except StudyError as exc:
    out["refused"] = str(exc)
if os.path.exists(db):
    with Store(db) as store:
        env = store.study_environment(1)
    out["workers"] = {k: v for k, v in env.items() if k.startswith("worker ")}
print(json.dumps(out))
