"""``fltool sweep``: train and evaluate every point of a grid of loss (or any config) settings, once per seed, and
tabulate AP/AP50/AP75 per point as in the paper's Table 1a/1b and Table 3.

The grid
    ``--set KEY=V1,V2,...`` (repeatable) is one axis; the grid is the cartesian product of the axes, in the order
    given. ``loss.X`` is short for ``model.bbox_head.loss_cls.X``; any other key is a full config key, checked like
    ``--cfg-options``. Values use MMEngine's syntax, element by element (``0``, ``0.25``, ``None``, ``abc``,
    ``[1,2]``). The axis ``loss=...`` takes the presets of :data:`LOSS_PRESETS` (``CE``, ``CE-a0.75``, ``FL``,
    ``FL*``, ``FL*-g4-b0``): a preset replaces the whole ``loss_cls`` dict, and ``loss.X`` axes then set its fields.

The sweep folder
    ``sweep.json`` (command, config, axes, seeds, points), ``<point id>/point.json`` (the point's exact settings),
    ``<point id>/seed<k>/`` (that run's work dir: ``run.json`` with the settings it was started with, checkpoints,
    logs, ``metrics.json``), and the report: ``results.csv``, ``results.json``, ``heatmap.png``.

Resuming
    A run whose ``metrics.json`` exists and whose ``run.json`` matches is skipped; an unfinished run resumes from its
    last checkpoint (``resume='auto'``) or starts again. A sweep stopped by SIGINT/SIGTERM raises
    :class:`~fltool.errors.Interrupted` with the same signal; the same command continues it. Re-running in a folder
    made by another grid is refused unless the new grid only adds points.
"""
from __future__ import annotations

import copy
import csv
import hashlib
import itertools
import json
import math
import os
import re
import shlex
import statistics
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Optional, Sequence

from fltool.engine.runner import ProgressEvent, ProgressFn, _noop
from fltool.errors import ConfigError, Interrupted, TrainingError
from fltool.fileio import atomic_path, write_json

LOSS_KEY = "model.bbox_head.loss_cls"
LOSS_ALIAS = "loss"
METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
TABLE_METRICS = ("AP", "AP50", "AP75", "APs")  # the columns of the printed table; CSV/JSON hold all of METRICS
SWEEP_FILE = "sweep.json"


# --------------------------------------------------------------------------------------------------------------
# Loss presets
# --------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LossPreset:
    """A whole ``loss_cls`` dict; ``modifiers`` are the fields a name suffix may change (g=gamma, a=alpha, b=beta)."""

    loss_type: str
    fields: dict
    modifiers: str
    doc: str


#: The one table of loss presets. A name is a base and optional suffixes: ``CE-a0.75``, ``FL-g1-a0.5``, ``FL*-g4-b0``.
LOSS_PRESETS: dict[str, LossPreset] = {
    "CE": LossPreset("SigmoidFocalLoss", dict(gamma=0.0, alpha=None), "a",
                     "cross entropy: gamma 0, no alpha; CE-a<alpha>: alpha-balanced CE (Table 1a)"),
    "FL": LossPreset("SigmoidFocalLoss", dict(gamma=2.0, alpha=0.25), "ga",
                     "focal loss: gamma 2, alpha 0.25 (the best); FL-g<gamma>-a<alpha> (Table 1b)"),
    "FL*": LossPreset("SigmoidFocalLossStar", dict(gamma=2.0, beta=1.0, alpha=0.25), "gba",
                      "FL*: gamma 2, beta 1, alpha 0.25; FL*-g<gamma>-b<beta>, e.g. FL*-g4-b0 (Table 3)"),
}
_MODIFIER_FIELDS = {"g": "gamma", "a": "alpha", "b": "beta"}
#: The constructor arguments of the presets' loss types (a ``loss.X`` axis over a preset must name one of them).
LOSS_ARGS = {"SigmoidFocalLoss": ("use_sigmoid", "gamma", "alpha", "reduction", "loss_weight"),
             "SigmoidFocalLossStar": ("use_sigmoid", "gamma", "beta", "alpha", "reduction", "loss_weight")}
