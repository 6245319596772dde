"""``--track tensorboard,mlflow,wandb,dvclive``: a run's record in experiment trackers, through MMEngine's vis
backends (fltool_plugins.vis_backends fixes the upstream ones and makes them fail soft).

What a tracked run logs: the training scalars (MMEngine's ``LoggerHook``, at their iteration), every evaluation's
COCO metrics with per-class AP (``classwise``), the full resolved config, the parameters the user changed
(``--cfg-options``, seed, schedule, a sweep point's or a tune trial's settings), and at the end (:func:`tracking_hook`)
the final metrics (``final/AP``...), the machine (``metrics.json``'s ``machine``), the best and last checkpoints and the
run's plots (``plots/training_curves.png``) as artifacts.

Where it goes, set the trackers' usual way: MLflow ``$MLFLOW_TRACKING_URI`` (a server ``http://host:5000``, a database
``sqlite:///...`` or ``postgresql://...``, a ``file:`` store), else ``sqlite:///<work dir>/mlflow.db``, experiment
``$MLFLOW_EXPERIMENT_NAME`` (default ``fltool``); W&B ``$WANDB_PROJECT`` (default ``fltool``), ``$WANDB_MODE=offline``
to write the run only to ``<work dir>/wandb``; DVCLive ``<work dir>/dvclive``; TensorBoard ``<run>/vis_data``.
Sweeps and tunes group their runs (:class:`TrackGroup`): one MLflow parent run with the runs nested under it, one
W&B group, and one MLflow store in the sweep or tune folder.
"""
from __future__ import annotations

import importlib.util
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

from fltool.errors import ConfigError

#: --track names, their vis backend (fltool_plugins.vis_backends, or MMEngine's for TensorBoard) and package.
TRACKERS = {"tensorboard": ("TensorboardVisBackend", "tensorboard"),
            "mlflow": ("FltoolMLflowVisBackend", "mlflow"),
            "wandb": ("FltoolWandbVisBackend", "wandb"),
            "dvclive": ("FltoolDVCLiveVisBackend", "dvclive")}
EXTRA_HINT = "install fltool's tracking extra: pip install 'fltool[track]' (in this checkout: FLTOOL_EXTRAS=track " \
             "scripts/setup.sh)"
PLOTS = "plots"


@dataclass
class TrackGroup:
    """What ties the runs of one sweep or tune together in the trackers."""

    name: str  # W&B group; the MLflow parent run's name
    kind: str  # "sweep" or "tune": W&B job type, MLflow tag fltool.kind
    store_dir: Path  # the sweep/tune folder: its local MLflow store serves every run of the group
    mlflow_parent: Optional[str] = None  # the parent run's id (open_group)
    run_name: Optional[str] = None  # this run's name in the group (a point and seed, a trial)
    params: dict = field(default_factory=dict)  # this run's settings in the group (point settings, trial params)


def parse_track(items: Optional[Sequence[str]], tensorboard: bool = False) -> tuple:
    """``["mlflow,wandb", "dvclive"]`` -> ``("mlflow", "wandb", "dvclive")``; ``--tensorboard`` adds tensorboard."""
    names: list = []
    for item in list(items or []) + (["tensorboard"] if tensorboard else []):
        for name in str(item).split(","):
            name = name.strip().lower()
            if not name:
                continue
            if name not in TRACKERS:
                raise ConfigError(f"--track: unknown tracker '{name}'", f"use one or more of {', '.join(TRACKERS)}, "
                                                                        "comma-separated")
            if name not in names:
                names.append(name)
    return tuple(names)


def check_installed(trackers: Sequence[str]) -> None:
    """One line naming the extra when a tracker's package is missing."""
    missing = [TRACKERS[t][1] for t in trackers if importlib.util.find_spec(TRACKERS[t][1]) is None]
    if missing:
        raise ConfigError(f"--track {','.join(trackers)} needs {', '.join(missing)}, which "
                          f"{'is' if len(missing) == 1 else 'are'} not installed", EXTRA_HINT)


def backend_cfg(tracker: str, work_dir: Path, run_name: str, group: Optional[TrackGroup]) -> dict:
    """The vis backend of one tracker for a run in ``work_dir`` (of ``group``, if any)."""
    work_dir = Path(work_dir).resolve()
    kind = group.kind if group else "train"
    if tracker == "mlflow":
        store = Path(group.store_dir if group else work_dir).resolve()
        return dict(type=TRACKERS[tracker][0], save_dir=str(store),
                    exp_name=os.environ.get("MLFLOW_EXPERIMENT_NAME") or "fltool", run_name=run_name,
                    tags={"fltool.kind": kind, "fltool.work_dir": str(work_dir),
                          **({"fltool.group": group.name} if group else {})},
                    parent_run_id=group.mlflow_parent if group else None)
    if tracker == "wandb":
        init = dict(project=os.environ.get("WANDB_PROJECT") or "fltool", name=run_name, job_type=kind)
        if group:
            init["group"] = group.name
        return dict(type=TRACKERS[tracker][0], save_dir=str(work_dir), init_kwargs=init)
    if tracker == "dvclive":
        return dict(type=TRACKERS[tracker][0], save_dir=str(work_dir / "dvclive"))
    return dict(type=TRACKERS[tracker][0])


