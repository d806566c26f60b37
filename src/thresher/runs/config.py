"""Typed run configs: dataclass defaults <- YAML file <- ``key=value`` overrides.

A study's config is a dataclass whose field defaults are the one place defaults live. Values
from YAML or the command line are coerced to the field's type hint and checked, so a typo or a
bad value fails before any work starts, with a message that names the key.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

import yaml

from thresher.registry import did_you_mean

T = TypeVar("T")

_NULL_WORDS = {"null", "none", "~"}
_BOOL_WORDS = {"true": True, "yes": True, "on": True, "1": True,
               "false": False, "no": False, "off": False, "0": False}


class ConfigError(ValueError):
    """A config value, key or file is wrong; the message says which and how to fix it."""


class _DuplicateKeyError(ConfigError):
    """A YAML mapping names one key twice; `_read_yaml` and `_set` add where it came from."""

    ADVICE = "the later one would silently replace the earlier: keep one"

    def __init__(self, key: Any, line: int, first: int) -> None:
        super().__init__(f"duplicate key {key!r}; {self.ADVICE}")
        self.key, self.line, self.first = key, line, first


class _Loader(yaml.SafeLoader):
    """``yaml.safe_load``, except that a mapping with a repeated key is an error: PyYAML keeps
    the last one, so a second ``fit:`` section would silently drop the first."""

    def construct_mapping(self, node: yaml.Node, deep: bool = False) -> dict:
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":  # "<<: *base" overrides on purpose
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.get(key)
                except TypeError:  # an unhashable key: the base class says so
                    continue
                line = key_node.start_mark.line + 1
                if first is not None:
                    raise _DuplicateKeyError(key, line, first)
                seen[key] = line
        return super().construct_mapping(node, deep)


def _yaml_load(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)


# ---------------------------------------------------------------------------------------------
# loading


def load_config(cls: type[T], path: str | Path | None = None, overrides: Sequence[str] = (),
                validate: bool = True) -> T:
    """Build ``cls`` from its defaults, then the YAML file at ``path``, then ``overrides``.

    Overrides are ``key=value`` strings with dotted keys for nested sections (``fit.lr=0.1``).
    The result is validated (``validate()`` on every nested section, then on the root) unless
    ``validate=False``, for showing a config whose defaults need a value from the user (keys and
    types are still checked).
    """
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise TypeError(f"load_config needs a dataclass type, got {cls!r}")
    try:
        cfg = cls()
    except TypeError as e:
        raise ConfigError(f"{cls.__name__} must give every field a default ({e})") from None
    keys = _keys(cls)
    if path is not None:
        data = flatten(_read_yaml(path), descend=lambda key: _is_section(keys.get(key)))
        for key, value in data.items():
            cfg = _set(cfg, key, value, keys, raw=False, source=f" (in {path})")
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"override {item!r} must look like key=value (e.g. fit.lr=0.1)")
        cfg = _set(cfg, key, text.strip(), keys, raw=True, source="")
    if validate:
        _validate(cfg, "")
    return cfg


def _read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = _yaml_load(path.read_text())
    except _DuplicateKeyError as e:
        raise ConfigError(f"config file {path}, line {e.line}: duplicate key {e.key!r} (first "
                          f"at line {e.first}); {e.ADVICE}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path} is not valid YAML: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"config file {path} must contain a mapping of keys to values, "
            f"got {type(data).__name__}")
    return data


def _keys(cls: type, prefix: str = "") -> dict[str, Any]:
    """Every settable dotted key of a config class -> its type hint (sections included)."""
    keys: dict[str, Any] = {}
    for name, hint in _hints(cls).items():
        keys[prefix + name] = hint
        if _is_section(hint):
            keys.update(_keys(hint, prefix + name + "."))
    return keys


def _hints(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.init}


def _is_section(hint: Any) -> bool:
    return isinstance(hint, type) and dataclasses.is_dataclass(hint)


def flatten(tree: Mapping, prefix: str = "",
            descend: Callable[[str], bool] | None = None) -> dict[str, Any]:
    """Nested mappings -> dotted keys (``{"fit": {"lr": 0.1}}`` -> ``{"fit.lr": 0.1}``), so
    configs and metrics line up key by key in YAML loading, ``runs`` tables and trackers.

    Without ``descend`` every non-empty mapping is entered; with it, only the dotted keys it
    accepts (a config's sections, not its dict-valued fields such as ``model_options``).
    """
    flat: dict[str, Any] = {}
    for name, value in tree.items():
        key = prefix + str(name)
        enter = descend(key) if descend is not None else bool(value)
        if isinstance(value, Mapping) and enter:
            flat.update(flatten(value, key + ".", descend))
        else:
            flat[key] = value
    return flat


def _set(cfg: Any, key: str, value: Any, keys: Mapping[str, Any], raw: bool, source: str) -> Any:
    """Return a copy of ``cfg`` with dotted ``key`` set to ``value`` coerced to its type."""
    if key not in keys:
        raise ConfigError(_unknown_key_message(key, keys) + source)
    hint = keys[key]
    if _is_section(hint):
        raise ConfigError(
            f"config key {key!r} is a section{source}; set its fields as {key}.<name>=value")
    try:
        if raw:
            value = _parse_text(value, hint)
        value = coerce(value, hint, key)
    except _DuplicateKeyError as e:
        raise ConfigError(f"config key {key!r}: {e}{source}") from None
    except ConfigError as e:
        raise ConfigError(f"{e}{source}") from None
    _check_finite(value, key, source)
    return _replace(cfg, key.split("."), value)


def _check_finite(value: Any, key: str, source: str) -> None:
    """NaN or infinity anywhere in a value (``fit.lr=nan``, YAML ``.inf`` in ``model_options``)
    is refused: no setting means it, and a NaN passes every ``<``/``>`` check in validate()."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{key} = {value}: must be a finite number{source}")
    if isinstance(value, Mapping):
        for k, v in value.items():
            _check_finite(k, f"{key}.<key>", source)
            _check_finite(v, f"{key}.{k}", source)
    elif isinstance(value, (list, tuple, set, frozenset)):
        for i, v in enumerate(value):
            _check_finite(v, f"{key}[{i}]", source)


