"""A short summary of what `dvc repro` produced, printed at the end of ./setup.sh.

`dvc metrics show` lists every key of every metrics file (hundreds of columns); this picks
the figures a person looks at first.
"""
import json
from pathlib import Path


def read(name: str, folder: str = "metrics") -> dict:
    path = Path(folder) / name
    return json.loads(path.read_text()) if path.exists() else {}


def main() -> None:
    model, baseline, export = read("eval.json"), read("baseline.json"), read("export.json")
    # The registry's answer is in the git-ignored log (stages/register.py says why it is not a metric).
    drift, register = read("drift.json"), read("register.json", folder="logs")
    quality = read("windows.json").get("quality")
    if quality is None:
        set_aside = None
    elif quality.get("min_motion_ratio") is None:
        set_aside = "check off"
    else:
        set_aside = ", ".join(quality.get("excluded_subjects", [])) or "none"
    rows = [
        ("subjects set aside (no wrist motion)", set_aside),
        ("test macro-F1, CNN-BiLSTM", model.get("macro_f1")),
        ("test macro-F1, baseline (random forest)", baseline.get("macro_f1")),
        ("test accuracy, CNN-BiLSTM", model.get("accuracy")),
        ("ONNX parity (max |p_keras - p_onnx|)", export.get("parity", {}).get("max_abs_diff")),
        ("drift on production recordings", drift.get("severity")),
        ("drift on held-out test subjects", drift.get("control", {}).get("severity")),
        ("registry", f"{register.get('model_name')} v{register.get('version')}, "
                     f"{'promoted to champion' if register.get('promoted') else 'not promoted'}" if register else None),
    ]
    for name, value in rows:
        shown = f"{value:.4g}" if isinstance(value, float) else value
        print(f"{name:42s} {shown if value is not None else '-'}")
    print("details: metrics/*.json, plots/, reports/drift.html; `dvc metrics show` for everything")


if __name__ == "__main__":
    main()
