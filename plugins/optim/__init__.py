"""fltool's optimizer wrappers: ``CpuAutocastOptimWrapper`` (bfloat16 mixed precision on the CPU)."""
from .cpu_autocast import CpuAutocastOptimWrapper  # noqa: F401  (registration)

__all__ = ["CpuAutocastOptimWrapper"]
