import os
import platform

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# One oneDNN setting for every process of the suite (this one, the worker processes and
# CLI runs it starts, Ray's workers), whatever this CPU's TensorFlow default is: what
# `--onednn auto` asks for on x86-64. Runs in this process then train as a fresh worker
# would (issue 28: with TensorFlow's per-CPU default here and `auto` in fresh processes,
# a local and a Ray study of one spec differed on an AMD CPU). Tests of the setting itself
# start their processes with an environment of their own.
if platform.machine().lower() in ("x86_64", "amd64"):
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
