"""Training that loses nothing: bad data, NaN losses, interrupted runs, disk faults, untrusted checkpoints, config
mistakes. Each test asserts what MMDetection's defaults get wrong (named in its docstring)."""
from __future__ import annotations

import errno
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from fltool.cli.main import app
from fltool.engine.train import TrainOptions, train
from fltool.errors import DataError, TrainingError

TESTS = Path(__file__).resolve().parent
runner = CliRunner()


def _cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(TESTS) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "fltool", *args], capture_output=True, text=True, env=env,
                          timeout=300, cwd=cwd)


def _one_line_error(stderr: str) -> str:
    lines = [ln for ln in stderr.strip().splitlines() if ln.startswith("fltool: error:")]
    assert len(lines) == 1, stderr[-2000:]
    return lines[0]


# -- bad data ----------------------------------------------------------------------------------------------------
@pytest.fixture()
def broken_copy(tmp_path):
    """A copy of the tiny embedded dataset with one truncated training image."""
    from fltool.data.synth import SynthSpec, default_dataset

    ds = default_dataset(SynthSpec(image_size=160, num_train=16, num_val=8, objects_per_image=(2, 5),
                                   size_mix=(0.5, 0.5, 0.0), noise_std=0.0))
    root = tmp_path / "data"
    shutil.copytree(ds.root, root)
    first = json.loads((root / "train.json").read_text())["images"][0]["file_name"]
    victim = root / "images" / first
    victim.write_bytes(victim.read_bytes()[:300])
    overrides = [f"train_dataloader.dataset.data_root={root}/", f"val_dataloader.dataset.data_root={root}/",
                 f"test_dataloader.dataset.data_root={root}/", f"val_evaluator.ann_file={root}/val.json",
                 f"test_evaluator.ann_file={root}/val.json"]
    return root, victim, overrides


def test_corrupt_image_stops_training_up_front_with_the_data_report(tiny_config, broken_copy, tmp_path):
    """MMDetection decodes a truncated image (OpenCV fills it grey) or crashes mid-run; fltool stops before."""
    root, victim, overrides = broken_copy
    with pytest.raises(DataError) as err:
        train(TrainOptions(config=tiny_config, work_dir=tmp_path / "wd", cfg_options=overrides))
    text = err.value.one_line()
    assert "train data" in text and "1 unreadable image" in text and victim.name in text
    assert "--data-check drop" in text
    assert not list((tmp_path / "wd").glob("*.pth"))


def test_corrupt_image_found_during_training_names_the_file_instead_of_refetching(tiny_config, broken_copy, tmp_path):
    """With the check skipped, the loader raises naming the file (MMDetection retries random images up to 1000x)."""
    root, victim, overrides = broken_copy
    with pytest.raises(DataError) as err:
        train(TrainOptions(config=tiny_config, work_dir=tmp_path / "wd", cfg_options=overrides, data_check="skip",
                           max_iters=8))
    assert str(victim) in err.value.one_line() and "truncated PNG" in err.value.one_line()


def test_drop_bad_data_trains_without_the_bad_records_and_says_how_many(tiny_config, broken_copy, tmp_path):
    root, victim, overrides = broken_copy
    result = train(TrainOptions(config=tiny_config, work_dir=tmp_path / "wd", cfg_options=overrides,
                                data_check="drop", max_iters=2))
    assert result.iterations == 2
    assert any("dropped 1 images" in note for note in result.notes), result.notes
    cleaned = json.loads((tmp_path / "wd" / "data" / "train_checked.json").read_text())
    assert victim.name not in {img["file_name"] for img in cleaned["images"]}
    assert len(cleaned["images"]) == 15


# -- non-finite loss ---------------------------------------------------------------------------------------------
def test_nan_loss_stops_at_that_iteration_and_no_later_checkpoint_becomes_last(tmp_path):
    """MMDetection trains on through NaN (CheckInvalidLossHook looks every 50 iterations) and saves NaN weights."""
    wd = tmp_path / "wd"
    with pytest.raises(TrainingError) as err:
        train(TrainOptions(config=str(TESTS / "configs" / "tiny_poison.py"), work_dir=wd))
    assert "non-finite loss at iteration 3" in err.value.one_line()
    assert sorted(p.name for p in wd.glob("*.pth")) == ["iter_2.pth"]
    assert (wd / "last_checkpoint").read_text().strip() == str(wd / "iter_2.pth")
    state = torch.load(wd / "iter_2.pth", weights_only=True)["state_dict"]
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


