"""Running a tune: an Optuna study (TPE by default) whose every trial is a normal ``fltool train`` run in its own work
dir, pruned on the AP of each evaluation (median or Hyperband), stored in SQLite in the tune folder (or any
database URL shared by several hosts), with ``--jobs N`` worker processes sharing that storage."""
from __future__ import annotations

import math
import os
import socket
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Optional

from fltool.engine.tune.space import first_point, parse_space, set_items
from fltool.errors import ConfigError, Interrupted
from fltool.progress import ProgressEvent, ProgressFn, no_progress

TUNE_HINT = "install fltool's tune extra: pip install 'fltool[tune]' (in this checkout: FLTOOL_EXTRAS=tune " \
            "scripts/setup.sh)"
TRIALS_DIR = "trials"


@dataclass
class TuneOptions:
    config: str
    space: list = field(default_factory=list)  # --space items
    presets: list = field(default_factory=list)  # --preset names
    trials: int = 20  # finished (complete or pruned) trials the study should have
    work_dir: Optional[Path] = None  # the tune folder (default work_dirs/tune_<config name>)
    cfg_options: Optional[list] = None  # --cfg-options, shared by every trial
    max_iters: Optional[int] = None
    val_interval: Optional[int] = None  # default with a pruner: 4 evaluations per trial
    seed: int = 0  # every trial trains with this seed
    sampler: str = "tpe"  # tpe | random
    sampler_seed: Optional[int] = 0  # worker i uses sampler_seed + i
    pruner: str = "median"  # median | hyperband | none
    jobs: int = 1  # worker processes on this machine
    storage: Optional[str] = None  # database URL (default sqlite:///<tune folder>/study.db)
    study_name: Optional[str] = None  # default: the tune folder's name
    track: tuple = ()  # experiment trackers; the trials form one group
    keep_checkpoints: str = "best"  # best (delete the other trials' checkpoints) | all
    report_only: bool = False


class TrialPrunedAtEvaluation(Exception):
    """Raised from a trial's progress when Optuna's pruner stops it; becomes ``optuna.TrialPruned``."""

    track_status = "KILLED"  # how the trial's tracker runs end (fltool.engine.train)


def optuna_module() -> Any:
    try:
        import optuna
    except ImportError:
        raise ConfigError("fltool tune needs optuna, which is not installed", TUNE_HINT) from None
    import warnings

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    return optuna


def tune_dir_of(opts: TuneOptions) -> Path:
    from fltool.engine.config import resolve_config

    return Path(opts.work_dir or Path("work_dirs") / f"tune_{resolve_config(opts.config).stem}").resolve()


def storage_url(opts: TuneOptions, tune_dir: Path) -> str:
    return opts.storage or f"sqlite:///{tune_dir / 'study.db'}"


