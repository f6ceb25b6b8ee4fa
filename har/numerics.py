"""The same bits on every x86-64 CPU: which kernels the numerical libraries may pick, fixed before they load.

TensorFlow, oneDNN, OpenBLAS and NumPy each look at the CPU when they load and pick their kernels by
what it offers (AVX2, AVX-512, AMX) and, for oneDNN, by its cache sizes. Different kernels add the
same numbers in other orders, so a model trained on an AMD EPYC differs in its last bits from one
trained on an Intel Xeon with AMX, and dvc.lock becomes a fingerprint of the machine that made it.
`pin()` sets, before any of them is imported:

- `TF_ENABLE_ONEDNN_OPTS=0`: TensorFlow's own (Eigen) kernels instead of oneDNN's. Eigen is compiled
  into the wheel for one instruction set (AVX), so its code does not depend on the CPU.
- `TENSORFLOW_USE_CUSTOM_CONTRACTION_KERNEL=0`: matrix products and convolutions through Eigen's own
  inner kernel, not oneDNN's sgemm, which TensorFlow otherwise calls inside Eigen's contraction.
- `ONEDNN_MAX_CPU_ISA=AVX2`: the one place TensorFlow still calls oneDNN's sgemm directly (a
  convolution's input gradient) runs oneDNN's AVX2 kernel on every CPU that has AVX2.
- `OPENBLAS_CORETYPE=Haswell`: NumPy's and SciPy's OpenBLAS use their AVX2 kernels, not the ones for
  SkylakeX, Sapphire Rapids or Zen they would pick (QR decompositions, matrix products).
- `NPY_DISABLE_CPU_FEATURES`: NumPy's own SIMD loops (exp, log, sin on arrays) stop at AVX2 (X86_V3)
  instead of AVX-512.

What no variable reaches: TensorFlow's Rsqrt, Reciprocal and Softmax kernels use the CPU's approximate
reciprocal instructions, which Intel and AMD round differently, and its Qr kernel blocks by cache size.
har/layers.py builds the network without them, and `exact_graph_rewrites` stops Grappler from putting
them back (docs/training.md#reproducible-to-the-bit).

The stages call `pin()` first (stages/__init__.py), so do the tests (tests/conftest.py). On another
architecture (ARM) these x86 names mean nothing, nothing is set, and the bits are that machine's own.
"""
from __future__ import annotations

import os
import platform

PORTABLE = {
    "CUDA_VISIBLE_DEVICES": "",  # CPU only; with a GPU visible TensorFlow would pick cuDNN kernels
    "TF_ENABLE_ONEDNN_OPTS": "0",
    "TENSORFLOW_USE_CUSTOM_CONTRACTION_KERNEL": "0",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "OPENBLAS_CORETYPE": "Haswell",
    "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR",
}
X86 = {"x86_64", "amd64"}
OPT_OUT = "HAR_NUMERICS"  # HAR_NUMERICS=native: each library picks its fastest kernels (runs then differ by CPU)


def portable_environment(machine: str | None = None) -> dict[str, str]:
    """The variables `pin` sets on this machine's architecture ({} where they would mean nothing)."""
    machine = (machine or platform.machine()).lower()
    return dict(PORTABLE) if machine in X86 else {"CUDA_VISIBLE_DEVICES": ""}


def pin(environ=os.environ) -> dict[str, str]:
    """Set the portable kernel choice in `environ` (overriding what was there) unless HAR_NUMERICS=native.

    Only effective before TensorFlow, NumPy and onnxruntime are imported; returns what it set.
    """
    environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if environ.get(OPT_OUT, "portable") == "native":
        return {}
    wanted = portable_environment()
    environ.update(wanted)
    return wanted


def exact_graph_rewrites() -> None:
    """Turn off the two Grappler passes that rewrite exact arithmetic into the approximate instructions
    har/layers.py avoids: constant folding turns 1 / x into Reciprocal(x), and the arithmetic optimizer
    x / sqrt(y) into x * Rsqrt(y). Process-wide, for every TensorFlow graph (Keras' fit and predict);
    left on with HAR_NUMERICS=native."""
    if os.environ.get(OPT_OUT) == "native":
        return
    import tensorflow as tf

    tf.config.optimizer.set_experimental_options({"constant_folding": False, "arithmetic_optimization": False})


def setting(environ=os.environ) -> dict:
    """What a run used, for metrics/train.json and CI's failure message: the kernel choices and the CPU's
    architecture (never its model, cache sizes or speed, which must not matter)."""
    return {"numerics": environ.get(OPT_OUT, "portable"), "architecture": platform.machine().lower(),
            **{name.lower(): environ.get(name) for name in PORTABLE if name != "CUDA_VISIBLE_DEVICES"}}
