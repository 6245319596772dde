"""``--track``: real trackers, no mocks. An MLflow tracking server started here on 127.0.0.1 with a SQLite store (the
client path of a remote server), MLflow's file store, W&B in offline mode (its run file read back record by record),
DVCLive's files; a server that is down and a W&B without credentials; a sweep's runs grouped."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fltool.cli.main import app

mlflow = pytest.importorskip("mlflow")
runner = CliRunner()


@pytest.fixture(autouse=True)
def _offline_trackers(monkeypatch, tmp_path):
    """W&B offline, no telemetry, and the current folder a fresh git repository: a tracker must write nothing
    outside the run (DVCLive on its own runs `dvc init` in the enclosing git repository and stages its files)."""
    for key in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "WANDB_PROJECT", "WANDB_API_KEY"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.setenv("DVC_NO_ANALYTICS", "1")
    monkeypatch.setenv("DO_NOT_TRACK", "1")
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    subprocess.run(["git", "init", "-q", str(cwd)], check=True)
    monkeypatch.chdir(cwd)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def mlflow_server(tmp_path):
    """``mlflow server`` on 127.0.0.1 with a SQLite backend store and a local artifact store."""
    port = _free_port()
    root = tmp_path / "server"
    root.mkdir()
    cmd = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
           "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}", "--artifacts-destination", str(root / "art")]
    env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true")
    with open(root / "server.log", "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=root)
    uri = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                with urllib.request.urlopen(uri + "/health", timeout=2) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                time.sleep(0.5)
        else:
            raise RuntimeError("mlflow server did not start: " + (root / "server.log").read_text()[-2000:])
        yield uri
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def wandb_records(run_dir: Path) -> list:
    """The records of an offline W&B run, read from its ``run-*.wandb`` file (a LevelDB-style log of protobuf
    ``Record`` messages in 32 KiB blocks, after a 7-byte ``:W&B`` header), as ``wandb sync`` reads it."""
    from wandb.proto import wandb_internal_pb2

    data = next(run_dir.glob("run-*.wandb")).read_bytes()
    assert data[:4] == b":W&B"
    pos, block, records, pending = 7, 32768, [], b""
    while pos + 7 <= len(data):
        left = block - pos % block
        length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        if left < 7 or (length == 0 and kind == 0):  # block trailer or padding
            pos += left
            continue
        pending += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL or LAST: a whole record
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def _wandb_history(records: list) -> list:
    rows = []
    for record in records:
        if record.WhichOneof("record_type") == "history":
            rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                         for item in record.history.item})
    return rows


def _wandb_summary(records: list) -> dict:
    summary: dict = {}
    for record in records:
        if record.WhichOneof("record_type") == "summary":
            summary.update({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                            for item in record.summary.update})
    return summary


def _train(tiny_config: str, work_dir: Path, *args: str):
    result = runner.invoke(app, ["train", tiny_config, "--work-dir", str(work_dir), "--val-interval", "2", *args])
    assert result.exit_code == 0, result.output
    return result


def test_track_names_several_trackers_in_one_flag_and_refuses_an_unknown_one():
    from fltool.engine.tracking import parse_track
    from fltool.errors import ConfigError

    assert parse_track(["mlflow,wandb", "dvclive", "mlflow"], tensorboard=True) == (
        "mlflow", "wandb", "dvclive", "tensorboard")
    with pytest.raises(ConfigError, match="unknown tracker 'neptune'"):
        parse_track(["mlflow,neptune"])


def test_track_without_the_package_is_one_line_naming_the_extra(tiny_config, tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    result = runner.invoke(app, ["train", tiny_config, "--work-dir", str(tmp_path / "wd"), "--track", "mlflow,wandb"])
    assert result.exit_code == 1
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("fltool: error:")]
    assert len(lines) == 1 and "needs wandb, which is not installed" in lines[0] and "fltool[track]" in lines[0]


def test_a_tracked_run_reaches_an_mlflow_server_wandb_offline_and_dvclive_with_every_evaluation(
        tiny_config, tmp_path, monkeypatch, mlflow_server):
    """Scalars at their iteration, both evaluations (not only the last, not at step 0) with per-class AP, the config,
    the changed parameter, the machine, final metrics, the last checkpoint and the plot as artifacts."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "fltool-tests")
    wd = tmp_path / "run"
    _train(tiny_config, wd, "--track", "mlflow,wandb,dvclive", "--cfg-options", "model.bbox_head.loss_cls.gamma=1.5")
    local = json.loads((wd / "metrics.json").read_text())

    client = mlflow.MlflowClient(mlflow_server)
    experiment = client.get_experiment_by_name("fltool-tests")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED" and run.info.run_name == "run"
    history = client.get_metric_history(run.info.run_id, "coco/bbox_mAP_50")
    assert [m.step for m in history] == [2, 4]
    assert history[-1].value == pytest.approx(local["bbox"]["AP50"], abs=1e-3)
    assert len(client.get_metric_history(run.info.run_id, "loss")) == 4  # every iteration of the tiny config
    classes = set(local["per_class_AP"])
    assert {f"coco/{c}_precision" for c in classes} <= set(run.data.metrics)
    assert run.data.metrics["final/AP"] == pytest.approx(local["bbox"]["AP"])
    assert run.data.params["changed.model.bbox_head.loss_cls.gamma"] == "1.5"
    assert run.data.params["model.bbox_head.loss_cls.gamma"] == "1.5"  # the full resolved config, flattened
    assert run.data.tags["machine.cpu"] == local["machine"]["cpu"]
    paths = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.py", "checkpoints", "plots"} <= paths
    assert [a.path for a in client.list_artifacts(run.info.run_id, "checkpoints")] == ["checkpoints/iter_4.pth"]
    config_text = Path(client.download_artifacts(run.info.run_id, "config.py", str(tmp_path))).read_text()
    assert "gamma=1.5" in config_text.replace(" ", "")

    (offline,) = (wd / "wandb").glob("offline-run-*")
    records = wandb_records(offline)
    evaluations = [row for row in _wandb_history(records) if "coco/bbox_mAP" in row]
    assert [row["_step"] for row in evaluations] == [2, 4]
    assert {f"coco/{c}_precision" for c in classes} <= set(evaluations[-1])
    summary = _wandb_summary(records)
    assert summary["final/AP"] == pytest.approx(local["bbox"]["AP"])
    assert (offline / "files" / "config.py").is_file()
    assert not (offline / "files" / "code").exists()  # no upload of the current folder's code

    live = wd / "dvclive"
    assert json.loads((live / "metrics.json").read_text())["final/AP"] == pytest.approx(local["bbox"]["AP"])
    steps = [line.split("\t")[0] for line in (live / "plots/metrics/coco/bbox_mAP.tsv").read_text().splitlines()[1:]]
    assert steps == ["2", "4"]
    assert "gamma: 1.5" in (live / "params.yaml").read_text()
    assert (live / "plots" / "images" / "training_curves.png").is_file()
    assert [p.name for p in Path.cwd().iterdir()] == [".git"]  # no dvc.yaml, .dvc, mlruns or wandb here
    assert subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True).stdout == ""


