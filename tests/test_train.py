"""Training and evaluation end to end on tiny synthetic windows (a few seconds of TensorFlow).

The windows carry a learnable difference between classes (a different rhythm per class) on
top of gravity, so the tests can check the behaviour that matters: the saved model takes raw
SI-unit windows, its normalisation comes from the training windows only, and the same seed
gives the same numbers.
"""
import json
import time
import zipfile

import numpy as np
import pytest

from har.fusion import CHANNELS
from har.model import load_model
from stages.compose_params import compose

LABELS = ["sitting", "clapping", "typing"]
LENGTH = 64
# Windows per class and subject: validation (36 windows) and test (2 x 24) differ in size, so scoring the
# wrong split cannot give the right number of windows.
PER_CLASS = {"train": 12, "val": 12, "test": 8}
WINDOWS = {"s1": 36, "s2": 36, "s3": 36, "s4": 24, "s5": 24}


def sklearn_macro_f1(y_true, y_pred) -> float:
    """The expected figure, computed here rather than by the code under test."""
    from sklearn.metrics import f1_score

    return float(f1_score(y_true, y_pred, labels=[0, 1, 2], average="macro", zero_division=0))


def split(project, name: str) -> dict:
    return dict(np.load(project / "data" / "windows" / f"{name}.npz"))


def tiny_windows(subjects: list[str], per_class: int, seed: int) -> dict:
    """Windows [n, LENGTH, 6] in SI units: gravity on az plus a class-specific rhythm on ax and gy."""
    rng = np.random.default_rng(seed)
    t = np.arange(LENGTH) / 50.0
    X, y, subject = [], [], []
    for s in subjects:
        for label, hz in enumerate([0.0, 4.0, 1.5]):
            for _ in range(per_class):
                w = rng.normal(scale=0.2, size=(LENGTH, len(CHANNELS)))
                w[:, 2] += 9.81
                w[:, 0] += 3.0 * np.sin(2 * np.pi * hz * t + rng.uniform(0, 2 * np.pi)) * (hz > 0)
                w[:, 4] += 1.5 * np.cos(2 * np.pi * hz * t) * (hz > 0)
                X.append(w)
                y.append(label)
                subject.append(s)
    n = len(y)
    return {"X": np.asarray(X, np.float32), "y": np.asarray(y), "subject": np.asarray(subject),
            "recording": np.asarray([f"{s}_{LABELS[c]}" for s, c in zip(subject, y)]),
            "start_t": np.arange(n, dtype=float)}


@pytest.fixture(scope="module")
def tiny_params(tmp_path_factory):
    """params.yaml composed from conf/ with the tiny model and training groups."""
    path = tmp_path_factory.mktemp("params") / "params.yaml"
    compose(path, ["model=tiny", "train=tiny", "calibration.threshold=0.5"])  # no target is reachable in 2 epochs
    import yaml

    return yaml.safe_load(path.read_text())