def configure(cfg: Any, trackers: Sequence[str], work_dir: Path, group: Optional[TrackGroup] = None) -> None:
    """Add the trackers' backends to ``cfg.visualizer`` and make every evaluation reach them whole: validation
    scalars at their iteration (MMEngine logs them at ``runner.epoch``, 0 all along an iteration-based run) and
    per-class AP (``classwise``)."""
    check_installed(trackers)
    vis = cfg.get("visualizer") or dict(type="DetLocalVisualizer", name="visualizer")
    backends = list(vis.get("vis_backends") or [dict(type="LocalVisBackend")])
    run_name = (group.run_name if group and group.run_name else Path(work_dir).name)
    for tracker in trackers:
        wanted = backend_cfg(tracker, work_dir, run_name, group)
        if not any(b.get("type") == wanted["type"] for b in backends):
            backends.append(wanted)
    vis["vis_backends"] = backends
    cfg.visualizer = vis
    if not cfg.get("train_cfg", {}).get("by_epoch", False) and "Epoch" not in str(cfg.get("train_cfg", {}).get("type")):
        logger = cfg.setdefault("default_hooks", {}).setdefault("logger", dict(type="LoggerHook"))
        logger["log_metric_by_epoch"] = False
    if trackers != ("tensorboard",):
        for key in ("val_evaluator", "test_evaluator"):
            evaluator = cfg.get(key)
            if isinstance(evaluator, dict) and "CocoMetric" in str(evaluator.get("type", "CocoMetric")):
                evaluator["classwise"] = True


def changed_params(opts: Any, group: Optional[TrackGroup] = None) -> dict:
    """The parameters a user changed from the config: ``--cfg-options``, seed, schedule, weights, data; a sweep
    point's or tune trial's settings under their own names."""
    from fltool.engine.config import parse_cfg_options

    options = opts.cfg_options if isinstance(opts.cfg_options, dict) else parse_cfg_options(opts.cfg_options)
    params = {key.lstrip("+"): value for key, value in (options or {}).items()}
    for name in ("seed", "max_iters", "max_epochs", "val_interval", "load_from", "pretrained", "resume"):
        value = getattr(opts, name, None)
        if value is not None:
            params[name] = value
    if getattr(opts, "data", None) is not None:
        params["data"] = str(getattr(opts.data, "path", opts.data))
    params["config"] = str(opts.config)
    if group is not None:
        params.update({f"{group.kind}.{k}": v for k, v in group.params.items()})
    return {k: json.dumps(v) if isinstance(v, (dict, list, tuple)) else v for k, v in params.items()}


def open_group(trackers: Sequence[str], name: str, kind: str, store_dir: Path, params: Optional[dict] = None,
               notes: Optional[list] = None) -> TrackGroup:
    """The group of a sweep or tune; with MLflow, its parent run (left open until :func:`close_group`). A tracker
    that fails here is a note, and its runs are then not nested."""
    check_installed(trackers)
    group = TrackGroup(name=name, kind=kind, store_dir=Path(store_dir).resolve())
    if "mlflow" not in trackers:
        return group
    from fltool_plugins.vis_backends import mlflow_client

    try:
        client, experiment_id, _ = mlflow_client(None, str(group.store_dir),
                                                 os.environ.get("MLFLOW_EXPERIMENT_NAME") or "fltool")
        parent = client.create_run(experiment_id, run_name=name, tags={"fltool.kind": kind,
                                                                       "fltool.work_dir": str(group.store_dir)})
        group.mlflow_parent = parent.info.run_id
        for key, value in (params or {}).items():
            client.log_param(group.mlflow_parent, key, str(value)[:6000])
    except Exception as exc:  # noqa: BLE001 -- a tracker never stops the work
        if notes is not None:
            notes.append(f"mlflow: no parent run for this {kind} ({type(exc).__name__}: {exc}); its runs are logged "
                         "on their own")
    return group


def close_group(group: Optional[TrackGroup], metrics: Optional[dict] = None, artifacts: Sequence[Path] = (),
                status: str = "FINISHED", notes: Optional[list] = None) -> None:
    """End the group's MLflow parent run with the group's results (best metrics, report files)."""
    if group is None or not group.mlflow_parent:
        return
    from fltool_plugins.vis_backends import mlflow_client, scalars

    try:
        client, _, _ = mlflow_client(None, str(group.store_dir),
                                     os.environ.get("MLFLOW_EXPERIMENT_NAME") or "fltool")
        for key, value in scalars(metrics or {}).items():
            client.log_metric(group.mlflow_parent, key.replace("@", "_"), value)
        for path in artifacts:
            if Path(path).is_file():
                client.log_artifact(group.mlflow_parent, str(path))
        client.set_terminated(group.mlflow_parent, status)
    except Exception as exc:  # noqa: BLE001
        if notes is not None:
            notes.append(f"mlflow: could not close the {group.kind}'s parent run ({type(exc).__name__}: {exc})")


