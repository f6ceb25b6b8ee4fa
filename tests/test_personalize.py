"""Personalisation on a tiny trained model: a person unlike the training people, the stage, the ONNX file.

The generic model learns three classes from generated people (a rhythm per class on top of
gravity). The new person claps at the tempo the others type at and types at the tempo the others
clap at, so the generic model gets both wrong; a minute of their labelled data should fix that.
"""
import json

import numpy as np
import onnx
from onnx import numpy_helper
import pandas as pd
import pytest
import yaml

from har.config import load_params
from har.evaluation import macro_f1
from har.fusion import CHANNELS
from har.annotations import subject_recordings
from har.personalize import calibration_split, embed, fit_head, generic_head, locate_head, recordings_to_windows
from har.runtime import ModelRuntime
from har.preprocessing import Preprocessing
from log_helpers import one_audit_event, recorded_audit

LABELS = ["sitting", "clapping", "typing"]
LENGTH, HZ = 200, 50.0
TRAINING_RHYTHM = {"sitting": 0.0, "clapping": 4.0, "typing": 1.5}
PERSON_RHYTHM = {"sitting": 0.0, "clapping": 1.5, "typing": 4.0}  # the training people's tempi, swapped


def signal(seconds: float, hz: float, rng, rate: float = HZ) -> np.ndarray:
    """[n, 6] SI units: gravity on az, a rhythm on ax and gy (none at 0 Hz), sensor noise."""
    t = np.arange(int(seconds * rate)) / rate
    x = rng.normal(scale=0.3, size=(len(t), len(CHANNELS)))
    x[:, 2] += 9.81
    if hz:
        x[:, 0] += 3.0 * np.sin(2 * np.pi * hz * t + rng.uniform(0, 2 * np.pi))
        x[:, 4] += 1.5 * np.cos(2 * np.pi * hz * t)
    return x


