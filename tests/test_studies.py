"""What every registered study shares: its defaults file, the common flags and the seed loop."""

from pathlib import Path

import pytest

from thresher.cli import main
from thresher.runs.config import ConfigError, dump_yaml, load_config
from thresher.studies import STUDIES, load_builtin
from thresher.studies.common import SEED_HELP, StudyConfig, for_seeds

ROOT = Path(__file__).resolve().parents[1]
NAMES = load_builtin()[0].names()


@pytest.mark.parametrize("name", NAMES)
def test_default_yaml_matches_the_dataclass_defaults(name, capsys):
    """The file, the dataclass and `--print-config` (the documented way to regenerate the file,
    which must work even where a default needs the user's value, as robustness's run does)."""
    path = ROOT / "configs" / name / "default.yaml"
    assert path.read_text() == dump_yaml(STUDIES[name].config()), \
        f"regenerate it: thresher {name} --print-config > configs/{name}/default.yaml"
    assert main([name, "--print-config"]) == 0
    assert capsys.readouterr().out == path.read_text()


@pytest.mark.parametrize("name", NAMES)
def test_seed_means_the_same_in_every_command(name, capsys):
    with pytest.raises(SystemExit):
        main([name, "--help"])
    assert " ".join(SEED_HELP.split()) in " ".join(capsys.readouterr().out.split())


def test_study_configs_share_the_common_fields_and_checks():
    for name in ("train", "active", "continual"):
        config = STUDIES[name].config
        assert issubclass(config, StudyConfig), name
        with pytest.raises(ConfigError, match="seed must be an integer >= 0"):
            load_config(config, overrides=["seed=-1"])
        with pytest.raises(ConfigError, match="runs must be > 0"):
            load_config(config, overrides=["runs=0"])
    assert STUDIES["active"].config().runs == 3 and STUDIES["train"].config().runs == 1


def test_for_seeds_counts_up_from_the_seed():
    assert list(for_seeds(StudyConfig(seed=5, runs=3))) == [5, 6, 7]
    assert list(for_seeds(StudyConfig())) == [0]


def test_an_unknown_study_names_the_closest():
    with pytest.raises(ValueError, match="unknown study 'contnual'; did you mean 'continual'"):
        STUDIES["contnual"]
