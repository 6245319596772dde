"""What a tune leaves: the trials table (``trials.csv``/``trials.json``), the best trial's settings as a config file
that ``fltool train`` runs (``<tune folder name>_best.py``), and Optuna's plots (optimisation history, parameter
importances) in ``plots/``; only the best trial keeps its checkpoints unless ``--keep-checkpoints all``."""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from fltool.fileio import write_json, write_text


@dataclass
class TrialRow:
    number: int
    state: str  # COMPLETE, PRUNED, FAIL, RUNNING, WAITING
    params: dict
    ap: Optional[float]  # the final AP (complete trials) or the last reported one (pruned)
    iteration: Optional[int]  # the last evaluated iteration
    work_dir: str
    metrics: dict = field(default_factory=dict)


@dataclass
class TuneResult:
    tune_dir: Path
    study_name: str
    storage: str
    rows: list  # TrialRow per trial, by number
    best: Optional[TrialRow]
    trained: int = 0  # trials this command finished
    files: dict = field(default_factory=dict)  # name -> Path
    notes: list = field(default_factory=list)
    space: list = field(default_factory=list)  # the --space items


def trial_rows(study: Any) -> list:
    rows = []
    for trial in study.get_trials(deepcopy=False):
        steps = trial.intermediate_values
        last = max(steps) if steps else None
        ap = trial.value if trial.value is not None else (steps[last] if last is not None else None)
        iteration = trial.user_attrs.get("iterations") or last
        rows.append(TrialRow(trial.number, trial.state.name, dict(trial.params), ap, iteration,
                             trial.user_attrs.get("work_dir", ""), dict(trial.user_attrs.get("metrics") or {})))
    return rows


def best_row(rows: list) -> Optional[TrialRow]:
    complete = [r for r in rows if r.state == "COMPLETE" and r.ap is not None]
    return max(complete, key=lambda r: (r.ap, -r.number)) if complete else None


def keep_best_checkpoints(study: Any, tune_dir: Path) -> None:
    """Delete the checkpoints of finished trials other than the best complete one (run after every trial)."""
    rows = trial_rows(study)
    best = best_row(rows)
    for row in rows:
        if row.state not in ("COMPLETE", "PRUNED") or (best is not None and row.number == best.number):
            continue
        folder = Path(row.work_dir) if row.work_dir else None
        if folder is None or not folder.is_dir() or tune_dir.resolve() not in folder.resolve().parents:
            continue
        for path in [*folder.glob("*.pth"), folder / "last_checkpoint"]:
            path.unlink(missing_ok=True)


def write_trials(rows: list, tune_dir: Path, keys: list) -> dict:
    metric_keys = ["AP", "AP50", "AP75"]
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["trial", "state", *keys, *metric_keys, "iteration", "work_dir"])
    for row in rows:
        writer.writerow([row.number, row.state, *[row.params.get(k, "") for k in keys],
                         *[row.metrics.get(k, row.ap if k == "AP" else "") for k in metric_keys],
                         row.iteration or "", row.work_dir])
    return {"trials_csv": write_text(tune_dir / "trials.csv", out.getvalue()),
            "trials_json": write_json(tune_dir / "trials.json", [row.__dict__ for row in rows])}


def write_best_config(trainer: Any, best: TrialRow) -> Path:
    """The best trial's config, whole (schedule, seed and overrides applied; the dataset left as the config names
    it), as a file ``fltool train`` runs: its work dir defaults to ``work_dirs/<file name>``."""
    from fltool.engine.config import load_config
    from fltool.engine.config_data import config_text
    from fltool.engine.schedule import apply_length_overrides

    opts = trainer.opts
    cfg = load_config(opts.config, trainer.overrides(best.params))
    apply_length_overrides(cfg, opts.max_iters, None, opts.val_interval)
    cfg.randomness = dict(cfg.get("randomness") or {}, seed=opts.seed)
    cfg.pop("work_dir", None)
    path = trainer.tune_dir / f"{trainer.tune_dir.name}_best.py"
    settings = ", ".join(f"{k}={v}" for k, v in best.params.items())
    header = (f"# fltool tune {trainer.tune_dir.name}: trial {best.number} of the study, AP {best.ap:.4f}\n"
              f"# settings: {settings}\n# train it: fltool train {path}\n")
    return write_text(path, header + config_text(cfg))


def write_plots(study: Any, tune_dir: Path, notes: list) -> dict:
    """Optuna's optimisation history and parameter importances (matplotlib), where the study allows them."""
    import matplotlib

    matplotlib.use("Agg")
    import warnings

    import optuna.visualization.matplotlib as vis

    from fltool.fileio import save_figure

    files = {}
    for name, draw in (("optimization_history", vis.plot_optimization_history),
                       ("param_importances", vis.plot_param_importances)):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # optuna marks its matplotlib plots experimental
                axes = draw(study)
            files[name] = save_figure(axes.figure, tune_dir / "plots" / f"{name}.png", dpi=100, bbox_inches="tight")
        except Exception as exc:  # noqa: BLE001 -- e.g. importances need 2+ complete trials that differ
            notes.append(f"no {name} plot: {type(exc).__name__}: {' '.join(str(exc).split())[:200]}")
    return files

