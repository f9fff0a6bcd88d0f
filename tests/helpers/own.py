"""Networks and data sets of a user's own, found by import path (``helpers.own:...``) in
the suite's own process and in every worker process (the tests put ``tests/`` on
PYTHONPATH for them)."""

import keras
import numpy as np

from kerasgen.data import Dataset
from kerasgen.models import resnet


def resnet8(input_shape, num_classes):
    """The built-in ResNet-8, built by the user's own function."""
    return resnet(8, num_classes=num_classes, input_shape=input_shape, name="resnet8")


def mlp(input_shape, num_classes, width=16):
    """A small network of one's own, with an argument the spec gives (model_args)."""
    inputs = keras.Input(input_shape)
    x = keras.layers.Flatten()(inputs)
    x = keras.layers.Dense(width, activation="relu", name="hidden")(x)
    return keras.Model(inputs, keras.layers.Dense(num_classes, name="logits")(x))


def not_a_model(input_shape, num_classes):
    return "a string"


def softmax_net(input_shape, num_classes):
    inputs = keras.Input(input_shape)
    x = keras.layers.Flatten()(inputs)
    return keras.Model(inputs, keras.layers.Dense(num_classes, activation="softmax")(x))


def three_outputs(input_shape, num_classes):
    inputs = keras.Input(input_shape)
    return keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Flatten()(inputs)))


def blobs(n_train=64, n_test=32, size=6, classes=3, seed=0):
    """Arrays as a user's loader returns them: images (n, h, w) in [0, 1], labels."""
    rng = np.random.default_rng(seed)
    centers = rng.random((classes, size, size))
    y = rng.integers(0, classes, n_train + n_test)
    x = np.clip(centers[y] + 0.15 * rng.normal(size=(len(y), size, size)), 0, 1)
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]


def blobs_dataset():
    x_train, y_train, x_test, y_test = blobs()
    return Dataset("blobs", x_train[..., None], y_train, x_test[..., None], y_test,
                   num_classes=3, mean=(0.5,), std=(0.25,), augment=True, pad=1)


def mismatched():
    x_train, y_train, x_test, y_test = blobs()
    return x_train, y_train[:-1], x_test, y_test


def labels_out_of_range():
    x_train, y_train, x_test, y_test = blobs()
    y_test = y_test.copy()
    y_test[0] = -1
    return x_train, y_train, x_test, y_test


def nan_pixels():
    x_train, y_train, x_test, y_test = blobs()
    x_train = x_train.copy()
    x_train[5, 0, 0] = np.nan
    return x_train, y_train, x_test, y_test