def open_study(opts: TuneOptions, tune_dir: Path, worker: int = 0) -> Any:
    """The study (created or loaded: an interrupted tune resumes), with its sampler, pruner and storage."""
    optuna = optuna_module()
    url = storage_url(opts, tune_dir)
    kwargs = {"connect_args": {"timeout": 120}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    seed = None if opts.sampler_seed is None else opts.sampler_seed + worker
    if opts.sampler == "random":
        sampler = optuna.samplers.RandomSampler(seed=seed)
    else:
        sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(10, max(2, opts.trials // 3)))
    iters = opts.max_iters or 1
    pruners = {"median": optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0),
               "hyperband": optuna.pruners.HyperbandPruner(min_resource=max(1, opts.val_interval or 1),
                                                           max_resource=iters, reduction_factor=3),
               "none": optuna.pruners.NopPruner()}
    if opts.pruner not in pruners:
        raise ConfigError(f"--pruner {opts.pruner}: unknown", "use median, hyperband or none")
    for attempt in range(5):  # workers and hosts starting together race to create the tables and the study
        try:
            # Heartbeats: a trial whose process died (killed, a host lost) turns FAIL after the grace period, and
            # the next tune command continues it (resume_interrupted).
            storage = optuna.storages.RDBStorage(url, engine_kwargs=kwargs, heartbeat_interval=60, grace_period=240)
            return optuna.create_study(storage=storage, study_name=opts.study_name or tune_dir.name,
                                       sampler=sampler, pruner=pruners[opts.pruner], direction="maximize",
                                       load_if_exists=True)
        except Exception as exc:  # noqa: BLE001 -- a database that cannot be reached or opened: say which
            if attempt == 4:
                raise ConfigError(f"cannot open the study's storage {url}: {type(exc).__name__}: "
                                  f"{' '.join(str(exc).split())[:300]}",
                                  "check --storage (a database URL every worker can reach)") from None
            time.sleep(1.0 + attempt)
    raise AssertionError("unreachable")


@dataclass
class Trainer:
    """What every trial of one tune shares, and how one trial trains."""

    opts: TuneOptions
    space: list
    tune_dir: Path
    cfg: Any  # the config as loaded once (for input.size's pipeline keys)
    group: Any = None  # fltool.engine.tracking.TrackGroup
    progress: ProgressFn = no_progress

    def trial_dir(self, number: int) -> Path:
        return self.tune_dir / TRIALS_DIR / f"{number:04d}"

    def __call__(self, trial: Any) -> float:
        optuna = optuna_module()
        values = {p.key: p.sample(trial) for p in self.space}
        origin = trial.user_attrs.get("resume_of")
        work_dir = self.trial_dir(trial.number if origin is None else origin)
        trial.set_user_attr("work_dir", str(work_dir))
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        label = f"trial {trial.number}" + (f" (resuming trial {origin})" if origin is not None else "")
        self.progress(ProgressEvent("sweep_run", f"{label}: " + ", ".join(f"{k}={_text(v)}" for k, v in
                                                                          values.items()),
                                    values={"trial": trial.number, **values}))
        try:
            result = self.train(trial, values, work_dir, resume=origin is not None)
        except TrialPrunedAtEvaluation as exc:
            self.progress(ProgressEvent("sweep_run_end", f"{label} pruned at iteration {exc.args[0]}",
                                        values={"AP": exc.args[1]}))
            raise optuna.TrialPruned(f"pruned at iteration {exc.args[0]}") from None
        except Interrupted:
            raise  # FAIL without an error: the next tune command continues it (resume_interrupted)
        except Exception as exc:
            trial.set_user_attr("error", f"{type(exc).__name__}: {exc}"[:500])
            raise
        ap = result.metrics.get("AP")
        trial.set_user_attr("metrics", {k: v for k, v in result.metrics.items() if k != "per_class_AP"})
        trial.set_user_attr("iterations", result.iterations)
        self.progress(ProgressEvent("sweep_run_end", f"{label} done", values=result.metrics))
        return float(ap) if isinstance(ap, (int, float)) and math.isfinite(ap) else 0.0

    def overrides(self, values: dict) -> dict:
        """The trial's config overrides, checked as a one-point sweep grid (unknown keys, bad loss values)."""
        from fltool.engine.sweep import build_grid

        grid = build_grid(self.opts.config, set_items(self.space, values, self.cfg), self.opts.cfg_options)
        return {**grid.base_cfg_options, **grid.points[0].cfg_options}

    def train(self, trial: Any, values: dict, work_dir: Path, resume: bool) -> Any:
        from fltool.engine import train as train_mod

        def report(event: ProgressEvent) -> None:
            self.progress(event)
            if event.kind == "val_end" and event.iteration:
                ap = (event.values or {}).get("AP")
                trial.report(float(ap) if isinstance(ap, (int, float)) else 0.0, int(event.iteration))
                if event.iteration < (self.opts.max_iters or math.inf) and trial.should_prune():
                    raise TrialPrunedAtEvaluation(event.iteration, ap)

        group = None
        if self.group is not None:
            group = replace(self.group, run_name=f"trial {trial.number}", params=dict(values))
        opts = train_mod.TrainOptions(
            config=self.opts.config, work_dir=work_dir, cfg_options=self.overrides(values),
            resume="auto" if resume else None, seed=self.opts.seed, max_iters=self.opts.max_iters,
            val_interval=self.opts.val_interval, data_check="skip" if trial.number else "check",
            track=self.opts.track, track_group=group)
        return train_mod.train(opts, report)


def _text(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def prepare(opts: TuneOptions) -> tuple[TuneOptions, list, Any]:
    """Check everything a trial needs before the first one: the space against the config, the schedule (a pruner
    needs evaluations to prune on: 4 per trial unless --val-interval says otherwise)."""
    from fltool.engine.config import load_config
    from fltool.engine.sweep import build_grid

    if opts.trials < 1:
        raise ConfigError(f"--trials {opts.trials}: give at least 1")
    if opts.jobs < 1:
        raise ConfigError(f"--jobs {opts.jobs}: give at least 1")
    space = parse_space(opts.space, opts.presets)
    cfg = load_config(opts.config, opts.cfg_options)
    build_grid(opts.config, set_items(space, first_point(space), cfg), opts.cfg_options)
    iters = opts.max_iters or int((cfg.get("train_cfg") or {}).get("max_iters") or 0) or None
    interval = opts.val_interval
    if interval is None and opts.pruner != "none" and iters:
        interval = max(1, iters // 4)
    return replace(opts, max_iters=iters, val_interval=interval), space, cfg


def resume_interrupted(study: Any) -> int:
    """Queue again the trials an interrupted tune left unfinished: stopped by a signal, or whose process died (FAIL
    by heartbeat), not those that failed with an error. Each continues from its last checkpoint."""
    optuna = optuna_module()
    resumed = {t.user_attrs.get("resume_of") for t in study.trials}
    count = 0
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.FAIL,)):
        if "error" not in trial.user_attrs and trial.params and trial.number not in resumed:
            study.enqueue_trial(trial.params, user_attrs={"resume_of": trial.number}, skip_if_exists=False)
            count += 1
    return count


def finished(study: Any) -> int:
    optuna = optuna_module()
    return len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,
                                                        optuna.trial.TrialState.PRUNED)))


