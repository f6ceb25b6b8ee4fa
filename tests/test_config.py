"""params.yaml must be what DVC's Hydra integration composes from conf/."""
from conftest import ROOT

from stages.compose_params import compose


def test_committed_params_yaml_is_composed_from_conf(tmp_path):
    composed = tmp_path / "params.yaml"
    compose(composed, [])
    assert (ROOT / "params.yaml").read_text() == composed.read_text(), (
        "params.yaml is out of step with conf/: run `python -m stages.compose_params`")


def test_hydra_group_override_switches_the_class_set(tmp_path):
    import yaml

    composed = tmp_path / "params.yaml"
    compose(composed, ["data=wisdm_all", "window.length=100"])
    params = yaml.safe_load(composed.read_text())
    assert len(params["data"]["labels"]) == 18 and params["window"]["length"] == 100
    assert params["data"]["target_hz"] == 50.0  # shared data keys survive a group switch
