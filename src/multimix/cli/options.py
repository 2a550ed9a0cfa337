"""``multimix train``'s options, generated from the configuration dataclasses.

One source of defaults and help: every field of :class:`~multimix.config.TrainConfig` is a
``--field-name`` option, every field of a registered method's or task's ``Options`` dataclass
too (its ``flag`` metadata may name it, e.g. ``--w-seg``), and ``--set key=value`` reaches
anything, nested ones included (``augment.cutout=0``, ``method.threshold=0.9``,
``task.aux=segmentation``). An option left out keeps the dataclass default, so the CLI never
copies a default.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any

import typer

from multimix.core.errors import ConfigError

PATH_LISTS = {"class_data", "seg_data", "unlabeled_data", "pretrain_masks"}
SKIP = {"out", "augment", "method_options", "task_options"}
COUNTS = {"labeled_class", "labeled_seg"}  # a number or "all"
TRUE, FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}


@dataclasses.dataclass(frozen=True)
class Generated:
    """One generated option: where its value goes and how to read it."""

    target: str  # "config", "method" or "task"
    field: str
    kind: Any  # the field's type
    owners: tuple[str, ...] = ()  # methods or tasks that have it (for the error message)


def _flag(f: dataclasses.Field) -> str:
    return f.metadata.get("flag") or f.name.replace("_", "-")


def _base(kind: Any) -> Any:
    """``int | None`` -> int; other types unchanged."""
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(kind) if a is not type(None)]
        return args[0] if len(args) == 1 else str
    return kind


def parse_value(text: str, kind: Any, name: str) -> Any:
    """A command-line string as a value of the field's type; a one-line error otherwise."""
    kind = _base(kind)
    origin = typing.get_origin(kind)
    try:
        if kind is bool:
            if text.strip().lower() not in TRUE | FALSE:
                raise ValueError
            return text.strip().lower() in TRUE
        if kind is int:
            return int(text)
        if kind is float:
            return float(text)
        if origin is list:
            (item,) = typing.get_args(kind) or (str,)
            parts = [p.strip() for p in text.split(",") if p.strip()]
            if item is str:  # class, structure and aux names are case-insensitive
                return [p.lower() for p in parts]
            return [parse_value(p, item, name) for p in parts]
        if origin is dict or kind is dict:
            out = {}
            for part in (p for p in text.split(",") if p.strip()):
                key, sep, value = part.partition("=")
                if not sep:
                    raise ValueError
                out[key.strip().lower()] = value.strip().lower()
            return out
    except ValueError:
        raise ConfigError(f"{name}: cannot read {text!r} as {_describe(kind)}") from None
    return text.strip()


def _describe(kind: Any) -> str:
    origin = typing.get_origin(kind)
    if origin is list:
        return f"comma-separated {_describe(typing.get_args(kind)[0])}s"
    if origin is dict or kind is dict:
        return "key=value pairs separated by commas"
    return {bool: "true or false", int: "an integer", float: "a number"}.get(kind, "text")


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def option_table(config_cls: type, methods: dict[str, type], tasks: dict[str, type]):
    """``{parameter name: (Generated, typer option, annotation)}`` for every generated option."""
    table: dict[str, tuple[Generated, Any, Any]] = {}
    hints = _hints(config_cls)
    defaults = config_cls.__dataclass_fields__
    for f in dataclasses.fields(config_cls):
        if f.name in SKIP:
            continue
        kind = hints[f.name]
        help_text = getattr(config_cls, "HELP", {}).get(f.name, f.metadata.get("help", ""))
        if f.name in PATH_LISTS:
            option = typer.Option(None, f"--{_flag(f)}", metavar="DIR", help=help_text)
            table[f.name] = (Generated("config", f.name, kind), option, list[Path] | None)
            continue
        default = defaults[f.name]
        shown = default.default if default.default is not dataclasses.MISSING else None
        if default.default_factory is not dataclasses.MISSING:
            shown = default.default_factory()
        metavar = "N|all" if f.name in COUNTS else _metavar(kind)
        doc = f"{help_text} (default: {_show(shown)})".strip()
        option = typer.Option(None, f"--{_flag(f)}", help=doc, metavar=metavar)
        table[f.name] = (Generated("config", f.name, kind), option, str | None)
    for target, parts in (("method", methods), ("task", tasks)):
        seen: dict[str, list[str]] = {}
        defaults_of: dict[str, set[str]] = {}
        fields_of: dict[str, tuple[dataclasses.Field, Any]] = {}
        for owner, cls in parts.items():
            options_cls = cls.Options
            if not dataclasses.is_dataclass(options_cls):
                continue
            option_hints = _hints(options_cls)
            for f in dataclasses.fields(options_cls):
                # Registry keys may carry a task family ("multiclass/multimix"): show the name.
                seen.setdefault(f.name, []).append(owner.rsplit("/", 1)[-1])
                fields_of.setdefault(f.name, (f, option_hints[f.name]))
                value = f.default if f.default is not dataclasses.MISSING else f.default_factory()
                defaults_of.setdefault(f.name, set()).add(_show(value))
        for name, (f, kind) in fields_of.items():
            key = f"{target}_{name}"
            if name in table or key in table:
                continue
            owners = tuple(sorted(set(seen[name])))
            help_text = f.metadata.get("help", "")
            shown = defaults_of[name]
            default = (
                next(iter(shown))
                if len(shown) == 1
                else f"depends on the {target}, see multimix {target}s"
            )
            doc = f"{help_text} ({target} {', '.join(owners)}; default: {default})"
            option = typer.Option(None, f"--{_flag(f)}", help=doc.strip(), metavar=_metavar(kind))
            table[key] = (Generated(target, name, kind, owners), option, str | None)
    return table


