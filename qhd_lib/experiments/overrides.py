"""Changing a config: :func:`override`, the one function that applies changes to a `RunConfig`.

Changes are dotted paths into the tree (``{"train.epochs": 2, "model.name": "7hqconv"}``); the
command line turns its flags into the same paths (`qhd_lib.experiments.cli.FLAGS`) and chapters
pass them to `qhd_lib.experiments.protocols.configure`. :func:`config_from_dict` reads a tree back
from run.json.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Mapping
from typing import Any

from qhd_lib.errors import ConfigError
from qhd_lib.experiments.config import DEFAULT_DDIM_STEPS, VARIANTS, RunConfig, require

_BOOLEAN_WORDS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _section_class(hint: Any) -> type | None:
    """The dataclass inside ``hint`` (``Transfer | None`` -> Transfer), else None."""
    for option in (hint, *typing.get_args(hint)):
        if dataclasses.is_dataclass(option):
            return option
    return None


def config_from_dict(tree: Mapping[str, Any]) -> RunConfig:
    """A RunConfig from nested dicts (run.json's ``config``); missing fields take defaults."""
    return _build(RunConfig, tree, "")


def _build(cls: type, values: Mapping[str, Any], prefix: str) -> Any:
    hints = _hints(cls)
    unknown = set(values) - set(hints)
    if unknown:
        raise ConfigError(
            f"unknown setting(s) {sorted(prefix + k for k in unknown)}; "
            f"{prefix or 'the top level'} has {', '.join(hints)}"
        )
    kwargs = {}
    for name, value in values.items():
        section = _section_class(hints[name])
        if section is not None and isinstance(value, Mapping):
            kwargs[name] = _build(section, value, f"{prefix}{name}.")
        else:
            kwargs[name] = _coerce(prefix + name, value, hints[name])
    try:
        return cls(**kwargs)
    except TypeError as err:
        missing = [
            f.name
            for f in dataclasses.fields(cls)
            if f.default is dataclasses.MISSING and f.name not in kwargs
        ]
        raise ConfigError(
            f"{prefix.rstrip('.')} needs {', '.join(prefix + m for m in missing)}"
        ) from err


def _coerce(path: str, value: Any, hint: Any) -> Any:
    """``value`` as the field's type; strings (from the command line) are parsed."""
    union = typing.get_origin(hint) in (typing.Union, types.UnionType)
    options = typing.get_args(hint) if union else (hint,)
    if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
        require(type(None) in options, f"{path} cannot be empty")
        return None
    kind = next(o for o in options if o is not type(None))
    if _section_class(kind) is not None:
        if isinstance(value, kind):
            return value
        raise ConfigError(f"{path} is a section; set its fields, e.g. {path}.<field>=...")
    if typing.get_origin(kind) is tuple:
        item = typing.get_args(kind)[0]
        items = value.split(",") if isinstance(value, str) else list(value)
        return tuple(
            _coerce(path, v.strip() if isinstance(v, str) else v, item)
            for v in items
            if not (isinstance(v, str) and not v.strip())
        )
    try:
        if kind is bool:
            if isinstance(value, str):
                return _BOOLEAN_WORDS[value.lower()]
            require(isinstance(value, bool), f"{path} must be true or false, got {value!r}")
            return value
        if kind is int:
            require(not isinstance(value, bool), f"{path} must be an integer, got {value!r}")
            number = float(value)
            require(number == int(number), f"{path} must be an integer, got {value!r}")
            return int(number)
        if kind is float:
            require(not isinstance(value, bool), f"{path} must be a number, got {value!r}")
            return float(value)
    except (KeyError, ValueError, TypeError):
        raise ConfigError(
            f"{path} expects {getattr(kind, '__name__', kind)}, got {value!r}"
        ) from None
    return str(value)


def settings(cls: type = RunConfig, prefix: str = "") -> list[str]:
    """Every dotted path a change may name (``train.epochs``, ``train.transfer.seed``, ...)."""
    out = []
    for name, hint in _hints(cls).items():
        section = _section_class(hint)
        out += settings(section, f"{prefix}{name}.") if section else [prefix + name]
    return out


def override(config: RunConfig, changes: Mapping[str, Any]) -> RunConfig:
    """``config`` with ``changes`` applied (``{"train.epochs": 2, "model.name": "7hqconv"}``).

    Values may be strings, read by the field's type (``"1,10,20"`` for a tuple, ``"none"``).
    Follow-ups keep a changed run coherent, unless the change names the field itself: a new
    ``train.epochs`` keeps the evaluation epochs that still fit and adds the last one; a transfer
    run is evaluated at its last epoch; DDIM without steps takes `DEFAULT_DDIM_STEPS`; DDPM drops
    them; a new ``model.name`` brings its variant's ``train.frozen``.
    """
    known = settings()
    tree = config.to_dict()
    for path, value in changes.items():
        if path == "protocol":
            raise ConfigError(
                "a run's protocol is the one it starts from; choose it with "
                "configure(protocol) or --protocol, not as a change"
            )
        if path not in known and not any(s.startswith(path + ".") for s in known):
            close = difflib.get_close_matches(path, known, n=1)
            hint = f"did you mean {close[0]}?" if close else f"settings: {', '.join(known)}"
            raise ConfigError(f"unknown setting {path!r}; {hint}")
        *parents, leaf = path.split(".")
        node = tree
        for name in parents:
            if node.get(name) is None:  # e.g. the first train.transfer.* setting
                node[name] = {}
            node = node[name]
        node[leaf] = value
    _follow_ups(tree, config, changes)
    return config_from_dict(tree)


def _follow_ups(tree: dict[str, Any], base: RunConfig, changes: Mapping[str, Any]) -> None:
    """The follow-up changes of :func:`override`, made on the nested dict ``tree``."""
    ev, sampling, tr = tree["evaluation"], tree["sampling"], tree["train"]
    if "evaluation.epochs" not in changes:
        epochs = _coerce("train.epochs", tr["epochs"], float)
        transfer_changed = any(k.startswith("train.transfer") for k in changes)
        if tr.get("transfer") is not None and (transfer_changed or "train.epochs" in changes):
            ev["epochs"] = [epochs]
        elif "train.epochs" in changes:
            ev["epochs"] = [e for e in base.evaluation.epochs if e <= epochs] + [epochs]
    if "sampling.steps" not in changes and "sampling.sampler" in changes:
        ddim = str(sampling["sampler"]).lower() == "ddim"
        timesteps = _coerce("diffusion.timesteps", tree["diffusion"]["timesteps"], int)
        steps = min(base.sampling.steps or DEFAULT_DDIM_STEPS, timesteps)
        sampling["steps"] = steps if ddim else None
    if "train.frozen" not in changes and "model.name" in changes:
        variant = VARIANTS.get(str(tree["model"]["name"]))
        tr["frozen"] = list(variant.frozen) if variant else []