@pytest.fixture()
def tiny_project(tmp_path, monkeypatch, tiny_params):
    """A working directory laid out as the stages expect: params.yaml and data/windows/."""
    import yaml

    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tiny_params))
    windows = tmp_path / "data" / "windows"
    windows.mkdir(parents=True)
    splits = {"train": ["s1", "s2"], "val": ["s3"], "test": ["s4", "s5"]}
    for i, (split, subjects) in enumerate(splits.items()):
        np.savez(windows / f"{split}.npz", **tiny_windows(subjects, per_class=PER_CLASS[split], seed=i))
    (windows / "meta.json").write_text(json.dumps({"labels": LABELS, "subjects": splits,
                                                   "window": {"length": LENGTH, "overlap": 0.5},
                                                   "target_hz": 50.0}))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_train_evaluate_baseline_stages_end_to_end(tiny_project, monkeypatch):
    import keras

    from har.features import window_features
    from stages import baseline, evaluate, train

    fitted = []  # (features, labels, forest) the baseline was fitted with

    def recording_fit_baseline(features, y, *args):
        forest = fit_baseline(features, y, *args)
        fitted.append((features, y, forest))
        return forest

    fit_baseline = baseline.fit_baseline
    monkeypatch.setattr(baseline, "fit_baseline", recording_fit_baseline)
    train.main()
    evaluate.main()
    baseline.main()

    card = json.loads((tiny_project / "models/model.json").read_text())
    assert card["labels"] == LABELS and card["window_length"] == LENGTH and card["channels"] == CHANNELS
    assert card["units"] == {"acc": "m/s^2", "gyr": "rad/s"} and card["target_hz"] == 50.0
    assert 1 <= card["train"]["best_epoch"] <= card["train"]["epochs_run"] <= 2

    model = load_model(tiny_project / "models/model.keras")
    assert model.input_shape == (None, LENGTH, 6) and model.output_shape == (None, len(LABELS))
    for name in ("metrics/eval.json", "metrics/baseline.json"):
        metrics = json.loads((tiny_project / name).read_text())
        assert list(metrics)[:5] == ["macro_f1", "accuracy", "balanced_accuracy", "cohen_kappa", "mcc"]
        assert set(metrics["per_class"]) == set(LABELS)
        assert metrics["windows"] == 48  # the test split (validation has 36)

    # The evaluation's figures, recomputed from the saved model's answers on the test windows.
    test, val = split(tiny_project, "test"), split(tiny_project, "val")
    evaluation = json.loads((tiny_project / "metrics/eval.json").read_text())
    predicted = model.predict(test["X"], verbose=0).argmax(axis=1)
    assert evaluation["macro_f1"] == pytest.approx(sklearn_macro_f1(test["y"], predicted), abs=1e-12)
    assert evaluation["accuracy"] == pytest.approx(np.mean(predicted == test["y"]), abs=1e-12)
    assert set(evaluation["per_subject_macro_f1"]) == {"s4", "s5"}  # the test subjects, and only them
    for subject, figure in evaluation["per_subject_macro_f1"].items():
        rows = test["subject"] == subject
        assert figure == pytest.approx(sklearn_macro_f1(test["y"][rows], predicted[rows]), abs=1e-12)
    assert sum(m["support"] for m in evaluation["per_class"].values()) == 48

    # The baseline learns from the training subjects only and is scored on the test subjects.
    (features, y, forest), = fitted
    train_split = split(tiny_project, "train")
    np.testing.assert_array_equal(features, window_features(train_split["X"], 50.0))
    np.testing.assert_array_equal(y, train_split["y"])
    scores = json.loads((tiny_project / "metrics/baseline.json").read_text())
    assert scores["macro_f1"] == pytest.approx(
        sklearn_macro_f1(test["y"], forest.predict(window_features(test["X"], 50.0))), abs=1e-12)
    assert scores["val_macro_f1"] == pytest.approx(
        sklearn_macro_f1(val["y"], forest.predict(window_features(val["X"], 50.0))), abs=1e-12)
    # The tiny classes differ in frequency: the feature baseline must separate them all.
    assert scores["macro_f1"] > 0.9
    train_metrics = json.loads((tiny_project / "metrics/train.json").read_text())
    # No wall-clock time in a tracked output (it would change dvc.lock on every run): it goes to the log.
    # The kernels it ran with are recorded (har/numerics.py), and nothing of the machine beyond its architecture.
    assert set(train_metrics) == {"epochs_run", "best_epoch", "best_val_macro_f1", "numerics"}
    assert train_metrics["numerics"]["numerics"] == "portable"
    assert train_metrics["numerics"]["tf_enable_onednn_opts"] == "0" and "model" not in json.dumps(train_metrics)
    assert json.loads((tiny_project / "logs/train.json").read_text())["train_seconds"] > 0
    # dvclive logged every epoch, validation macro-F1 included (dvclive files val_* under eval/).
    logged = (tiny_project / "dvclive/plots/metrics/eval/macro_f1.tsv").read_text().strip().splitlines()
    assert len(logged) == 1 + card["train"]["epochs_run"]
    confusion_rows = (tiny_project / "plots/confusion.csv").read_text().strip().splitlines()
    assert confusion_rows[0] == "actual,predicted" and len(confusion_rows) == 1 + 48
    assert confusion_rows[1:] == [f"{LABELS[a]},{LABELS[b]}" for a, b in zip(test["y"], predicted)]
    assert (tiny_project / "plots/confusion.png").stat().st_size > 0
    assert (tiny_project / "plots/per_class_f1.png").stat().st_size > 0


