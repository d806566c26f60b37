from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import pytest

from thresher.runs.config import (
    ConfigError,
    check_choice,
    check_positive,
    check_range,
    config_to_dict,
    dump_yaml,
    flatten,
    load_config,
)


@dataclass
class Fit:
    lr: float = 0.1
    epochs: int = 10
    optimizer: Literal["sgd", "adam"] = "sgd"
    nesterov: bool = False

    def validate(self) -> None:
        check_positive("lr", self.lr)
        check_positive("epochs", self.epochs)


@dataclass
class Study:
    seed: int = 0
    name: str = "demo"
    hidden: tuple[int, ...] = (128, 64)
    datasets: list[str] = field(default_factory=lambda: ["digits"])
    budget: int | None = None
    patience: int | None = 5
    fraction: float = 0.5
    fit: Fit = field(default_factory=Fit)

    def validate(self) -> None:
        check_range("fraction", self.fraction, 0.0, 1.0)


def write(tmp_path, text):
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    return path


def test_defaults_without_yaml_or_overrides():
    assert load_config(Study) == Study()


def test_precedence_default_then_yaml_then_override(tmp_path):
    path = write(tmp_path, "seed: 3\nfit:\n  lr: 0.5\n  epochs: 7\n")
    cfg = load_config(Study, path, ["fit.lr=0.01"])
    assert cfg.seed == 3  # yaml beats default
    assert cfg.fit.epochs == 7  # yaml beats default, nested
    assert cfg.fit.lr == 0.01  # override beats yaml
    assert cfg.fit.optimizer == "sgd"  # untouched default survives a partial section
    assert cfg.name == "demo"


def test_yaml_dotted_keys_work_like_sections(tmp_path):
    cfg = load_config(Study, write(tmp_path, "fit.epochs: 4\n"))
    assert cfg.fit.epochs == 4


def test_float_from_exponent_without_dot(tmp_path):
    # yaml.safe_load("1e-3") is the *string* "1e-3"
    assert load_config(Study, overrides=["fit.lr=1e-3"]).fit.lr == pytest.approx(1e-3)
    assert load_config(Study, write(tmp_path, "fit:\n  lr: 1e-3\n")).fit.lr == pytest.approx(1e-3)
    assert isinstance(load_config(Study, overrides=["fit.lr=1"]).fit.lr, float)


def test_int_coercion_rejects_fractions_and_bools():
    assert load_config(Study, overrides=["seed=7"]).seed == 7
    assert load_config(Study, overrides=["seed=1e3"]).seed == 1000
    with pytest.raises(ConfigError, match=r"'seed'.*int.*1\.5"):
        load_config(Study, overrides=["seed=1.5"])
    with pytest.raises(ConfigError, match="'seed'"):
        load_config(Study, overrides=["seed=true"])


@pytest.mark.parametrize("text, expected", [("true", True), ("false", False), ("True", True),
                                            ("yes", True), ("0", False)])
def test_bools(text, expected):
    assert load_config(Study, overrides=[f"fit.nesterov={text}"]).fit.nesterov is expected


def test_bool_rejects_other_values():
    with pytest.raises(ConfigError, match="fit.nesterov"):
        load_config(Study, overrides=["fit.nesterov=maybe"])


@pytest.mark.parametrize("text", ["[32, 16, 8]", "32,16,8", "32, 16, 8"])
def test_tuple_of_ints(text):
    assert load_config(Study, overrides=[f"hidden={text}"]).hidden == (32, 16, 8)


def test_tuple_from_yaml_list_and_single_value(tmp_path):
    assert load_config(Study, write(tmp_path, "hidden: [5, 6]\n")).hidden == (5, 6)
    assert load_config(Study, overrides=["hidden=12"]).hidden == (12,)
    with pytest.raises(ConfigError, match=r"hidden\[1\]"):
        load_config(Study, overrides=["hidden=1,x"])


def test_list_of_str_and_str_fields_keep_text():
    cfg = load_config(Study, overrides=["datasets=digits,cifar10", "name=123"])
    assert cfg.datasets == ["digits", "cifar10"]
    assert cfg.name == "123"  # a str field keeps the text even though YAML would read an int


