"""fltool train / fltool eval end to end, on the tiny config (seconds per run)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import torch
from typer.testing import CliRunner

from fltool.cli.main import app
from fltool.engine.evaluate import EvalOptions, evaluate
from fltool.engine.train import TrainOptions, train

runner = CliRunner()


def test_train_writes_checkpoints_resolved_config_scalars_and_metrics(tiny_run):
    wd = tiny_run.work_dir
    assert (wd / "iter_2.pth").is_file() and (wd / "iter_4.pth").is_file()
    assert (wd / "last_checkpoint").read_text().strip() == str(wd / "iter_4.pth")
    assert (wd / "tiny_synth.py").is_file()  # the resolved config MMEngine dumps
    metrics = json.loads((wd / "metrics.json").read_text())
    assert metrics["iteration"] == 4 and metrics["checkpoint"] == str(wd / "iter_4.pth")
    assert set(metrics["bbox"]) == {"AP", "AP50", "AP75", "APs", "APm", "APl"}
    assert metrics["bbox"]["AP50"] == tiny_run.metrics["AP50"]
    # where it ran: the record of a number names its CPU and instruction set
    assert metrics["machine"]["aten_isa"] == torch.backends.cpu.get_cpu_capability() and metrics["machine"]["cpu"]
    scalars = [json.loads(line) for line in next(wd.glob("*/vis_data/scalars.json")).read_text().splitlines()]
    train_rows = [row for row in scalars if "loss_cls" in row]
    assert [row["iter"] for row in train_rows] == [1, 2, 3, 4]
    assert all(row["num_pos"] > 0 for row in train_rows)  # the head reports positives per image


def test_checkpoints_load_with_plain_weights_only(tiny_run):
    ckpt = torch.load(tiny_run.work_dir / "iter_4.pth", weights_only=True, map_location="cpu")
    assert ckpt["meta"]["iter"] == 4
    assert "state_dict" in ckpt and "optimizer" in ckpt


#: What the learning run must reach on its 8 validation images (measured: AP50 0.74 at 300 iterations).
LEARN_AP50_THRESHOLD = 0.5


def _untrained_checkpoint(config: str, path):
    """The model as its config initialises it (the prior on the classifier), saved like a trained checkpoint."""
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules

    import fltool_plugins  # noqa: F401
    from fltool.engine.config import load_config

    register_all_modules()
    cfg = load_config(config)
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    torch.save({"state_dict": model.state_dict(), "meta": {"iter": 0}}, path)
    return path


def test_a_short_run_learns_its_loss_falls_and_ap50_beats_the_untrained_model(learned_run, learn_config, tmp_path):
    """The tiny 4-iteration run scores AP 0.0 (noise); this one must show that training works at all."""
    scalars = [json.loads(line) for line in next(learned_run.work_dir.glob("*/vis_data/scalars.json")).read_text()
               .splitlines()]
    loss_cls = [row["loss_cls"] for row in scalars if "loss_cls" in row]
    assert len(loss_cls) >= 20
    first, last = sum(loss_cls[:3]) / 3, sum(loss_cls[-3:]) / 3
    assert last < 0.25 * first, (first, last)
    assert learned_run.metrics["AP50"] >= LEARN_AP50_THRESHOLD, learned_run.metrics
    # The untrained model gets its best chance: every score counts (at the config's 0.05 it detects nothing).
    untrained = evaluate(EvalOptions(config=learn_config, checkpoint=_untrained_checkpoint(learn_config,
                                                                                          tmp_path / "init.pth"),
                                     cfg_options={"model.test_cfg.score_thr": 0.0}, work_dir=tmp_path / "wd"))
    assert untrained.metrics["AP50"] is not None and not untrained.notes
    assert learned_run.metrics["AP50"] > untrained.metrics["AP50"] + 0.3, (learned_run.metrics, untrained.metrics)


def test_a_model_that_detects_nothing_scores_ap_0_with_a_note_instead_of_empty_metrics(learn_config, tmp_path):
    """MMDetection logs 'The testing results of the whole dataset is empty' and returns no metrics at all."""
    ckpt = _untrained_checkpoint(learn_config, tmp_path / "init.pth")  # every score ~ the prior 0.01 < 0.05
    result = runner.invoke(app, ["eval", learn_config, str(ckpt), "--work-dir", str(tmp_path / "wd"),
                                 "--out", str(tmp_path / "m.json")])
    assert result.exit_code == 0, result.output
    assert "no detections" in result.stderr and "AP is 0" in result.stderr
    bbox = json.loads((tmp_path / "m.json").read_text())["bbox"]
    assert bbox == {"AP": 0.0, "AP50": 0.0, "AP75": 0.0, "APs": None, "APm": 0.0, "APl": None}  # medium boxes only


def test_eval_reports_the_same_metrics_as_trainings_last_evaluation(learned_run, learn_config):
    result = evaluate(EvalOptions(config=learn_config, checkpoint=learned_run.checkpoint,
                                  work_dir=learned_run.work_dir / "eval"))
    assert result.metrics == {k: v for k, v in learned_run.metrics.items() if k != "per_class_AP"}
    assert result.metrics["AP50"] >= LEARN_AP50_THRESHOLD  # the equality compares a model that detects something
    assert result.num_images == 8


def test_eval_cli_writes_json_with_per_class_ap(tiny_run, tiny_config, tmp_path):
    out = tmp_path / "m.json"
    result = runner.invoke(app, ["eval", tiny_config, str(tiny_run.work_dir / "iter_4.pth"), "--out", str(out),
                                 "--per-class", "--work-dir", str(tmp_path / "wd")])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert data["num_images"] == 8 and "AP" in data["bbox"]
    assert set(data["per_class_AP"]) <= {"circle", "square", "triangle", "cross"} and data["per_class_AP"]
    assert "AP50" in result.stdout


def test_eval_on_a_users_own_coco_folder(tiny_run, tiny_config, tmp_path):
    """--ann-file/--img-dir: a COCO folder elsewhere, with only some of the images."""
    from fltool.data.synth import SynthSpec, default_dataset

    ds = default_dataset(SynthSpec(image_size=160, num_train=16, num_val=8, objects_per_image=(2, 5),
                                   size_mix=(0.5, 0.5, 0.0), noise_std=0.0))
    data = json.loads(ds.val_json.read_text())
    keep = data["images"][:3]
    own = tmp_path / "mine"
    (own / "pics").mkdir(parents=True)
    for img in keep:
        shutil.copy(ds.img_dir / img["file_name"], own / "pics" / img["file_name"])
    ids = {img["id"] for img in keep}
    data["images"] = keep
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] in ids]
    (own / "ann.json").write_text(json.dumps(data))
    result = evaluate(EvalOptions(config=tiny_config, checkpoint=tiny_run.work_dir / "iter_4.pth",
                                  ann_file=own / "ann.json", img_dir=own / "pics", work_dir=tmp_path / "wd"))
    assert result.num_images == 3
    assert result.ann_file == str((own / "ann.json").resolve())
    assert result.metrics["AP50"] is not None


def test_resume_from_a_checkpoint_continues_at_its_iteration_and_matches_the_uninterrupted_run(tiny_run, tiny_config,
                                                                                                 tmp_path):
    wd = tmp_path / "resumed"
    wd.mkdir()
    shutil.copy(tiny_run.work_dir / "iter_2.pth", wd / "iter_2.pth")
    seen = []
    result = train(TrainOptions(config=tiny_config, work_dir=wd, resume=str(wd / "iter_2.pth")),
                   progress=lambda e: seen.append(e.iteration) if e.kind == "train_iter" else None)
    assert seen == [3, 4]
    assert result.iterations == 4
    assert result.trained_iters == 2  # the table's caption says "the last 2 of them now", not 4 in this time
    resumed = torch.load(wd / "iter_4.pth", weights_only=True)
    straight = torch.load(tiny_run.work_dir / "iter_4.pth", weights_only=True)
    assert resumed["param_schedulers"] == straight["param_schedulers"]
    assert resumed["optimizer"]["param_groups"][0]["lr"] == straight["optimizer"]["param_groups"][0]["lr"]
    steps = [s["step"] for s in resumed["optimizer"]["state"].values()]
    assert all(float(s) == 4 for s in steps)
    for key, value in straight["state_dict"].items():
        torch.testing.assert_close(resumed["state_dict"][key], value, rtol=1e-4, atol=1e-6)


def test_resume_of_a_finished_run_keeps_its_metrics_and_says_so(tiny_run, tiny_config, tmp_path):
    """A finished work dir resumed ran 0 iterations and overwrote metrics.json with empty bbox and iteration null."""
    wd = tmp_path / "finished"
    shutil.copytree(tiny_run.work_dir, wd, ignore=shutil.ignore_patterns("eval", "*_show*"))
    # last_checkpoint holds an absolute path: point it at the copy
    (wd / "last_checkpoint").write_text(str(wd / "iter_4.pth"))
    before = json.loads((wd / "metrics.json").read_text())
    before["checkpoint"] = str(wd / "iter_4.pth")
    (wd / "metrics.json").write_text(json.dumps(before))
    result = runner.invoke(app, ["train", tiny_config, "--work-dir", str(wd), "--resume"])
    assert result.exit_code == 0, result.output
    after = json.loads((wd / "metrics.json").read_text())
    assert after == before
    assert after["iteration"] == 4 and after["bbox"]["AP50"] == tiny_run.metrics["AP50"]
    notes = [ln for ln in result.stderr.splitlines() if "nothing left to train" in ln]
    assert len(notes) == 1 and "finished at iteration 4" in notes[0] and "kept unchanged" in notes[0]
    assert f"{tiny_run.metrics['AP']:.3f}" in result.stdout  # the table shows the kept numbers, not n/a
    # and does not claim that this command trained them in its few seconds
    assert "4 iterations, trained before (none now;" in result.stdout
    assert "4 iterations in" not in result.stdout


def test_resume_of_a_finished_run_without_metrics_evaluates_its_last_checkpoint(tiny_run, tiny_config, tmp_path):
    """Stopped after the last checkpoint but before its evaluation: resuming evaluates instead of writing nothing."""
    wd = tmp_path / "unevaluated"
    wd.mkdir()
    shutil.copy(tiny_run.work_dir / "iter_4.pth", wd / "iter_4.pth")
    (wd / "last_checkpoint").write_text(str(wd / "iter_4.pth"))
    result = train(TrainOptions(config=tiny_config, work_dir=wd, resume="auto"))
    assert any("evaluated its last checkpoint" in n for n in result.notes), result.notes
    written = json.loads((wd / "metrics.json").read_text())
    assert written["iteration"] == 4
    assert written["bbox"] == {k: v for k, v in tiny_run.metrics.items() if k != "per_class_AP"}


def test_train_amp_without_a_gpu_is_a_clear_error(tiny_config, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    result = runner.invoke(app, ["train", tiny_config, "--amp", "--work-dir", str(tmp_path)])
    assert result.exit_code == 1
    assert "--amp needs a CUDA GPU" in result.stderr


def test_two_process_gloo_training_with_torchrun(tiny_config, tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "fltool",
           "train", tiny_config, "--launcher", "pytorch", "--work-dir", str(tmp_path / "ddp"), "--max-iters", "2"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    assert metrics["iteration"] == 2
    log = next((tmp_path / "ddp").glob("*/*.log")).read_text()
    assert "Distributed launcher: pytorch" in log and "Distributed training: True" in log
    assert "backend: gloo" in log or "'backend': 'gloo'" in log


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _two_ranks(args: list, env_extra: dict) -> list:
    """Start rank 0 and rank 1 of a gloo process group as torchrun would (its environment variables)."""
    port = str(_free_port())
    tests_dir = os.path.dirname(os.path.abspath(__file__))
    procs = []
    for rank in (0, 1):
        env = dict(os.environ, OMP_NUM_THREADS="1", RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2",
                   LOCAL_WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=port,
                   PYTHONPATH=tests_dir + os.pathsep + os.environ.get("PYTHONPATH", ""), **env_extra)
        procs.append(subprocess.Popen([sys.executable, "-m", "fltool", "train", *args, "--launcher", "pytorch"],
                                      env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    return [(p.wait(timeout=300), *p.communicate()) for p in procs]


def test_sigterm_under_ddp_stops_both_ranks_at_one_iteration_with_one_checkpoint_and_resume_finishes(tmp_path):
    """SIGTERM reaches only rank 1 (as when a scheduler kills one task first): the ranks agree to stop after the
    same iteration, rank 0 writes one checkpoint, both exit 143; --resume under DDP then finishes the run."""
    signal_cfg = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs", "tiny_signal.py")
    wd = tmp_path / "ddp"
    stop = ["--cfg-options", "custom_hooks.1.signum=15", "+custom_hooks.1.ranks=[1]"]
    results = _two_ranks([signal_cfg, "--work-dir", str(wd), *stop], {})
    codes = [code for code, _, _ in results]
    assert codes == [143, 143], [err[-1500:] for _, _, err in results]
    for _, _, err in results:
        line = [ln for ln in err.splitlines() if ln.startswith("fltool: error:")]
        assert len(line) == 1 and "stopped by signal 15 after iteration 3" in line[0], err[-1500:]
    assert sorted(p.name for p in wd.glob("*.pth")) == ["iter_3.pth"]
    assert (wd / "last_checkpoint").read_text().strip() == str(wd / "iter_3.pth")
    assert torch.load(wd / "iter_3.pth", weights_only=True)["meta"]["iter"] == 3

    resumed = _two_ranks([signal_cfg, "--work-dir", str(wd), "--resume", "--cfg-options",
                          "custom_hooks.1.at_iter=100"], {})
    assert [code for code, _, _ in resumed] == [0, 0], [err[-1500:] for _, _, err in resumed]
    assert json.loads((wd / "metrics.json").read_text())["iteration"] == 6
    assert "iter 4/6" in resumed[0][2] and "iter 3/6" not in resumed[0][2]  # continued, did not restart


def test_eval_show_dir_draws_ground_truth_and_predictions(tiny_run, tiny_config, tmp_path):
    from PIL import Image

    show = tmp_path / "show"
    result = evaluate(EvalOptions(config=tiny_config, checkpoint=tiny_run.work_dir / "iter_4.pth", num_images=2,
                                  show_dir=show, score_thr=0.0, work_dir=tmp_path / "wd"))
    drawn = sorted(show.glob("*.png"))
    assert result.show_dir == show and len(drawn) == 2
    with Image.open(drawn[0]) as img:
        assert img.size == (320, 160)  # ground truth and predictions side by side


def test_train_tensorboard_flag_writes_event_files_and_plain_progress_has_eta(tiny_config, tmp_path):
    result = runner.invoke(app, ["train", tiny_config, "--work-dir", str(tmp_path), "--max-iters", "2",
                                 "--tensorboard"])
    assert result.exit_code == 0, result.output
    assert list(tmp_path.glob("*/vis_data/events.out.tfevents.*"))
    iter_lines = [ln for ln in result.stderr.splitlines() if "iter 2/2" in ln]
    assert iter_lines and "eta 0:00:00" in iter_lines[0] and "pos/img" in iter_lines[0]


def test_a_distributed_process_leaving_on_an_error_exits_with_its_code_before_teardown(tmp_path):
    """compat item 6: with a live gloo group, the error path ends the process at once with the promised code (and
    what was printed flushed), instead of a teardown that can abort with -6; without a group it is a no-op."""
    script = (
        "import sys, torch.distributed as dist\n"
        "from fltool.engine.compat import exit_distributed\n"
        "exit_distributed(5)\n"  # no group yet: returns
        "print('no group: returned', flush=True)\n"
        f"dist.init_process_group('gloo', init_method='file://{tmp_path / 'store'}', rank=0, world_size=1)\n"
        "print('unflushed line', end='')\n"
        "exit_distributed(143)\n"
        "print('not reached')\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 143, proc.stderr[-2000:]
    assert proc.stdout == "no group: returned\nunflushed line"


def test_a_distributed_command_that_succeeded_destroys_its_group_and_exits_0_before_teardown(tmp_path):
    """compat item 6, success path: a finished 2-rank run aborted now and then (-6) in teardown, even with its group
    destroyed, since DDP keeps a reference to it; so a command that returns destroys the group, flushes, and exits 0
    at once. One that fails keeps the error path's early exit with its code."""
    def head(store: str) -> str:
        return (
            "import torch.distributed as dist\n"
            "from fltool.cli.common import handle_errors\n"
            "from fltool.errors import FltoolError\n"
            "real_destroy = dist.destroy_process_group\n"
            "def destroy(*args, **kwargs):\n"
            "    real_destroy(*args, **kwargs)\n"
            "    print('group destroyed:', not dist.is_initialized(), end='')\n"
            "dist.destroy_process_group = destroy\n"
            f"dist.init_process_group('gloo', init_method='file://{tmp_path / store}', rank=0, world_size=1)\n"
            "held = dist.group.WORLD\n"  # as the DDP wrapper's reducer holds it
        )
    succeeds = head("store") + "handle_errors(lambda: print('command ran', end=' '))()\nprint('not reached')\n"
    proc = subprocess.run([sys.executable, "-c", succeeds], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout == "command ran group destroyed: True"

    fails = head("store2") + (
        "def fails():\n"
        "    raise FltoolError('bad input', hint='fix it')\n"
        "handle_errors(fails)()\n"
        "print('not reached')\n"
    )
    proc = subprocess.run([sys.executable, "-c", fails], capture_output=True, text=True, timeout=120)
    assert proc.stdout == "", proc.stderr[-2000:]
    assert proc.returncode == 1 and "fltool: error: bad input" in proc.stderr