def test_nan_loss_through_the_cli_exits_1_with_one_line(tmp_path):
    proc = _cli("train", str(TESTS / "configs" / "tiny_poison.py"), "--work-dir", str(tmp_path / "wd"))
    assert proc.returncode == 1
    assert "non-finite loss at iteration 3" in _one_line_error(proc.stderr)


# -- atomic checkpoints ------------------------------------------------------------------------------------------
def test_disk_full_while_saving_keeps_the_previous_checkpoint_and_resume_auto_works(tiny_config, tmp_path,
                                                                                    monkeypatch):
    """MMEngine deletes the old checkpoint (max_keep_ckpts) before writing the new one, in place: ENOSPC midway
    leaves a truncated file as last_checkpoint and nothing to resume from."""
    from mmengine.fileio.backends import LocalBackend

    real_put = LocalBackend.put
    calls = {"n": 0}

    def failing_put(self, obj, filepath):
        calls["n"] += 1
        if calls["n"] == 2:  # the checkpoint of iteration 4: write half, then the disk is full
            with open(filepath, "wb") as f:
                f.write(obj[: len(obj) // 2])
            raise OSError(errno.ENOSPC, "No space left on device", str(filepath))
        return real_put(self, obj, filepath)

    monkeypatch.setattr(LocalBackend, "put", failing_put)
    wd = tmp_path / "wd"
    opts = ["default_hooks.checkpoint.max_keep_ckpts=1"]
    with pytest.raises(TrainingError, match="No space left on device"):
        train(TrainOptions(config=tiny_config, work_dir=wd, cfg_options=opts))
    assert sorted(p.name for p in wd.iterdir() if p.suffix in (".pth", ".partial")) == ["iter_2.pth"]
    assert (wd / "last_checkpoint").read_text().strip() == str(wd / "iter_2.pth")
    assert torch.load(wd / "iter_2.pth", weights_only=True)["meta"]["iter"] == 2

    monkeypatch.setattr(LocalBackend, "put", real_put)
    seen = []
    result = train(TrainOptions(config=tiny_config, work_dir=wd, cfg_options=opts, resume="auto"),
                   progress=lambda e: seen.append(e.iteration) if e.kind == "train_iter" else None)
    assert seen == [3, 4] and result.iterations == 4
    assert sorted(p.name for p in wd.glob("*.pth")) == ["iter_4.pth"]  # the old one removed only afterwards


# -- signals -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("signum,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_stops_cleanly_with_a_checkpoint_of_the_last_iteration(tmp_path, signum, code):
    """MMEngine dies on SIGINT/SIGTERM without saving: everything since the last interval checkpoint is lost."""
    cfg = str(TESTS / "configs" / "tiny_signal.py")
    proc = _cli("train", cfg, "--work-dir", str(tmp_path / "wd"), "--cfg-options",
                f"custom_hooks.1.signum={int(signum)}")
    assert proc.returncode == code, proc.stderr[-2000:]
    assert "stopped by signal" in _one_line_error(proc.stderr) and "--resume auto" in proc.stderr
    assert (tmp_path / "wd" / "last_checkpoint").read_text().strip().endswith("iter_3.pth")
    assert torch.load(tmp_path / "wd" / "iter_3.pth", weights_only=True)["meta"]["iter"] == 3


def test_resume_after_sigint_equals_the_uninterrupted_run(tmp_path):
    cfg = str(TESTS / "configs" / "tiny_signal.py")
    stopped = _cli("train", cfg, "--work-dir", str(tmp_path / "a"))
    assert stopped.returncode == 130, stopped.stderr[-2000:]
    resumed = _cli("train", cfg, "--work-dir", str(tmp_path / "a"), "--resume", "--cfg-options",
                   "custom_hooks.1.at_iter=100")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    straight = _cli("train", cfg, "--work-dir", str(tmp_path / "b"), "--cfg-options", "custom_hooks.1.at_iter=100")
    assert straight.returncode == 0, straight.stderr[-2000:]

    a = torch.load(tmp_path / "a" / "iter_6.pth", weights_only=True)
    b = torch.load(tmp_path / "b" / "iter_6.pth", weights_only=True)
    assert a["meta"]["iter"] == b["meta"]["iter"] == 6
    assert a["param_schedulers"] == b["param_schedulers"]
    assert a["optimizer"]["param_groups"][0]["lr"] == b["optimizer"]["param_groups"][0]["lr"]
    for key, state in b["optimizer"]["state"].items():
        assert float(a["optimizer"]["state"][key]["step"]) == float(state["step"]) == 6
        torch.testing.assert_close(a["optimizer"]["state"][key]["exp_avg"], state["exp_avg"], rtol=1e-4, atol=1e-7)
    for key, value in b["state_dict"].items():
        torch.testing.assert_close(a["state_dict"][key], value, rtol=1e-4, atol=1e-6)


# -- checkpoint trust --------------------------------------------------------------------------------------------
class _Payload:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _malicious_checkpoint(tiny_run, path: Path, marker: Path) -> Path:
    ckpt = torch.load(tiny_run.work_dir / "iter_4.pth", weights_only=True)
    ckpt["meta"]["note"] = _Payload(str(marker))
    torch.save(ckpt, path)
    return path


def test_malicious_checkpoint_is_refused_by_eval_and_does_not_execute(tiny_run, tiny_config, tmp_path):
    """MMEngine 0.10.7 unpickles any checkpoint it is given (its torch.load predates weights_only)."""
    marker = tmp_path / "pwned"
    evil = _malicious_checkpoint(tiny_run, tmp_path / "evil.pth", marker)
    result = runner.invoke(app, ["eval", tiny_config, str(evil), "--work-dir", str(tmp_path / "wd")])
    assert result.exit_code == 1
    line = result.stderr.strip().splitlines()[-1]
    assert "needs arbitrary unpickling" in line and "system" in line and "--trust-checkpoint" in line
    assert not marker.exists()


def test_malicious_checkpoint_is_refused_by_resume_and_load_from(tiny_run, tiny_config, tmp_path):
    marker = tmp_path / "pwned"
    evil = _malicious_checkpoint(tiny_run, tmp_path / "evil.pth", marker)
    for flag in ("--resume", "--load-from"):
        result = runner.invoke(app, ["train", tiny_config, flag, str(evil), "--work-dir", str(tmp_path / flag)])
        assert result.exit_code == 1, result.output
        assert "needs arbitrary unpickling" in result.stderr
    assert not marker.exists()


def test_foreign_checkpoint_is_refused_with_the_mismatch_named(tiny_config, tmp_path):
    foreign = tmp_path / "other.pth"
    torch.save({"state_dict": {"backbone.conv1.weight": torch.zeros(64, 3, 7, 7)}}, foreign)
    result = runner.invoke(app, ["eval", tiny_config, str(foreign), "--work-dir", str(tmp_path / "wd")])
    assert result.exit_code == 1
    assert "does not fit this config" in result.stderr and "backbone.conv1.weight" in result.stderr


@pytest.mark.parametrize("kind", ["plain pickle", "torch.save of a dict without weights", "text file"])
def test_a_file_that_holds_no_checkpoint_is_named_as_such_without_the_trust_hint(tiny_config, tmp_path, kind):
    """A pickle of {'a': 1} used to be told to 'rerun with --trust-checkpoint', which would not help."""
    junk = tmp_path / "junk.pth"
    if kind == "plain pickle":
        junk.write_bytes(pickle.dumps({"a": 1}))
        why = "plain Python pickle"
    elif kind == "text file":
        junk.write_text("not a checkpoint\n")
        why = "not a PyTorch file"
    else:
        torch.save({"a": 1}, junk)
        why = "holds no weights (top-level keys: a)"
    result = runner.invoke(app, ["eval", tiny_config, str(junk), "--work-dir", str(tmp_path / "wd")])
    assert result.exit_code == 1
    line = _one_line_error(result.stderr)
    assert f"{junk} is not a checkpoint of this model" in line and why in line, line
    assert "--trust-checkpoint" not in line


def _without(state: dict, prefix: str) -> dict:
    return {k: v for k, v in state.items() if not k.startswith(prefix)}


@pytest.mark.parametrize("command", ["eval", "bench", "analyze"])
def test_a_checkpoint_missing_the_whole_head_is_refused_naming_the_module(tiny_run, tiny_config, tmp_path, command):
    """Every bbox_head weight removed: the old check (up to half missing, strict=False) scored a random head."""
    ckpt = torch.load(tiny_run.work_dir / "iter_4.pth", weights_only=True)
    ckpt["state_dict"] = _without(ckpt["state_dict"], "bbox_head.")
    headless = tmp_path / "headless.pth"
    torch.save(ckpt, headless)
    args = {"eval": ["eval", tiny_config, str(headless)],
            "bench": ["bench", "speed-accuracy", tiny_config, "--checkpoint", str(headless), "--num-images", "2",
                      "--scales", "160"],
            "analyze": ["analyze", "loss-cdf", tiny_config, str(headless), "--num-images", "2"]}[command]
    result = runner.invoke(app, [*args, "--work-dir", str(tmp_path / "wd")])
    assert result.exit_code == 1, result.output
    line = _one_line_error(result.stderr)
    assert "does not fit this config" in line and "all of bbox_head" in line, line
    assert "bbox_head.retina_cls.weight" in line or "bbox_head.cls_convs" in line


def test_one_missing_or_one_extra_weight_is_enough_to_refuse_a_checkpoint(tiny_run, tiny_config, tmp_path):
    ckpt = torch.load(tiny_run.work_dir / "iter_4.pth", weights_only=True)
    state = ckpt["state_dict"]
    missing = dict(ckpt, state_dict={k: v for k, v in state.items() if k != "bbox_head.retina_reg.bias"})
    extra = dict(ckpt, state_dict=dict(state, **{"neck.extra_conv.weight": torch.zeros(1)}))
    for name, data, words in (("missing", missing, "lacks 1 of"), ("extra", extra, "has 1 weights the model does not")):
        path = tmp_path / f"{name}.pth"
        torch.save(data, path)
        result = runner.invoke(app, ["eval", tiny_config, str(path), "--work-dir", str(tmp_path / name)])
        assert result.exit_code == 1, result.output
        line = _one_line_error(result.stderr)
        assert words in line, line
        assert ("bbox_head.retina_reg.bias" if name == "missing" else "neck.extra_conv.weight") in line


# -- config mistakes ---------------------------------------------------------------------------------------------
def test_misspelt_registry_type_names_the_key_and_the_nearest_type(tiny_config, tmp_path):
    result = runner.invoke(app, ["train", tiny_config, "--work-dir", str(tmp_path), "--cfg-options",
                                 "model.bbox_head.loss_cls.type=SigmoidFocalLos"])
    assert result.exit_code == 1
    line = result.stderr.strip().splitlines()[-1]
    assert "unknown type 'SigmoidFocalLos' at model.bbox_head.loss_cls.type" in line
    assert "did you mean 'SigmoidFocalLoss'" in line


def test_missing_data_path_names_the_path(tiny_config, tmp_path):
    result = runner.invoke(app, ["train", tiny_config, "--work-dir", str(tmp_path), "--cfg-options",
                                 f"train_dataloader.dataset.data_root={tmp_path}/nowhere/"])
    assert result.exit_code == 1
    assert f"train annotation file not found: {tmp_path}/nowhere/train.json" in result.stderr


def test_unknown_cfg_options_key_is_one_line_with_a_suggestion(tiny_config, tmp_path):
    result = runner.invoke(app, ["train", tiny_config, "--work-dir", str(tmp_path), "--cfg-options",
                                 "model.bbox_head.loss_cls.gama=1"])
    assert result.exit_code == 1
    assert "did you mean 'model.bbox_head.loss_cls.gamma'" in _one_line_error(result.stderr)
    assert "Traceback" not in result.stderr


def test_eval_on_own_data_with_a_missing_image_is_one_error_naming_the_problem(tiny_run, tiny_config, broken_copy,
                                                                               tmp_path):
    root, victim, _ = broken_copy
    val = json.loads((root / "val.json").read_text())
    (root / "images" / val["images"][0]["file_name"]).unlink()
    result = runner.invoke(app, ["eval", tiny_config, str(tiny_run.work_dir / "iter_4.pth"), "--ann-file",
                                 str(root / "val.json"), "--work-dir", str(tmp_path / "wd")])
    assert result.exit_code == 1
    assert "val.json: 1 error found (1 missing image)" in _one_line_error(result.stderr)
