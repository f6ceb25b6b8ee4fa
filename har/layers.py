"""Keras layers whose arithmetic gives the same bits on every x86-64 CPU.

Keras' BatchNormalization and Softmax run TensorFlow's Rsqrt and Softmax kernels, which Eigen builds
on the CPU's approximate reciprocal-square-root and reciprocal instructions (rsqrtps, rcpps) refined
by one Newton step. Those instructions are not specified to the bit: Intel and AMD round them
differently, so a network that uses them trains to other weights on each (har/numerics.py pins
everything else). These two layers compute the same functions with a square root and a division,
which IEEE 754 rounds the same everywhere. Importing this module registers them, so that
`keras.saving.load_model` finds them (har/model.py `load_model`).
"""
from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="har")
class BatchNormalization(keras.layers.BatchNormalization):
    """Keras' BatchNormalization (moving statistics, gamma and beta alike) with 1 / sqrt(variance + epsilon)
    as a square root and a division."""

    def call(self, inputs, training=None, mask=None):
        if mask is not None or self.renorm or self.axis not in (-1, len(inputs.shape) - 1):
            raise ValueError(f"{self.name}: only the last axis, with no mask and no renorm, is supported")
        if training and self.trainable:
            mean, variance = self._moments(inputs, mask)
            self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
            self.moving_variance.assign(self.moving_variance * self.momentum + variance * (1.0 - self.momentum))
        else:
            mean, variance = self.moving_mean, self.moving_variance
        inverse = 1.0 / ops.sqrt(variance + self.epsilon)
        if self.scale:
            inverse = inverse * self.gamma
        shift = -mean * inverse
        if self.center:
            shift = shift + self.beta
        return inputs * inverse + shift


@keras.saving.register_keras_serializable(package="har")
class Softmax(keras.layers.Layer):
    """softmax over the last axis as exp(z - max z) / sum exp(z - max z)."""

    def call(self, logits):
        exp = ops.exp(logits - ops.max(logits, axis=-1, keepdims=True))
        probabilities = exp / ops.sum(exp, axis=-1, keepdims=True)
        # As with Keras' own softmax: the cross-entropy loss finds the logits here and works from them
        # (log-softmax, no clipping of small probabilities).
        probabilities._keras_logits = logits
        return probabilities


@keras.saving.register_keras_serializable(package="har")
class Orthogonal(keras.initializers.Orthogonal):
    """Keras' Orthogonal initializer (the same random matrix and seed) with the QR decomposition done by
    NumPy's LAPACK in float64 instead of TensorFlow's Qr kernel, whose blocked Householder products follow
    the CPU's cache sizes. With OpenBLAS's kernels pinned (har/numerics.py) the matrix is the same everywhere."""

    def __call__(self, shape, dtype=None):
        import numpy as np

        rows = int(np.prod(shape[:-1]))
        columns = shape[-1]
        a = keras.random.normal((max(rows, columns), min(rows, columns)), seed=self.seed, dtype="float32")
        q, r = np.linalg.qr(np.asarray(a, dtype=np.float64))
        q *= np.sign(np.diag(r))
        if rows < columns:
            q = q.T
        return ops.convert_to_tensor((self.gain * q).reshape(shape), dtype=dtype or "float32")
