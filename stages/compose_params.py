"""Recompose params.yaml from conf/ exactly as `dvc exp run` does (DVC's own function).

`dvc repro` does not recompose, so run this after editing conf/ by hand;
tests/test_config.py fails when the committed params.yaml is out of step with conf/.
"""
import sys
from pathlib import Path

from dvc.utils.hydra import compose_and_dump

ROOT = Path(__file__).resolve().parent.parent


def compose(output: Path, overrides: list[str]) -> None:
    compose_and_dump(str(output), str(ROOT / "conf"), None, "config", str(ROOT), overrides)


if __name__ == "__main__":
    compose(ROOT / "params.yaml", sys.argv[1:])