def test_same_seed_same_model_and_normalisation_inside(tiny_params, tmp_path):
    import keras

    from har.training import save_model, train_model

    train, val = tiny_windows(["s1", "s2"], 12, seed=0), tiny_windows(["s3"], 12, seed=1)

    def run():
        return train_model(train["X"], train["y"], val["X"], val["y"], n_classes=len(LABELS),
                           model_params=tiny_params["model"], train_params=tiny_params["train"], verbose=0)

    model, summary = run()
    again, summary_again = run()
    assert summary["history"] == summary_again["history"]
    probabilities = model.predict(val["X"], verbose=0)
    assert np.array_equal(probabilities, again.predict(val["X"], verbose=0))
    # The saved files are the same to the bit (dvc.lock records their md5), though saved at other times.
    save_model(model, tmp_path / "first.keras")
    time.sleep(1.1)  # zip entries and Keras's metadata carry times to the second
    save_model(again, tmp_path / "second.keras")
    assert (tmp_path / "first.keras").read_bytes() == (tmp_path / "second.keras").read_bytes()
    with zipfile.ZipFile(tmp_path / "first.keras") as archive:
        assert "date_saved" not in json.loads(archive.read("metadata.json"))

    # Normalisation statistics are the training windows' own, per channel, and travel with the model.
    normalize = model.get_layer("normalize")
    assert np.allclose(np.ravel(normalize.mean), train["X"].reshape(-1, 6).mean(axis=0), atol=1e-4)
    assert np.allclose(np.ravel(normalize.variance), train["X"].reshape(-1, 6).var(axis=0), rtol=1e-4)
    model.save(tmp_path / "model.keras")
    reloaded = load_model(tmp_path / "model.keras")
    assert np.allclose(reloaded.predict(val["X"], verbose=0), probabilities, atol=1e-6)
    assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)


def test_crossval_tests_every_subject_once_against_the_baseline(tiny_project, monkeypatch):
    from har.training import train_model
    from stages import crossval

    seen = []  # (training windows, validation windows, model) of each fold

    def recording_train_model(X_train, y_train, X_val, y_val, **kwargs):
        model, summary = train_model(X_train, y_train, X_val, y_val, **kwargs)
        seen.append((len(X_train), len(X_val), model))
        return model, summary

    monkeypatch.setattr(crossval, "train_model", recording_train_model)
    summary = crossval.main(n_folds=3)
    folds = summary["per_fold"]
    tested = [s for f in folds for s in f["test_subjects"]]
    assert sorted(tested) == sorted(WINDOWS)  # every subject tested exactly once
    every = {name: split(tiny_project, name) for name in ("train", "val", "test")}
    X, y, subject = (np.concatenate([s[key] for s in every.values()]) for key in ("X", "y", "subject"))
    for fold, (n_train, n_val, model) in zip(folds, seen):
        assert not set(fold["test_subjects"]) & set(fold["val_subjects"])
        # The model trains on exactly the subjects that are neither tested nor validating.
        assert n_val == sum(WINDOWS[s] for s in fold["val_subjects"])
        assert n_train == sum(n for s, n in WINDOWS.items() if s not in fold["test_subjects"] + fold["val_subjects"])
        # Its figure is its macro-F1 on the fold's test subjects.
        rows = np.isin(subject, fold["test_subjects"])
        expected = sklearn_macro_f1(y[rows], model.predict(X[rows], verbose=0).argmax(axis=1))
        assert fold["model_macro_f1"] == pytest.approx(expected, abs=1e-12)
    assert summary["model_macro_f1"] == pytest.approx(sum(f["model_macro_f1"] for f in folds) / 3, abs=1e-12)
    assert summary["baseline_macro_f1"] > 0.9  # the tiny classes are separable by frequency
    assert json.loads((tiny_project / "metrics/crossval.json").read_text())["per_fold"] == json.loads(
        json.dumps(folds))


def test_crossval_refuses_folds_whose_training_subjects_miss_a_class():
    from stages.crossval import fold_masks

    subject = np.array(["a", "a", "b", "c", "d"])
    y = np.array([0, 1, 0, 0, 0])  # only subject a ever shows class 1
    with pytest.raises(ValueError, match=r"fold \d: the training subjects .* have no windows of classes \[1\]"):
        fold_masks(subject, y, [["a"], ["b"], ["c", "d"]], n_classes=2)