def optimize(trainer: Trainer, study: Any) -> None:
    """Run trials until the study has ``--trials`` finished ones (counted across every worker and host)."""
    from fltool.engine.tune.report import keep_best_checkpoints

    optuna = optuna_module()
    stop_at = optuna.study.MaxTrialsCallback(trainer.opts.trials, states=(optuna.trial.TrialState.COMPLETE,
                                                                          optuna.trial.TrialState.PRUNED))
    callbacks = [stop_at]
    if trainer.opts.keep_checkpoints == "best":
        callbacks.append(lambda s, t: keep_best_checkpoints(s, trainer.tune_dir))
    if finished(study) >= trainer.opts.trials:
        return
    study.optimize(trainer, callbacks=callbacks, catch=(), gc_after_trial=True)


def run_worker(opts: TuneOptions, space: list, cfg: Any, tune_dir: Path, group: Any, worker: int) -> None:
    """A ``--jobs`` worker process: its own study handle on the shared storage, no display."""
    import torch

    torch.set_num_threads(max(1, (os.cpu_count() or 1) // opts.jobs))
    study = open_study(opts, tune_dir, worker)
    optimize(Trainer(opts, space, tune_dir, cfg, group), study)


def worker_processes(opts: TuneOptions, space: list, cfg: Any, tune_dir: Path, group: Any) -> list:
    """Start ``--jobs`` - 1 worker processes (spawned: a fresh interpreter each), logging to ``workers/``."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    procs = []
    for worker in range(1, opts.jobs):
        proc = context.Process(target=worker_main, args=(opts, space, tune_dir, group, worker),
                               name=f"fltool-tune-worker-{worker}")
        proc.start()
        procs.append(proc)
    return procs


def worker_main(opts: TuneOptions, space: list, tune_dir: Path, group: Any, worker: int) -> None:
    """The entry point of a spawned worker: its output goes to ``<tune folder>/workers/worker<i>.log``."""
    import contextlib
    import sys

    from fltool.engine.config import load_config

    log = tune_dir / "workers" / f"worker{worker}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as sink, contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        try:
            run_worker(opts, space, load_config(opts.config, opts.cfg_options), tune_dir, group, worker)
        except Exception as exc:  # noqa: BLE001 -- said in the log; the main process reports the study
            print(f"worker {worker} stopped: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
            raise SystemExit(1) from None

