"""How fltool train's command-line choices change the config (no training here)."""
from __future__ import annotations

import pytest

from fltool.engine.config import load_config
from fltool.engine.schedule import apply_length_overrides
from fltool.errors import ConfigError


def test_max_iters_scales_the_lr_schedule_checkpoints_and_evaluation():
    cfg = load_config("retinanet_r18-gn_synth_256")
    assert cfg.train_cfg.max_iters == 1200
    apply_length_overrides(cfg, max_iters=300, max_epochs=None, val_interval=None)
    warmup, steps = cfg.param_scheduler
    assert (warmup.begin, warmup.end) == (0, 25)
    assert steps.end == 300 and steps.milestones == [200, 265]
    assert cfg.train_cfg.max_iters == 300 and cfg.train_cfg.val_interval == 300
    assert cfg.default_hooks.checkpoint.interval == 300  # 400 in the config: never past the end


def test_max_epochs_on_an_iteration_config_is_refused():
    cfg = load_config("retinanet_r18-gn_synth_256")
    with pytest.raises(ConfigError, match="the config trains by iterations") as err:
        apply_length_overrides(cfg, max_iters=None, max_epochs=3, val_interval=None)
    assert err.value.one_line().endswith("use --max-iters")


def test_max_epochs_scales_an_epoch_schedule():
    cfg = load_config("retinanet_r50_fpn_fl_600_1x_coco")  # mmdet's 1x: 12 epochs, steps at 8 and 11
    apply_length_overrides(cfg, max_iters=None, max_epochs=6, val_interval=2)
    assert cfg.train_cfg.max_epochs == 6 and cfg.train_cfg.val_interval == 2
    assert cfg.param_scheduler[1].milestones == [4, 6]  # round(8 * 0.5), round(11 * 0.5)