_PRESET_RE = re.compile(r"(CE|FL\*|FLSTAR|FL)((?:-[GAB](?:-?\d+(?:\.\d*)?(?:E-?\d+)?|NONE))*)")
_MODIFIER_RE = re.compile(r"-([GAB])(-?\d+(?:\.\d*)?(?:E-?\d+)?|NONE)")


def presets_help() -> str:
    """One line per preset, for ``--help``."""
    return "; ".join(f"{name}: {preset.doc}" for name, preset in LOSS_PRESETS.items())


def loss_preset(name: str) -> tuple[str, dict]:
    """A preset name to (canonical name, the whole ``loss_cls`` dict). Raises ConfigError naming a bad name."""
    text = str(name).strip()
    match = _PRESET_RE.fullmatch(text.upper())
    if not match:
        raise ConfigError(f"unknown loss preset '{text}'",
                          f"use one of {', '.join(LOSS_PRESETS)} with optional -g<gamma>/-a<alpha>/-b<beta> suffixes "
                          "(e.g. CE-a0.75, FL-g1-a0.25, FL*-g4-b0)")
    base = "FL*" if match.group(1) in ("FL*", "FLSTAR") else match.group(1)
    preset = LOSS_PRESETS[base]
    fields = dict(preset.fields)
    canonical = base
    seen = set()
    for letter, raw in _MODIFIER_RE.findall(match.group(2)):
        letter = letter.lower()
        if letter not in preset.modifiers:
            allowed = ", ".join(f"-{m}" for m in preset.modifiers)
            raise ConfigError(f"loss preset '{text}': {base} takes no -{letter} ({_MODIFIER_FIELDS[letter]})",
                              f"{base} takes {allowed}")
        if letter in seen:
            raise ConfigError(f"loss preset '{text}' sets {_MODIFIER_FIELDS[letter]} twice")
        seen.add(letter)
        value = None if raw == "NONE" else float(raw)
        fields[_MODIFIER_FIELDS[letter]] = value
        canonical += f"-{letter}{'None' if value is None else _number_text(value)}"
    loss = dict(type=preset.loss_type, use_sigmoid=True, **fields, loss_weight=1.0)
    check_loss_fields(loss, f"loss preset '{text}'")
    return canonical, loss


