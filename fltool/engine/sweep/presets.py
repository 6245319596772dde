"""The loss presets of ``fltool sweep --set loss=...``: names such as ``CE-a0.75``, ``FL-g1-a0.5``, ``FL*-g4-b0`` or
``OHEM-1:3-b128`` that stand for a whole ``loss_cls`` dict (and, for OHEM, the head that selects the hard examples),
and the checks of a loss's gamma/alpha/beta before hours of training."""
from __future__ import annotations

import re
from dataclasses import dataclass

from fltool.errors import ConfigError


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
    "OHEM": LossPreset("SigmoidFocalLoss", dict(gamma=0.0, alpha=None), "a",
                       "CE on the B hardest anchors per image after NMS 0.5 (OHEMRetinaHead): OHEM-b<B>, "
                       "OHEM-1:3-b<B> (1 positive : 3 negatives), -nms<IoU> or -nmsNone (Table 1d)"),
}
#: The head that OHEM presets switch to (fltool_plugins.heads.OHEMRetinaHead) and where its settings go.
HEAD_KEY = "model.bbox_head"
OHEM_HEAD = "OHEMRetinaHead"
_MODIFIER_FIELDS = {"g": "gamma", "a": "alpha", "b": "beta"}
#: The constructor arguments of the presets' loss types (a ``loss.X`` axis over a preset must name one of them).
LOSS_ARGS = {"SigmoidFocalLoss": ("use_sigmoid", "gamma", "alpha", "reduction", "loss_weight"),
             "SigmoidFocalLossStar": ("use_sigmoid", "gamma", "beta", "alpha", "reduction", "loss_weight")}
_PRESET_RE = re.compile(r"(CE|FL\*|FLSTAR|FL)((?:-[GAB](?:-?\d+(?:\.\d*)?(?:E-?\d+)?|NONE))*)")
_MODIFIER_RE = re.compile(r"-([GAB])(-?\d+(?:\.\d*)?(?:E-?\d+)?|NONE)")
_OHEM_RE = re.compile(r"OHEM(-1:3)?(?:-B(\d+))?(?:-NMS(\d*\.?\d+|NONE))?((?:-A(?:\d+(?:\.\d*)?|\.\d+|NONE))?)")


def presets_help() -> str:
    """One line per preset, for ``--help``."""
    return "; ".join(f"{name}: {preset.doc}" for name, preset in LOSS_PRESETS.items())


def loss_preset(name: str) -> tuple[str, dict]:
    """A preset name to (canonical name, the whole ``loss_cls`` dict). Raises ConfigError naming a bad name."""
    text = str(name).strip()
    if text.upper().startswith("OHEM"):
        canonical, loss, _ = _ohem_preset(text)
        return canonical, loss
    match = _PRESET_RE.fullmatch(text.upper())
    if not match:
        raise ConfigError(f"unknown loss preset '{text}'",
                          f"use one of {', '.join(LOSS_PRESETS)} with optional -g<gamma>/-a<alpha>/-b<beta> suffixes "
                          "(e.g. CE-a0.75, FL-g1-a0.25, FL*-g4-b0, OHEM-1:3-b128)")
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


def preset_head_options(name: str) -> dict:
    """The head settings a preset needs besides its ``loss_cls`` (full config keys; ``+``: added if missing).
    Empty for CE/FL/FL*; OHEM presets switch the head to ``OHEMRetinaHead`` and set its ``ohem`` dict."""
    if not str(name).strip().upper().startswith("OHEM"):
        return {}
    _, _, ohem = _ohem_preset(name)
    return {f"{HEAD_KEY}.type": OHEM_HEAD, **{f"+{HEAD_KEY}.ohem.{key}": value for key, value in ohem.items()}}


def _ohem_preset(name: str) -> tuple[str, dict, dict]:
    """``OHEM[-1:3][-b<B>][-nms<IoU>|-nmsNone][-a<alpha>]`` to (canonical name, loss_cls, the head's ohem dict).
    Defaults: B = 128 and NMS 0.5, the paper's best OHEM (Table 1d); the loss is plain CE (gamma 0)."""
    text = str(name).strip()
    match = _OHEM_RE.fullmatch(text.upper())
    if not match:
        raise ConfigError(f"unknown loss preset '{text}'",
                          "OHEM presets are OHEM[-1:3][-b<B>][-nms<IoU>|-nmsNone][-a<alpha>], e.g. OHEM-b128, "
                          "OHEM-1:3-b256, OHEM-b128-nms0.7")
    ratio, num, nms, alpha = match.groups()
    ohem = dict(num=int(num) if num else 128, pos_fraction=0.25 if ratio else None,
                nms_thr=None if nms == "NONE" else (float(nms) if nms else 0.5))
    if ohem["num"] < 1:
        raise ConfigError(f"loss preset '{text}': B must be at least 1", "e.g. OHEM-b128")
    if ohem["nms_thr"] is not None and not 0 < ohem["nms_thr"] <= 1:
        raise ConfigError(f"loss preset '{text}': the NMS IoU must lie in (0, 1]", "e.g. -nms0.5, or -nmsNone")
    canonical = "OHEM" + ("-1:3" if ratio else "") + f"-b{ohem['num']}"
    if ohem["nms_thr"] != 0.5:
        canonical += "-nmsNone" if ohem["nms_thr"] is None else f"-nms{_number_text(ohem['nms_thr'])}"
    fields = dict(LOSS_PRESETS["OHEM"].fields)
    if alpha:
        raw = alpha[2:]
        fields["alpha"] = None if raw == "NONE" else float(raw)
        canonical += f"-a{'None' if fields['alpha'] is None else _number_text(fields['alpha'])}"
    loss = dict(type=LOSS_PRESETS["OHEM"].loss_type, use_sigmoid=True, **fields, loss_weight=1.0)
    check_loss_fields(loss, f"loss preset '{text}'")
    return canonical, loss, ohem


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