# --------------------------------------------------------------------------------------------------------------
# The end of a tracked run
# --------------------------------------------------------------------------------------------------------------
def tracker_backends(runner: Any) -> list:
    """The fltool tracker backends of the runner's visualizer (on the main process; none elsewhere)."""
    from mmengine.dist import is_main_process

    if not is_main_process():
        return []
    found = []
    for tracker, (type_name, _) in TRACKERS.items():
        backend = runner.visualizer.get_backend(type_name) if tracker != "tensorboard" else None
        if backend is not None and hasattr(backend, "log_record"):
            found.append(backend)
    return found


def close_trackers(runner: Any, status: str) -> None:
    """Close the tracker backends of a run that ends without MMEngine's ``after_run`` (an error, a stop, a pruned
    trial), so that their runs are ended and their files complete."""
    if runner is None:
        return
    for backend in tracker_backends(runner):
        backend.close(status)


def tracking_hook(params: dict) -> Any:
    """An MMEngine hook that keeps every evaluation and, at ``after_run`` (before ``LoggerHook`` closes the
    visualizer), hands each tracker the run's record (:func:`run_record`)."""
    from mmengine.hooks import Hook

    from fltool.engine.metrics import coco_metrics

    class TrackingHook(Hook):
        priority = "NORMAL"  # after_run before LoggerHook (BELOW_NORMAL), which closes the backends

        def __init__(self) -> None:
            self.evaluations: list = []

        def after_val_epoch(self, runner: Any, metrics: Optional[dict] = None) -> None:
            self.evaluations.append((int(runner.iter), coco_metrics(dict(metrics or {}))))

        def after_run(self, runner: Any) -> None:
            backends = tracker_backends(runner)
            if backends:
                record = run_record(runner, self.evaluations, params)
                for backend in backends:
                    backend.log_record(record)

    return TrackingHook()


def run_record(runner: Any, evaluations: list, params: dict) -> dict:
    """Final metrics (per-class AP as ``per_class_AP/<class>``), the changed params, the machine as tags, and the
    artifacts: the last and the best checkpoint, and the plots."""
    from fltool.engine.doctor import machine_facts

    work_dir = Path(runner.work_dir)
    last = runner.message_hub.get_info("last_ckpt")
    final = dict(evaluations[-1][1]) if evaluations else {}
    per_class = final.pop("per_class_AP", {}) or {}
    metrics = {k: v for k, v in final.items() if isinstance(v, (int, float))}
    metrics.update({f"per_class_AP/{name}": v for name, v in per_class.items()})
    artifacts = {}
    if last and Path(last).is_file():
        artifacts[str(last)] = "checkpoints"
    scored = [(m.get("AP"), it) for it, m in evaluations if isinstance(m.get("AP"), (int, float))]
    if scored:
        best_ap, best_iter = max(scored)
        metrics["best_AP"] = best_ap
        metrics["best_iteration"] = best_iter
        best = work_dir / f"iter_{best_iter}.pth"
        if best.is_file() and str(best) != str(last):
            artifacts[str(best)] = "checkpoints/best"
    plot = training_curves(runner, work_dir / PLOTS / "training_curves.png")
    if plot is not None:
        artifacts[str(plot)] = PLOTS
    facts = machine_facts()
    tags = {f"machine.{k}": json.dumps(v) if isinstance(v, (dict, list)) else v for k, v in facts.items()}
    return {"metrics": metrics, "params": params, "tags": tags, "artifacts": artifacts, "step": int(runner.iter)}


def training_curves(runner: Any, out: Path) -> Optional[Path]:
    """Loss and lr per iteration and AP/AP50 per evaluation, from the run's ``vis_data/scalars.json``."""
    scalars_file = Path(runner.log_dir) / "vis_data" / "scalars.json"
    if not scalars_file.is_file():
        return None
    rows = []
    for line in scalars_file.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue
    train = [r for r in rows if "loss" in r and "step" in r]
    evals = [r for r in rows if "coco/bbox_mAP" in r and "step" in r]
    if not train and not evals:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fltool.fileio import save_figure

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    for key in ("loss", "loss_cls", "loss_bbox"):
        points = [(r["step"], r[key]) for r in train if key in r]
        if points:
            left.plot(*zip(*points), label=key)
    left.set_xlabel("iteration")
    left.set_title("training loss")
    left.legend()
    for key, label in (("coco/bbox_mAP", "AP"), ("coco/bbox_mAP_50", "AP50")):
        points = [(r["step"], r[key]) for r in evals if key in r]
        if points:
            right.plot(*zip(*points), marker="o", label=label)
    right.set_xlabel("iteration")
    right.set_title("COCO AP, val split")
    right.legend()
    fig.tight_layout()
    return save_figure(fig, out, dpi=100)