def _number_text(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def check_loss_fields(loss: dict, where: str) -> None:
    """gamma/alpha/beta of fltool's and MMDetection's focal losses, checked before hours of training."""
    if loss.get("type") not in ("SigmoidFocalLoss", "SigmoidFocalLossStar", "FocalLoss"):
        return
    gamma, alpha, beta = loss.get("gamma"), loss.get("alpha"), loss.get("beta", 0.0)
    if gamma is not None:
        if not isinstance(gamma, (int, float)) or isinstance(gamma, bool):
            raise ConfigError(f"{where}: gamma must be a number, got {gamma!r}")
        if loss["type"] == "SigmoidFocalLossStar" and not gamma > 0:
            raise ConfigError(f"{where}: FL* needs gamma > 0, got {gamma}", "FL* divides by gamma")
        if gamma < 0:
            raise ConfigError(f"{where}: gamma must be >= 0, got {gamma}")
    if alpha is not None and not isinstance(alpha, (list, tuple)):
        if not isinstance(alpha, (int, float)) or isinstance(alpha, bool) or not 0 <= alpha <= 1:
            raise ConfigError(f"{where}: alpha must be None or a number in [0, 1], got {alpha!r}")
    if not isinstance(beta, (int, float)) or isinstance(beta, bool):
        raise ConfigError(f"{where}: beta must be a number, got {beta!r}")


# --------------------------------------------------------------------------------------------------------------
# The grid
# --------------------------------------------------------------------------------------------------------------
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
    for axis, value in zip(axes, values):
        if axis.is_preset:
            continue
        plain = axis.target.lstrip("+")
        if LOSS_KEY in options and plain.startswith(LOSS_KEY + "."):
            options[LOSS_KEY][plain[len(LOSS_KEY) + 1:]] = value
        else:
            options[axis.target] = value
    return options


def _jsonable(data: Any) -> Any:
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
        points.append(Point(index, pid, _jsonable(settings), options, labels))
        flat[pid] = _flat_cli_options(cfg, options, notes, where)
    return Grid(config, config_path, axes, points, base_options, flat, list(dict.fromkeys(notes)),
                config_digest(config_path))


# --------------------------------------------------------------------------------------------------------------
# Options, commands and records
# --------------------------------------------------------------------------------------------------------------
@dataclass
class SweepOptions:
    config: str
    axes: list = field(default_factory=list)  # the --set items
    seeds: Optional[list] = None  # None: the seeds recorded in the sweep folder, else [0]
    work_dir: Optional[Path] = None  # default work_dirs/sweep_<config name>
    cfg_options: Optional[list] = None  # --cfg-options strings, passed to every run
    max_iters: Optional[int] = None
    deterministic: bool = False
    launcher: str = "none"
    point: Optional[int] = None  # run only this point (all seeds)
    report_only: bool = False


@dataclass
class RunRecord:
    point_id: str
    seed: int
    work_dir: Path
    status: str  # "finished" | "missing" | "failed: <why>"
    metrics: dict = field(default_factory=dict)
    metrics_file: Optional[Path] = None
    train_command: str = ""


@dataclass
class PointSummary:
    point: Point
    runs: list
    n: int  # runs with metrics
    mean: dict
    std: dict


@dataclass
class SweepResult:
    work_dir: Path
    grid: Grid
    seeds: list
    summaries: list  # PointSummary per point of the grid
    trained: int = 0
    resumed: int = 0
    skipped: int = 0
    failed: list = field(default_factory=list)  # "point seed k: why"
    report_command: str = ""
    files: dict = field(default_factory=dict)  # "csv"/"json"/"heatmap" -> Path (empty where not written)
    is_main: bool = True  # False on the other ranks of a distributed sweep (they write and report nothing)
    notes: list = field(default_factory=list)


def default_work_dir(config_path: Path) -> Path:
    return Path("work_dirs") / f"sweep_{config_path.stem}"


def _config_arg(config: str, config_path: Path) -> str:
    """A shipped config's bare name stays a name; a path becomes absolute (the commands work from anywhere)."""
    looks_like_path = os.sep in config or config.endswith(".py")
    return str(config_path) if looks_like_path else config


def sweep_command(opts: SweepOptions, grid: Grid, sweep_dir: Path, seeds: Sequence[int], *, report_only: bool = False,
                  point: Optional[int] = None) -> str:
    args = ["fltool", "sweep", _config_arg(opts.config, grid.config_path), "--work-dir", str(sweep_dir)]
    for axis in grid.axes:
        args += ["--set", axis.spec()]
    args += ["--seeds", ",".join(str(s) for s in seeds)]
    if opts.max_iters is not None:
        args += ["--max-iters", str(opts.max_iters)]
    if opts.deterministic:
        args.append("--deterministic")
    for item in opts.cfg_options or []:
        args += ["--cfg-options", item]
    if point is not None:
        args += ["--point", str(point)]
    if report_only:
        args.append("--report-only")
    return shlex.join(args)


def train_command(opts: SweepOptions, grid: Grid, point: Point, seed: int, run_dir: Path, world_size: int) -> str:
    """The ``fltool train`` command line that trains this run on its own (same config, seed and overrides)."""
    args = ["fltool", "train", _config_arg(opts.config, grid.config_path), "--work-dir", str(run_dir),
            "--seed", str(seed)]
    if opts.max_iters is not None:
        args += ["--max-iters", str(opts.max_iters)]
    if opts.deterministic:
        args.append("--deterministic")
    items = list(opts.cfg_options or []) + grid.flat_options[point.id]
    if items:
        args += ["--cfg-options", *items]
    if world_size > 1:  # the sweep ran under torchrun: so does the run on its own
        return f"torchrun --nproc_per_node={world_size} -m {shlex.join(args)} --launcher pytorch"
    return shlex.join(args)


def _run_settings(opts: SweepOptions, grid: Grid, point: Point, seed: int) -> dict:
    """What a run was started with (run.json); a finished run is reused only when these match."""
    return _jsonable({"config": grid.config_path.name, "config_digest": grid.config_digest,
                      "point": point.id, "settings": point.settings,
                      "cfg_options": {**grid.base_cfg_options, **point.cfg_options}, "seed": seed,
                      "max_iters": opts.max_iters, "deterministic": opts.deterministic})


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


def _sweep_identity(opts: SweepOptions, grid: Grid) -> dict:
    """What every point of a sweep shares: a folder holds one of these."""
    return _jsonable({"config": grid.config_path.name, "config_digest": grid.config_digest,
                      "cfg_options": list(opts.cfg_options or []),
                      "max_iters": opts.max_iters, "deterministic": opts.deterministic})


def _legacy_view(recorded: dict, new: dict) -> dict:
    """Records written before ``config_digest`` existed hold the config's absolute path and no digest: compare those
    by the config's file name, so that their finished runs still count."""
    if "config_digest" in recorded or not isinstance(recorded.get("config"), str):
        return new
    legacy = {k: v for k, v in new.items() if k != "config_digest"}
    if Path(recorded["config"]).name == new.get("config"):
        legacy["config"] = recorded["config"]
    return legacy


def _read_json(path: Path) -> Optional[dict]:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}", "delete the damaged file and run again") from None


