"""Command-line options made from dataclass fields, so each setting's default, flag and help are written once.

``python -m train`` (``train.config.TrainConfig``) and ``python -m convert`` (``convert.config.ConvertConfig``)
build their parsers here. A field becomes an option when its metadata is ``option(flag, help, ...)``:
``learning_rate: float = field(default=2e-3, metadata=option("--lr", "peak AdamW learning rate"))``.

- A field without a default is a required option.
- A ``bool`` field is a switch that sets the opposite of its default (``augment=True`` with ``--no-augment``).
- A field whose type is itself a dataclass (``ConvertConfig.thresholds``) contributes that dataclass's options,
  under its ``group`` heading.
- A field without ``option`` metadata (a setting with no flag) keeps its default.
- ``group`` is the option's heading in ``--help``; other keywords (``choices``, ``metavar``) go to argparse.

``add_options`` adds them to a parser in field order; ``from_options`` builds the dataclass back.
"""

from __future__ import annotations

import argparse
import types
import typing
from dataclasses import MISSING, Field, fields, is_dataclass
from typing import Any


def option(flag: str, help: str, group: str | None = None, **argparse_options: Any) -> dict:
    """A field's metadata that makes it the option ``flag``: ``field(default=..., metadata=option(...))``."""
    return {"flag": flag, "help": help, "group": group, "argparse": argparse_options}


def _value_type(hint: Any) -> Any:
    """``Path | None`` -> ``Path``: what argparse turns the option's text into."""
    if isinstance(hint, types.UnionType):
        return next(arg for arg in typing.get_args(hint) if arg is not type(None))
    return hint


def _add_option(container: argparse._ActionsContainer, spec: Field, hint: Any) -> None:
    flag = spec.metadata["flag"]
    settings = {"dest": spec.name, "help": spec.metadata["help"], **spec.metadata["argparse"]}
    if hint is bool:
        settings["action"] = "store_false" if spec.default is True else "store_true"
    else:
        settings["type"] = _value_type(hint)
        if "choices" not in settings:  # argparse would name the value after dest (the field), not the flag
            settings.setdefault("metavar", flag.removeprefix("--").replace("-", "_").upper())
        if spec.default not in (MISSING, None) and "(default" not in settings["help"]:
            settings["help"] += " (default: %(default)s)"
    if spec.default is not MISSING:
        settings["default"] = spec.default
    elif spec.default_factory is not MISSING:
        settings["default"] = spec.default_factory()
    else:
        settings["required"] = True
    container.add_argument(flag, **settings)


def add_options(parser: argparse.ArgumentParser, config_type: type) -> None:
    """One option per flagged field of ``config_type`` (nested dataclasses included), in field order."""
    _add_fields(parser, config_type, {}, None)


def _add_fields(parser: argparse.ArgumentParser, config_type: type, groups: dict, group: str | None) -> None:
    hints = typing.get_type_hints(config_type)
    for spec in fields(config_type):
        where = spec.metadata.get("group") or group
        if is_dataclass(hints[spec.name]) and "group" in spec.metadata and "flag" not in spec.metadata:
            _add_fields(parser, hints[spec.name], groups, where)
            continue
        if "flag" not in spec.metadata:
            continue
        if where is not None and where not in groups:
            groups[where] = parser.add_argument_group(where)
        _add_option(parser if where is None else groups[where], spec, hints[spec.name])


def from_options(config_type: type, namespace: argparse.Namespace) -> Any:
    """``config_type`` built back from the options ``add_options`` made; fields without a flag keep defaults."""
    hints = typing.get_type_hints(config_type)
    values = {}
    for spec in fields(config_type):
        if is_dataclass(hints[spec.name]) and "group" in spec.metadata and "flag" not in spec.metadata:
            values[spec.name] = from_options(hints[spec.name], namespace)
        elif "flag" in spec.metadata:
            values[spec.name] = getattr(namespace, spec.name)
    return config_type(**values)