def test_optional_int():
    assert load_config(Study, overrides=["budget=50"]).budget == 50
    assert load_config(Study, overrides=["budget=none"]).budget is None
    assert load_config(Study, overrides=["budget=null"]).budget is None
    assert load_config(Study, overrides=["patience=none"]).patience is None  # PEP 604 union
    assert load_config(Study, overrides=["patience=2"]).patience == 2
    with pytest.raises(ConfigError, match="budget"):
        load_config(Study, overrides=["budget=lots"])


def test_literal_choices():
    assert load_config(Study, overrides=["fit.optimizer=adam"]).fit.optimizer == "adam"
    with pytest.raises(ConfigError) as info:
        load_config(Study, overrides=["fit.optimizer=adamw"])
    message = str(info.value)
    assert "fit.optimizer" in message and "adamw" in message
    assert "'sgd'" in message and "'adam'" in message


def test_unknown_key_suggests_closest():
    with pytest.raises(ConfigError) as info:
        load_config(Study, overrides=["fit.lrr=0.1"])
    assert str(info.value) == "unknown config key 'fit.lrr'; did you mean 'fit.lr'?"


def test_unknown_key_in_yaml_names_file(tmp_path):
    path = write(tmp_path, "fit:\n  epoch: 3\n")
    with pytest.raises(ConfigError, match=r"'fit.epoch'; did you mean 'fit.epochs'\?.*cfg.yaml"):
        load_config(Study, path)


def test_unknown_key_without_close_match_lists_keys():
    with pytest.raises(ConfigError, match="valid keys: seed, name"):
        load_config(Study, overrides=["zzzzzz=1"])


def test_malformed_override():
    with pytest.raises(ConfigError, match="key=value"):
        load_config(Study, overrides=["fit.lr"])


def test_setting_a_section_to_a_scalar_is_an_error():
    with pytest.raises(ConfigError, match="'fit' is a section"):
        load_config(Study, overrides=["fit=3"])


def test_yaml_must_be_a_mapping(tmp_path):
    path = write(tmp_path, "- 1\n- 2\n")
    with pytest.raises(ConfigError, match=r"cfg\.yaml.*mapping"):
        load_config(Study, path)


def test_missing_yaml_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(Study, tmp_path / "nope.yaml")


def test_empty_yaml_means_defaults(tmp_path):
    assert load_config(Study, write(tmp_path, "")) == Study()


def test_validate_hook_runs_on_root_and_nested_sections():
    with pytest.raises(ConfigError, match=r"section 'fit'.*epochs must be > 0, got 0"):
        load_config(Study, overrides=["fit.epochs=0"])
    with pytest.raises(ConfigError, match=r"fraction must be in \[0.0, 1.0\], got 1.5"):
        load_config(Study, overrides=["fraction=1.5"])


def test_validate_runs_even_on_defaults():
    @dataclass
    class Broken:
        size: int = -1

        def validate(self) -> None:
            check_positive("size", self.size)

    with pytest.raises(ConfigError, match="size must be > 0"):
        load_config(Broken)


def test_check_helpers():
    check_positive("n", 0, allow_zero=True)
    with pytest.raises(ConfigError, match=r"n must be >= 0, got -1"):
        check_positive("n", -1, allow_zero=True)
    check_range("p", 0.0, 0.0, 1.0)
    check_range("p", 5.0, low=0.0)
    with pytest.raises(ConfigError, match=r"p must be in \[-inf, 1\]"):
        check_range("p", 2.0, high=1)
    check_choice("model", "mlp", ["mlp", "cnn"])
    expected = r"model must be one of 'mlp', 'cnn', got 'mpl'; did you mean 'mlp'\?"
    with pytest.raises(ConfigError, match=expected):
        check_choice("model", "mpl", ["mlp", "cnn"])


def test_config_to_dict_and_yaml_round_trip(tmp_path):
    cfg = load_config(Study, overrides=["fit.lr=1e-3", "hidden=4,2", "budget=9"])
    plain = config_to_dict(cfg)
    assert plain["hidden"] == [4, 2]  # tuples become lists
    assert plain["fit"] == {"lr": 0.001, "epochs": 10, "optimizer": "sgd", "nesterov": False}
    path = tmp_path / "dumped.yaml"
    path.write_text(dump_yaml(cfg))
    assert load_config(Study, path) == cfg


