"""Checkpoints that survive disk faults and load with ``torch.load(weights_only=True)``.

MMEngine's ``CheckpointHook`` (0.10.7) deletes the oldest checkpoint *before* writing the new one, writes the file in
place (a crash or ENOSPC mid-write leaves a truncated file) and then points ``last_checkpoint`` at it. Its
checkpoints also pickle ``HistoryBuffer`` objects and numpy arrays, which ``torch.load``'s ``weights_only=True``
default (PyTorch >= 2.6) refuses. ``AtomicCheckpointHook`` fixes both:

- the checkpoint is written to ``<name>.partial``, fsynced, then renamed over ``<name>`` (atomic on POSIX), the
  folder is fsynced, ``last_checkpoint`` is replaced the same way, and only then are old checkpoints removed;
  a failed write removes the partial file and leaves the previous checkpoint and ``last_checkpoint`` untouched;
- before saving, the message hub's ``HistoryBuffer`` objects and numpy values become plain lists/numbers (tensors
  and Python builtins only); after loading, they are turned back, so a resumed run's logs continue seamlessly.
"""
from __future__ import annotations

import os
import os.path as osp
from typing import Any

import numpy as np
from mmdet.registry import HOOKS
from mmengine.dist import is_main_process
from mmengine.hooks import CheckpointHook
from mmengine.logging import HistoryBuffer

_BUFFER_KEY = "__history_buffer__"
PARTIAL_SUFFIX = ".partial"


def to_portable(value: Any) -> Any:
    """Replace HistoryBuffers and numpy values by builtins, recursively (tensors are left as they are)."""
    if isinstance(value, HistoryBuffer):
        return {_BUFFER_KEY: {"log_history": value._log_history.tolist(),
                              "count_history": value._count_history.tolist(),
                              "max_length": int(value.max_length)}}
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {k: to_portable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        converted = [to_portable(v) for v in value]
        return converted if isinstance(value, list) else tuple(converted)
    return value


def from_portable(value: Any) -> Any:
    """Inverse of :func:`to_portable` for HistoryBuffers."""
    if isinstance(value, dict):
        if set(value) == {_BUFFER_KEY}:
            state = value[_BUFFER_KEY]
            return HistoryBuffer(state["log_history"], state["count_history"], state["max_length"])
        return {k: from_portable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [from_portable(v) for v in value]
    return value


def fsync_file(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems do not support fsync on a directory
    finally:
        os.close(fd)


def atomic_write_text(path: str, text: str) -> None:
    tmp = path + PARTIAL_SUFFIX
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(osp.dirname(path) or ".")


@HOOKS.register_module()
class AtomicCheckpointHook(CheckpointHook):
    """``CheckpointHook`` with atomic writes, delete-after-write and ``weights_only``-loadable files.

    Takes every argument of MMEngine's ``CheckpointHook`` (``interval``, ``by_epoch``, ``max_keep_ckpts``, ...).
    Only local folders are supported (``backend_args`` for remote storage is refused).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if kwargs.get("backend_args") or kwargs.get("file_client_args"):
            raise ValueError("AtomicCheckpointHook writes to local disk only; remove backend_args/file_client_args")
        super().__init__(*args, **kwargs)

    # -- portable contents ------------------------------------------------------------------------------
    def before_save_checkpoint(self, runner: Any, checkpoint: dict) -> None:
        for key in ("message_hub", "meta"):
            if key in checkpoint:
                checkpoint[key] = to_portable(checkpoint[key])

    def after_load_checkpoint(self, runner: Any, checkpoint: dict) -> None:
        if "message_hub" in checkpoint:
            checkpoint["message_hub"] = from_portable(checkpoint["message_hub"])
        super().after_load_checkpoint(runner, checkpoint)

    # -- atomic write, then bookkeeping -----------------------------------------------------------------
    def _save_checkpoint_with_step(self, runner: Any, step: int, meta: dict) -> None:
        ckpt_filename = self.filename_tmpl.format(step)
        final_path = osp.join(self.out_dir, ckpt_filename)
        partial_name = ckpt_filename + PARTIAL_SUFFIX
        partial_path = osp.join(self.out_dir, partial_name)

        # Bookkeeping of the kept checkpoints, as upstream does, but applied only after a successful write.
        track = self.max_keep_ckpts > 0 and not (self.keep_ckpt_ids and self.keep_ckpt_ids[-1] == step)
        kept = list(self.keep_ckpt_ids)
        stale: list = []
        if track:
            kept.append(step)
            while len(kept) > self.max_keep_ckpts:
                stale.append(kept.pop(0))
            runner.message_hub.update_info("keep_ckpt_ids", kept)
        previous_last = self.last_ckpt
        self.last_ckpt = final_path
        runner.message_hub.update_info("last_ckpt", final_path)

        try:
            runner.save_checkpoint(self.out_dir, partial_name, save_optimizer=self.save_optimizer,
                                   save_param_scheduler=self.save_param_scheduler, meta=meta,
                                   by_epoch=self.by_epoch, **self.args)
            if is_main_process():
                fsync_file(partial_path)
                os.replace(partial_path, final_path)
                fsync_dir(self.out_dir)
                atomic_write_text(osp.join(runner.work_dir, "last_checkpoint"), final_path)
        except BaseException as exc:
            # The previous checkpoint and last_checkpoint are untouched; drop the partial file and the bookkeeping.
            if is_main_process() and osp.exists(partial_path):
                os.remove(partial_path)
            self.last_ckpt = previous_last
            runner.message_hub.update_info("last_ckpt", previous_last)
            runner.message_hub.update_info("keep_ckpt_ids", list(self.keep_ckpt_ids))
            if isinstance(exc, OSError) and not exc.filename:  # a failed f.write() names no file: say which
                raise OSError(exc.errno, exc.strerror or str(exc), final_path) from exc
            raise

        # Only now that the new checkpoint is safely on disk: forget and delete the old ones.
        if track:
            self.keep_ckpt_ids.clear()
            self.keep_ckpt_ids.extend(kept)
            for old in stale:
                old_path = osp.join(self.out_dir, self.filename_tmpl.format(old))
                if is_main_process() and osp.isfile(old_path):
                    os.remove(old_path)