def read_sweep_record(sweep_dir: Path) -> Optional[dict]:
    return _read_json(Path(sweep_dir) / SWEEP_FILE)


def check_same_sweep(record: dict, opts: SweepOptions, grid: Grid, sweep_dir: Path) -> None:
    """Refuse a folder made by another sweep, unless this grid only adds points to it."""
    old = record.get("identity", {})
    new = _legacy_view(old, _sweep_identity(opts, grid))
    for key in ("config", "config_digest", "cfg_options", "max_iters", "deterministic"):
        if old.get(key) != new.get(key) and key == "config_digest":
            raise ConfigError(f"sweep folder {sweep_dir} holds a sweep of {new['config']} as it was before: the "
                              "config or one of its _base_ files has changed since",
                              "use another --work-dir for the edited config, or restore the config to continue")
        if old.get(key) != new.get(key):
            raise ConfigError(f"sweep folder {sweep_dir} holds a sweep with {key} {old.get(key)!r}, this command "
                              f"has {new.get(key)!r}", "use another --work-dir, or the same settings")
    now = {p.id: p.settings for p in grid.points}
    gone = [p["id"] for p in record.get("points", []) if now.get(p["id"], object()) != p.get("settings")]
    if gone:
        more = f" (and {len(gone) - 1} more)" if len(gone) > 1 else ""
        raise ConfigError(f"sweep folder {sweep_dir} was made by another grid: its point '{gone[0]}'{more} is not in "
                          f"this one (its axes: {' '.join('--set ' + a for a in record.get('axes', []))})",
                          "use another --work-dir, or a grid that keeps every recorded point and only adds new ones")


# --------------------------------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------------------------------
def run_dir_of(sweep_dir: Path, point: Point, seed: int) -> Path:
    return Path(sweep_dir) / point.id / f"seed{seed}"


def _metrics_of(metrics_file: Path) -> dict:
    data = _read_json(metrics_file) or {}
    bbox = data.get("bbox") or {}
    return {k: bbox.get(k) for k in METRICS}


