"""The grid of a sweep: ``--set KEY=V1,V2,...`` axes, their cartesian product of points, and each point's config
overrides, checked against the config before anything trains."""
from __future__ import annotations

import copy
import hashlib
import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

from fltool.engine.sweep.presets import LOSS_ARGS, check_loss_fields, loss_preset, preset_head_options
from fltool.errors import ConfigError

LOSS_KEY = "model.bbox_head.loss_cls"
LOSS_ALIAS = "loss"


@dataclass(frozen=True)
class Axis:
    """One ``--set`` item: the key as written, the full config key it sets, its values and their labels."""

    key: str
    target: str
    values: tuple
    labels: tuple

    @property
    def is_preset(self) -> bool:
        return self.key == LOSS_ALIAS

    def spec(self) -> str:
        """The ``--set`` item that makes this axis again."""
        return f"{self.key}={','.join(self.labels)}"


@dataclass
class Point:
    index: int
    id: str
    settings: dict  # axis key -> value (a preset's canonical name for the loss axis)
    cfg_options: dict  # the full-key overrides this point adds to the config (tuples stay tuples)
    labels: list = field(default_factory=list)  # the values as written in --set, one per axis


@dataclass
class Grid:
    config: str  # as given
    config_path: Path
    axes: list
    points: list
    base_cfg_options: dict  # the parsed --cfg-options shared by every point
    flat_options: dict = field(default_factory=dict)  # point id -> ``--cfg-options`` strings for `fltool train`
    notes: list = field(default_factory=list)
    config_digest: str = ""  # see config_digest(): what identifies the sweep's config across checkouts


def split_top_level(text: str) -> list[str]:
    """``0,0.5,[1,2]`` -> ``['0', '0.5', '[1,2]']``: commas inside brackets do not split."""
    parts, depth, current = [], 0, ""
    for char in text:
        if char in "[(":
            depth += 1
        elif char in ")]":
            depth -= 1
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return parts


def value_text(value: Any) -> str:
    """A value in MMEngine's ``--cfg-options`` syntax (what parses back to the same value)."""
    if value is None or isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ",".join(value_text(v) for v in value) + "]"
    if isinstance(value, tuple):
        return "(" + ",".join(value_text(v) for v in value) + (",)" if len(value) == 1 else ")")
    return str(value)


def parse_axis(item: str) -> Axis:
    """``KEY=V1,V2,...`` to an :class:`Axis` (syntax only; keys are checked against the config by build_grid)."""
    from fltool.engine.config import parse_cfg_options

    key, sep, raw = str(item).partition("=")
    key = key.strip()
    if not sep or not key or not raw.strip():
        raise ConfigError(f"--set item '{item}' is not KEY=V1,V2,...", "write it as e.g. loss.gamma=0,0.5,1,2,5")
    elements = [e.strip() for e in split_top_level(raw)]
    if any(not e for e in elements):
        raise ConfigError(f"--set {key}: empty value in '{raw}'", "separate values by single commas")
    if key == LOSS_ALIAS:
        named = [loss_preset(e) for e in elements]
        labels = tuple(name for name, _ in named)
        values = labels
        target = LOSS_KEY
    else:
        if key.startswith(LOSS_ALIAS + "."):
            target = LOSS_KEY + key[len(LOSS_ALIAS):]
        elif key.startswith("+" + LOSS_ALIAS + "."):
            target = "+" + LOSS_KEY + key[len(LOSS_ALIAS) + 1:]
        else:
            target = key
        if not target.lstrip("+").replace("_", "").replace(".", "").isalnum():
            raise ConfigError(f"--set key '{key}' is not a config key", "write it as a.b.c (or loss.X, or loss)")
        values = tuple(parse_cfg_options([f"v={e}"])["v"] for e in elements)
        labels = tuple(value_text(v) for v in values)
    duplicates = sorted({label for label in labels if labels.count(label) > 1})
    if duplicates:
        raise ConfigError(f"--set {key} lists {', '.join(duplicates)} more than once", "give each value once")
    return Axis(key, target, values, labels)


def parse_axes(items: Sequence[str]) -> list[Axis]:
    axes = [parse_axis(item) for item in items or []]
    targets: dict[str, str] = {}
    for axis in axes:
        plain = axis.target.lstrip("+")
        if plain in targets:
            raise ConfigError(f"--set {axis.key} and --set {targets[plain]} set the same config key {plain}",
                              "give each key one axis")
        targets[plain] = axis.key
    return axes


_ID_UNSAFE = re.compile(r"[^A-Za-z0-9._=+-]")


def point_id(axes: Sequence[Axis], labels: Sequence[str]) -> str:
    """``loss.gamma=2_loss.alpha=0.25``: readable, filesystem-safe and the same for the same settings."""
    if not axes:
        return "base"
    text = "_".join(f"{axis.key}={label}" for axis, label in zip(axes, labels))
    safe = _ID_UNSAFE.sub("_", text.replace("*", "star"))
    if safe != text.replace("*", "star") or len(safe) > 120:  # lossy or long: a hash keeps it unique
        safe = safe[:100] + "-" + hashlib.sha1(text.encode()).hexdigest()[:8]
    return safe


def _point_options(axes: Sequence[Axis], values: Sequence[Any]) -> dict:
    """The full-key overrides of one point. A preset is a whole ``loss_cls`` dict (``_delete_``: replace, not
    merge); ``loss.X`` axes then set fields of that dict, whatever the order of the axes."""
    options: dict = {}
    for axis, value in zip(axes, values):
        if axis.is_preset:
            _, loss = loss_preset(value)
            options[LOSS_KEY] = dict(_delete_=True, **loss)
            options.update(preset_head_options(value))  # OHEM: its head and settings
    for axis, value in zip(axes, values):
        if axis.is_preset:
            continue
        plain = axis.target.lstrip("+")
        if LOSS_KEY in options and plain.startswith(LOSS_KEY + "."):
            options[LOSS_KEY][plain[len(LOSS_KEY) + 1:]] = value
        else:
            options[axis.target] = value
    return options


