"""The search space of ``fltool tune``: ``--space KEY=KIND:ARGS`` items and named presets, sampled by an Optuna trial
into the ``--set`` items of a one-point sweep grid (so every trial's settings are checked like a sweep's).

Kinds: ``float:LOW:HIGH`` (uniform), ``log:LOW:HIGH`` (log-uniform), ``int:LOW:HIGH``, ``cat:V1,V2,...`` (values in
MMEngine's syntax, lists too: ``cat:[1.0],[0.5,1.0,2.0]``). Keys: the sweep's (``loss.X`` for the classification
loss's fields, ``loss`` for whole-loss presets such as ``cat:FL,FL*``, any full config key) and these aliases:
``optim.X`` (``optim_wrapper.optimizer.X``, e.g. ``optim.lr``), ``anchor.X`` (``model.bbox_head.anchor_generator.X``:
``octave_base_scale``, ``scales_per_octave``, ``ratios``), ``prior`` (the head's ``prior_prob``), ``batch`` (the
training batch size) and ``input.size`` (the Resize scale of the train, val and test pipelines, square).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional, Sequence

from fltool.engine.sweep.grid import split_top_level, value_text
from fltool.errors import ConfigError

KINDS = ("float", "log", "int", "cat")
ALIASES = {"optim": "optim_wrapper.optimizer", "anchor": "model.bbox_head.anchor_generator"}
WHOLE_ALIASES = {"prior": "model.bbox_head.prior_prob", "batch": "train_dataloader.batch_size"}
INPUT_SIZE = "input.size"
#: ``--preset NAME``: spaces by name (more --space items are added to, or replace keys of, a preset).
PRESETS = {
    "loss": ["loss.gamma=float:0:5", "loss.alpha=float:0.1:0.9"],
    "table1b": ["loss.gamma=cat:0,0.5,1,2,5", "loss.alpha=cat:0.25,0.5,0.75"],
    "optim": ["optim.lr=log:1e-4:1e-2"],
    "prior": ["prior=log:1e-3:1e-1"],
    "anchors": ["anchor.scales_per_octave=int:1:3", "anchor.ratios=cat:[1.0],[0.5,1.0,2.0],[0.5,1.0,2.0,3.0]"],
    "input": ["batch=cat:2,4,8", "input.size=cat:192,256,320"],
}
PRESETS["all"] = [item for name in ("loss", "optim", "prior", "anchors", "input") for item in PRESETS[name]]


@dataclass(frozen=True)
class Param:
    """One dimension of the space: its key as written, its kind and bounds or choices (as text)."""

    key: str
    kind: str
    low: Optional[float] = None
    high: Optional[float] = None
    choices: tuple = ()

    def spec(self) -> str:
        if self.kind == "cat":
            return f"{self.key}=cat:{','.join(self.choices)}"
        return f"{self.key}={self.kind}:{value_text(self.low)}:{value_text(self.high)}"

    def sample(self, trial: Any) -> Any:
        """The trial's value: a number, or a choice's text."""
        if self.kind == "cat":
            return trial.suggest_categorical(self.key, list(self.choices))
        if self.kind == "int":
            return trial.suggest_int(self.key, int(self.low), int(self.high))
        return trial.suggest_float(self.key, self.low, self.high, log=self.kind == "log")

    def distribution(self) -> Any:
        import optuna.distributions as d

        if self.kind == "cat":
            return d.CategoricalDistribution(list(self.choices))
        if self.kind == "int":
            return d.IntDistribution(int(self.low), int(self.high))
        return d.FloatDistribution(self.low, self.high, log=self.kind == "log")


def _number(text: str, where: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"--space {where}: '{text}' is not a number") from None
    if not math.isfinite(value):
        raise ConfigError(f"--space {where}: '{text}' is not a finite number")
    return value


def parse_param(item: str) -> Param:
    """``loss.gamma=float:0:5`` -> Param; syntax only (keys are checked against the config by the grid)."""
    key, sep, rest = str(item).partition("=")
    key = key.strip()
    kind, colon, args = rest.partition(":")
    kind = kind.strip().lower()
    example = "e.g. loss.gamma=float:0:5, optim.lr=log:1e-4:1e-2, anchor.scales_per_octave=int:1:3, batch=cat:2,4"
    if not sep or not key or not colon or kind not in KINDS:
        raise ConfigError(f"--space item '{item}' is not KEY=KIND:ARGS with KIND one of {', '.join(KINDS)}", example)
    if kind == "cat":
        choices = tuple(c.strip() for c in split_top_level(args))
        if not choices or any(not c for c in choices) or len(set(choices)) != len(choices):
            raise ConfigError(f"--space {key}: give distinct, non-empty choices after cat:", example)
        return Param(key, kind, choices=choices)
    bounds = args.split(":")
    if len(bounds) != 2:
        raise ConfigError(f"--space {key}: {kind} takes LOW:HIGH, got '{args}'", example)
    low, high = (_number(b.strip(), key) for b in bounds)
    if not low < high:
        raise ConfigError(f"--space {key}: LOW must be below HIGH, got {low} and {high}")
    if kind == "log" and low <= 0:
        raise ConfigError(f"--space {key}: log needs LOW > 0, got {low}", "use float: for a range that includes 0")
    if kind == "int" and not (low.is_integer() and high.is_integer()):
        raise ConfigError(f"--space {key}: int takes whole numbers, got {low}:{high}")
    return Param(key, kind, low, high)


def parse_space(items: Sequence[str], presets: Sequence[str] = ()) -> list:
    """The presets' items, then ``--space`` items (a later item of the same key replaces an earlier one)."""
    chosen: dict = {}
    for name in presets:
        if name not in PRESETS:
            raise ConfigError(f"--preset: unknown space '{name}'", f"use one of {', '.join(PRESETS)}")
        for item in PRESETS[name]:
            param = parse_param(item)
            chosen[param.key] = param
    for item in items:
        param = parse_param(item)
        chosen[param.key] = param
    if not chosen:
        raise ConfigError("fltool tune needs a search space", "give --space KEY=KIND:ARGS (e.g. --space "
                                                            "loss.gamma=float:0:5) or --preset loss")
    return list(chosen.values())


