"""Experiment trackers as MMEngine vis backends: MMEngine's own MLflow, W&B and DVCLive backends, registered under
fltool's names with the upstream bugs that lose a run's record fixed, and failing soft.

``fltool train --track mlflow,wandb,dvclive`` puts these into ``visualizer.vis_backends`` (fltool.engine.tracking);
a config can name them too: ``dict(type='FltoolMLflowVisBackend', tracking_uri='http://host:5000')``. What each
fixes, beside its class:

- every backend **fails soft**: the first error of a tracker (a server that is down, a missing API key, a wrong
  URI) is one warning in the log and on the console, and the tracker is off for the rest of the run; training
  goes on and loses nothing locally (checkpoints, logs, ``metrics.json`` and MMEngine's ``vis_data`` are written
  as always). Upstream, any tracker error is an exception in a hook, which ends the training run;
- each takes a ``record`` at the end of the run (:meth:`log_record`, called by fltool.engine.tracking's hook):
  final metrics, the parameters the user changed, the machine, the best and last checkpoints and the plots.
"""
from __future__ import annotations

import functools
import logging
import math
import os
import re
import sys
from typing import Any, Callable, Optional

from mmdet.registry import VISBACKENDS
from mmengine.logging import print_log
from mmengine.visualization import DVCLiveVisBackend, MLflowVisBackend, WandbVisBackend

#: MLflow accepts metric and param names of these characters only (its ``_validate_metric_name``).
_MLFLOW_UNSAFE = re.compile(r"[^A-Za-z0-9_\-. /:]")
#: MLflow refuses a param value longer than this (mlflow.utils.validation.MAX_PARAM_VAL_LENGTH).
MLFLOW_PARAM_CHARS = 6000


def soft(method: Callable) -> Callable:
    """Run a tracker call; its first failure turns the tracker off with one warning, and the run goes on."""

    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        if getattr(self, "_fltool_off", False):
            return None
        try:
            return method(self, *args, **kwargs)
        except Exception as exc:  # noqa: BLE001 -- any tracker error: warn once, keep training
            self._fltool_off = True
            text = " ".join(str(exc).split())[:300]
            message = (f"fltool: warning: {self.tracker} tracking is off for the rest of this run: "
                       f"{type(exc).__name__}: {text} (the run goes on; everything is kept in its work dir)")
            # The log file gets it through MMEngine's logger; the console through stderr, since fltool sends a
            # run's stdout (MMEngine's console handler among it) to the work dir's stdout.log.
            print_log(message, logger="current", level=logging.WARNING)
            print(message, file=sys.stderr, flush=True)
            return None

    return wrapper


def mlflow_client(uri: Optional[str], save_dir: str, experiment: str,
                  artifact_location: Optional[str] = None) -> tuple[Any, str, str]:
    """(client, experiment id, store URI) for ``uri`` (default ``$MLFLOW_TRACKING_URI``, else a SQLite store in
    ``save_dir``); the experiment is created if missing, with its artifacts beside a local store."""
    from mlflow import MlflowClient

    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{os.path.abspath(save_dir)}/mlflow.db"
    if uri.startswith("file:") or "://" not in uri:
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # refused since MLflow 3.14 (mmengine#1687)
    if uri.startswith(("http://", "https://")):
        check_server(uri)
        # A server that goes away mid-run: fail a call in seconds, not after MLflow's default minutes of retries.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
    client = MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(experiment)
    if found is not None:
        return client, found.experiment_id, uri
    if artifact_location is None and uri.startswith("sqlite:///"):
        store = os.path.abspath(uri[len("sqlite:///"):])
        artifact_location = "file://" + os.path.join(os.path.dirname(store), "mlartifacts")
    return client, client.create_experiment(experiment, artifact_location=artifact_location), uri


