"""Command-line options generated from a config dataclass (argparse only: no Django, no torch).

A config field declares its one-line doc with `option(default, "help")`; `add_config_arguments`
turns every field into a flag (`lora_r` -> `--lora-r`) typed from its annotation, and
`config_from_options` builds the frozen config back from the parsed options. So a new field
is on the command line, with its help, the moment it is declared.

Types: `bool` -> `--flag/--no-flag`; `Literal[...]` -> choices; `tuple[str, ...]` -> a comma
list; `X | None` -> X, or `none` to switch the option off. Every flag defaults to None,
meaning "not given: keep the dataclass default", so the command line never restates defaults.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
from collections.abc import Mapping
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

# What a user types to switch an optional setting off (e.g. --missing-eos-penalty none).
NONE_WORDS = ("none", "off")
TRUE_WORDS = ("1", "true", "yes", "on")


def option(default: Any, help: str) -> Any:
    """A dataclass field whose one-line doc (`help`) is what `--help` shows for it."""
    return dataclasses.field(default=default, metadata={"help": help})


def _split_optional(hint: Any) -> tuple[Any, bool]:
    """(the type inside `X | None`, whether None is allowed)."""
    if get_origin(hint) in (Union, types.UnionType):
        args = [a for a in get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return args[0], len(args) < len(get_args(hint))
    return hint, False


def _is_str_tuple(hint: Any) -> bool:
    return get_origin(hint) is tuple


def _parse_list(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


def _or_none(parse: Any) -> Any:
    """Wrap an argparse `type` so that `none`/`off` passes through, for the config to map to None."""

    def parse_or_none(value: str) -> Any:
        return value if value.strip().lower() in NONE_WORDS else parse(value)

    parse_or_none.__name__ = getattr(parse, "__name__", "value")  # argparse names it in errors
    return parse_or_none


def _default_text(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(value)
    return str(value)


def add_config_arguments(parser: Any, config_cls: type) -> None:
    """Add one `--field-name` option per field of `config_cls` to a parser or argument group."""
    hints = get_type_hints(config_cls)
    for f in dataclasses.fields(config_cls):
        flag = "--" + f.name.replace("_", "-")
        # argparse %-formats help strings: a literal % in a doc must be doubled.
        doc = f.metadata.get("help", "").replace("%", "%%")
        hint, optional = _split_optional(hints[f.name])
        default = _default_text(f.default) + ("; accepts none" if optional else "")
        kwargs: dict[str, Any] = {
            "dest": f.name,
            "default": None,
            "help": f"{doc} (default: {default})",
        }
        if hint is bool and not optional:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif get_origin(hint) is Literal and not optional:
            kwargs["choices"] = list(get_args(hint))
        elif _is_str_tuple(hint) or hint in (int, float, str):
            parse = _parse_list if _is_str_tuple(hint) else hint
            kwargs["type"] = _or_none(parse) if optional else parse
            if _is_str_tuple(hint):
                kwargs["metavar"] = "A,B,..."
        else:
            raise TypeError(f"{config_cls.__name__}.{f.name}: no command-line form for {hint!r}")
        parser.add_argument(flag, **kwargs)


def coerce(name: str, hint: Any, value: Any) -> Any:
    """Convert an option value (parsed, or a raw string) to the type of field `name`."""
    hint, optional = _split_optional(hint)
    if optional and isinstance(value, str) and value.strip().lower() in NONE_WORDS:
        return None
    if _is_str_tuple(hint):
        if isinstance(value, str):
            value = _parse_list(value)
        return tuple(value) or None
    try:
        if hint is bool:
            if isinstance(value, str):
                return value.strip().lower() in TRUE_WORDS
            return bool(value)
        if hint is int and not isinstance(value, bool):
            return int(value)
        if hint is float:
            return float(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"option {name}: {value!r} is not a valid {hint.__name__}") from exc
    return value


def config_from_options(
    config_cls: type, options: Mapping[str, Any], aliases: Mapping[str, str] | None = None
) -> Any:
    """Build `config_cls` from options: keys may use dashes or an alias; unknown keys and None
    values (options not given) are ignored, so the dataclass defaults apply."""
    aliases = aliases or {}
    hints = get_type_hints(config_cls)
    names = {f.name for f in dataclasses.fields(config_cls)}
    values: dict[str, Any] = {}
    for key, value in options.items():
        name = key.replace("-", "_")
        name = aliases.get(name, name)
        if name in names and value is not None:
            values[name] = coerce(name, hints[name], value)
    return config_cls(**values)


class TrainConfig:
    """What the trainers' frozen config dataclasses (SFT, DPO, reward model) share.

    A subclass sets `NAME` (for error messages), `DEFAULT_LR` (full fine-tuning, LoRA) and
    `ALIASES` (other names of its fields: trl's, older ones), and declares `lr`, `lora`.
    """

    NAME = "config"
    DEFAULT_LR = (1e-5, 1e-4)
    ALIASES: Mapping[str, str] = {}

    @property
    def learning_rate(self) -> float:
        """The learning rate actually used: `lr`, else the default for full fine-tuning or LoRA."""
        if self.lr is not None:  # type: ignore[attr-defined]
            return self.lr  # type: ignore[attr-defined]
        full, lora = self.DEFAULT_LR
        return lora if self.lora else full  # type: ignore[attr-defined]

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> Any:
        """Build from command options: unknown keys (verbosity, out, ...) and None values are
        ignored, so the defaults apply."""
        return config_from_options(cls, options, cls.ALIASES)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of every field, plus the resolved learning rate."""
        data = dataclasses.asdict(self)  # type: ignore[call-overload]
        data["learning_rate"] = self.learning_rate
        return data

    def refuse_failed(self, checks: Mapping[str, bool]) -> None:
        """Raise one ValueError naming every check (message -> passed) that failed; a config
        with an `lr_scheduler` has it checked too (a bad name used to fail only once the
        trainer started, after the run was recorded)."""
        checks = dict(checks)
        scheduler = getattr(self, "lr_scheduler", None)
        if scheduler is not None:
            from transformers import SchedulerType

            names = [t.value for t in SchedulerType]
            checks[f"lr_scheduler must be one of {', '.join(names)}"] = scheduler in names
        failed = [message for message, ok in checks.items() if not ok]
        if failed:
            raise ValueError(f"invalid {self.NAME}: " + "; ".join(failed))
