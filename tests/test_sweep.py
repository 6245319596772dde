"""fltool sweep: grid parsing, one training per (point, seed), a table equal to the runs' metrics.json files,
resuming after a kill, --point/--list-points/--report-only, and a changed grid refused.

Most tests replace ``fltool.engine.train.train`` by a fake that writes a metrics.json in a second; one test trains
for real on the tiny config (2 iterations per run) and kills the sweep with SIGINT in its second run.
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
import shlex
import signal
import statistics
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fltool.cli.main import app
from fltool.engine import sweep as sw
from fltool.engine.train import TrainResult
from fltool.errors import ConfigError, Interrupted, TrainingError
from fltool.fileio import json_digest

runner = CliRunner()
LOSS = "model.bbox_head.loss_cls"


# -- helpers -----------------------------------------------------------------------------------------------------
def _stable(options: dict) -> dict:
    return {k: v for k, v in options.items() if k != "visualizer.name"}


class FakeTrain:
    """Stands in for fltool.engine.train.train: writes metrics.json (numbers that differ per point and seed) and
    records what it was given; ``interrupt_on=k`` raises Interrupted (signal 15) in the k-th call after leaving a
    checkpoint, as the real train does when SIGTERM arrives."""

    def __init__(self, interrupt_on: int | None = None, fail_on: int | None = None) -> None:
        self.calls: list = []
        self.interrupt_on, self.fail_on = interrupt_on, fail_on

    def __call__(self, opts, progress=None):
        self.calls.append(opts)
        work_dir = Path(opts.work_dir)
        work_dir.mkdir(parents=True, exist_ok=True)
        if len(self.calls) == self.interrupt_on:
            (work_dir / "iter_1.pth").write_bytes(b"x")
            (work_dir / "last_checkpoint").write_text(str(work_dir / "iter_1.pth"))
            raise Interrupted(f"training stopped by signal 15 after iteration 1; checkpoint saved: {work_dir}", 15,
                              "continue with: fltool train ... --resume auto")
        if len(self.calls) == self.fail_on:
            raise TrainingError("loss is NaN at iteration 1", "lower the learning rate")
        digest = hashlib.sha1(json.dumps([_stable(opts.cfg_options), opts.seed], sort_keys=True).encode()).digest()
        ap = round(digest[0] / 1000, 4)
        bbox = {"AP": ap, "AP50": round(ap + digest[1] / 1000, 4), "AP75": round(ap / 2, 4),
                "APs": round(digest[2] / 1000, 4), "APm": 0.5, "APl": None}
        metrics_file = work_dir / "metrics.json"
        metrics_file.write_text(json.dumps({"config": opts.config, "bbox": bbox, "iteration": 2}))
        return TrainResult(work_dir, dict(bbox), metrics_file, work_dir / "iter_2.pth", 2, 0.1)


@pytest.fixture()
def fake_train(monkeypatch):
    fake = FakeTrain()
    monkeypatch.setattr("fltool.engine.train.train", fake)
    return fake


def _sweep(config, work_dir, *args):
    return runner.invoke(app, ["sweep", config, "--work-dir", str(work_dir), *args])


def _one_line_error(stderr: str) -> str:
    lines = [ln for ln in stderr.strip().splitlines() if ln.startswith("fltool: error:")]
    assert len(lines) == 1, stderr[-2000:]
    return lines[0]


def _csv_rows(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _number(text: str):
    return None if text == "n/a" else float(text)


# -- grid parsing --------------------------------------------------------------------------------------------------
def test_loss_alias_and_mmengine_values_per_element():
    axis = sw.parse_axis("loss.gamma=0,0.5, 2 ,None")
    assert axis.target == f"{LOSS}.gamma"
    assert axis.values == (0, 0.5, 2, None) and isinstance(axis.values[0], int)
    assert axis.labels == ("0", "0.5", "2", "None")
    nested = sw.parse_axis("model.bbox_head.anchor_generator.ratios=[0.5,1.0],[1.0]")
    assert nested.target == "model.bbox_head.anchor_generator.ratios" and nested.values == ([0.5, 1.0], [1.0])
    with pytest.raises(ConfigError, match="not KEY=V1,V2"):
        sw.parse_axis("loss.gamma")
    with pytest.raises(ConfigError, match="more than once"):
        sw.parse_axis("loss.gamma=1,1")


def test_loss_presets_are_the_papers_losses():
    assert sw.loss_preset("CE")[1] == dict(type="SigmoidFocalLoss", use_sigmoid=True, gamma=0.0, alpha=None,
                                           loss_weight=1.0)
    assert sw.loss_preset("CE-a0.75") == ("CE-a0.75", dict(type="SigmoidFocalLoss", use_sigmoid=True, gamma=0.0,
                                                           alpha=0.75, loss_weight=1.0))
    assert sw.loss_preset("FL")[1]["gamma"] == 2.0 and sw.loss_preset("FL")[1]["alpha"] == 0.25
    star = sw.loss_preset("FL*")[1]
    assert (star["type"], star["gamma"], star["beta"], star["alpha"]) == ("SigmoidFocalLossStar", 2.0, 1.0, 0.25)
    name, g4 = sw.loss_preset("flstar-g4-b0")  # shell-friendly spelling, any case
    assert name == "FL*-g4-b0" and (g4["gamma"], g4["beta"], g4["alpha"]) == (4.0, 0.0, 0.25)
    assert sw.loss_preset("FL-g0.5-a0.5")[1] == dict(type="SigmoidFocalLoss", use_sigmoid=True, gamma=0.5,
                                                          alpha=0.5, loss_weight=1.0)
    for bad, words in [("XL", "unknown loss preset 'XL'"), ("CE-g1", "CE takes no -g"), ("FL*-g0", "gamma > 0"),
                       ("CE-a1.5", "alpha must be"), ("FL-a0.2-a0.3", "twice")]:
        with pytest.raises(ConfigError, match=words.replace("*", r"\*")):
            sw.loss_preset(bad)


def test_grid_is_the_cartesian_product_in_order_with_stable_readable_ids(tiny_config):
    grid = sw.build_grid(tiny_config, ["loss=CE,FL*", "loss.gamma=1,3"])
    ids = [p.id for p in grid.points]
    assert ids == ["loss=CE_loss.gamma=1", "loss=CE_loss.gamma=3", "loss=FLstar_loss.gamma=1",
                   "loss=FLstar_loss.gamma=3"]
    assert [p.index for p in grid.points] == [0, 1, 2, 3]
    assert grid.points[2].settings == {"loss": "FL*", "loss.gamma": 1}
    # the preset replaces the whole loss dict (no beta left over, alpha None for CE); loss.gamma overrides its field
    assert grid.points[1].cfg_options == {LOSS: dict(_delete_=True, type="SigmoidFocalLoss", use_sigmoid=True,
                                                     gamma=3, alpha=None, loss_weight=1.0)}
    assert grid.points[2].cfg_options[LOSS]["type"] == "SigmoidFocalLossStar"
    assert grid.points[2].cfg_options[LOSS]["gamma"] == 1 and grid.points[2].cfg_options[LOSS]["beta"] == 1.0
    assert [p.id for p in sw.build_grid(tiny_config, ["loss=CE,FL*", "loss.gamma=1,3"]).points] == ids
    plain = sw.build_grid(tiny_config, ["loss.gamma=0,2", "loss.alpha=0.25,None"])
    assert [p.cfg_options for p in plain.points][1] == {f"{LOSS}.gamma": 0, f"{LOSS}.alpha": None}
    assert len(sw.build_grid(tiny_config, []).points) == 1  # no axis: the config itself, one point


def test_unknown_or_clashing_keys_are_config_errors_naming_the_key(tiny_config, tmp_path):
    with pytest.raises(ConfigError) as typo:
        sw.build_grid(tiny_config, ["loss.gama=1,2"])
    assert typo.value.one_line().startswith("--set loss.gama: unknown config key 'model.bbox_head.loss_cls.gama'")
    assert typo.value.hint == "did you mean 'model.bbox_head.loss_cls.gamma'?"
    with pytest.raises(ConfigError, match=r"--set model\.bbox_head\.nope"):
        sw.build_grid(tiny_config, ["model.bbox_head.nope=1"])
    with pytest.raises(ConfigError, match="loss preset FL .* has no argument 'beta'"):
        sw.build_grid(tiny_config, ["loss=FL,FL*", "loss.beta=0,1"])
    with pytest.raises(ConfigError, match="gamma must be >= 0"):
        sw.build_grid(tiny_config, ["loss.gamma=-1,2"])
    with pytest.raises(ConfigError, match="both set"):
        sw.build_grid(tiny_config, ["loss.gamma=1,2"], [f"{LOSS}.gamma=3"])
    result = _sweep(tiny_config, tmp_path / "s", "--set", "loss.gama=1,2")
    assert result.exit_code == 1 and "loss.gama" in _one_line_error(result.stderr)
    assert not (tmp_path / "s").exists()  # refused before anything is written


def test_listed_train_command_builds_the_same_config_as_the_sweeps_run(tiny_config):
    """The report's per-run commands regenerate its numbers: `fltool train ... --cfg-options` (flat keys, since
    MMEngine cannot parse a dict) yields the loss the sweep's run trained with."""
    from fltool.engine.config import load_config

    grid = sw.build_grid(tiny_config, ["loss=CE-a0.75,FL*-g4-b0"])
    for point in grid.points:
        command = sw.train_command(sw.SweepOptions(tiny_config, max_iters=2), grid, point, 1, Path("/x"), 1)
        assert " --seed 1 --max-iters 2 --cfg-options " in command
        items = command.split(" --cfg-options ")[1].split()
        from_command = load_config(tiny_config, items).model.bbox_head.loss_cls
        from_sweep = load_config(tiny_config, point.cfg_options).model.bbox_head.loss_cls
        assert dict(from_command) == dict(from_sweep)
    assert dict(from_sweep) == dict(type="SigmoidFocalLossStar", use_sigmoid=True, gamma=4.0, beta=0.0, alpha=0.25,
                                    loss_weight=1.0)