def _run_state(run_dir: Path, settings: dict) -> str:
    """'finished', 'partial' (a checkpoint to resume from), 'new', or 'foreign' (made with other settings)."""
    recorded = _read_json(run_dir / "run.json")
    finished = (run_dir / "metrics.json").is_file()
    if recorded is not None and recorded.get("settings_hash") != _hash(_legacy_view(recorded, settings)):
        return "foreign"
    if finished:
        return "finished" if recorded is not None else "foreign"
    return "partial" if (run_dir / "last_checkpoint").is_file() else "new"


def _hash(data: Any) -> str:
    return hashlib.sha1(json.dumps(data, sort_keys=True).encode()).hexdigest()


def _is_main_process(launcher: str) -> tuple[bool, int]:
    if launcher == "none":
        return True, 1
    from fltool import compat

    compat.init_distributed(launcher)
    from mmengine.dist import get_rank, get_world_size

    return get_rank() == 0, get_world_size()


def _evaluate_last_checkpoint(opts: SweepOptions, cfg_options: dict, run_dir: Path, checkpoint: Path,
                              progress: ProgressFn) -> dict:
    """A run resumed from a checkpoint of its last iteration trains no further and so never evaluates: do it."""
    from fltool.engine.evaluate import EvalOptions, evaluate

    result = evaluate(EvalOptions(config=opts.config, checkpoint=checkpoint, work_dir=run_dir / "final_eval",
                                  cfg_options=copy.deepcopy(cfg_options), launcher=opts.launcher), progress=progress)
    return result.metrics