def jsonable(data: Any) -> Any:
    return json.loads(json.dumps(data, default=str))


def _flat_cli_options(cfg: Any, options: dict, notes: list, where: str) -> list[str]:
    """The point's overrides as ``fltool train --cfg-options`` strings (MMEngine cannot parse a dict value, so a
    preset becomes one item per field; ``+`` for fields the config's loss does not have)."""
    items = []
    for key, value in options.items():
        if isinstance(value, dict):
            base = cfg._cfg_dict
            for part in key.split("."):
                base = base.get(part, {}) if isinstance(base, dict) else {}
            extra = sorted(set(base) - set(value) - {"_delete_"}) if isinstance(base, dict) else []
            if extra:
                notes.append(f"{where}: --cfg-options cannot remove {', '.join(extra)} from the config's {key}, so "
                             "the `fltool train` commands listed for it keep it; the sweep's own runs do not")
            for sub, sub_value in value.items():
                if sub == "_delete_":
                    continue
                plus = "" if isinstance(base, dict) and sub in base else "+"
                items.append(f"{plus}{key}.{sub}={value_text(sub_value)}")
        else:
            items.append(f"{key}={value_text(value)}")
    return items


def _check_axis_keys(cfg: Any, axes: Sequence[Axis], validate: Any) -> None:
    """Every axis names a key the config has (as --cfg-options checks them), or a field of its loss presets."""
    presets = next((a for a in axes if a.is_preset), None)
    for axis in axes:
        plain = axis.target.lstrip("+")
        if presets is not None and plain.startswith(LOSS_KEY + "."):
            field_name = plain[len(LOSS_KEY) + 1:]
            for name in presets.values:
                loss_type = loss_preset(name)[1]["type"]
                if field_name not in LOSS_ARGS[loss_type]:
                    raise ConfigError(f"--set {axis.key}: the loss preset {name} ({loss_type}) has no argument "
                                      f"'{field_name}'", f"its arguments: {', '.join(LOSS_ARGS[loss_type])}")
            continue
        try:
            validate(cfg, {axis.target: axis.values[0]})
        except ConfigError as exc:
            raise ConfigError(f"--set {axis.key}: {exc.message.replace(' in --cfg-options', '')}", exc.hint) from None


def build_grid(config: str, axis_items: Sequence[str], cfg_options: Optional[Sequence[str]] = None) -> Grid:
    """Parse the axes, load the config once and check every point's overrides against it (unknown keys,
    values a loss would refuse). Raises ConfigError naming the key or point."""
    from fltool.engine.config import load_config, parse_cfg_options, resolve_config, validate_cfg_options

    axes = parse_axes(axis_items)
    base_options = parse_cfg_options(cfg_options)
    for key in base_options:
        plain = key.lstrip("+")
        for axis in axes:
            target = axis.target.lstrip("+")
            if plain == target or plain.startswith(target + ".") or target.startswith(plain + "."):
                raise ConfigError(f"--cfg-options {key} and --set {axis.key} both set {target}",
                                  "make it an axis or a fixed option, not both")
    config_path = resolve_config(config)
    cfg = load_config(config, base_options)
    _check_axis_keys(cfg, axes, validate_cfg_options)
    points, notes, flat, seen = [], [], {}, {}
    for index, combo in enumerate(itertools.product(*[range(len(a.values)) for a in axes])):
        values = [axis.values[i] for axis, i in zip(axes, combo)]
        labels = [axis.labels[i] for axis, i in zip(axes, combo)]
        pid = point_id(axes, labels)
        if pid in seen:
            raise ConfigError(f"points {seen[pid]} and {index} get the same id '{pid}'", "give distinct values")
        seen[pid] = index
        options = _point_options(axes, values)
        where = f"point {index} ({pid})"
        trial = copy.deepcopy(cfg)
        try:
            trial.merge_from_dict({k.lstrip("+"): v for k, v in copy.deepcopy(options).items()})
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ConfigError(f"{where}: cannot apply its settings to the config: {exc}") from None
        loss = (trial.get("model") or {}).get("bbox_head", {}).get("loss_cls")
        if isinstance(loss, dict):
            check_loss_fields(loss, where)
        settings = {axis.key: value for axis, value in zip(axes, values)}
        points.append(Point(index, pid, jsonable(settings), options, labels))
        flat[pid] = _flat_cli_options(cfg, options, notes, where)
    return Grid(config, config_path, axes, points, base_options, flat, list(dict.fromkeys(notes)),
                config_digest(config_path))


def config_digest(config_path: Path) -> str:
    """SHA-256 of what a config says: its file and every local ``_base_`` file it inherits, by content.

    A sweep is identified by this rather than by the config's absolute path, so that a checkout that moved (or a
    second clone) resumes its sweeps, while an edited config or base is seen as another sweep. Bases from other
    packages (``mmdet::...``) enter by name: their content is fixed by the pinned package version.
    """
    from mmengine.config import Config

    digest, seen, queue = hashlib.sha256(), set(), [Path(config_path).resolve()]
    while queue:
        path = queue.pop(0)
        if path in seen:
            continue
        seen.add(path)
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
        for base in Config._get_base_files(str(path)):
            if "::" in base:
                digest.update(base.encode() + b"\0")
            else:
                queue.append((path.parent / base).resolve())
    return digest.hexdigest()