def windows_of(rhythm: dict, seconds: float, seed: int) -> dict:
    """One recording per class, cut into 4-s windows every 2 s, as the pipeline cuts them."""
    rng = np.random.default_rng(seed)
    parts = {"X": [], "y": [], "recording": [], "start_t": []}
    for label, hz in rhythm.items():
        x = signal(seconds, hz, rng)
        starts = np.arange(0, len(x) - LENGTH + 1, LENGTH // 2)
        parts["X"].append(np.stack([x[s:s + LENGTH] for s in starts]).astype(np.float32))
        parts["y"].append(np.full(len(starts), LABELS.index(label)))
        parts["recording"].append(np.full(len(starts), f"{seed}_{label}"))
        parts["start_t"].append(starts / HZ)
    return {k: np.concatenate(v) for k, v in parts.items()}


@pytest.fixture(scope="module")
def generic(tmp_path_factory):
    """A project folder with a tiny generic model trained on generated people: model.keras, model.onnx, params.yaml."""
    from har.training import train_model
    from stages.compose_params import compose
    from har.export import export

    root = tmp_path_factory.mktemp("project")
    compose(root / "params.yaml", ["model=tiny", "train=tiny", "train.epochs=40", "train.patience=40", "train.lr=0.01"])
    params = load_params(root / "params.yaml")
    people = [windows_of(TRAINING_RHYTHM, 60, seed) for seed in range(4)]
    train = {k: np.concatenate([p[k] for p in people[:3]]) for k in ("X", "y")}
    model, _ = train_model(train["X"], train["y"], people[3]["X"], people[3]["y"], n_classes=3,
                           model_params=params["model"], train_params=params["train"], verbose=0)
    (root / "models").mkdir()
    model.save(root / "models/model.keras")
    info = {"labels": LABELS, "window_length": LENGTH, "target_hz": HZ, "channels": CHANNELS,
            "units": {"acc": "m/s^2", "gyr": "rad/s"}}
    report = export(root / "models/model.keras", info, params, people[3]["X"], root / "models/model.onnx",
                    lock_path=root / "dvc.lock", eval_path=root / "eval.json")
    assert report["parity"]["passed"]
    return root


def test_a_person_unlike_the_training_people_gains_from_a_minute_of_their_data(generic):
    model = onnx.load(generic / "models/model.onnx")
    person = windows_of(PERSON_RHYTHM, 120, seed=99)
    p, f = embed(model, person["X"])  # f: the last layer's input h, then the summary u
    calib, scored = calibration_split(person["recording"], person["start_t"], seconds=60, window_s=LENGTH / HZ)
    head = fit_head(f[calib], person["y"][calib], generic_head(model, f.shape[1]), l2=0.1, residual_l2=0.001)
    y = person["y"][scored]
    before = macro_f1(y, p[scored].argmax(1), 3)
    after = macro_f1(y, head.probabilities(f[scored]).argmax(1), 3)
    assert after >= before + 0.2, (before, after)
    assert after >= 0.9, after


@pytest.mark.parametrize("seconds", [0, 4, 15, 30.5, 60])
def test_calibration_windows_never_overlap_scored_windows(seconds):
    rng = np.random.default_rng(int(seconds * 10))
    window_s = 4.0
    recording = np.repeat(["a", "b", "c"], 50)
    # Windows every 2 s from each recording's own origin, with a gap in recording b.
    start_t = np.concatenate([10 + np.arange(50) * 2.0, np.r_[np.arange(20) * 2.0, 100 + np.arange(30) * 2.0],
                              rng.uniform(0, 5) + np.arange(50) * 2.0])
    calib, scored = calibration_split(recording, start_t, seconds=seconds, window_s=window_s)
    assert not (calib & scored).any()
    for name in "abc":
        mine = recording == name
        origin = start_t[mine].min()
        c, s = start_t[mine & calib], start_t[mine & scored]
        assert (c + window_s <= origin + seconds + 1e-9).all()  # wholly inside the first `seconds`
        if len(c):  # every scored window starts at least one window length after the last calibration window ends
            assert s.min() - (c.max() + window_s) >= window_s - 1e-9
    if seconds == 0:
        assert scored.all() and not calib.any()


def write_wisdm_person(folder, subject: str, rhythm: dict, seconds: float, seed: int) -> None:
    """A WISDM-layout folder (20 Hz parquet pairs, activities.json) holding one person's recordings."""
    rng = np.random.default_rng(seed)
    letters = {"A": "sitting", "B": "clapping", "C": "typing"}
    (folder / "acc_w").mkdir(parents=True)
    (folder / "gyr_w").mkdir()
    (folder / "activities.json").write_text(json.dumps(letters))
    for letter, label in letters.items():
        if label not in rhythm:
            continue
        x = signal(seconds, rhythm[label], rng, rate=20.0)
        for sensor, columns in (("acc", slice(0, 3)), ("gyr", slice(3, 6))):
            pd.DataFrame(x[:, columns], columns=list("xyz")).to_parquet(
                folder / f"{sensor}_w" / f"001_{sensor}_w_{subject}_{letter}.parquet")


def test_the_personal_model_file_carries_its_metadata_passes_parity_and_is_registered(generic, tmp_path, monkeypatch):
    from stages import personalize

    session = tmp_path / "wisdm"
    # Sitting and typing recorded, clapping not: clapping must keep the generic weights.
    write_wisdm_person(session, "9001", {k: PERSON_RHYTHM[k] for k in ("sitting", "typing")}, 60, seed=5)
    monkeypatch.chdir(generic)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    out = tmp_path / "personal" / "9001.onnx"
    with recorded_audit() as events:
        status = personalize.main(["--session", str(session), "--subject", "9001", "--out", str(out), "--register"])
    assert status == 0
    one_audit_event(events, "registry.register", subject="9001", version="1")
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["parity"]["keras"]["passed"] and report["parity"]["keras"]["max_abs_diff"] <= 1e-4
    assert report["parity"]["numpy_head"]["passed"]

    generic_runtime, runtime = ModelRuntime(generic / "models/model.onnx"), ModelRuntime(out)  # checksums verified
    card, before = runtime.card, generic_runtime.card
    assert card.labels == before.labels and card.input_contract == before.input_contract
    assert card.preprocessing == before.preprocessing and card.name == f"{before.name}-9001"
    props = {p.key: p.value for p in onnx.load(out).metadata_props}
    assert props["subject"] == "9001" and props["generic_model_version"] == before.version
    assert props["calibration_hash"] == report["calibration_hash"] and len(props["calibration_hash"]) == 16
    seconds = json.loads(props["seconds_per_class"])
    assert set(seconds) == {"sitting", "typing"} and 55 <= seconds["typing"] <= 60

    nodes, _ = locate_head(onnx.load(generic / "models/model.onnx"))
    old = generic_head(onnx.load(generic / "models/model.onnx"))
    new = {i.name: numpy_helper.to_array(i) for i in onnx.load(out).graph.initializer}
    new_bias = new[nodes.bias] if nodes.bias else new["personal_bias"]
    clapping, typing = LABELS.index("clapping"), LABELS.index("typing")
    assert np.array_equal(new[nodes.weights][:, clapping], old.weights[:, clapping])
    assert new_bias[clapping] == old.bias[clapping] and not new["personal_residual"][:, clapping].any()
    assert not np.array_equal(new[nodes.weights][:, typing], old.weights[:, typing])
    assert report["classes_adapted"] == ["sitting", "typing"]

    # The person's next minute, read and cut the same way, scored by both models.
    write_wisdm_person(tmp_path / "later", "9001", {k: PERSON_RHYTHM[k] for k in ("sitting", "typing")}, 60, seed=6)
    recordings, _ = subject_recordings(tmp_path / "later", "9001", labels=LABELS, data={})
    later = recordings_to_windows(recordings, LABELS, Preprocessing.from_card(before))
    right = lambda r: np.mean(r.predict(later.X).argmax(1) == later.y)
    assert right(runtime) >= 0.95 and right(generic_runtime) <= 0.6, (right(runtime), right(generic_runtime))

    registry = report["registry"]
    assert registry["model_name"] == "har-wisdm_hand-9001" and registry["version"] == 1
    assert registry["generic_model_version"] == before.version and registry["subject"] == "9001"


def test_a_second_run_on_the_same_data_gives_the_same_model(generic, tmp_path, monkeypatch):
    from stages import personalize

    session = tmp_path / "wisdm"
    write_wisdm_person(session, "9002", PERSON_RHYTHM, 30, seed=7)
    monkeypatch.chdir(generic)
    outs = [tmp_path / f"run{i}" / "9002.onnx" for i in range(2)]
    for out in outs:
        assert personalize.main(["--session", str(session), "--subject", "9002", "--out", str(out),
                                 "--keras", "missing.keras"]) == 0
    assert outs[0].read_bytes() == outs[1].read_bytes()


def test_the_stage_reports_generic_and_personal_scores_per_subject(generic, monkeypatch):
    from stages import personalize

    (generic / "data/windows").mkdir(parents=True)
    for split, seeds in (("val", [11, 12]), ("test", [13, 14])):
        people = [windows_of(PERSON_RHYTHM, 90, seed) for seed in seeds]
        np.savez(generic / f"data/windows/{split}.npz",
                 **{k: np.concatenate([p[k] for p in people]) for k in ("X", "y", "recording", "start_t")},
                 subject=np.concatenate([np.full(len(p["y"]), f"s{seed}") for p, seed in zip(people, seeds)]))
    params = yaml.safe_load((generic / "params.yaml").read_text())
    params["personalize"]["seconds"] = [0, 30, 60]
    (generic / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(generic)
    assert personalize.main(["--evaluate"]) == 0
    report = json.loads((generic / "metrics/personalize.json").read_text())
    assert set(report["test"]) == {"0", "30", "60"} and set(report["test"]["60"]["subjects"]) == {"s13", "s14"}
    assert report["test"]["0"]["gain"] == 0.0
    assert report["test"]["60"]["personal_macro_f1"] >= report["test"]["60"]["generic_macro_f1"] + 0.2
    assert set(report["validation"]) >= {"head_l2_0.01", "prototypes_blend_0.5"}
    plot = pd.read_csv(generic / "plots/personalize.csv")
    assert list(plot.columns) == ["seconds_per_activity", "generic", "personal"] and list(plot["seconds_per_activity"]) == [0, 30, 60]
