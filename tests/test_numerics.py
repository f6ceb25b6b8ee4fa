"""The same bits on every x86-64 CPU (har/numerics.py, har/layers.py): the stages run with the pinned kernels,
the network avoids TensorFlow's approximate-instruction kernels, and its layers compute what Keras' do.

The proof across real CPUs is `scripts/reproduce_check.py --cpu qemu:EPYC-v3 ...` (docs/training.md); these
tests keep the pieces it rests on from eroding."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT
from har.numerics import PORTABLE, portable_environment

X86 = os.uname().machine in ("x86_64", "amd64")


def run_python(code: str, **env) -> str:
    environ = {k: v for k, v in os.environ.items() if k not in PORTABLE and k != "HAR_NUMERICS"}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**environ, **env}, capture_output=True,
                          text=True, check=True)
    return done.stdout.strip().splitlines()[-1]


@pytest.mark.skipif(not X86, reason="the pinned kernels are x86-64 ones")
def test_a_stage_process_loads_numpy_and_openblas_with_the_pinned_kernels():
    """`import stages` pins before NumPy loads: no AVX-512 (X86_V4) loops in NumPy, OpenBLAS's Haswell kernels, oneDNN
    off for TensorFlow, whatever the calling shell had set."""
    code = ("import json, os, stages, numpy, threadpoolctl; from numpy._core._multiarray_umath import __cpu_features__ "
            "as f; print(json.dumps({'x86_v4': f['X86_V4'], 'openblas': [i.get('architecture') for i in "
            "threadpoolctl.threadpool_info() if i['internal_api'] == 'openblas'], "
            "'onednn': os.environ['TF_ENABLE_ONEDNN_OPTS'], 'isa': os.environ['ONEDNN_MAX_CPU_ISA']}))")
    seen = json.loads(run_python(code, TF_ENABLE_ONEDNN_OPTS="1", ONEDNN_MAX_CPU_ISA="AVX512_CORE_AMX"))
    assert seen["x86_v4"] is False and seen["onednn"] == "0" and seen["isa"] == "AVX2"
    assert seen["openblas"] and set(seen["openblas"]) == {"Haswell"}
    # HAR_NUMERICS=native: each library chooses for itself (the caller's settings stand).
    native = json.loads(run_python(code, HAR_NUMERICS="native", TF_ENABLE_ONEDNN_OPTS="1", ONEDNN_MAX_CPU_ISA="AVX2"))
    assert native["onednn"] == "1"


def test_only_x86_gets_x86_kernel_names():
    assert portable_environment("aarch64") == {"CUDA_VISIBLE_DEVICES": ""}
    assert portable_environment("x86_64")["OPENBLAS_CORETYPE"] == "Haswell"


def tiny_model():
    from har.model import build_model

    params = {"name": "cnn_bilstm", "conv_filters": [8], "conv_kernels": [5], "conv_strides": [2], "pool_size": 2,
              "conv_dropout": 0.0, "lstm_units": 4, "pooled_features": True, "dense_units": 8, "dropout": 0.0}
    return build_model(params, window_length=40, n_channels=6, n_classes=3, mean=np.zeros(6), variance=np.ones(6))


def test_the_network_runs_no_kernel_built_on_approximate_instructions():
    """Rsqrt, Reciprocal and Softmax are Eigen kernels on rcpps/rsqrtps (other last bits on AMD than on Intel),
    Qr blocks by cache size: none may be in the graphs Keras traces to train or predict."""
    import tensorflow as tf

    model = tiny_model()
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    x, y = np.ones((4, 40, 6), np.float32), np.eye(3, dtype=np.float32)[[0, 1, 2, 0]]
    step = tf.function(lambda x, y: model.train_step((x, y)))
    graphs = [step.get_concrete_function(x, y).graph,
              tf.function(lambda x: model(x, training=False)).get_concrete_function(x).graph]
    ops = {node.op for graph in graphs for node in graph.as_graph_def().node}
    ops |= {node.op for graph in graphs for f in graph.as_graph_def().library.function for node in f.node_def}
    assert {"Conv2D", "MatMul", "Sqrt", "Exp"} <= ops  # the walk sees the network
    assert ops & {"Rsqrt", "Reciprocal", "Softmax", "Qr", "FusedBatchNormV3"} == set()


def test_grappler_may_not_reintroduce_them():
    import tensorflow as tf

    from har.training import make_deterministic

    make_deterministic(1, None)
    options = tf.config.optimizer.get_experimental_options()
    assert options["constant_folding"] is False and options["arithmetic_optimization"] is False


def test_the_exact_layers_compute_what_keras_layers_compute(tmp_path):
    import keras

    from har import layers as exact
    from har.model import load_model

    rng = np.random.default_rng(0)
    x = rng.normal(2.0, 3.0, (16, 10, 5)).astype(np.float32)
    ours, theirs = exact.BatchNormalization(momentum=0.5), keras.layers.BatchNormalization(momentum=0.5)
    for layer in (ours, theirs):
        layer.build(x.shape)
        layer.set_weights([np.linspace(0.5, 2, 5, dtype=np.float32), np.linspace(-1, 1, 5, dtype=np.float32),
                           np.ones(5, np.float32), np.full(5, 2.0, np.float32)])
    np.testing.assert_allclose(ours(x, training=True), theirs(x, training=True), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ours.moving_variance, theirs.moving_variance, rtol=1e-6)  # statistics updated alike
    np.testing.assert_allclose(ours(x, training=False), theirs(x, training=False), rtol=1e-5, atol=1e-5)

    logits = rng.normal(0, 5, (8, 12)).astype(np.float32)
    np.testing.assert_allclose(exact.Softmax()(logits), keras.activations.softmax(logits), rtol=1e-6, atol=1e-7)

    q = np.asarray(exact.Orthogonal(seed=3)((64, 256)))
    np.testing.assert_allclose(q @ q.T, np.eye(64), atol=1e-5)
    assert np.array_equal(q, np.asarray(exact.Orthogonal(seed=3)((64, 256))))

    model = tiny_model()
    model.save(tmp_path / "model.keras")
    windows = rng.normal(size=(3, 40, 6)).astype(np.float32)
    assert np.array_equal(load_model(tmp_path / "model.keras").predict(windows, verbose=0),
                          model.predict(windows, verbose=0))