def _replace(cfg: Any, parts: list[str], value: Any) -> Any:
    head = parts[0]
    if len(parts) > 1:
        value = _replace(getattr(cfg, head), parts[1:], value)
    return dataclasses.replace(cfg, **{head: value})


def _unknown_key_message(key: str, keys: Mapping[str, Any]) -> str:
    close = did_you_mean(key, keys)
    if close:
        return f"unknown config key {key!r}; did you mean {close!r}?"
    return f"unknown config key {key!r}; valid keys: {', '.join(keys)}"


def _parse_text(text: str, hint: Any) -> Any:
    """A command-line value: strings stay strings where the type wants one, else YAML."""
    if _allows_none(hint) and text.lower() in _NULL_WORDS:
        return None
    if _wants_text(hint):
        return text
    try:
        return _yaml_load(text) if text else text
    except yaml.YAMLError:
        return text


def _allows_none(hint: Any) -> bool:
    return hint is type(None) or (_is_union(hint) and type(None) in typing.get_args(hint))


def _wants_text(hint: Any) -> bool:
    if hint is str or (isinstance(hint, type) and issubclass(hint, Path)):
        return True
    if typing.get_origin(hint) is Literal:
        return all(isinstance(c, str) for c in typing.get_args(hint))
    if _is_union(hint):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return len(args) == 1 and _wants_text(args[0])
    return False


def _is_union(hint: Any) -> bool:
    return typing.get_origin(hint) in (Union, types.UnionType)


# ---------------------------------------------------------------------------------------------
# coercion


