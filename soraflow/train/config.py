"""Typed configs: a dataclass is the single source of a command's options.

Every field of a config dataclass becomes a command-line option ``--field-name`` with the field's
type, its default, and its comment as the help text::

    @dataclass
    class TrainConfig:
        lr: float = option(1e-4, gt=0)  # peak learning rate
        steps: int = option(1000, ge=1)  # optimizer steps to train for
        precision: str = option("bf16", choices=("bf16", "fp32"))  # autocast dtype on CPU

    parser = argparse.ArgumentParser()
    add_config_arguments(parser, TrainConfig)
    cfg = config_from_args(TrainConfig, parser.parse_args())   # validated; InputError names the field

Help text comes from ``field(metadata={"help": ...})`` or, as in the example, from the comment on
the field's line (or the comment lines right above it). Range limits (``ge``, ``gt``, ``le``,
``lt``, ``choices``) are checked by :func:`validate_config`, which every constructor here calls.
A nested dataclass field ``optim: OptimConfig`` becomes ``--optim-lr`` etc.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import io
import json
import os
import tokenize
import types
import typing
from dataclasses import MISSING, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

from ..errors import InputError

C = TypeVar("C")


def option(
    default: Any = MISSING,
    *,
    help: str | None = None,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    choices: tuple | None = None,
    default_factory: Any = MISSING,
):
    """A dataclass field with validation limits (and optionally help text).

    Mutable defaults (lists, dicts) are wrapped in a default_factory automatically.
    """
    meta = {k: v for k, v in dict(help=help, ge=ge, gt=gt, le=le, lt=lt, choices=choices).items() if v is not None}
    if isinstance(default, (list, dict, set)):
        value = default
        default_factory, default = (lambda: copy_value(value)), MISSING
    if default_factory is not MISSING:
        return field(default_factory=default_factory, metadata=meta)
    return field(default=default, metadata=meta)


def copy_value(v):
    return json.loads(json.dumps(v))


# ----------------------------------------------------------------------------------------------
# argparse


def add_config_arguments(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    cls: type,
    *,
    prefix: str = "",
    exclude: tuple[str, ...] = (),
    title: str | None = None,
) -> None:
    """Add ``--field-name`` options for every field of dataclass ``cls`` (recursing into nested ones).

    Options default to "not given" (argparse.SUPPRESS) so :func:`config_from_args` can layer them
    over a base config (e.g. a config loaded from a checkpoint); the help shows the dataclass default.
    """
    group = parser.add_argument_group(title) if title and isinstance(parser, argparse.ArgumentParser) else parser
    hints = _type_hints(cls)
    helps = _field_comments(cls)
    for f in dataclasses.fields(cls):
        if f.name in exclude or not f.init:
            continue
        tp = hints[f.name]
        flag = "--" + (prefix + f.name).replace("_", "-")
        dest = _dest(prefix, f.name)
        if dataclasses.is_dataclass(tp):
            add_config_arguments(group, tp, prefix=f"{prefix}{f.name}_", exclude=())
            continue
        help_text = f.metadata.get("help") or helps.get(f.name, "")
        default = _default_of(f)
        limits = _limits_text(f.metadata)
        if limits:
            help_text = f"{help_text} ({limits})" if help_text else limits
        kwargs: dict[str, Any] = dict(dest=dest, default=argparse.SUPPRESS)
        base, optional = _strip_optional(tp)
        if base is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            origin = typing.get_origin(base)
            if origin is Literal:
                kwargs["choices"] = list(typing.get_args(base))
                kwargs["type"] = _scalar_parser(type(typing.get_args(base)[0]), optional)
            elif origin in (list, tuple) or base in (list, tuple):
                args = typing.get_args(base)
                elem = args[0] if args else str
                kwargs["nargs"] = "*"
                kwargs["type"] = _scalar_parser(elem, False)
                kwargs["metavar"] = elem.__name__.upper() if isinstance(elem, type) else "VALUE"
            elif origin is dict or base is dict:
                kwargs["type"] = _json_dict
                kwargs["metavar"] = "JSON"
            else:
                kwargs["type"] = _scalar_parser(base, optional)
                kwargs["metavar"] = _metavar(base, f.name)
            if "choices" in f.metadata:
                kwargs["choices"] = list(f.metadata["choices"])
                kwargs.pop("metavar", None)
        shown = _show_default(default)
        if shown is not None:
            help_text = f"{help_text} [default: {shown}]" if help_text else f"[default: {shown}]"
        kwargs["help"] = help_text.replace("%", "%%")
        group.add_argument(flag, **kwargs)


def config_from_args(cls: type[C], args: argparse.Namespace, *, base: C | dict | None = None, prefix: str = "") -> C:
    """Build a validated ``cls`` from parsed args: fields given on the command line override ``base``
    (a config instance or dict, e.g. loaded from a checkpoint), which overrides the defaults."""
    values = config_to_dict(base) if dataclasses.is_dataclass(base) else dict(base or {})
    values = _overlay_args(cls, args, values, prefix)
    return config_from_dict(cls, values)


def _overlay_args(cls, args, values: dict, prefix: str) -> dict:
    hints = _type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            values[f.name] = _overlay_args(tp, args, dict(values.get(f.name) or {}), f"{prefix}{f.name}_")
            continue
        dest = _dest(prefix, f.name)
        if hasattr(args, dest):
            values[f.name] = getattr(args, dest)
    return values


# ----------------------------------------------------------------------------------------------
# dict / JSON


def config_to_dict(cfg: Any) -> dict:
    """A config dataclass as plain JSON values (Paths as strings, tuples as lists), recursively."""
    out = {}
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        out[f.name] = config_to_dict(v) if dataclasses.is_dataclass(v) else _jsonable(v)
    return out


def config_from_dict(cls: type[C], values: dict, *, strict: bool = True, where: str = "config", _validate: bool = True) -> C:
    """Build and validate ``cls`` from a dict (e.g. JSON). Unknown keys are an InputError unless
    ``strict=False`` (then ignored); values are converted to the field types."""
    if not isinstance(values, dict):
        raise InputError(f"{where} must be a JSON object, got {type(values).__name__}")
    hints = _type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown and strict:
        raise InputError(f"{where}: unknown field(s) {', '.join(unknown)} for {cls.__name__}")
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in values or not f.init:
            continue
        tp = hints[f.name]
        v = values[f.name]
        if dataclasses.is_dataclass(tp):
            kwargs[f.name] = v if isinstance(v, tp) else config_from_dict(
                tp, v or {}, strict=strict, where=f"{where}.{f.name}", _validate=False
            )
        else:
            kwargs[f.name] = _convert(v, tp, f.name)
    try:
        cfg = cls(**kwargs)
    except (TypeError, ValueError) as err:
        if isinstance(err, InputError):
            raise
        raise InputError(f"{where}: {err}") from None
    if _validate:  # nested configs are validated with the top one, so errors name --outer-inner
        validate_config(cfg)
    return cfg


def save_config(cfg: Any, path: str | os.PathLike) -> Path:
    from ..atomic import write_json

    return write_json(path, config_to_dict(cfg))


def load_config(cls: type[C], path: str | os.PathLike, *, strict: bool = True) -> C:
    path = Path(path)
    try:
        values = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"config file {path} does not exist") from None
    except (OSError, ValueError) as err:
        raise InputError(f"cannot read config {path}: {err}") from None
    return config_from_dict(cls, values, strict=strict, where=str(path))


def replace_config(cfg: C, **changes) -> C:
    """``dataclasses.replace`` that validates the result."""
    new = dataclasses.replace(cfg, **changes)
    validate_config(new)
    return new


# ----------------------------------------------------------------------------------------------
# Validation


def validate_config(cfg: Any, prefix: str = "") -> None:
    """Check every field against its ``option(...)`` limits and its type; InputError names the field
    as its command-line option (``--warmup-steps``)."""
    hints = _type_hints(type(cfg))
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        name = "--" + (prefix + f.name).replace("_", "-")
        if dataclasses.is_dataclass(v):
            validate_config(v, prefix=f"{prefix}{f.name}_")
            continue
        tp = hints[f.name]
        base, optional = _strip_optional(tp)
        if v is None:
            if not optional:
                raise InputError(f"{name} must be set (got none)")
            continue
        m = f.metadata
        if "choices" in m and v not in m["choices"]:
            raise InputError(f"{name} = {v!r}: must be one of {', '.join(map(str, m['choices']))}")
        if typing.get_origin(base) is Literal and v not in typing.get_args(base):
            raise InputError(f"{name} = {v!r}: must be one of {', '.join(map(str, typing.get_args(base)))}")
        values = v if isinstance(v, (list, tuple)) else [v]
        for x in values:
            if not isinstance(x, (int, float)) or isinstance(x, bool):
                continue
            if x != x:  # NaN compares false to every limit
                raise InputError(f"{name} = {x}: not a number")
            if x in (float("inf"), float("-inf")):  # an infinite rate or weight trains nothing but NaNs
                raise InputError(f"{name} = {x}: must be finite")
            if "ge" in m and not x >= m["ge"]:
                raise InputError(f"{name} = {x}: must be >= {m['ge']}")
            if "gt" in m and not x > m["gt"]:
                raise InputError(f"{name} = {x}: must be > {m['gt']}")
            if "le" in m and not x <= m["le"]:
                raise InputError(f"{name} = {x}: must be <= {m['le']}")
            if "lt" in m and not x < m["lt"]:
                raise InputError(f"{name} = {x}: must be < {m['lt']}")
    check = getattr(cfg, "validate", None)
    if callable(check):
        check()  # cross-field rules; raises InputError itself


# ----------------------------------------------------------------------------------------------
# Internals


def _dest(prefix: str, name: str) -> str:
    return f"cfg__{prefix}{name}"


@lru_cache(maxsize=None)
def _type_hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _strip_optional(tp) -> tuple[Any, bool]:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        optional = len(args) < len(typing.get_args(tp))
        if len(args) == 1:
            return args[0], optional
        return tp, optional
    return tp, False


def _scalar_parser(tp, optional: bool):
    def parse(text: str):
        if optional and text.lower() in ("none", "null", ""):
            return None
        if tp is bool:
            low = text.lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise argparse.ArgumentTypeError(f"{text!r} is not a boolean")
        if tp is int:
            try:
                return int(text)
            except ValueError:
                try:  # allow 1e4 style for step counts
                    f = float(text)
                except ValueError:
                    raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
                if not f.is_integer():
                    raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
                return int(f)
        if tp is float:
            try:
                return float(text)
            except ValueError:
                raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if tp is Path:
            return Path(text)
        return tp(text) if isinstance(tp, type) else text

    parse.__name__ = getattr(tp, "__name__", "value")
    return parse


def _json_dict(text: str) -> dict:
    try:
        v = json.loads(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a JSON object") from None
    if not isinstance(v, dict):
        raise argparse.ArgumentTypeError(f"{text!r} is not a JSON object")
    return v


def _metavar(tp, name: str) -> str:
    if tp is Path:
        return "PATH"
    return {int: "N", float: "X", str: "TEXT"}.get(tp, name.upper())


def _convert(v, tp, name: str):
    """Coerce a JSON / argparse value to the field type (lists -> tuples, str -> Path, int -> float)."""
    base, optional = _strip_optional(tp)
    if v is None:
        return None
    origin = typing.get_origin(base)
    try:
        if base is float and isinstance(v, int) and not isinstance(v, bool):
            return float(v)
        if base is Path and isinstance(v, str):
            return Path(v)
        if base is int and isinstance(v, float) and v.is_integer():
            return int(v)
        if origin is tuple or base is tuple:
            args = typing.get_args(base)
            elem = args[0] if args else None
            return tuple(_convert(x, elem, name) if elem is not None else x for x in v)
        if origin is list or base is list:
            args = typing.get_args(base)
            elem = args[0] if args else None
            return [_convert(x, elem, name) if elem is not None else x for x in v]
    except TypeError:
        raise InputError(f"--{name.replace('_', '-')} = {v!r}: expected {tp}") from None
    if base in (int, float, str, bool) and not isinstance(v, base):
        raise InputError(f"--{name.replace('_', '-')} = {v!r}: expected {base.__name__}")
    if base is int and isinstance(v, bool):
        raise InputError(f"--{name.replace('_', '-')} = {v!r}: expected int")
    return v


def _default_of(f: dataclasses.Field):
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return MISSING


def _show_default(v) -> str | None:
    if v is MISSING:
        return None
    if isinstance(v, bool):
        return "on" if v else "off"
    if isinstance(v, (list, tuple)):
        return " ".join(map(str, v)) if v else "(empty)"
    if v is None:
        return "none"
    if isinstance(v, dict):
        return json.dumps(v)
    return str(v)


def _limits_text(m) -> str:
    parts = []
    for key, sym in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
        if key in m:
            parts.append(f"{sym} {m[key]}")
    return ", ".join(parts)


def _jsonable(v):
    if isinstance(v, os.PathLike):
        return os.fspath(v)
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    return v


@lru_cache(maxsize=None)
def _field_comments(cls: type) -> dict[str, str]:
    """Comments on a dataclass's field lines (or on the comment lines right above) as help text."""
    out: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            source = inspect.getsource(klass)
        except (OSError, TypeError):
            continue
        out.update(_parse_field_comments(source))
    return out


def _parse_field_comments(source: str) -> dict[str, str]:
    import ast
    import textwrap

    source = textwrap.dedent(source)
    lines = source.splitlines()
    comments: dict[int, str] = {}
    try:
        tree = ast.parse(source)
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type == tokenize.COMMENT:
                comments[tok.start[0]] = tok.string.lstrip("#").strip()
    except (SyntaxError, tokenize.TokenError):
        return {}
    klass = next((n for n in tree.body if isinstance(n, ast.ClassDef)), None)
    if klass is None:
        return {}
    out: dict[str, str] = {}
    for node in klass.body:
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        # A comment on the field's first (or last) line; else the comment-only lines right above.
        text = comments.get(node.lineno) or comments.get(node.end_lineno or node.lineno)
        if not text:
            above, j = [], node.lineno - 1
            while j >= 1 and lines[j - 1].strip().startswith("#"):
                above.insert(0, comments.get(j, ""))
                j -= 1
            text = " ".join(t for t in above if t)
        if text:
            out[node.target.id] = text
    return out
