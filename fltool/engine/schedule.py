"""``--max-iters``, ``--max-epochs`` and ``--val-interval``: the training length changed, and the learning-rate
schedule, evaluation and checkpoint intervals scaled with it, so that a shorter run keeps the recipe's shape."""
from __future__ import annotations

from typing import Any, Optional

from fltool.errors import ConfigError


def _scale_schedule(cfg: Any, old_len: int, new_len: int) -> None:
    """Scale iteration/epoch milestones of the LR schedule when the training length is overridden."""
    if not old_len or old_len == new_len:
        return
    ratio = new_len / old_len
    schedulers = cfg.get("param_scheduler") or []
    schedulers = schedulers if isinstance(schedulers, list) else [schedulers]
    for sched in schedulers:
        if isinstance(sched.get("begin"), int) and sched["begin"] > 0:
            sched["begin"] = min(new_len - 1, round(sched["begin"] * ratio))
        for key in ("end", "T_max"):
            if isinstance(sched.get(key), int) and sched[key] > 0:
                sched[key] = max(1, min(new_len, round(sched[key] * ratio)))
        if "milestones" in sched:
            sched["milestones"] = [max(1, round(m * ratio)) for m in sched["milestones"]]


def apply_length_overrides(cfg: Any, max_iters: Optional[int], max_epochs: Optional[int],
                           val_interval: Optional[int]) -> None:
    train_cfg = cfg.get("train_cfg")
    if train_cfg is None:
        raise ConfigError("config has no train_cfg", "use a training config")
    by_epoch = "max_epochs" in train_cfg
    if max_iters is not None:
        if by_epoch:
            raise ConfigError("--max-iters given but the config trains by epochs", "use --max-epochs")
        _scale_schedule(cfg, train_cfg["max_iters"], max_iters)
        train_cfg["max_iters"] = max_iters
        if "val_interval" in train_cfg and train_cfg["val_interval"] > max_iters:
            train_cfg["val_interval"] = max_iters
    if max_epochs is not None:
        if not by_epoch:
            raise ConfigError("--max-epochs given but the config trains by iterations", "use --max-iters")
        _scale_schedule(cfg, train_cfg["max_epochs"], max_epochs)
        train_cfg["max_epochs"] = max_epochs
    if val_interval is not None:
        train_cfg["val_interval"] = val_interval
    length = train_cfg.get("max_iters") or train_cfg.get("max_epochs")
    ckpt = cfg.get("default_hooks", {}).get("checkpoint")
    if ckpt is not None and ckpt.get("interval", 1) > length:
        ckpt["interval"] = length