def test_flatten_enters_every_mapping_or_only_the_sections_asked_for():
    tree = {"fit": {"lr": 0.1, "sched": {"warmup": 1}}, "model_options": {"widths": [8]},
            "dataset_options": {}}
    assert flatten(tree) == {"fit.lr": 0.1, "fit.sched.warmup": 1, "model_options.widths": [8],
                             "dataset_options": {}}
    assert flatten(tree, descend=lambda key: key.startswith("fit")) == {
        "fit.lr": 0.1, "fit.sched.warmup": 1, "model_options": {"widths": [8]},
        "dataset_options": {}}


@dataclass
class Watched:
    """Records whether validate() ran, to show a value is refused before it."""

    lr: float = 0.1
    model_options: dict[str, Any] = field(default_factory=dict)
    widths: list[float] = field(default_factory=list)
    fit: Fit = field(default_factory=Fit)
    validated: list[str] = field(default_factory=list)

    def validate(self) -> None:
        self.validated.append("root")


@pytest.mark.parametrize("override, message", [
    ("fit.lr=nan", "fit.lr = nan: must be a finite number"),
    ("fit.lr=inf", "fit.lr = inf: must be a finite number"),
    ("fit.lr=-inf", "fit.lr = -inf: must be a finite number"),
    ("lr=1e999", "lr = inf: must be a finite number"),  # overflows to inf
    ("widths=0.5,nan", r"widths\[1\] = nan: must be a finite number"),
    ("model_options={depth: 2, scale: .inf}", "model_options.scale = inf: must be"),
    ("model_options={a: {b: [1, -.inf]}}", r"model_options.a.b\[1\] = -inf: must be"),
])
def test_non_finite_numbers_are_refused_even_without_validation(override, message):
    # check_positive("lr", nan) would pass (nan < 0 is False), so this is the only guard
    for validate in (True, False):  # validate=False is --print-config
        with pytest.raises(ConfigError, match=message):
            load_config(Watched, overrides=[override], validate=validate)


def test_non_finite_yaml_values_name_the_key_and_file_before_validate(tmp_path):
    for text, message in (("fit:\n  lr: .nan\n", "fit.lr = nan"),
                          ("lr: -.inf\n", "lr = -inf"),
                          ("model_options:\n  lr: [0.1, .NaN]\n", r"model_options.lr\[1\] = nan")):
        path = write(tmp_path, text)
        with pytest.raises(ConfigError, match=f"{message}: must be a finite number "
                                              f"\\(in {path}\\)"):
            load_config(Watched, path)
    assert load_config(Watched, write(tmp_path, "lr: 1.0e+3\n")).validated == ["root"]


def test_duplicate_yaml_keys_are_refused_at_any_depth(tmp_path):
    path = write(tmp_path, "fit:\n  lr: 0.5\nseed: 1\nfit:\n  epochs: 3\n")
    with pytest.raises(ConfigError, match=f"config file {path}, line 4: duplicate key 'fit' "
                                          r"\(first at line 1\)"):
        load_config(Study, path, validate=False)  # --print-config refuses it too
    path = write(tmp_path, "seed: 2\nfit:\n  lr: 0.5\n  epochs: 2\n  lr: 0.1\n")
    with pytest.raises(ConfigError, match=r"line 5: duplicate key 'lr' \(first at line 3\)"):
        load_config(Study, path)
    path = write(tmp_path, "model_options: {depth: 2, depth: 3}\n")
    with pytest.raises(ConfigError, match=r"line 1: duplicate key 'depth'"):
        load_config(Watched, path)
    with pytest.raises(ConfigError, match=r"config key 'model_options': duplicate key 'a'"):
        load_config(Watched, overrides=["model_options={a: 1, a: 2}"])


def test_yaml_merge_keys_still_override_on_purpose(tmp_path):
    path = write(tmp_path, "model_options:\n  base: &b {depth: 2, width: 8}\n"
                           "  net:\n    <<: *b\n    depth: 4\n")
    net = load_config(Watched, path).model_options["net"]
    assert net == {"depth": 4, "width": 8}