def _metavar(kind: Any) -> str:
    kind = _base(kind)
    origin = typing.get_origin(kind)
    if origin is list:
        return "A,B,..."
    if origin is dict or kind is dict:
        return "K=V,..."
    return {bool: "BOOL", int: "INT", float: "FLOAT"}.get(kind, "TEXT")


def parse_count(value: str | None, option: str) -> int | None:
    """``"all"`` (or nothing) means every label; otherwise a non-negative integer."""
    if value is None or value.strip().lower() == "all":
        return None
    try:
        count = int(value)
    except ValueError:
        raise ConfigError(f"{option} must be a number or 'all', not {value!r}") from None
    if count < 0:
        raise ConfigError(f"{option} must be >= 0")
    return count


def _show(value: Any) -> str:
    if isinstance(value, list):
        return ",".join(map(str, value)) or "none"
    if isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in value.items()) or "none"
    return "none" if value is None else str(value)


def apply_options(cfg: Any, values: dict[str, Any], table, sets: list[str]) -> Any:
    """Write the given options, then each ``--set key=value``, into ``cfg`` (in place)."""
    for name, value in values.items():
        if value is None or name not in table:
            continue
        spec = table[name][0]
        flag = table[name][1].param_decls[0]
        if spec.target == "config":
            if spec.field in PATH_LISTS:
                setattr(cfg, spec.field, [str(p) for p in value])
            elif spec.field in COUNTS:
                setattr(cfg, spec.field, parse_count(value, flag))
            else:
                setattr(cfg, spec.field, parse_value(value, _hints(type(cfg))[spec.field], flag))
        else:
            _set_option(cfg, spec.target, spec.field, value, flag, spec.owners)
    for item in sets:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set takes key=value, not {item!r}")
        set_key(cfg, key.strip(), value)
    return cfg


def _set_option(cfg, target: str, name: str, text: str, flag: str, owners=()) -> None:
    """A method or task option; the chosen method or task must have it."""
    chosen = cfg.method if target == "method" else cfg.task
    cls = _options_class(cfg, target)
    fields = {f.name: f for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else {}
    if name not in fields:
        where = f" (an option of {target} {', '.join(owners)})" if owners else ""
        raise ConfigError(f"{flag}: {target} {chosen!r} has no option {name!r}{where}")
    options = cfg.method_options if target == "method" else cfg.task_options
    options[name] = parse_value(text, _hints(cls)[name], flag)


def _options_class(cfg, target: str) -> type:
    if target == "method":
        from multimix.methods.base import method_class

        return method_class(cfg.method, cfg.task).Options
    from multimix.tasks import TASKS

    return TASKS.get(cfg.task).Options


def set_key(cfg: Any, key: str, text: str) -> None:
    """``--set``: ``field``, ``augment.field``, ``method.field`` or ``task.field``."""
    head, _, rest = key.partition(".")
    flag = f"--set {key}"
    if head in ("method", "task") and rest:
        _set_option(cfg, head, rest, text, flag)
        return
    hints = _hints(type(cfg))
    if head not in hints or head in ("method_options", "task_options", "out"):
        raise ConfigError(f"{flag}: no such option; see multimix train --help")
    current = getattr(cfg, head)
    if rest:
        if not dataclasses.is_dataclass(current) or rest not in _hints(type(current)):
            raise ConfigError(f"{flag}: {head} has no option {rest!r}")
        value = parse_value(text, _hints(type(current))[rest], flag)
        setattr(cfg, head, dataclasses.replace(current, **{rest: value}))
        return
    if dataclasses.is_dataclass(current):
        raise ConfigError(f"{flag}: {head} has options of its own; use {head}.NAME=VALUE")
    setattr(cfg, head, parse_value(text, hints[head], flag))