def coerce(value: Any, hint: Any, key: str = "value") -> Any:
    """Convert a YAML-ish ``value`` to type ``hint`` or raise ConfigError naming ``key``."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return value
    if _is_union(hint):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return coerce(value, arg, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if len(errors) == 1 else
                          f"config key {key!r}: {value!r} does not fit {_type_name(hint)}")
    if origin is Literal:
        for choice in args:
            if value == choice and type(value) is type(choice):
                return choice
        choices = ", ".join(repr(c) for c in args)
        raise ConfigError(f"config key {key!r}: {value!r} is not a valid choice; "
                          f"choose one of {choices}")
    if origin in (tuple, list, set, frozenset) or hint in (tuple, list):
        return _coerce_sequence(value, hint, key)
    if origin in (dict, Mapping) or hint is dict:
        if not isinstance(value, Mapping):
            raise _type_error(key, value, hint)
        kt, vt = args or (Any, Any)
        return {coerce(k, kt, f"{key}.<key>"): coerce(v, vt, f"{key}.{k}")
                for k, v in value.items()}
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in _BOOL_WORDS:
            return _BOOL_WORDS[value.strip().lower()]
        raise _type_error(key, value, hint)
    if hint is int:
        return _coerce_int(value, key)
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML reads "1e-3" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise _type_error(key, value, hint)
    if hint is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise _type_error(key, value, hint)
    if isinstance(hint, type) and issubclass(hint, Path):
        if isinstance(value, (str, Path)):
            return hint(value)
        raise _type_error(key, value, hint)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        for member in hint:
            if value in (member, member.value, member.name):
                return member
        choices = ", ".join(repr(m.value) for m in hint)
        raise ConfigError(f"config key {key!r}: {value!r} is not a valid choice; "
                          f"choose one of {choices}")
    if isinstance(hint, type):
        if isinstance(value, hint):
            return value
        raise _type_error(key, value, hint)
    return value


def _coerce_int(value: Any, key: str) -> int:
    if isinstance(value, bool):
        raise _type_error(key, value, int)
    if isinstance(value, int):
        return value
    number = value
    if isinstance(value, str):
        try:
            return int(value.replace("_", ""))
        except ValueError:
            try:
                number = float(value)  # "1e3"
            except ValueError:
                raise _type_error(key, value, int) from None
    if isinstance(number, float) and number.is_integer():
        return int(number)
    raise _type_error(key, value, int)


def _coerce_sequence(value: Any, hint: Any, key: str) -> Any:
    origin = typing.get_origin(hint) or hint
    args = typing.get_args(hint)
    if isinstance(value, str):  # "128,64" or "[128, 64]" from the command line
        try:
            value = _yaml_load(value) if value.strip().startswith("[") else \
                [_yaml_load(part) for part in value.split(",") if part.strip()]
        except yaml.YAMLError:
            raise _type_error(key, value, hint) from None
    elif not isinstance(value, (list, tuple, set, frozenset)):
        value = [value]  # a lone scalar is a one-element sequence
    items = list(value)
    if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
        if len(items) != len(args):
            raise ConfigError(f"config key {key!r}: expected {len(args)} values "
                              f"({_type_name(hint)}), got {len(items)}: {items!r}")
        return tuple(coerce(v, t, f"{key}[{i}]") for i, (v, t) in enumerate(zip(items, args)))
    item_type = args[0] if args else Any
    coerced = [coerce(v, item_type, f"{key}[{i}]") for i, v in enumerate(items)]
    return coerced if origin is list else origin(coerced)


def _type_error(key: str, value: Any, hint: Any) -> ConfigError:
    return ConfigError(f"config key {key!r}: expected {_type_name(hint)}, got {value!r}")


def _type_name(hint: Any) -> str:
    return hint.__name__ if isinstance(hint, type) and not typing.get_args(hint) else \
        str(hint).replace("typing.", "")


# ---------------------------------------------------------------------------------------------
# validation helpers: one-liners for a study's ``validate()``


def _validate(cfg: Any, prefix: str) -> None:
    """Validate nested sections first, then the section itself (it may compare fields)."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            _validate(value, prefix + f.name + ".")
    check = getattr(cfg, "validate", None)
    if not callable(check):
        return
    try:
        check()
    except ValueError as e:
        where = f"in section {prefix[:-1]!r}: " if prefix else ""
        raise ConfigError(f"invalid config: {where}{e}") from e


def check_positive(name: str, value: float, allow_zero: bool = False) -> None:
    """Sizes, counts and rates that must be > 0 (or >= 0 with ``allow_zero``)."""
    if value is None or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"{name} must be {bound}, got {value!r}")


def check_range(name: str, value: float, low: float | None = None,
                high: float | None = None) -> None:
    """``low <= value <= high``; either bound may be None for an open side."""
    if value is None or (low is not None and value < low) or (high is not None and value > high):
        lo = "-inf" if low is None else low
        hi = "inf" if high is None else high
        raise ConfigError(f"{name} must be in [{lo}, {hi}], got {value!r}")


def check_choice(name: str, value: Any, choices: Sequence[Any]) -> None:
    """For values checked against a list known only at run time (e.g. a registry's names)."""
    if value not in choices:
        close = did_you_mean(str(value), map(str, choices))
        hint = f"; did you mean {close!r}?" if close else ""
        raise ConfigError(f"{name} must be one of {', '.join(map(repr, choices))}, "
                          f"got {value!r}{hint}")


# ---------------------------------------------------------------------------------------------
# snapshots


def to_plain(obj: Any) -> Any:
    """Nested dicts/lists of str, int, float, bool, None: what YAML and JSON can hold.

    Covers dataclasses, tuples, paths, enums and numpy/torch scalars or arrays (via tolist).
    """
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {str(k): to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [to_plain(v) for v in obj]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, enum.Enum):
        return to_plain(obj.value)
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist"):  # numpy scalars and arrays, torch tensors
        return to_plain(obj.tolist())
    return str(obj)


def config_to_dict(cfg: Any) -> dict:
    """A config dataclass (or dict) as a nested plain dict; tuples become lists."""
    plain = to_plain(cfg)
    if not isinstance(plain, dict):
        raise TypeError(f"a config must be a dataclass or a mapping, got {type(cfg).__name__}")
    return plain


class _Dumper(yaml.SafeDumper):
    """Sections as blocks, lists inline (``hidden: [128, 64]``): short and easy to edit."""


_Dumper.add_representer(
    list, lambda dumper, data: dumper.represent_sequence("tag:yaml.org,2002:seq", data,
                                                         flow_style=True))


def dump_yaml(cfg: Any) -> str:
    """The config as YAML that ``load_config`` reads back to an equal config."""
    return yaml.dump(config_to_dict(cfg), Dumper=_Dumper, sort_keys=False,
                     default_flow_style=False, allow_unicode=True)
