"""The MMEngine hook through which a training or evaluation run reports to a :data:`fltool.progress.ProgressFn`
(iterations, losses, learning rate, validation) and keeps the last evaluation's metrics for the caller."""
from __future__ import annotations

from typing import Any, Optional

from fltool.engine.metrics import coco_metrics
from fltool.progress import ProgressEvent, ProgressFn


def progress_hook(progress: ProgressFn, sink: dict) -> Any:
    from mmengine.hooks import Hook

    class ProgressHook(Hook):
        """Reports iterations, losses, lr, positives and validation to ``progress``; keeps the last metrics."""

        priority = "LOW"

        def after_train_iter(self, runner: Any, batch_idx: int, data_batch: Any = None,
                             outputs: Optional[dict] = None) -> None:
            values = {k: float(v.detach()) if hasattr(v, 'detach') else float(v) for k, v in (outputs or {}).items()}
            lrs = runner.optim_wrapper.get_lr().get("lr", [])
            if lrs:
                values["lr"] = float(lrs[0])
            hub = runner.message_hub
            for key in ("time", "data_time"):
                scalar = hub.log_scalars.get(f"train/{key}")
                if scalar is not None:
                    values[key] = float(scalar.current())
            sink["trained"] = sink.get("trained", 0) + 1
            progress(ProgressEvent("train_iter", iteration=runner.iter + 1, max_iters=runner.max_iters,
                                   epoch=runner.epoch, values=values))

        def after_val_iter(self, runner: Any, batch_idx: int, data_batch: Any = None, outputs: Any = None) -> None:
            progress(ProgressEvent("val_iter", iteration=batch_idx + 1,
                                   max_iters=len(runner.val_dataloader)))

        def after_test_iter(self, runner: Any, batch_idx: int, data_batch: Any = None, outputs: Any = None) -> None:
            progress(ProgressEvent("val_iter", iteration=batch_idx + 1,
                                   max_iters=len(runner.test_dataloader)))

        def after_val_epoch(self, runner: Any, metrics: Optional[dict] = None) -> None:
            sink["raw"] = dict(metrics or {})
            sink["iteration"] = runner.iter
            progress(ProgressEvent("val_end", iteration=runner.iter, values=coco_metrics(sink["raw"])))

        after_test_epoch = after_val_epoch

    return ProgressHook()
