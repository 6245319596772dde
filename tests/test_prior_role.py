"""``fltool analyze prior``: the same model with the paper's prior and with bias 0, per loss; a diverging run is
recorded as such and the experiment goes on; finished runs are reused."""
from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fltool.analysis.prior import PriorOptions, PriorRun, run_prior_experiment
from fltool.cli.main import app
from fltool.errors import ConfigError

TESTS = Path(__file__).resolve().parent


def test_cli_trains_each_prior_writes_the_curves_and_reuses_finished_runs(tiny_config, tmp_path):
    args = ["analyze", "prior", tiny_config, "--work-dir", str(tmp_path), "--max-iters", "3", "--losses", "CE",
            "--priors", "0.01,0.5"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "prior.json").read_text())
    runs = {run["name"]: run for run in summary["runs"]}
    assert set(runs) == {"CE_pi0.01", "CE_pi0.5"}
    assert runs["CE_pi0.5"]["bias"] == 0.0 and runs["CE_pi0.01"]["bias"] == pytest.approx(-4.595, abs=1e-3)
    assert all(run["status"] == "finished" and run["metrics"]["AP"] is not None for run in runs.values())
    assert "model.bbox_head.prior_prob=0.5" in runs["CE_pi0.5"]["train_command"]
    with open(tmp_path / "prior.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["iteration"]) for r in rows if r["run"] == "CE_pi0.5"] == [1, 2, 3]
    # the first iteration's forward pass sees the initial model: every positive anchor at about pi
    first = {r["run"]: float(r["pos_prob"]) for r in rows if r["iteration"] == "1"}
    assert first["CE_pi0.01"] == pytest.approx(0.01, rel=0.3) and first["CE_pi0.5"] == pytest.approx(0.5, rel=0.1)
    assert (tmp_path / "prior.png").stat().st_size > 10_000

    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0, again.output
    assert "trained 0, reused 2" in again.stdout


def test_a_run_whose_loss_turns_nan_is_recorded_as_diverged_and_the_next_run_still_trains(tmp_path):
    sys.path.insert(0, str(TESTS))  # tiny_poison imports the test hooks
    result = run_prior_experiment(PriorOptions(config=str(TESTS / "configs" / "tiny_poison.py"), work_dir=tmp_path,
                                               max_iters=4, losses=["CE", "FL"], priors=[0.5]))
    assert [run.status for run in result.runs] == ["diverged", "diverged"]  # both poisoned before iteration 3
    ce = result.runs[0]
    assert ce.diverged_at == 3 and ce.verdict == "diverged at iteration 3"
    assert [row["iteration"] for row in ce.curve] == [1, 2] and ce.collapsed is None
    assert json.loads((tmp_path / "CE_pi0.5" / "prior_run.json").read_text())["diverged_at"] == 3


def test_collapse_is_ap_zero_or_positives_below_the_score_threshold():
    def run(ap, probs):
        return PriorRun("CE", 0.5, 0.0, Path("."), status="finished", metrics={"AP": ap}, score_thr=0.05,
                        curve=[{"iteration": i + 1, "pos_prob": p} for i, p in enumerate(probs)])

    assert run(0.3, [0.5] * 10 + [0.2] * 10).collapsed is False
    assert run(0.0, [0.5] * 20).collapsed is True
    assert run(0.3, [0.5] * 18 + [0.01] * 2).collapsed is True  # the last tenth: 0.01 < 0.05
    assert run(0.3, [0.5] * 18 + [0.01] * 2).verdict == "collapsed to background"


@pytest.mark.parametrize("losses, priors, message", [(["CE"], [0.0], "strictly between 0 and 1"),
                                                     (["CE", "CE"], [0.5], "listed twice"),
                                                     (["OHEM-b128"], [0.5], "changes the head")])
def test_bad_settings_are_refused_before_anything_trains(tiny_config, tmp_path, losses, priors, message):
    with pytest.raises(ConfigError, match=message):
        run_prior_experiment(PriorOptions(config=tiny_config, work_dir=tmp_path, losses=losses, priors=priors))
    assert not any(tmp_path.iterdir())