# -- running, the table, resuming (fake training) --------------------------------------------------------------------
def test_each_point_and_seed_trains_once_and_the_table_equals_the_metrics_files(tiny_config, tmp_path, fake_train):
    out = tmp_path / "sweep"
    result = _sweep(tiny_config, out, "--set", "loss.gamma=0,2", "--seeds", "0,1", "--max-iters", "2")
    assert result.exit_code == 0, result.output
    assert sorted((str(o.work_dir.relative_to(out)), o.seed, o.max_iters) for o in fake_train.calls) == [
        ("loss.gamma=0/seed0", 0, 2), ("loss.gamma=0/seed1", 1, 2), ("loss.gamma=2/seed0", 0, 2),
        ("loss.gamma=2/seed1", 1, 2)]
    assert {_stable(o.cfg_options)[f"{LOSS}.gamma"] for o in fake_train.calls} == {0, 2}

    rows = _csv_rows(out / "results.csv")
    data = json.loads((out / "results.json").read_text())
    assert [r["point"] for r in rows] == ["loss.gamma=0", "loss.gamma=2"]
    for row, point in zip(rows, data["points"]):
        files = sorted((out / row["point"]).glob("seed*/metrics.json"))
        assert len(files) == 2 and row["n"] == "2" and point["n"] == 2
        per_seed = [json.loads(f.read_text())["bbox"] for f in files]
        for key in ("AP", "AP50", "AP75", "APs"):
            values = [m[key] for m in per_seed]
            assert _number(row[f"{key}_mean"]) == pytest.approx(statistics.fmean(values))
            assert _number(row[f"{key}_std"]) == pytest.approx(statistics.stdev(values))  # ddof 1
            assert point["mean"][key] == pytest.approx(statistics.fmean(values))
        assert row["APl_mean"] == "n/a" and point["std"]["APl"] is None  # no large objects: no number
        assert [r["metrics_file"] for r in point["runs"]] == [str(f) for f in files]
        assert [r["metrics"]["AP"] for r in point["runs"]] == [m["AP"] for m in per_seed]
        assert point["runs"][1]["train_command"].startswith("fltool train ")
        assert f"--work-dir {out.resolve()}/{row['point']}/seed1 --seed 1 --max-iters 2" in \
               point["runs"][1]["train_command"]
    assert data["report_command"].endswith("--report-only")
    assert (out / "heatmap.png").stat().st_size > 1000
    assert (out / "heatmap.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table_rows = [ln for ln in result.stdout.splitlines() if ln.startswith("│")]
    assert [ln.split("│")[2].strip() for ln in table_rows] == ["0", "2"]  # the loss.gamma column
    assert "2/2" in table_rows[0] and "regenerate this table: fltool sweep" in result.stdout

    # again: nothing retrained, and --report-only rebuilds the same table
    before = (out / "results.csv").read_bytes()
    again = _sweep(tiny_config, out, "--set", "loss.gamma=0,2", "--seeds", "0,1", "--max-iters", "2")
    assert again.exit_code == 0 and len(fake_train.calls) == 4
    assert "skipped 4 finished runs" in again.stderr
    (out / "results.csv").unlink()
    report = runner.invoke(app, shlex.split(data["report_command"])[1:])
    assert report.exit_code == 0, report.output
    assert (out / "results.csv").read_bytes() == before and len(fake_train.calls) == 4
    short = _sweep(tiny_config, out, "--report-only")  # axes, seeds and --max-iters come from sweep.json
    assert short.exit_code == 0 and (out / "results.csv").read_bytes() == before


def test_a_sweep_stopped_by_a_signal_exits_with_it_and_the_same_command_continues(tiny_config, tmp_path,
                                                                                  monkeypatch):
    out = tmp_path / "sweep"
    args = ["--set", "loss=CE,FL", "--set", "loss.alpha=0.25,0.75", "--max-iters", "2"]
    first = FakeTrain(interrupt_on=2)
    monkeypatch.setattr("fltool.engine.train.train", first)
    result = _sweep(tiny_config, out, *args)
    assert result.exit_code == 143  # 128 + SIGTERM, like fltool train
    line = _one_line_error(result.stderr)
    assert "sweep stopped in run 2/4" in line and "continue with: fltool sweep" in line
    assert (out / "loss=CE_loss.alpha=0.25/seed0/metrics.json").is_file()

    second = FakeTrain()
    monkeypatch.setattr("fltool.engine.train.train", second)
    result = _sweep(tiny_config, out, *args)
    assert result.exit_code == 0, result.output
    assert "skipped 1 finished run" in result.stderr
    done = [(str(o.work_dir.relative_to(out)), o.resume) for o in second.calls]
    assert done == [("loss=CE_loss.alpha=0.75/seed0", "auto"),  # the interrupted run resumes from its checkpoint
                    ("loss=FL_loss.alpha=0.25/seed0", None), ("loss=FL_loss.alpha=0.75/seed0", None)]
    rows = _csv_rows(out / "results.csv")
    assert [r["n"] for r in rows] == ["1"] * 4 and [r["loss.alpha"] for r in rows] == ["0.25", "0.75"] * 2


def test_point_runs_only_that_point_and_list_points_numbers_them(tiny_config, tmp_path, fake_train):
    out = tmp_path / "sweep"
    args = ["--set", "loss.gamma=0,1,2", "--seeds", "0,1"]
    listing = _sweep(tiny_config, out, *args, "--list-points")
    assert listing.exit_code == 0 and "3 points x 2 seeds = 6 runs" in listing.stdout
    assert "loss.gamma=1" in listing.stdout and not fake_train.calls
    result = _sweep(tiny_config, out, *args, "--point", "1")
    assert result.exit_code == 0, result.output
    assert [(o.work_dir.parent.name, o.seed) for o in fake_train.calls] == [("loss.gamma=1", 0), ("loss.gamma=1", 1)]
    assert not (out / "results.csv").exists()  # a single array task leaves the report to --report-only
    assert "--report-only" in result.stderr
    report = _sweep(tiny_config, out, *args, "--report-only")
    assert [r["n"] for r in _csv_rows(out / "results.csv")] == ["0", "2", "0"], report.output
    bad = _sweep(tiny_config, out, *args, "--point", "3")
    assert bad.exit_code == 1 and "--point 3 is not in the grid" in _one_line_error(bad.stderr)


def test_a_changed_grid_in_the_same_folder_is_refused_unless_it_only_adds_points(tiny_config, tmp_path, fake_train):
    out = tmp_path / "sweep"
    assert _sweep(tiny_config, out, "--set", "loss.gamma=0,2").exit_code == 0
    changed = _sweep(tiny_config, out, "--set", "loss.gamma=0,1")
    assert changed.exit_code == 1
    assert "made by another grid: its point 'loss.gamma=2'" in _one_line_error(changed.stderr)
    other_length = _sweep(tiny_config, out, "--set", "loss.gamma=0,2", "--max-iters", "3")
    assert other_length.exit_code == 1 and "max_iters" in _one_line_error(other_length.stderr)
    assert len(fake_train.calls) == 2
    added = _sweep(tiny_config, out, "--set", "loss.gamma=0,1,2")
    assert added.exit_code == 0, added.output
    assert [o.work_dir.parent.name for o in fake_train.calls[2:]] == ["loss.gamma=1"]
    assert json.loads((out / "sweep.json").read_text())["axes"] == ["loss.gamma=0,1,2"]


def _copy_of_configs(root: Path) -> Path:
    """The project's configs and the tiny test config, as a checkout at ``root`` has them."""
    import shutil

    project = Path(__file__).resolve().parents[1]
    shutil.copytree(project / "configs", root / "configs")
    shutil.copytree(project / "tests" / "configs", root / "tests" / "configs")
    return root / "tests" / "configs" / "tiny_synth.py"


def test_a_moved_checkout_resumes_its_sweep_and_an_edited_base_config_is_refused(tmp_path, fake_train):
    out, args = tmp_path / "sweep", ["--set", "loss.gamma=0,2"]
    first = _copy_of_configs(tmp_path / "a")
    assert _sweep(str(first), out, *args).exit_code == 0 and len(fake_train.calls) == 2
    moved = _copy_of_configs(tmp_path / "b")  # the same files at another path
    again = _sweep(str(moved), out, *args)
    assert again.exit_code == 0, again.output
    assert len(fake_train.calls) == 2 and "skipped 2 finished runs" in again.stderr

    base = tmp_path / "b" / "configs" / "_base_" / "retinanet_fltool.py"  # two levels of _base_ below the config
    base.write_text(base.read_text() + "\noptim_wrapper = dict(optimizer=dict(lr=0.5))\n")
    edited = _sweep(str(moved), out, *args)
    assert edited.exit_code == 1 and len(fake_train.calls) == 2
    line = _one_line_error(edited.stderr)
    assert "tiny_synth.py" in line and "has changed since" in line and "another --work-dir" in line


def test_runs_recorded_before_config_digests_still_count_as_finished(tiny_config, tmp_path, fake_train):
    out, args = tmp_path / "sweep", ["--set", "loss.gamma=0,2"]
    assert _sweep(tiny_config, out, *args).exit_code == 0 and len(fake_train.calls) == 2
    old_path = "/elsewhere/tests/configs/tiny_synth.py"  # what older versions recorded: the absolute path
    record = json.loads((out / "sweep.json").read_text())
    record["identity"].pop("config_digest")
    record["identity"]["config"] = record["config"] = old_path
    (out / "sweep.json").write_text(json.dumps(record))
    for run_file in out.glob("*/seed0/run.json"):
        run = json.loads(run_file.read_text())
        settings = {k: v for k, v in run.items() if k not in ("settings_hash", "train_command", "config_digest")}
        settings["config"] = old_path
        run_file.write_text(json.dumps({**settings, "settings_hash": json_digest(settings)}))
    again = _sweep(tiny_config, out, *args)
    assert again.exit_code == 0, again.output
    assert len(fake_train.calls) == 2 and "skipped 2 finished runs" in again.stderr
    assert "config_digest" in json.loads((out / "sweep.json").read_text())["identity"]  # now recorded


def test_a_failed_run_is_reported_and_the_other_runs_still_train(tiny_config, tmp_path, monkeypatch):
    fake = FakeTrain(fail_on=1)
    monkeypatch.setattr("fltool.engine.train.train", fake)
    out = tmp_path / "sweep"
    result = _sweep(tiny_config, out, "--set", "loss.gamma=0,2")
    assert result.exit_code == 1 and len(fake.calls) == 2
    assert "1 run(s) of the sweep failed: point 0 (loss.gamma=0) seed 0" in _one_line_error(result.stderr)
    runs = json.loads((out / "results.json").read_text())["points"][0]["runs"]
    assert runs[0]["status"].startswith("failed: loss is NaN")
    assert [r["n"] for r in _csv_rows(out / "results.csv")] == ["0", "1"]


def test_a_run_stopped_after_its_last_checkpoint_is_evaluated_when_the_sweep_resumes(tiny_config, tmp_path):
    """Stopped between its last checkpoint and its evaluation (no metrics.json), a run is resumed: fltool train
    has nothing left to train and evaluates that checkpoint, so the sweep's table has its AP."""
    out = tmp_path / "sweep"
    assert _sweep(tiny_config, out, "--set", "loss.gamma=2").exit_code == 0
    run = out / "loss.gamma=2" / "seed0"
    first = json.loads((run / "metrics.json").read_text())["bbox"]["AP"]
    (run / "metrics.json").unlink()
    again = _sweep(tiny_config, out, "--set", "loss.gamma=2")
    assert again.exit_code == 0, again.output
    assert "(resuming)" in again.stderr and "run 1/1 done" in again.stderr
    assert json.loads((run / "metrics.json").read_text())["bbox"]["AP"] == pytest.approx(first, abs=1e-6)
    assert float(_csv_rows(out / "results.csv")[0]["AP_mean"]) == pytest.approx(first, abs=1e-4)


def test_heatmap_has_one_panel_per_value_of_a_third_axis(tmp_path):
    from fltool.engine.sweep.plot import plot_sweep

    labels = [["0", "2"], ["0.25", "0.75"], ["a", "b"]]
    cells = {(g, a, x): (0.1 * i, 0.01, 2) for i, (g, a, x) in
             enumerate((g, a, x) for g in labels[0] for a in labels[1] for x in labels[2])}
    plot = plot_sweep(["loss.gamma", "loss.alpha", "x"], labels, cells, tmp_path / "h.png")
    assert plot.path.stat().st_size > 1000 and plot.notes == []
    many = plot_sweep(["g", "a", "x"], [["0"], ["1"], [str(i) for i in range(20)]],
                      {("0", "1", str(i)): (0.1, None, 1) for i in range(20)}, tmp_path / "m.png")
    assert "12 of the 20 combinations" in many.notes[0]


# -- real training -----------------------------------------------------------------------------------------------
def test_real_sweep_killed_in_its_second_run_resumes_it_and_never_retrains_finished_runs(tiny_config, tmp_path):
    """Trains for real (tiny config, 2 iterations): SIGINT during run 2 stops the sweep with 130 after a checkpoint;
    the same command resumes run 2 at iteration 2 only, and a third call trains nothing."""
    out = tmp_path / "sweep"
    opts = sw.SweepOptions(config=tiny_config, axes=["loss=CE,FL"], work_dir=out, max_iters=2)
    runs_started = []

    def kill_in_second_run(event):
        if event.kind == "sweep_run":
            runs_started.append(event.values["point"])
        if event.kind == "train_iter" and len(runs_started) == 2 and event.iteration == 1:
            os.kill(os.getpid(), signal.SIGINT)  # fltool's handler turns it into a clean stop after this iteration

    with pytest.raises(Interrupted) as stopped:
        sw.run_sweep(opts, kill_in_second_run)
    assert stopped.value.exit_code == 130 and "continue with: fltool sweep" in stopped.value.hint
    first_ckpt = out / "loss=CE/seed0/iter_2.pth"
    first_mtime = first_ckpt.stat().st_mtime_ns
    assert (out / "loss=FL/seed0/iter_1.pth").is_file() and not (out / "loss=FL/seed0/metrics.json").exists()

    iterations = []
    result = sw.run_sweep(opts, lambda e: iterations.append(e.iteration) if e.kind == "train_iter" else None)
    assert (result.trained, result.resumed, result.skipped) == (1, 1, 1)
    assert iterations == [2]  # run 2 continued from its checkpoint; run 1 was not touched
    assert first_ckpt.stat().st_mtime_ns == first_mtime

    again = _sweep(tiny_config, out, "--set", "loss=CE,FL", "--max-iters", "2")
    assert again.exit_code == 0, again.output
    assert "skipped 2 finished runs" in again.stderr and "trained 0 run(s)" in again.stdout
    assert first_ckpt.stat().st_mtime_ns == first_mtime
    for row in _csv_rows(out / "results.csv"):
        bbox = json.loads((out / row["point"] / "seed0" / "metrics.json").read_text())["bbox"]
        assert row["n"] == "1" and row["AP_std"] == "n/a"
        for key in ("AP", "AP50", "AP75", "APs"):
            assert _number(row[f"{key}_mean"]) == pytest.approx(bbox[key])
