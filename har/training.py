"""Training the model on window arrays: seeding, augmentation, subject-wise early stopping.

Everything here takes arrays, so tests run it on tiny windows without DVC; stages/train.py
only does the file I/O around `train_model`.
"""
from __future__ import annotations

import io
import json
import random
import sys
import time
import warnings
import zipfile
from pathlib import Path

import numpy as np

from har.evaluation import macro_f1
from har.model import build_model, channel_stats
from har.numerics import exact_graph_rewrites


def set_seeds(seed: int) -> None:
    """Python, NumPy and Keras (TensorFlow) generators, so the same params give the same model."""
    import keras

    random.seed(seed)
    np.random.seed(seed)
    keras.utils.set_random_seed(seed)


def make_deterministic(seed: int, threads: dict | None, deterministic: bool = True) -> None:
    """Seeds, TensorFlow's op determinism, fixed thread pools and no approximate graph rewrites: the same
    params and data give the same weights to the bit, however busy the machine is (and, with the kernels
    har/numerics.py pins, whichever x86-64 CPU it has).

    Op determinism makes TensorFlow pick deterministic kernels (and raise on an op that has none).
    The thread counts come from params (`train.threads`; 0 = TensorFlow's choice, one per core), not
    from the machine, because how a kernel splits a sum between threads depends on how many there
    are: a 16-core laptop and a 2-core CI machine would otherwise add the same numbers in other
    orders. They can only be set before TensorFlow runs its first op; a process that already ran
    one (a test session) keeps its pools, with a warning. `deterministic=False` (train.deterministic)
    leaves op determinism off: only for measuring what it costs (docs/training.md).
    """
    import tensorflow as tf

    threads = threads or {}
    wanted = {"intra_op": int(threads.get("intra_op", 0)), "inter_op": int(threads.get("inter_op", 0))}
    current = {"intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
               "inter_op": tf.config.threading.get_inter_op_parallelism_threads()}
    if current != wanted:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(wanted["intra_op"])
            tf.config.threading.set_inter_op_parallelism_threads(wanted["inter_op"])
        except RuntimeError:
            warnings.warn(f"TensorFlow already started with thread pools {current}, not train.threads {wanted}: "
                          f"this run is deterministic, but its weights may differ from a fresh process's",
                          RuntimeWarning, stacklevel=2)
    if deterministic:
        tf.config.experimental.enable_op_determinism()
    exact_graph_rewrites()
    set_seeds(seed)