def run_sweep(opts: SweepOptions, progress: ProgressFn = _noop) -> SweepResult:
    """Train every (point, seed) not finished yet, then build the report (see the module docstring)."""
    opts, record_seeds = _with_recorded(opts, read_only=opts.report_only)
    grid = build_grid(opts.config, opts.axes, opts.cfg_options)
    sweep_dir = _sweep_dir(opts)
    seeds = _seeds(opts, record_seeds)
    if opts.point is not None and not 0 <= opts.point < len(grid.points):
        raise ConfigError(f"--point {opts.point} is not in the grid, which has {len(grid.points)} points "
                          f"(0-{len(grid.points) - 1})", "see them with --list-points")
    if opts.report_only:
        return build_report(opts, grid, sweep_dir, seeds, progress)

    is_main, world_size = _is_main_process(opts.launcher)
    record = read_sweep_record(sweep_dir)
    if record is not None:
        check_same_sweep(record, opts, grid, sweep_dir)
    if is_main:
        _write_sweep_record(opts, grid, sweep_dir, seeds, world_size)

    points = grid.points if opts.point is None else [grid.points[opts.point]]
    plan, skipped = [], 0
    for point in points:
        if is_main:
            write_json(sweep_dir / point.id / "point.json", {"index": point.index, "id": point.id,
                                                              "settings": point.settings,
                                                              "cfg_options": point.cfg_options})
        for seed in seeds:
            run_dir = run_dir_of(sweep_dir, point, seed)
            settings = _run_settings(opts, grid, point, seed)
            state = _run_state(run_dir, settings)
            if state == "foreign":
                raise ConfigError(f"{run_dir} holds a run made with other settings than point {point.index} seed "
                                  f"{seed} of this sweep", "move it away, or use another --work-dir")
            if state == "finished":
                skipped += 1
            else:
                plan.append((point, seed, run_dir, settings, state))
    total = len(points) * len(seeds)
    if skipped:
        progress(ProgressEvent("note", f"skipped {skipped} finished run{'s' if skipped != 1 else ''} "
                                       f"(of {total}); {len(plan)} to train"))

    from fltool.engine import train as train_mod

    trained = resumed = 0
    failed = []
    same_data = not any("dataloader" in a.target or "dataset" in a.target for a in grid.axes)
    for i, (point, seed, run_dir, settings, state) in enumerate(plan, 1):
        resume = "auto" if state == "partial" else None
        label = f"point {point.index} ({point.id}) seed {seed}"
        progress(ProgressEvent("sweep_run", f"run {i}/{len(plan)}: {label}" + (" (resuming)" if resume else ""),
                               iteration=i, max_iters=len(plan),
                               values={"point": point.id, "index": point.index, "seed": seed,
                                       "resume": bool(resume)}))
        if is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
            write_json(run_dir / "run.json", {"settings_hash": _hash(settings), **settings,
                                               "train_command": train_command(opts, grid, point, seed, run_dir,
                                                                              world_size)})
        cfg_options = {**grid.base_cfg_options, **copy.deepcopy(point.cfg_options)}
        train_opts = train_mod.TrainOptions(
            config=opts.config, work_dir=run_dir, cfg_options=cfg_options, resume=resume, launcher=opts.launcher,
            seed=seed, deterministic=opts.deterministic, max_iters=opts.max_iters,
            data_check="check" if (i == 1 or not same_data) else "skip")  # the data is checked once
        try:
            result = train_mod.train(train_opts, progress)
        except Interrupted as exc:
            raise Interrupted(f"sweep stopped in run {i}/{len(plan)} ({label}): {exc.message}", exc.exit_code - 128,
                              f"continue with: {sweep_command(opts, grid, sweep_dir, seeds, point=opts.point)}") \
                from None
        except TrainingError as exc:  # e.g. a diverging loss: a result of this point, not a reason to stop the sweep
            failed.append(f"point {point.index} ({point.id}) seed {seed}: {exc.one_line()}")
            progress(ProgressEvent("note", f"run {i}/{len(plan)} failed: {exc.one_line()}"))
            if is_main:
                write_json(run_dir / "error.json", {"error": exc.one_line(), "time": time.time()})
            continue
        metrics = result.metrics
        if "AP" not in metrics and result.checkpoint is not None:
            metrics = _evaluate_last_checkpoint(opts, cfg_options, run_dir, result.checkpoint, progress)
            if is_main and result.metrics_file is not None:
                data = _read_json(result.metrics_file) or {}
                data["bbox"] = {k: v for k, v in metrics.items() if k != "per_class_AP"}
                data["note"] = "evaluated the resumed last checkpoint (training had nothing left to do)"
                write_json(result.metrics_file, data)
        if is_main:
            (run_dir / "error.json").unlink(missing_ok=True)
        trained += 1
        resumed += bool(resume)
        progress(ProgressEvent("sweep_run_end", f"run {i}/{len(plan)} done: {label}", iteration=i,
                               max_iters=len(plan), values={k: metrics.get(k) for k in METRICS}))

    if not is_main:
        return SweepResult(sweep_dir, grid, seeds, [], trained, resumed, skipped, failed, is_main=False)
    result = build_report(opts, grid, sweep_dir, seeds, progress, write=opts.point is None)
    result.trained, result.resumed, result.skipped, result.failed = trained, resumed, skipped, failed
    if opts.point is not None:
        result.notes.append(f"--point {opts.point}: the report files are left to "
                            f"`{result.report_command}` once every point has finished")
    return result


def _sweep_dir(opts: SweepOptions) -> Path:
    from fltool.engine.config import resolve_config

    return Path(opts.work_dir or default_work_dir(resolve_config(opts.config))).resolve()


def _with_recorded(opts: SweepOptions, read_only: bool) -> tuple[SweepOptions, Optional[list]]:
    """Fill in from the sweep folder's record what the command leaves out: the seeds always; for a read-only command
    (--report-only, --list-points) also the axes (when no --set is given), --max-iters, --cfg-options and
    --deterministic, since a folder holds one sweep. Returns (options, recorded seeds)."""
    record = read_sweep_record(_sweep_dir(opts)) or {}
    if not read_only or not record:
        return opts, record.get("seeds")
    identity = record.get("identity") or {}
    return replace(opts, axes=list(opts.axes or record.get("axes") or []),
                   max_iters=opts.max_iters if opts.max_iters is not None else identity.get("max_iters"),
                   cfg_options=opts.cfg_options or identity.get("cfg_options") or None,
                   deterministic=opts.deterministic or bool(identity.get("deterministic"))), record.get("seeds")


