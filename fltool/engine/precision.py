"""Which arithmetic a run uses (``--precision auto|fp32|bf16|fp16``), chosen by what the machine has, and said.

- On a CUDA GPU, ``bf16``/``fp16`` are MMEngine's ``AmpOptimWrapper`` (fp16 with dynamic loss scaling), as
  ``--amp`` has always been (``--amp`` = ``--precision fp16``); ``auto`` is fp32 there (unchanged behaviour).
- On the CPU, ``bf16`` is fltool's ``CpuAutocastOptimWrapper`` (MMEngine's AMP wrapper refuses a CPU) for training
  and MMEngine's autocast (``val_cfg/test_cfg.fp16``, bf16 on a CPU) for evaluation. ``auto`` takes bf16 only where
  the CPU computes it natively: AMX (Intel Sapphire Rapids and later) or AVX512_BF16 (AMD Zen 4/5, Intel Cooper
  Lake), and where ``ONEDNN_MAX_CPU_ISA`` does not cap oneDNN below them; elsewhere bf16 is emulated and slower than
  fp32 (pytorch#118499), so ``auto`` keeps fp32, and an explicit ``bf16`` runs with a note saying so.
- The network runs in the low precision; fltool's heads compute anchors, targets, losses and NMS in fp32.
- An exported model run by OpenVINO (``--backend openvino``): :func:`openvino_precision`, bf16 through OpenVINO's
  inference precision hint only where the CPU has native bf16, else f32 (and said).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Optional

from fltool.errors import ConfigError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
#: The environment variable that sets ``fltool train``'s default precision (``--precision`` overrides it).
PRECISION_ENV = "FLTOOL_PRECISION"
#: oneDNN ISA caps below which bf16 is not native (ONEDNN_MAX_CPU_ISA names; AVX512_CORE_BF16 and up keep it).
_CAPS_WITHOUT_BF16 = {"SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI"}


@dataclass(frozen=True)
class Precision:
    """The precision a run uses, where, and why (the why is printed and recorded in metrics.json)."""

    name: str  # "fp32" | "bf16" | "fp16"
    device: str  # "cpu" | "cuda"
    reason: str

    @property
    def mixed(self) -> bool:
        return self.name != "fp32"


def default_training_precision(env: Optional[dict] = None) -> str:
    """``fltool train``'s precision when ``--precision`` is not given: ``$FLTOOL_PRECISION`` where set (so a lab's
    CI, or a test suite, gets the same arithmetic on every CPU), else ``auto``."""
    env = os.environ if env is None else env
    value = str(env.get(PRECISION_ENV) or "").strip().lower()
    if not value:
        return "auto"
    if value not in PRECISIONS:
        raise ConfigError(f"{PRECISION_ENV}={env.get(PRECISION_ENV)} is not one of {', '.join(PRECISIONS)}",
                          f"set {PRECISION_ENV} to one of them, or unset it (the default is auto)")
    return value


def native_bf16(flags: Optional[set] = None, env: Optional[dict] = None) -> Optional[str]:
    """"AMX" or "AVX512_BF16" where the CPU computes bf16 natively (and oneDNN is not capped below it), else None."""
    from fltool.engine.doctor import cpu_flags

    flags = cpu_flags() if flags is None else flags
    env = os.environ if env is None else env
    cap = str(env.get("ONEDNN_MAX_CPU_ISA", "")).upper()
    if cap in _CAPS_WITHOUT_BF16:
        return None
    if "amx_bf16" in flags:
        return "AMX"
    if "avx512_bf16" in flags:
        return "AVX512_BF16"
    return None


def choose_precision(requested: str, device: str = "cpu", native: Optional[str] = "detect") -> Precision:
    """The :class:`Precision` for ``requested`` on ``device`` (see the module docstring); ``native`` is what
    :func:`native_bf16` says (detected when left as "detect")."""
    if requested not in PRECISIONS:
        raise ConfigError(f"--precision {requested} is not one of {', '.join(PRECISIONS)}")
    if device.startswith("cuda"):
        if requested == "auto":
            return Precision("fp32", "cuda", "auto on a GPU: fp32 (--precision fp16 or bf16 for MMEngine's AMP)")
        return Precision(requested, "cuda", f"{requested} asked for: MMEngine's AmpOptimWrapper")
    if requested == "fp16":
        raise ConfigError("--precision fp16 needs a CUDA GPU", "on the CPU use bf16 (where the CPU has native bf16) "
                                                                "or fp32")
    native = native_bf16() if native == "detect" else native
    if requested == "fp32":
        return Precision("fp32", "cpu", "fp32 asked for")
    if requested == "bf16":
        why = (f"bf16 asked for; the CPU computes it natively ({native})" if native else
               "bf16 asked for, but this CPU has no native bf16 (no AMX, no AVX512_BF16, or ONEDNN_MAX_CPU_ISA caps "
               "it): it is emulated and usually slower than fp32")
        return Precision("bf16", "cpu", why)
    if native:
        return Precision("bf16", "cpu", f"auto: bf16, the CPU computes it natively ({native})")
    return Precision("fp32", "cpu", "auto: fp32, this CPU has no native bf16 (bf16 would be emulated and slower)")


def openvino_precision(requested: str, native: Optional[str] = "detect") -> Precision:
    """The precision OpenVINO runs an exported model in (its INFERENCE_PRECISION_HINT) for ``--precision
    requested``: bf16 (``bf16``, or ``auto``) only where the CPU computes it natively (:func:`native_bf16`, detected
    when left as "detect"), else fp32, with the reason saying which path was taken and why."""
    if requested in ("fp32", "int8"):  # int8: the file is quantized; what is left of the graph runs in fp32
        return Precision("fp32", "cpu", f"{requested} asked for: OpenVINO runs f32" +
                         (" where the file is not quantized" if requested == "int8" else ""))
    if requested not in ("auto", "bf16"):
        raise ConfigError(f"--precision {requested}: the openvino backend runs on the CPU in fp32 or bf16",
                          "use --precision fp32, bf16 or auto (an INT8 model is a file: fltool export --format "
                          "openvino --precision int8)")
    native = native_bf16() if native == "detect" else native
    if native:
        return Precision("bf16", "cpu", f"{requested}: OpenVINO runs bf16, the CPU computes it natively ({native})")
    return Precision("fp32", "cpu", f"{requested}: OpenVINO runs f32, this CPU has no native bf16 (no AMX, no "
                                    "AVX512_BF16, or ONEDNN_MAX_CPU_ISA caps it)")


def training_precision(cfg: Any, requested: str, device: str, native: Optional[str] = "detect") -> Precision:
    """Choose the training precision for ``--precision requested`` on ``device`` and set it in ``cfg``. The one rule
    beyond :func:`choose_precision`: bf16/fp16 take the place of a plain ``OptimWrapper`` only, so ``auto`` keeps fp32
    for a config with an optimizer wrapper of its own (and says so), where an explicit bf16/fp16 is refused."""
    precision = choose_precision(requested, device, native)
    wrapper = (cfg.get("optim_wrapper") or {}).get("type", "OptimWrapper")
    if requested == "auto" and precision.mixed and wrapper != "OptimWrapper":
        precision = Precision("fp32", precision.device, f"auto: fp32, the config's optim_wrapper is a {wrapper} "
                                                        "(bf16 takes the place of a plain OptimWrapper only)")
    apply_training_precision(cfg, precision)
    return precision


def apply_training_precision(cfg: Any, precision: Precision) -> None:
    """Set the config's optimizer wrapper for ``precision`` (only a plain ``OptimWrapper`` is changed)."""
    if not precision.mixed:
        return
    wrapper = cfg.optim_wrapper
    if wrapper.get("type", "OptimWrapper") != "OptimWrapper":
        raise ConfigError(f"--precision {precision.name}: the config's optim_wrapper is a {wrapper.get('type')}",
                          "use --precision fp32 with this config, or set its optim_wrapper yourself")
    if precision.device == "cuda":
        wrapper["type"] = "AmpOptimWrapper"
        wrapper["dtype"] = "float16" if precision.name == "fp16" else "bfloat16"
        if precision.name == "fp16":
            wrapper.setdefault("loss_scale", "dynamic")
    else:
        wrapper["type"] = "CpuAutocastOptimWrapper"
        wrapper["dtype"] = "bfloat16"
    apply_evaluation_precision(cfg, precision)


def apply_evaluation_precision(cfg: Any, precision: Precision) -> None:
    """Evaluate under MMEngine's autocast (bf16 on a CPU, fp16/bf16 on a GPU) where ``precision`` is mixed."""
    if not precision.mixed:
        return
    for key in ("val_cfg", "test_cfg"):
        if cfg.get(key) is not None:
            cfg[key]["fp16"] = True  # MMEngine's name: autocast on (its dtype on a CPU is bf16)
