"""Focal Loss (FL) and FL* as pure functions and as MMDetection loss modules."""


def kernel_info() -> dict:
    """Whether the compiled CPU kernel is available (placeholder until the kernel lands)."""
    return {"available": False, "isa": "none", "detail": "not built"}