def _seeds(opts: SweepOptions, recorded: Optional[list]) -> list:
    seeds = list(opts.seeds) if opts.seeds is not None else list(recorded or [0])
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds lists a seed twice: {seeds}", "give each seed once")
    return seeds


def _write_sweep_record(opts: SweepOptions, grid: Grid, sweep_dir: Path, seeds: list, world_size: int) -> None:
    path = sweep_dir / SWEEP_FILE
    previous = _read_json(path) or {}
    write_json(path, {
        "command": sweep_command(opts, grid, sweep_dir, seeds),
        "config": str(grid.config_path), "identity": _sweep_identity(opts, grid),
        # every seed asked for so far: the default of a later command that gives no --seeds
        "axes": [a.spec() for a in grid.axes], "seeds": list(dict.fromkeys([*previous.get("seeds", []), *seeds])),
        "world_size": world_size,
        "points": [{"index": p.index, "id": p.id, "settings": p.settings} for p in grid.points],
        "created": previous.get("created", time.strftime("%Y-%m-%d %H:%M:%S")),
        "updated": time.strftime("%Y-%m-%d %H:%M:%S"),
    })


# --------------------------------------------------------------------------------------------------------------
# Listing and reporting
# --------------------------------------------------------------------------------------------------------------
@dataclass
class PointListing:
    point: Point
    finished_seeds: list


def list_points(opts: SweepOptions) -> tuple[Grid, Path, list, list]:
    """(grid, sweep dir, seeds, [PointListing]): the numbered points and which seeds of each have finished."""
    opts, record_seeds = _with_recorded(opts, read_only=True)
    grid = build_grid(opts.config, opts.axes, opts.cfg_options)
    sweep_dir = _sweep_dir(opts)
    seeds = _seeds(opts, record_seeds)
    rows = []
    for point in grid.points:
        done = [s for s in seeds if _run_state(run_dir_of(sweep_dir, point, s),
                                               _run_settings(opts, grid, point, s)) == "finished"]
        rows.append(PointListing(point, done))
    return grid, sweep_dir, seeds, rows


def summarise(values: Sequence[Optional[float]]) -> tuple[Optional[float], Optional[float]]:
    """(mean, sample std with ddof 1) over the values that exist; std is None for fewer than two."""
    present = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not present:
        return None, None
    return statistics.fmean(present), (statistics.stdev(present) if len(present) > 1 else None)


def collect(opts: SweepOptions, grid: Grid, sweep_dir: Path, seeds: Sequence[int], world_size: int = 1) -> list:
    """One PointSummary per point, from the runs' own metrics.json files."""
    summaries = []
    for point in grid.points:
        runs = []
        for seed in seeds:
            run_dir = run_dir_of(sweep_dir, point, seed)
            state = _run_state(run_dir, _run_settings(opts, grid, point, seed))
            command = train_command(opts, grid, point, seed, run_dir, world_size)
            if state == "finished":
                metrics_file = run_dir / "metrics.json"
                runs.append(RunRecord(point.id, seed, run_dir, "finished", _metrics_of(metrics_file), metrics_file,
                                      command))
            else:
                error = _read_json(run_dir / "error.json")
                status = f"failed: {error['error']}" if error else ("other settings" if state == "foreign"
                                                                    else "missing")
                runs.append(RunRecord(point.id, seed, run_dir, status, train_command=command))
        finished = [r for r in runs if r.status == "finished"]
        mean, std = {}, {}
        for key in METRICS:
            mean[key], std[key] = summarise([r.metrics.get(key) for r in finished])
        summaries.append(PointSummary(point, runs, len(finished), mean, std))
    return summaries