def check_server(uri: str, timeout: float = 5.0) -> None:
    """Raise ConnectionError unless the MLflow server at ``uri`` answers ``/health``."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout) as reply:
            if reply.status != 200:
                raise ConnectionError(f"MLflow server {uri} answered {reply.status} to /health")
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ConnectionError(f"MLflow server {uri} is not reachable ({reason})") from None


def existing_dvc_repo() -> Any:
    """The DVC project around the current folder, or None (never a new one: see FltoolDVCLiveVisBackend)."""
    from dvc.exceptions import NotDvcRepoError
    from dvc.repo import Repo
    from dvc.scm import SCMError

    try:
        return Repo()
    except (NotDvcRepoError, SCMError):
        return None


def scalars(data: dict) -> dict:
    """The finite numbers of ``data`` as floats (MMEngine's tag dicts may hold strings, ``step`` or NaN)."""
    out = {}
    for key, value in data.items():
        try:
            number = float(value)
        except (TypeError, ValueError):
            continue
        if key != "step" and math.isfinite(number):
            out[key] = number
    return out


class _Record:
    """What the three backends share: fltool's name for the tracker and the soft-failing state."""

    tracker = "tracker"
    _fltool_off = False

    @property
    def is_off(self) -> bool:
        return self._fltool_off


@VISBACKENDS.register_module()
class FltoolMLflowVisBackend(_Record, MLflowVisBackend):
    """MMEngine's ``MLflowVisBackend`` through ``MlflowClient`` (one run per backend, safe with several runs in a
    process), with these fixes:

    - the default store is ``sqlite:///<save_dir>/mlflow.db``: MMEngine's default ``file://`` store is refused by
      MLflow >= 3.14 (open-mmlab/mmengine#1687); a ``file:`` URI the user names is allowed
      (``MLFLOW_ALLOW_FILE_STORE``), and artifacts go next to the store, not to ``./mlruns`` in the current folder;
    - an ``http(s)`` server is asked for ``/health`` first (5 s), so a server that is down costs one warning, not
      minutes of MLflow's retries on every call;
    - ``close`` ends the run it started and logs only fltool's artifacts: upstream ``close`` walks
      ``self.cfg.work_dir`` and crashes in ``after_run`` when the config was never logged or an artifact path is
      refused (open-mmlab/mmengine#1574, #1144);
    - metric names are made valid for MLflow (per-class AP keys hold class names; open-mmlab/mmdetection#10258),
      and every evaluation reaches the run (open-mmlab/mmdetection#10257; fltool.engine.tracking logs validation
      metrics by iteration, not at epoch 0 of an iteration-based run);
    - the config is logged as ``config.py`` and flattened params (values cut to MLflow's limit, which upstream
      exceeds with whole pipelines), plus a parent run for sweeps and tunes (``parent_run_id``).
    """

    tracker = "mlflow"

    def __init__(self, save_dir: str, exp_name: Optional[str] = None, run_name: Optional[str] = None,
                 tags: Optional[dict] = None, params: Optional[dict] = None, tracking_uri: Optional[str] = None,
                 artifact_location: Optional[str] = None, parent_run_id: Optional[str] = None, **kwargs: Any):
        super().__init__(save_dir, exp_name=exp_name, run_name=run_name, tags=tags, params=params,
                         tracking_uri=tracking_uri, artifact_location=artifact_location, **kwargs)
        self._parent_run_id = parent_run_id
        self.run_id: Optional[str] = None

    def _init_env(self) -> None:
        import mlflow

        os.makedirs(self._save_dir, exist_ok=True)
        self._mlflow = mlflow
        self._client, experiment_id, self.uri = mlflow_client(self._tracking_uri, self._save_dir,
                                                              self._exp_name or "fltool", self._artifact_location)
        tags = {str(k): str(v) for k, v in (self._tags or {}).items()}
        if self._parent_run_id:
            tags["mlflow.parentRunId"] = self._parent_run_id
        run = self._client.create_run(experiment_id, run_name=self._run_name, tags=tags)
        self.run_id = run.info.run_id
        if self._params:
            self._log_params(self._params)

    def _log_params(self, params: dict) -> None:
        from mlflow.entities import Param

        items = [Param(_MLFLOW_UNSAFE.sub("_", str(k))[:250], str(v)[:MLFLOW_PARAM_CHARS])
                 for k, v in params.items()]
        for start in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
            self._client.log_batch(self.run_id, params=items[start:start + 100])

    @soft
    def add_config(self, config: Any, **kwargs: Any) -> None:
        self._init_once()
        self.cfg = config
        self._log_params(self._flatten(config.to_dict()))
        self._client.log_text(self.run_id, config.pretty_text, "config.py")

    @soft
    def add_image(self, name: str, image: Any, step: int = 0, **kwargs: Any) -> None:
        self._init_once()
        self._client.log_image(self.run_id, image, f"{_MLFLOW_UNSAFE.sub('_', name)}_{step}.png")

    @soft
    def add_scalar(self, name: str, value: Any, step: int = 0, **kwargs: Any) -> None:
        self.add_scalars({name: value}, step)

    @soft
    def add_scalars(self, scalar_dict: dict, step: int = 0, file_path: Optional[str] = None, **kwargs: Any) -> None:
        import time

        from mlflow.entities import Metric

        self._init_once()
        now = int(time.time() * 1000)
        metrics = [Metric(_MLFLOW_UNSAFE.sub("_", k), v, now, int(step)) for k, v in scalars(scalar_dict).items()]
        for start in range(0, len(metrics), 1000):
            self._client.log_batch(self.run_id, metrics=metrics[start:start + 1000])

    @soft
    def log_record(self, record: dict) -> None:
        """The end of the run: final metrics (``final/...``), params, tags, artifacts ({path: folder})."""
        self._init_once()
        self.add_scalars({f"final/{k}": v for k, v in record.get("metrics", {}).items()},
                         record.get("step", 0))
        self._log_params({f"changed.{k}": v for k, v in record.get("params", {}).items()})
        for key, value in record.get("tags", {}).items():
            self._client.set_tag(self.run_id, key, str(value)[:5000])
        for path, folder in record.get("artifacts", {}).items():
            self._client.log_artifact(self.run_id, path, folder or None)

    @soft
    def close(self, status: str = "FINISHED") -> None:
        if self.run_id is not None:
            self._client.set_terminated(self.run_id, status)
            self.run_id = None

    def _init_once(self) -> None:
        if not self._env_initialized:
            self._init_env()
            self._env_initialized = True


@VISBACKENDS.register_module()
class FltoolWandbVisBackend(_Record, WandbVisBackend):
    """MMEngine's ``WandbVisBackend`` with these fixes:

    - ``add_config`` no longer calls ``run.log_code()``, which walks the *current folder* and uploads every ``.py``
      under it (from a project root with a virtualenv: 20,000 files, 326 MB here) before anything is logged: a run
      that W&B shows as created with nothing in it (open-mmlab/mmdetection#10226). The config goes in as W&B's
      config and as the ``config.py`` file of the run;
    - scalars carry their iteration as W&B's ``step`` (upstream drops it, so validation metrics land on W&B's own
      counter, not on the iteration they belong to);
    - the run is finished on every way out (fltool.engine.tracking closes it on errors and stops too, where
      MMEngine's ``after_run`` never comes), so an offline run's files are complete and ``wandb sync`` uploads them.
    """

    tracker = "wandb"

    def _init_env(self) -> None:
        import wandb

        os.makedirs(self._save_dir, exist_ok=True)
        kwargs = dict(self._init_kwargs or {})
        kwargs.setdefault("dir", self._save_dir)
        kwargs.setdefault("reinit", "create_new")  # several runs in one process (sweeps, tunes): one W&B run each
        if os.environ.get("WANDB_MODE"):  # read now: W&B keeps the settings of its first run for the process
            kwargs.setdefault("mode", os.environ["WANDB_MODE"])
        self._wandb = wandb
        self._run = wandb.init(**kwargs)

    @soft
    def add_config(self, config: Any, **kwargs: Any) -> None:
        self._init_once()
        self._run.config.update(config.to_dict(), allow_val_change=True)
        path = os.path.join(self._save_dir, "config.py")
        with open(path, "w") as f:
            f.write(config.pretty_text)
        self._run.save(path, base_path=self._save_dir, policy="now")

    @soft
    def add_image(self, name: str, image: Any, step: int = 0, **kwargs: Any) -> None:
        self._init_once()
        self._run.log({name: self._wandb.Image(image)}, step=int(step))

    @soft
    def add_scalar(self, name: str, value: Any, step: int = 0, **kwargs: Any) -> None:
        self.add_scalars({name: value}, step)

    @soft
    def add_scalars(self, scalar_dict: dict, step: int = 0, file_path: Optional[str] = None, **kwargs: Any) -> None:
        self._init_once()
        self._run.log(scalars(scalar_dict), step=int(step))

    @soft
    def log_record(self, record: dict) -> None:
        self._init_once()
        self._run.config.update({"changed": record.get("params", {}), "machine": record.get("tags", {})},
                                allow_val_change=True)
        for key, value in record.get("metrics", {}).items():
            self._run.summary[f"final/{key}"] = value
        images = {os.path.basename(p): self._wandb.Image(p) for p in record.get("artifacts", {}) if p.endswith(".png")}
        if images:
            self._run.log({f"plots/{k}": v for k, v in images.items()}, step=int(record.get("step", 0)))
        files = [p for p in record.get("artifacts", {}) if not p.endswith(".png")]
        if files:
            artifact = self._wandb.Artifact(f"run-{self._run.id}-checkpoints", type="model")
            for path in files:
                artifact.add_file(path)
            self._run.log_artifact(artifact)

    @soft
    def close(self, status: str = "FINISHED") -> None:
        if getattr(self, "_run", None) is not None:
            self._run.finish(exit_code=0 if status == "FINISHED" else 1)
            self._run = None

    def _init_once(self) -> None:
        if not self._env_initialized:
            self._init_env()
            self._env_initialized = True


@VISBACKENDS.register_module()
class FltoolDVCLiveVisBackend(_Record, DVCLiveVisBackend):
    """MMEngine's ``DVCLiveVisBackend`` with these fixes:

    - no ``dvc init`` anywhere: upstream runs ``os.system('dvc init -f --no-scm')`` in the current folder when it
      is not a git repository with a signature, and DVCLive's ``Live`` runs ``dvc init`` in the enclosing git
      repository (staging ``.dvc/`` and ``.dvcignore`` in git) when it has no DVC project; an existing DVC project
      is used, none is created. No ``dvc.yaml`` or DVC experiment is written outside the run's own folder:
      ``dvc.yaml`` lies in DVCLive's folder and ``save_dvc_exp`` is off unless asked for;
    - ``close`` passed the artifact's folder as DVCLive's ``type`` argument (``log_artifact(path, dir_path)``) and
      needs a DVC repository; fltool's artifacts are copied in as images (plots) or recorded by path in
      ``params.yaml`` (checkpoints), and logged as DVC artifacts only inside a DVC repository;
    - scalars are written at their iteration (``step``), which DVCLive needs to be monotonic.
    """

    tracker = "dvclive"

    def _init_env(self) -> None:
        from unittest import mock

        from dvclive import Live

        os.makedirs(self._save_dir, exist_ok=True)
        kwargs = dict(self._init_kwargs or {})
        kwargs.setdefault("dir", self._save_dir)
        kwargs.setdefault("save_dvc_exp", False)
        kwargs.setdefault("dvcyaml", os.path.join(self._save_dir, "dvc.yaml"))
        # DVCLive itself runs `dvc init` in the enclosing git repository when it has no DVC project (and git-adds
        # .dvc/ and .dvcignore there: dvclive.dvc.get_dvc_repo). A run must not change the user's repository:
        # an existing DVC project is used, none is created.
        with mock.patch("dvclive.live.get_dvc_repo", existing_dvc_repo):
            self._dvclive = Live(**kwargs)

    @soft
    def add_config(self, config: Any, **kwargs: Any) -> None:
        self._init_once()
        self.cfg = config
        self._dvclive.log_params(self._to_dvc_paramlike(config.to_dict()))

    @soft
    def add_image(self, name: str, image: Any, step: int = 0, **kwargs: Any) -> None:
        self._init_once()
        self._dvclive.log_image(f"{name}.png", image)

    @soft
    def add_scalar(self, name: str, value: Any, step: int = 0, **kwargs: Any) -> None:
        self.add_scalars({name: value}, step)

    @soft
    def add_scalars(self, scalar_dict: dict, step: int = 0, file_path: Optional[str] = None, **kwargs: Any) -> None:
        self._init_once()
        values = scalars(scalar_dict)
        if not values:
            return
        self._dvclive.step = max(int(step), self._dvclive.step or 0)
        for key, value in values.items():
            self._dvclive.log_metric(key, value)

    @soft
    def log_record(self, record: dict) -> None:
        self._init_once()
        for key, value in record.get("metrics", {}).items():
            self._dvclive.summary[f"final/{key}"] = value
        files = [p for p in record.get("artifacts", {}) if not p.endswith(".png")]
        self._dvclive.log_params({"changed": record.get("params", {}), "machine": record.get("tags", {}),
                                  "artifacts": files})
        for path in record.get("artifacts", {}):
            if path.endswith(".png"):
                self._dvclive.log_image(os.path.basename(path), path)
            elif getattr(self._dvclive, "_dvc_repo", None) is not None:
                self._dvclive.log_artifact(path, type="model", copy=False)

    @soft
    def close(self, status: str = "FINISHED") -> None:
        if getattr(self, "_dvclive", None) is not None:
            self._dvclive.end()
            self._dvclive = None

    def _init_once(self) -> None:
        if not self._env_initialized:
            self._init_env()
            self._env_initialized = True
