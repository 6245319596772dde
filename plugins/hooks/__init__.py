"""fltool's MMEngine hooks: atomic/portable checkpoints and training guards."""
from .checkpoint import AtomicCheckpointHook  # noqa: F401  (registration)
from .guards import NonFiniteLossError, NonFiniteLossHook, StopRequestHook, TrainingStopped  # noqa: F401
from .memory_format import ChannelsLastHook  # noqa: F401

__all__ = ["AtomicCheckpointHook", "ChannelsLastHook", "NonFiniteLossError", "NonFiniteLossHook", "StopRequestHook",
           "TrainingStopped"]
