"""The 1D-CNN-BiLSTM, built from `params["model"]`.

The model takes fused SI-unit windows [window_length, 6] (channel order har.fusion.CHANNELS)
and returns softmax probabilities over the labels. Normalisation statistics are fitted on
the training windows and live inside the model, so the exported model needs no preprocessing
beyond fusion and windowing. Only plain layers are used, so tf2onnx converts it to native
ONNX operators.
"""
from __future__ import annotations

import numpy as np


def channel_stats(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and variance over all windows and time steps, accumulated in float64."""
    flat = X.reshape(-1, X.shape[-1]).astype(np.float64)
    return flat.mean(axis=0), flat.var(axis=0)


def build_model(model_params: dict, *, window_length: int, n_channels: int, n_classes: int,
                mean: np.ndarray, variance: np.ndarray):
    """Normalization -> [Conv1D -> BatchNorm -> ReLU -> MaxPool] x n -> BiLSTM (joined by the
    average- and max-pooled convolution features when `pooled_features`) -> Dense -> logits -> softmax.

    BatchNorm, the LSTM's orthogonal initial state and the softmax are har/layers.py's: the same functions
    computed the same way on every CPU (har/numerics.py).

    `conv_strides` (optional, default 1) and pooling shorten the sequence early: WISDM is
    band-limited to 10 Hz, so the 50 Hz grid carries little above that, and the LSTM, the
    slow part on a CPU, runs over fewer steps.
    """
    import keras
    from keras import layers

    from har import layers as exact

    filters, kernels = model_params["conv_filters"], model_params["conv_kernels"]
    strides = model_params.get("conv_strides") or [1] * len(filters)
    if not len(filters) == len(kernels) == len(strides):
        raise ValueError(f"model.conv_filters, conv_kernels and conv_strides must have equal lengths, "
                         f"got {filters}, {kernels}, {strides}")
    dropout = model_params["dropout"]

    inputs = keras.Input(shape=(window_length, n_channels), dtype="float32", name="window")
    x = layers.Normalization(axis=-1, mean=mean, variance=variance, name="normalize")(inputs)
    for i, (n_filters, kernel, stride) in enumerate(zip(filters, kernels, strides)):
        x = layers.Conv1D(n_filters, kernel, strides=stride, padding="same", use_bias=False, name=f"conv{i}")(x)
        x = exact.BatchNormalization(name=f"bn{i}")(x)
        x = layers.Activation("relu", name=f"relu{i}")(x)
        if model_params["pool_size"] > 1:
            x = layers.MaxPooling1D(model_params["pool_size"], padding="same", name=f"pool{i}")(x)
        x = layers.Dropout(model_params.get("conv_dropout", 0.0), name=f"conv_dropout{i}")(x)
    sequence = x
    # Named, like every layer: an unnamed one is numbered per process (lstm_1 for a second model), and the
    # name is in the saved file, whose bytes must depend on the model alone.
    lstm = layers.LSTM(model_params["lstm_units"], recurrent_initializer=exact.Orthogonal(), name="lstm")
    x = layers.Bidirectional(lstm, name="bilstm")(sequence)
    if model_params.get("pooled_features"):
        # The BiLSTM summarises the order of events; average and max pooling of the convolution
        # features add what was present anywhere in the window (the wrist's mean orientation,
        # the strongest stroke), the kind of summary a feature-based classifier relies on.
        x = layers.Concatenate(name="summary")([x, layers.GlobalAveragePooling1D(name="mean_pool")(sequence),
                                                layers.GlobalMaxPooling1D(name="max_pool")(sequence)])
    x = layers.Dropout(dropout, name="lstm_dropout")(x)
    x = layers.Dense(model_params["dense_units"], activation="relu", name="dense")(x)
    x = layers.Dropout(dropout, name="dense_dropout")(x)
    logits = layers.Dense(n_classes, name="logits")(x)
    outputs = exact.Softmax(name="probabilities")(logits)
    return keras.Model(inputs, outputs, name=model_params["name"])


def load_model(path, compile: bool = True):
    """A saved .keras model, its har.layers found."""
    import keras

    import har.layers  # noqa: F401  (registers the layers the model is built from)

    return keras.saving.load_model(path, compile=compile)
