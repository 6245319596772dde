"""Mixed precision on the CPU: the forward pass under ``torch.autocast("cpu", dtype=torch.bfloat16)``.

MMEngine's ``AmpOptimWrapper`` (0.10.7) asserts a GPU, NPU, MLU or MUSA device at construction, so stock
MMDetection trains in fp32 on a CPU however fast the CPU is in bf16. On CPUs with native bf16 arithmetic (AMX on
Intel Sapphire Rapids and later, AVX512_BF16 on AMD Zen 4/5 and Intel Cooper Lake) oneDNN's bf16 convolutions are
much faster than fp32; on CPUs without it they are emulated and slower (pytorch#118499), which is why fltool picks
this wrapper only where the CPU has them (``fltool.engine.precision``).

Only the forward pass (data preprocessing included, as in ``AmpOptimWrapper``) runs under autocast; the backward and
the optimizer step see fp32 parameters and gradients. bf16 has fp32's exponent range, so no loss scaling is needed.
fltool's heads compute anchors, targets, the focal and box losses and NMS in fp32 whatever the autocast
(``FocalRetinaHead``).
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

import torch
from mmdet.registry import OPTIM_WRAPPERS
from mmengine.optim import OptimWrapper


@OPTIM_WRAPPERS.register_module()
class CpuAutocastOptimWrapper(OptimWrapper):
    """``OptimWrapper`` whose :meth:`optim_context` runs the forward pass under CPU autocast.

    Args:
        dtype: The autocast dtype: ``"bfloat16"`` (the only one CPU autocast supports well).
        **kwargs: ``OptimWrapper``'s arguments (``optimizer``, ``clip_grad``, ``accumulative_counts``).
    """

    def __init__(self, dtype: str = "bfloat16", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if dtype not in ("bfloat16", "bf16"):
            raise ValueError(f"CpuAutocastOptimWrapper runs bfloat16 autocast, not {dtype!r}")
        self.cast_dtype = torch.bfloat16

    @contextmanager
    def optim_context(self, model: torch.nn.Module) -> Iterator[None]:
        with super().optim_context(model), torch.autocast("cpu", dtype=self.cast_dtype):
            yield