def test_learning_curve_trains_both_on_nested_subsets_of_the_training_subjects(tiny_project, monkeypatch):
    from har.training import train_model
    from stages import crossval, learning_curve

    trained_on, models = [], []  # how many training windows each model got, and the model

    def recording_train_model(X_train, y_train, X_val, y_val, **kwargs):
        trained_on.append(len(X_train))
        model, summary = train_model(X_train, y_train, X_val, y_val, **kwargs)
        models.append(model)
        return model, summary

    monkeypatch.setattr(crossval, "train_model", recording_train_model)
    points = learning_curve.main([2, 1])["points"]
    assert [p["training_subjects"] for p in points] == [1, 2]
    assert set(points[0]["subjects"]) < set(points[1]["subjects"]) == {"s1", "s2"}  # nested
    assert trained_on == [36, 72] == [p["training_windows"] for p in points]  # 3 classes x 12 windows each
    assert all(p["test_baseline_macro_f1"] > 0.9 for p in points)  # the tiny classes are separable by frequency
    test = split(tiny_project, "test")
    for point, model in zip(points, models):  # each point's figure is its model's macro-F1 on the test subjects
        expected = sklearn_macro_f1(test["y"], model.predict(test["X"], verbose=0).argmax(axis=1))
        assert point["test_model_macro_f1"] == pytest.approx(expected, abs=1e-12)
        assert point["test_margin"] == pytest.approx(expected - point["test_baseline_macro_f1"], abs=1e-12)
    assert json.loads((tiny_project / "metrics/learning_curve.json").read_text()) == json.loads(
        json.dumps({"points": points}))

    subjects = np.repeat([f"p{i}" for i in range(10)], 2)
    subsets = learning_curve.nested_subsets(subjects, np.tile([0, 1], 10), 2, [9, 3, 6], seed=7)
    assert list(subsets) == [3, 6, 9] and subsets == learning_curve.nested_subsets(subjects, np.tile([0, 1], 10), 2,
                                                                                  [3, 6, 9], seed=7)
    assert set(subsets[3]) < set(subsets[6]) < set(subsets[9])  # each subset holds the smaller ones
    with pytest.raises(ValueError, match=r"--sizes must be between 1 and the 10 training subjects, got \[11\]"):
        learning_curve.nested_subsets(subjects, np.tile([0, 1], 10), 2, [3, 11], seed=0)
    with pytest.raises(ValueError, match=r"the first 3 training subjects \[.*\] have no windows of classes \[1\]"):
        learning_curve.nested_subsets(subjects, np.zeros(20, int), 2, [3], seed=0)  # nobody shows class 1


def test_subject_folds_deal_every_subject_into_exactly_one_fold():
    from har.windows import subject_folds

    subjects = [str(s) for s in range(1600, 1637)]
    folds = subject_folds(subjects, 5, seed=42)
    assert sorted(s for f in folds for s in f) == subjects
    assert sorted(len(f) for f in folds) == [7, 7, 7, 8, 8]
    assert subject_folds(subjects, 5, seed=42) == folds
    with pytest.raises(ValueError, match="between 3"):
        subject_folds(subjects, 2, seed=42)


def test_cosine_schedule_anneals_the_rate_to_zero_over_the_run():
    from har.training import learning_rate

    params = {"lr": 0.003, "epochs": 4, "batch_size": 10}
    assert learning_rate({**params, "lr_schedule": "constant"}, n_windows=95) == 0.003
    schedule = learning_rate({**params, "lr_schedule": "cosine"}, n_windows=95)  # 10 steps per epoch
    rates = [float(schedule(step)) for step in (0, 20, 40)]
    assert rates == pytest.approx([0.003, 0.0015, 0.0], abs=1e-9)
    with pytest.raises(ValueError, match="train.lr_schedule must be 'constant' or 'cosine', got 'step'"):
        learning_rate({**params, "lr_schedule": "step"}, n_windows=95)


def test_seed_sweep_composes_each_settings_overrides_and_averages_the_runs(tiny_project):
    import runpy

    from conftest import ROOT

    sweep = runpy.run_path(str(ROOT / "scripts" / "seed_sweep.py"))
    # The overrides are composed from conf/ as `dvc exp run -S` does: train=tiny runs 2 epochs, not 30.
    result = sweep["run"]("tiny", 7, ["model=tiny", "train=tiny", "train.lr_schedule=cosine"])
    assert (result["setting"], result["seed"], result["epochs_run"]) == ("tiny", 7, 2)
    assert result["probabilities"]["val"].shape == (36, 3)

    assert result["probabilities"]["test"].shape == (48, 3)

    # Averaging two runs: the mean probabilities decide, not either run alone.
    first = np.array([[.6, .4, 0], [.6, .4, 0], [0, 0, 1], [0, .6, .4], [.4, .6, 0]])
    second = np.array([[.6, .4, 0], [0, 1, 0], [0, 0, 1], [0, .3, .7], [.45, .55, 0]])
    runs = [{"probabilities": {"val": first, "test": first[:3]}}, {"probabilities": {"val": second, "test": second[:3]}}]
    truth = {"val": np.array([0, 1, 2, 2, 0]), "test": np.array([0, 1, 2])}
    # Mean argmax [0, 1, 2, 2, 1]: F1 2/3 for class 0 (1 of 2 found), 2/3 for class 1 (1 of 2 right), 1 for class 2.
    assert sweep["averaged"](runs, truth, 3) == pytest.approx({"val": 7 / 9, "test": 1.0}, abs=1e-12)
    assert sweep["averaged"](runs[:1], truth, 3)["test"] == pytest.approx(5 / 9, abs=1e-12)  # run 1 alone: [0, 0, 2]