def renumber_shared_objects(config):
    """Keras's config with each `shared_object_id` (the Python id(), a memory address, of an object two
    layers share) replaced by its order of first appearance: the same sharing, the same number in every
    process."""
    numbers = {}

    def walk(node):
        if isinstance(node, dict):
            return {k: numbers.setdefault(v, len(numbers)) if k == "shared_object_id" else walk(v)
                    for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    return walk(config)


def save_model(model, path) -> None:
    """model.save, then the .keras zip rewritten without what changes between identical saves.

    Keras stamps `date_saved` into metadata.json, every zip entry with the current time, and into
    config.json the memory addresses of shared objects; all three are removed (entries dated
    1980-01-01, the zip format's epoch; addresses renumbered), so the file's bytes, and its md5 in
    dvc.lock, depend on the model alone.
    """
    path = Path(path)
    model.save(path)
    with zipfile.ZipFile(path) as archive:
        entries = [(info, archive.read(info)) for info in archive.infolist()]
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for info, data in entries:
            if info.filename == "metadata.json":
                metadata = json.loads(data)
                metadata.pop("date_saved", None)
                data = json.dumps(metadata).encode()
            elif info.filename == "config.json":
                data = json.dumps(renumber_shared_objects(json.loads(data))).encode()
            fixed = zipfile.ZipInfo(info.filename, date_time=(1980, 1, 1, 0, 0, 0))
            fixed.compress_type, fixed.external_attr = info.compress_type, 0o644 << 16
            archive.writestr(fixed, data)
    path.write_bytes(out.getvalue())


def random_rotations(rng: np.random.Generator, n: int, max_degrees: float) -> np.ndarray:
    """n rotation matrices [n, 3, 3] about uniformly random axes by angles uniform in ±max_degrees."""
    axis = rng.normal(size=(n, 3))
    axis /= np.linalg.norm(axis, axis=1, keepdims=True)
    angle = np.deg2rad(rng.uniform(-max_degrees, max_degrees, size=n))
    # Rodrigues' formula: R = I + sin(a) K + (1 - cos(a)) K^2, K the cross-product matrix of the axis.
    k = np.zeros((n, 3, 3))
    k[:, 0, 1], k[:, 0, 2], k[:, 1, 2] = -axis[:, 2], axis[:, 1], -axis[:, 0]
    k -= k.transpose(0, 2, 1)
    sin, cos = np.sin(angle)[:, None, None], np.cos(angle)[:, None, None]
    return np.eye(3)[None] + sin * k + (1 - cos) * (k @ k)


def time_warp(X: np.ndarray, rng: np.random.Generator, max_change: float) -> np.ndarray:
    """Each window replayed faster or slower by a factor in [1 - max_change, 1 + max_change].

    People clap, brush and chew at their own tempo. The window is resampled about its centre
    by linear interpolation; positions past an edge are mirrored back into the window.
    """
    n, length, _ = X.shape
    factor = rng.uniform(1 - max_change, 1 + max_change, size=(n, 1))
    centre = (length - 1) / 2
    position = centre + (np.arange(length)[None, :] - centre) * factor
    position = (length - 1) - np.abs((length - 1) - np.abs(position))  # mirror at both ends
    left = np.clip(np.floor(position).astype(int), 0, length - 2)
    weight = (position - left)[..., None].astype(np.float32)
    before = np.take_along_axis(X, left[..., None], axis=1)
    after = np.take_along_axis(X, left[..., None] + 1, axis=1)
    return before * (1 - weight) + after * weight


def augment_windows(X: np.ndarray, rng: np.random.Generator, *, rotation_deg: float, scale: float,
                    jitter: float, channel_std: np.ndarray, flip_prob: float = 0.0,
                    time_warp_change: float = 0.0) -> np.ndarray:
    """Windows as another person might have recorded them.

    A watch worn at a slightly different angle sees the same motion rotated: one rotation per
    window, applied alike to the accelerometer and gyroscope triads (both are vectors in the
    watch's frame). With probability `flip_prob` the watch is also turned by 180 degrees about
    its z axis (x and y negated), as some training subjects wear it (their gravity x and y have
    the opposite sign). Then an optional tempo change, a per-window, per-sensor amplitude
    scale and Gaussian jitter (`jitter` times each channel's training standard deviation).
    """
    n = len(X)
    if time_warp_change > 0:
        X = time_warp(X, rng, time_warp_change)
    out = np.empty_like(X)
    rotation = random_rotations(rng, n, rotation_deg)
    flipped = rng.random(n) < flip_prob
    rotation[flipped] = rotation[flipped] @ np.diag([-1.0, -1.0, 1.0])
    rotation = rotation.astype(np.float32)
    for sensor in (slice(0, 3), slice(3, 6)):
        factor = rng.uniform(1 - scale, 1 + scale, size=(n, 1, 1)).astype(np.float32)
        # Row vectors times R transposed: each time step's (x, y, z) rotated by its window's R.
        out[..., sensor] = np.matmul(X[..., sensor], rotation.transpose(0, 2, 1)) * factor
    if jitter > 0:
        noise = rng.standard_normal(size=X.shape, dtype=np.float32)
        out += noise * (jitter * channel_std).astype(np.float32)
    return out


def class_weights(y: np.ndarray, n_classes: int) -> dict[int, float]:
    """Weights inversely proportional to class frequency, 1.0 on average over the windows."""
    counts = np.bincount(y, minlength=n_classes).astype(float)
    if np.any(counts == 0):
        missing = np.flatnonzero(counts == 0).tolist()
        raise ValueError(f"training windows have no examples of classes {missing}; expected every label present")
    return {i: float(len(y) / (n_classes * c)) for i, c in enumerate(counts)}


def make_batches(X, y, n_classes: int, train_params: dict, channel_std: np.ndarray):
    """A keras PyDataset that reshuffles and re-augments the training windows every epoch.

    Augmentation is done here, in NumPy, rather than by layers in the model, so the saved
    model holds only inference layers (plain to export to ONNX).
    """
    import keras

    augment = train_params.get("augment") or {}

    class AugmentedBatches(keras.utils.PyDataset):
        def __init__(self):
            super().__init__()
            self.rng = np.random.default_rng(train_params["seed"])
            self.batch_size = train_params["batch_size"]
            self.targets = keras.utils.to_categorical(y, n_classes).astype(np.float32)
            self.on_epoch_end()

        def __len__(self):
            return int(np.ceil(len(X) / self.batch_size))

        def __getitem__(self, index):
            rows = self.order[index * self.batch_size:(index + 1) * self.batch_size]
            return self.windows[rows], self.targets[rows]

        def on_epoch_end(self):
            self.order = self.rng.permutation(len(X))
            self.windows = X if not augment.get("enabled", False) else augment_windows(
                X, self.rng, rotation_deg=augment["rotation_deg"], scale=augment["scale"],
                jitter=augment["jitter"], channel_std=channel_std, flip_prob=augment.get("flip_prob", 0.0),
                time_warp_change=augment.get("time_warp", 0.0))

    return AugmentedBatches()


def validation_callback(X_val, y_val, n_classes: int, batch_size: int):
    """Adds val_loss, val_accuracy and val_macro_f1 (validation subjects) to each epoch's logs.

    It runs before early stopping, dvclive and the progress bar in the callback list, so all
    of them see these values.
    """
    import keras

    class ValidationMetrics(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            probabilities = self.model.predict(X_val, batch_size=batch_size, verbose=0)
            predicted = probabilities.argmax(axis=1)
            picked = probabilities[np.arange(len(y_val)), y_val]
            logs["val_loss"] = float(-np.mean(np.log(np.clip(picked, 1e-7, 1.0))))
            logs["val_accuracy"] = float(np.mean(predicted == y_val))
            logs["val_macro_f1"] = macro_f1(y_val, predicted, n_classes)

    return ValidationMetrics()


def learning_rate(train_params: dict, n_windows: int):
    """The optimiser's learning rate: `train.lr` throughout, or with `lr_schedule: cosine` annealed
    from `train.lr` to zero over `train.epochs` (a model still improving at the last epoch ends
    on small steps that settle its weights instead of on the full rate)."""
    import keras

    schedule = train_params.get("lr_schedule", "constant")
    if schedule == "constant":
        return train_params["lr"]
    if schedule == "cosine":
        steps = train_params["epochs"] * int(np.ceil(n_windows / train_params["batch_size"]))
        return keras.optimizers.schedules.CosineDecay(train_params["lr"], decay_steps=steps)
    raise ValueError(f"train.lr_schedule must be 'constant' or 'cosine', got {schedule!r}")


def train_model(X_train, y_train, X_val, y_val, *, n_classes: int, model_params: dict, train_params: dict,
                extra_callbacks=(), verbose: int | None = None):
    """A trained model (best validation macro-F1 weights restored) and a summary of the run.

    The summary holds epochs_run, best_epoch (1-based), best_val_macro_f1, the per-epoch history
    and train_seconds (wall-clock: for logs, never for a file DVC tracks).
    """
    import keras

    make_deterministic(train_params["seed"], train_params.get("threads"), train_params.get("deterministic", True))
    mean, variance = channel_stats(X_train)
    model = build_model(model_params, window_length=X_train.shape[1], n_channels=X_train.shape[2],
                        n_classes=n_classes, mean=mean, variance=variance)
    model.compile(
        optimizer=keras.optimizers.AdamW(learning_rate=learning_rate(train_params, len(y_train)),
                                         weight_decay=train_params.get("weight_decay", 0.0), name="adam_w"),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=train_params.get("label_smoothing", 0.0)),
        metrics=["accuracy"],
    )
    early_stopping = keras.callbacks.EarlyStopping(monitor="val_macro_f1", mode="max",
                                                   patience=train_params["patience"], restore_best_weights=True)
    callbacks = [validation_callback(X_val, y_val, n_classes, 4 * train_params["batch_size"]),
                 early_stopping, *extra_callbacks]
    if verbose is None:
        # A progress bar on a terminal; one line per epoch in logs (dvc repro, CI).
        verbose = 1 if sys.stdout.isatty() else 2
    weights = class_weights(y_train, n_classes) if train_params.get("class_weights") else None

    started = time.perf_counter()
    history = model.fit(make_batches(X_train, y_train, n_classes, train_params, np.sqrt(variance)),
                        epochs=train_params["epochs"], class_weight=weights, callbacks=callbacks,
                        verbose=verbose)
    seconds = time.perf_counter() - started
    scores = history.history["val_macro_f1"]
    best = int(np.argmax(scores))
    summary = {
        "epochs_run": len(scores),
        "best_epoch": best + 1,
        "best_val_macro_f1": float(scores[best]),
        "train_seconds": round(seconds, 1),
        "history": {k: [float(v) for v in values] for k, values in history.history.items()},
    }
    return model, summary
