"""Test-only MMEngine hooks for the runs beyond one process (imported by tests/configs/tiny_multinode.py and
tiny_kill.py): each rank's digest of its weights, and a worker that dies by SIGKILL once."""
from __future__ import annotations

import hashlib
import os
import signal

from mmdet.registry import HOOKS
from mmengine.hooks import Hook


@HOOKS.register_module()
class WeightsDigestHook(Hook):
    """At the end of training, each rank writes ``digest_rank<r>.txt``: the SHA-256 of its model's parameters, with
    the world size and its node (``GROUP_RANK``, torchrun's node rank)."""

    def after_train(self, runner) -> None:
        from mmengine.dist import get_rank, get_world_size

        model = runner.model.module if hasattr(runner.model, "module") else runner.model
        digest = hashlib.sha256()
        for name, tensor in sorted(model.named_parameters()):  # (BN running stats stay per rank under DDP)
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        line = f"{digest.hexdigest()} world_size={get_world_size()} node={os.environ.get('GROUP_RANK')}\n"
        with open(os.path.join(runner.work_dir, f"digest_rank{get_rank()}.txt"), "w") as f:
            f.write(line)


@HOOKS.register_module()
class KillOnceHook(Hook):
    """After iteration ``at_iter`` (1-based), rank ``rank`` kills itself with SIGKILL, in the first attempt only
    (torchrun's ``TORCHELASTIC_RESTART_COUNT`` is 0): a worker lost without any chance to clean up."""

    priority = "VERY_LOW"  # after the checkpoint hook of that iteration

    def __init__(self, at_iter: int, rank: int = 1):
        self.at_iter = at_iter
        self.rank = rank

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        from mmengine.dist import get_rank

        first = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0"
        if first and runner.iter + 1 == self.at_iter and get_rank() == self.rank:
            os.kill(os.getpid(), signal.SIGKILL)