def test_mlflow_file_store_works_and_a_tracker_that_is_down_is_one_warning_and_nothing_is_lost(
        tiny_config, tmp_path, monkeypatch):
    store = tmp_path / "filestore"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store.as_uri())
    _train(tiny_config, tmp_path / "filed", "--track", "mlflow")
    (run,) = mlflow.MlflowClient(store.as_uri()).search_runs(
        [mlflow.MlflowClient(store.as_uri()).get_experiment_by_name("fltool").experiment_id])
    assert run.info.status == "FINISHED" and "final/AP" in run.data.metrics

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{_free_port()}")  # nobody listens
    monkeypatch.setenv("WANDB_MODE", "online")  # and no API key
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{_free_port()}")
    wd = tmp_path / "down"
    result = _train(tiny_config, wd, "--track", "mlflow,wandb")
    warnings = [ln for ln in result.stderr.splitlines() if "tracking is off" in ln]
    assert len(warnings) == 2, result.stderr[-3000:]
    assert any("mlflow tracking is off" in w and "not reachable" in w for w in warnings)
    assert any("wandb tracking is off" in w and "API key" in w for w in warnings)
    assert json.loads((wd / "metrics.json").read_text())["iteration"] == 4
    assert sorted(p.name for p in wd.glob("*.pth")) == ["iter_2.pth", "iter_4.pth"]
    assert (wd / "plots" / "training_curves.png").is_file()


def test_a_run_that_fails_ends_its_tracker_runs_as_failed(tmp_path):
    poison = str(Path(__file__).parent / "configs" / "tiny_poison.py")
    result = runner.invoke(app, ["train", poison, "--work-dir", str(tmp_path / "wd"), "--track", "mlflow,wandb"])
    assert result.exit_code == 1
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'wd' / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("fltool").experiment_id])
    assert run.info.status == "FAILED"
    (offline,) = (tmp_path / "wd" / "wandb").glob("offline-run-*")
    exits = [r.exit.exit_code for r in wandb_records(offline) if r.WhichOneof("record_type") == "exit"]
    assert exits == [1]  # the W&B run was finished (complete for `wandb sync`), as failed


def test_a_tracked_sweep_nests_its_runs_under_one_parent_run_and_one_wandb_group(tiny_config, tmp_path):
    sweep_dir = tmp_path / "sweep"
    result = runner.invoke(app, ["sweep", tiny_config, "--set", "loss.gamma=0,2", "--max-iters", "2",
                                 "--work-dir", str(sweep_dir), "--track", "mlflow,wandb"])
    assert result.exit_code == 0, result.output
    client = mlflow.MlflowClient(f"sqlite:///{sweep_dir / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("fltool").experiment_id])
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert parent.info.run_name == "sweep" and parent.info.status == "FINISHED"
    assert sorted(r.info.run_name for r in children) == ["loss.gamma=0/seed0", "loss.gamma=2/seed0"]
    assert {r.data.params["changed.sweep.loss.gamma"] for r in children} == {"0", "2"}
    assert "best_AP" in parent.data.metrics
    assert "results.csv" in {a.path for a in client.list_artifacts(parent.info.run_id)}
    groups = set()
    for offline in sweep_dir.glob("*/seed0/wandb/offline-run-*"):
        groups |= {r.run.run_group for r in wandb_records(offline) if r.WhichOneof("record_type") == "run"}
    assert groups == {"sweep"}
