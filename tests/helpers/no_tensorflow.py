"""A pytest plugin (``-p tests.helpers.no_tensorflow``) that makes importing TensorFlow,
Keras or JAX fail: tests run under it prove that what they exercise never loads them."""

import importlib.abc
import sys

BLOCKED = ("tensorflow", "keras", "tensorflow_datasets", "jax")


class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"this process must not import {name}")
        return None


sys.meta_path.insert(0, Refuse())
