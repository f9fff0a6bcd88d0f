"""A user's own fit logged with SQLiteLogger, run as a process of its own.

    python logger_fit.py DB STUDY MODE [MODEL DATASET]

MODE ``slow``: 30 epochs of a tiny MLP, each epoch made slow (0.2 s), printing
``training`` once its first epoch is committed; ``raise``: a fit whose callback raises in
epoch 2 (the process exits with the error, leaving its cell claimed).
"""

import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from kerasgen.callbacks import SQLiteLogger  # noqa: E402

db, study, mode = sys.argv[1:4]
model_name, dataset = (sys.argv[4:6] if len(sys.argv) > 5 else ("mlp", "toy"))
rng = np.random.default_rng(0)
x = rng.normal(size=(10, 4)).astype("float32")
y = rng.integers(0, 3, size=10)
model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
model.compile(optimizer=keras.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
cell = {"study": study, "model": model_name, "dataset": dataset, "batch_size": 5,
        "learning_rate": 0.1, "seed": 0}


class Pace(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch == 0:
            print("training", flush=True)
        if mode == "raise" and epoch == 2:
            raise RuntimeError("the user's fit broke in epoch 2")
        time.sleep(0.2)


logger = SQLiteLogger(db, cell, heartbeat_seconds=0.2)
model.fit(x, y, epochs=30, batch_size=5, verbose=0, validation_data=(x, y),
          callbacks=[logger, Pace()])