def build_report(opts: SweepOptions, grid: Grid, sweep_dir: Path, seeds: list, progress: ProgressFn = _noop,
                 write: bool = True) -> SweepResult:
    """Tabulate what has finished; write results.csv, results.json and heatmap.png into the sweep folder."""
    record = read_sweep_record(sweep_dir) or {}
    world_size = int(record.get("world_size") or 1)
    summaries = collect(opts, grid, sweep_dir, seeds, world_size)
    report_command = sweep_command(opts, grid, sweep_dir, seeds, report_only=True)
    result = SweepResult(sweep_dir, grid, seeds, summaries, report_command=report_command, notes=list(grid.notes))
    if not write:
        return result
    if not sweep_dir.is_dir():
        raise ConfigError(f"no sweep in {sweep_dir}", "run the sweep first (without --report-only), or give its "
                                                      "folder with --work-dir")
    result.files["csv"] = write_csv(sweep_dir / "results.csv", grid, summaries)
    result.files["json"] = write_json(sweep_dir / "results.json", results_json(opts, grid, sweep_dir, seeds,
                                                                                 summaries, report_command))
    from fltool.analysis.sweep_plot import plot_sweep

    cells = {tuple(s.point.labels): (s.mean["AP"], s.std["AP"], s.n) for s in summaries}
    plot = plot_sweep([a.key for a in grid.axes], [list(a.labels) for a in grid.axes], cells,
                      sweep_dir / "heatmap.png", title=f"AP over the sweep of {grid.config_path.stem} "
                                                      f"(mean over seeds {','.join(map(str, seeds))})")
    result.files["heatmap"] = plot.path
    result.notes += plot.notes
    return result


def _csv_number(value: Optional[float]) -> str:
    return "n/a" if value is None else repr(float(value))


def write_csv(path: Path, grid: Grid, summaries: Sequence[PointSummary]) -> Path:
    header = ["index", "point"] + [a.key for a in grid.axes] + ["n"]
    for key in METRICS:
        header += [f"{key}_mean", f"{key}_std"]
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for s in summaries:
            row = [s.point.index, s.point.id] + list(s.point.labels) + [s.n]
            for key in METRICS:
                row += [_csv_number(s.mean[key]), _csv_number(s.std[key])]
            writer.writerow(row)
    return path


def results_json(opts: SweepOptions, grid: Grid, sweep_dir: Path, seeds: Sequence[int],
                 summaries: Sequence[PointSummary], report_command: str) -> dict:
    return {
        "config": str(grid.config_path), "sweep_dir": str(sweep_dir),
        "axes": [{"key": a.key, "config_key": a.target, "values": list(a.labels)} for a in grid.axes],
        "seeds": list(seeds), "max_iters": opts.max_iters, "cfg_options": list(opts.cfg_options or []),
        "metrics": list(METRICS), "std": "sample standard deviation over seeds (ddof 1); null for one seed",
        "report_command": report_command, "sweep_command": sweep_command(opts, grid, sweep_dir, seeds),
        "notes": list(grid.notes),
        "points": [{
            "index": s.point.index, "id": s.point.id, "settings": s.point.settings,
            "cfg_options": s.point.cfg_options, "n": s.n, "mean": s.mean, "std": s.std,
            "runs": [{"seed": r.seed, "status": r.status, "work_dir": str(r.work_dir),
                      "metrics_file": str(r.metrics_file) if r.metrics_file else None, "metrics": r.metrics or None,
                      "train_command": r.train_command} for r in s.runs],
        } for s in summaries],
    }


__all__ = ["Axis", "Grid", "LOSS_PRESETS", "METRICS", "Point", "PointSummary", "RunRecord", "SweepOptions",
           "SweepResult", "build_grid", "build_report", "collect", "list_points", "loss_preset", "parse_axes",
           "parse_axis", "point_id", "presets_help", "run_sweep", "summarise", "sweep_command", "train_command"]
