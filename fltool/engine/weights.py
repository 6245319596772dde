"""Starting weights for training: ``--pretrained`` (the backbone) and ``--load-from`` (a whole detector).

Both go MMDetection's way. ``--pretrained SPEC`` becomes the backbone's ``init_cfg = dict(type='Pretrained',
checkpoint=SPEC)`` (``prefix='backbone.'`` when SPEC is a whole detector), which MMEngine applies in
``Runner._init_model_weights()``. ``--load-from`` is MMEngine's ``load_from``: ``Runner.train()`` initialises the
model first, then ``load_or_resume()`` loads the file non-strictly, so a weight whose shape differs (the classifier
of an 80-class COCO model in a 3-class one) is not loaded and keeps its initialisation: for ``FocalRetinaHead``'s
classifier, N(0, 0.01) weights and the prior bias -log((1 - pi) / pi).

MMEngine only logs such mismatches. :func:`describe_start` compares the file with the built model before training
and says in one line what loads and what does not, and why; a file that fits none of the weights is an error.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional

from fltool.engine.runner import by_module
from fltool.errors import CheckpointError, ConfigError

ZOO_PREFIXES = ("torchvision://", "open-mmlab://", "openmmlab://", "http://", "https://")


def _load(spec: str, trust: bool) -> tuple[dict, dict]:
    """(state dict, meta) of a checkpoint named by path, zoo name or URL."""
    from mmengine.runner.checkpoint import CheckpointLoader

    from fltool.engine import compat
    from fltool.engine.checkpoint import trusted

    compat.apply()
    if not spec.startswith(ZOO_PREFIXES) and not Path(spec).expanduser().is_file():
        raise CheckpointError(f"weights not found: {spec}", "give a .pth file, torchvision://NAME or "
                                                            "open-mmlab://NAME")
    with trusted(spec if trust else None):
        try:  # a plain logger: MMEngine's "Loads checkpoint by ..." line stays out of the user's terminal
            ckpt = CheckpointLoader.load_checkpoint(spec, map_location="cpu", logger=logging.getLogger(__name__))
        except FileNotFoundError as exc:
            raise CheckpointError(f"weights not found: {exc.filename or spec}") from None
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{spec} holds a {type(ckpt).__name__}, not weights")
    state = ckpt.get("state_dict", ckpt)
    meta = ckpt.get("meta") if isinstance(ckpt.get("meta"), dict) else {}
    return {k[7:] if k.startswith("module.") else k: v for k, v in state.items() if hasattr(v, "shape")}, meta


def set_backbone_init(cfg: Any, spec: str, trust: bool = False) -> None:
    """``--pretrained``: the backbone starts from ``spec`` (MMDetection's ``Pretrained`` init_cfg)."""
    backbone = cfg.model.get("backbone")
    if not isinstance(backbone, dict):
        raise ConfigError("--pretrained: the config's model has no backbone")
    if not spec.startswith(ZOO_PREFIXES):
        spec = str(Path(spec).expanduser().resolve())
    state, _ = _load(spec, trust)
    init = dict(type="Pretrained", checkpoint=spec)
    if sum(k.startswith("backbone.") for k in state) > len(state) / 2:  # a whole detector: take its backbone
        init["prefix"] = "backbone."
    backbone["init_cfg"] = init


def _shape(t: Any) -> str:
    return "(" + ", ".join(map(str, tuple(t.shape))) + ")"


def _classes_note(meta: dict, classes: Optional[tuple]) -> str:
    theirs = (meta.get("dataset_meta") or {}).get("classes") or meta.get("CLASSES")
    if not theirs or not classes or tuple(theirs) == tuple(classes):
        return ""
    return f"; the file was trained on {len(theirs)} classes ({', '.join(map(str, theirs[:3]))}, ...), this model " \
           f"has {len(classes)}"


def compare(module: Any, state: dict, what: str, source: str, role: str, prior: Optional[float] = None,
            meta: Optional[dict] = None, classes: Optional[tuple] = None) -> str:
    """One line on what of ``state`` loads into ``module`` (same name and shape) and what does not; raises when
    nothing does."""
    own = {k: v for k, v in module.state_dict().items() if not k.endswith("num_batches_tracked")}
    state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    loaded = [k for k in own if k in state and tuple(state[k].shape) == tuple(own[k].shape)]
    reshaped = [k for k in own if k in state and k not in loaded]
    missing = [k for k in own if k not in state]
    unused = [k for k in state if k not in own]
    if not loaded:
        if reshaped:
            k = reshaped[0]
            why = f"every weight it shares has another shape, e.g. {k}: {_shape(state[k])} in the file, " \
                  f"{_shape(own[k])} here"
        else:
            why = f"no weight name in common: the file has e.g. {', '.join(list(state)[:2]) or 'nothing'}, the " \
                  f"{what} e.g. {', '.join(list(own)[:2])}"
        hint = "give weights of the same architecture"
        if role == "--load-from" and any(f"backbone.{k}" in own for k in state):
            hint = f"these look like backbone weights: use --pretrained {source}"
        raise CheckpointError(f"{role} {source} fits none of the {len(own)} weights of the {what} ({why})", hint)
    parts = [f"{role} {source}: {len(loaded)} of {len(own)} {what} weights loaded"]
    if reshaped:
        k = reshaped[0]
        parts.append(f"{len(reshaped)} skipped for their shape, kept at initialisation ({', '.join(reshaped[:4])}"
                     f"{', ...' if len(reshaped) > 4 else ''}; e.g. {k}: {_shape(state[k])} in the file, "
                     f"{_shape(own[k])} here)")
        if prior is not None and any(k.endswith("retina_cls.bias") for k in reshaped):
            parts.append(f"the classification layer starts from the prior pi = {prior:g}")
    if missing:
        parts.append(f"{len(missing)} not in the file, kept at initialisation (in {by_module(missing, 2, limit=4)})")
    if unused:
        parts.append(f"{len(unused)} weights of the file not used ({', '.join(unused[:3])}"
                     f"{', ...' if len(unused) > 3 else ''})")
    return "; ".join(parts) + _classes_note(meta or {}, classes)


def describe_start(model: Any, cfg: Any, trust: bool = False) -> list[str]:
    """Notes on the weights training will start from (``--pretrained``/backbone init and ``--load-from``)."""
    if cfg.get("resume"):
        return []
    model = getattr(model, "module", model)
    notes = []
    init = (cfg.model.get("backbone") or {}).get("init_cfg")
    if isinstance(init, dict) and init.get("type") == "Pretrained" and hasattr(model, "backbone"):
        state, _ = _load(str(init["checkpoint"]), trust)
        prefix = init.get("prefix")
        if prefix:
            state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        notes.append(compare(model.backbone, state, "backbone", str(init["checkpoint"]), "backbone init"))
    if cfg.get("load_from"):
        from fltool.engine.datasource import config_classes

        state, meta = _load(str(cfg.load_from), trust)
        head = cfg.model.get("bbox_head") or {}
        notes.append(compare(model, state, "model", str(cfg.load_from), "--load-from", head.get("prior_prob"),
                             meta, config_classes(cfg)))
    return notes