def target_keys(key: str, cfg: Any) -> list:
    """The ``--set`` keys a space key stands for (``input.size``: every pipeline's Resize scale)."""
    head, _, tail = key.partition(".")
    if key in WHOLE_ALIASES:
        return [WHOLE_ALIASES[key]]
    if head in ALIASES and tail:
        return [f"{ALIASES[head]}.{tail}"]
    if key == INPUT_SIZE:
        keys = []
        for split in ("train", "val", "test"):
            pipeline = (cfg.get(f"{split}_dataloader") or {}).get("dataset", {}).get("pipeline") or []
            found = [i for i, step in enumerate(pipeline) if isinstance(step, dict) and step.get("type") == "Resize"]
            if split == "train" and not found:
                raise ConfigError("--space input.size: the config's train_dataloader.dataset.pipeline has no Resize",
                                  "give the scale keys yourself, e.g. train_dataloader.dataset.pipeline.2.scale")
            keys += [f"{split}_dataloader.dataset.pipeline.{i}.scale" for i in found]
        return keys
    return [key]


def set_items(space: Sequence[Param], values: dict, cfg: Any) -> list:
    """The sampled ``values`` (space key -> number or choice text) as ``--set`` items of a one-point grid."""
    items = []
    for param in space:
        value = values[param.key]
        if param.key == INPUT_SIZE:
            size = int(float(value))
            value = f"({size},{size})"
        elif param.kind != "cat":
            value = value_text(value)
        for target in target_keys(param.key, cfg):
            items.append(f"{target}={value}")
    return items


def first_point(space: Sequence[Param]) -> dict:
    """A point of the space (lows and first choices), to check the keys before any trial."""
    return {p.key: p.choices[0] if p.kind == "cat" else (int(p.low) if p.kind == "int" else p.low) for p in space}
