"""``fltool tune``: the space syntax, real Optuna studies of tiny fltool runs (trials table, best config that
``fltool train`` runs, plots, resuming a stopped tune, pruning on AP), and one study shared by two processes through
SQLite, as hosts share a database."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fltool.cli.main import app
from fltool.engine.tune.space import parse_param, parse_space, set_items
from fltool.errors import ConfigError

optuna = pytest.importorskip("optuna")
runner = CliRunner()
TESTS = Path(__file__).resolve().parent


def test_space_items_parse_to_optuna_dimensions_and_bad_ones_name_the_fix():
    gamma = parse_param("loss.gamma=float:0:5")
    assert (gamma.kind, gamma.low, gamma.high) == ("float", 0.0, 5.0)
    assert parse_param("optim.lr=log:1e-4:1e-2").distribution().log
    assert parse_param("anchor.ratios=cat:[1.0],[0.5,1.0,2.0]").choices == ("[1.0]", "[0.5,1.0,2.0]")
    assert [p.key for p in parse_space(["loss.gamma=float:1:2"], ["loss"])] == ["loss.gamma", "loss.alpha"]
    assert parse_space(["loss.gamma=float:1:2"], ["loss"])[0].low == 1.0  # a later item replaces the preset's
    for bad, why in (("loss.gamma=float:5:0", "LOW must be below HIGH"), ("optim.lr=log:0:1", "log needs LOW > 0"),
                     ("loss.gamma=uniform:0:1", "KEY=KIND:ARGS"), ("batch=int:1.5:4", "whole numbers"),
                     ("batch=cat:2,2", "distinct")):
        with pytest.raises(ConfigError, match=why):
            parse_param(bad)
    with pytest.raises(ConfigError, match="unknown space 'nope'"):
        parse_space([], ["nope"])


def test_space_aliases_become_the_sweeps_set_items(tiny_config):
    from fltool.engine.config import load_config

    cfg = load_config(tiny_config)
    space = parse_space(["optim.lr=log:1e-4:1e-2", "prior=float:0.01:0.1", "batch=cat:2,4", "input.size=cat:128",
                         "anchor.scales_per_octave=int:1:3", "loss=cat:FL,FL*"])
    values = {"optim.lr": 0.001, "prior": 0.02, "batch": "4", "input.size": "128", "anchor.scales_per_octave": 2,
              "loss": "FL*"}
    assert set_items(space, values, cfg) == [
        "optim_wrapper.optimizer.lr=0.001", "model.bbox_head.prior_prob=0.02", "train_dataloader.batch_size=4",
        "train_dataloader.dataset.pipeline.2.scale=(128,128)", "val_dataloader.dataset.pipeline.1.scale=(128,128)",
        "test_dataloader.dataset.pipeline.1.scale=(128,128)", "model.bbox_head.anchor_generator.scales_per_octave=2",
        "loss=FL*"]


def _tune(config: str, work_dir: Path, *args: str):
    return runner.invoke(app, ["tune", config, "--work-dir", str(work_dir), "--max-iters", "2", *args])


def test_tune_trains_each_trial_as_a_run_keeps_the_best_checkpoint_writes_a_trainable_best_config_and_continues(
        tiny_config, tmp_path):
    tune_dir = tmp_path / "tune"
    space = ["--space", "loss.gamma=float:0:5", "--space", "optim.lr=log:1e-4:1e-2"]
    result = _tune(tiny_config, tune_dir, *space, "--trials", "2")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader((tune_dir / "trials.csv").open()))
    assert [r["state"] for r in rows] == ["COMPLETE", "COMPLETE"]
    for row in rows:  # every trial is a normal fltool run with its own work dir and metrics
        metrics = json.loads((Path(row["work_dir"]) / "metrics.json").read_text())
        assert metrics["iteration"] == 2 and float(row["AP"]) == pytest.approx(metrics["bbox"]["AP"])
        assert json.loads((Path(row["work_dir"]) / "metrics.json").read_text())["config"]
    best = max(rows, key=lambda r: (float(r["AP"]), -int(r["trial"])))
    kept = {r["trial"]: sorted(p.name for p in Path(r["work_dir"]).glob("*.pth")) for r in rows}
    assert kept[best["trial"]] == ["iter_2.pth"] and all(not v for k, v in kept.items() if k != best["trial"])
    assert (tune_dir / "plots" / "optimization_history.png").is_file()
    assert (tune_dir / "plots" / "param_importances.png").is_file()

    best_config = tune_dir / "tune_best.py"
    text = best_config.read_text()
    assert f"gamma={float(best['loss.gamma'])!r}" in text.replace(" ", "")
    trained = runner.invoke(app, ["train", str(best_config), "--work-dir", str(tmp_path / "again")])
    assert trained.exit_code == 0, trained.output
    again = json.loads((tmp_path / "again" / "metrics.json").read_text())
    assert again["iteration"] == 2 and again["bbox"]["AP"] == pytest.approx(float(best["AP"]), abs=1e-3)

    more = _tune(tiny_config, tune_dir, *space, "--trials", "3")
    assert more.exit_code == 0, more.output
    assert "trained 1 trial(s) now" in more.stdout
    assert len(list(csv.DictReader((tune_dir / "trials.csv").open()))) == 3


def test_a_tune_stopped_by_a_signal_continues_its_trial_from_the_checkpoint(tmp_path):
    signal_cfg = str(TESTS / "configs" / "tiny_signal.py")
    tune_dir = tmp_path / "tune"
    space = ["--space", "loss.gamma=float:1:3", "--trials", "1", "--pruner", "none"]
    stopped = runner.invoke(app, ["tune", signal_cfg, "--work-dir", str(tune_dir), *space])
    assert stopped.exit_code == 130, stopped.output
    assert (tune_dir / "trials" / "0000" / "iter_3.pth").is_file()
    resumed = runner.invoke(app, ["tune", signal_cfg, "--work-dir", str(tune_dir), *space, "--cfg-options",
                                  "custom_hooks.1.at_iter=100"])
    assert resumed.exit_code == 0, resumed.output
    assert "1 interrupted trial(s) continue from their last checkpoint" in resumed.stderr
    assert "resuming trial 0" in resumed.stderr and "iter 4/6" in resumed.stderr and "iter 1/6" not in resumed.stderr
    rows = list(csv.DictReader((tune_dir / "trials.csv").open()))
    assert [(r["trial"], r["state"]) for r in rows] == [("0", "FAIL"), ("1", "COMPLETE")]
    assert rows[1]["work_dir"] == str(tune_dir / "trials" / "0000")
    assert json.loads((tune_dir / "trials" / "0000" / "metrics.json").read_text())["iteration"] == 6


def test_a_trial_whose_ap_falls_behind_is_pruned_at_an_evaluation(learn_config, tmp_path):
    """Two trials that learn, then one that cannot (lr 0): the median pruner stops it at its first evaluation."""
    tune_dir = tmp_path / "tune"
    tune_dir.mkdir()
    study = optuna.create_study(storage=f"sqlite:///{tune_dir / 'study.db'}", study_name="tune",
                                direction="maximize")
    for lr in ("0.003", "0.003", "0.0"):
        study.enqueue_trial({"optim.lr": lr})
    result = runner.invoke(app, ["tune", learn_config, "--work-dir", str(tune_dir), "--space",
                                 "optim.lr=cat:0.003,0.0", "--trials", "3", "--max-iters", "40", "--val-interval",
                                 "20"])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader((tune_dir / "trials.csv").open()))
    assert [r["state"] for r in rows] == ["COMPLETE", "COMPLETE", "PRUNED"]
    assert rows[2]["iteration"] == "20" and "trial 2 pruned at iteration 20" in result.stderr


def _host(config: str, tune_dir: Path, storage: str, seed: int) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-m", "fltool", "tune", config, "--work-dir", str(tune_dir),
                             "--storage", storage, "--study-name", "shared", "--space", "loss.gamma=float:0:5",
                             "--trials", "4", "--max-iters", "2", "--sampler-seed", str(seed)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_two_processes_share_one_study_through_its_database_as_hosts_would(tiny_config, tmp_path):
    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    hosts = [_host(tiny_config, tmp_path / f"host{i}", storage, seed=i) for i in (0, 1)]
    outputs = [(p.wait(timeout=600), *p.communicate()) for p in hosts]
    assert [code for code, _, _ in outputs] == [0, 0], [err[-2000:] for _, _, err in outputs]
    study = optuna.load_study(study_name="shared", storage=storage)
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert 4 <= len(done) <= 5  # --trials counts the study's finished trials; at most one more per other worker
    folders = {Path(t.user_attrs["work_dir"]).parent.parent.name for t in done}
    assert folders == {"host0", "host1"}  # both processes trained trials of the one study
    assert len({t.number for t in done}) == len(done)
    for t in done:
        assert json.loads((Path(t.user_attrs["work_dir"]) / "metrics.json").read_text())["iteration"] == 2


def test_jobs_runs_worker_processes_on_the_tune_folders_storage(tiny_config, tmp_path):
    tune_dir = tmp_path / "tune"
    result = _tune(tiny_config, tune_dir, "--space", "loss.gamma=float:0:5", "--trials", "2", "--jobs", "2")
    assert result.exit_code == 0, result.output
    assert (tune_dir / "workers" / "worker1.log").is_file()
    study = optuna.load_study(study_name="tune", storage=f"sqlite:///{tune_dir / 'study.db'}")
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) >= 2 and len({t.user_attrs["worker"] for t in done}) == 2  # this process and the spawned one
