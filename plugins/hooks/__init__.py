"""fltool's MMEngine hooks: atomic/portable checkpoints and training guards."""
from .checkpoint import AtomicCheckpointHook  # noqa: F401  (registration)
from .guards import NonFiniteLossError, NonFiniteLossHook, StopRequestHook, TrainingStopped  # noqa: F401

__all__ = ["AtomicCheckpointHook", "NonFiniteLossError", "NonFiniteLossHook", "StopRequestHook", "TrainingStopped"]
