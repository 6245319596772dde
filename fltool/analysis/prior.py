"""The prior's role in stability (paper, sections 3.3 and 4.1): the same model with and without the prior.

The paper initialises the classification bias to b = -log((1 - pi) / pi) with pi = 0.01, so that every anchor starts
as background with probability 0.99; without it, "the network diverging during training" with plain CE, since the
loss of the ~100k background anchors swamps the first updates. This trains a config once per loss (default CE and
FL, the ``fltool sweep`` presets) and per prior (default the paper's pi = 0.01 and pi = 0.5, which gives bias 0),
for a few hundred iterations, and records for each run:

- the loss curve, and ``pos_prob`` (the mean predicted probability of the true class over the positive anchors of
  each batch, logged by ``FocalRetinaHead``);
- whether it diverged: a non-finite loss stops a run (fltool's ``NonFiniteLossHook``), recorded as "diverged at
  iteration N" instead of stopping the experiment;
- whether it collapsed to background: at the end, AP 0 (or no detections at all) or a ``pos_prob`` (mean over the
  last tenth of the iterations) below the model's inference score threshold (``test_cfg.score_thr``, 0.05 for
  RetinaNet): the positives then produce no detection.

Each run lives in ``<work dir>/<loss>_pi<prior>/`` with ``prior_run.json`` (settings, status, curve); a finished or
diverged run with the same settings is reused, an unfinished one is trained again from the start (its curve would
otherwise miss the iterations before the resume). ``save_prior`` writes the plot (PNG), the curves (CSV) and the
summary (JSON).
"""
from __future__ import annotations

import csv
import math
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List, Optional, Sequence, Union

from fltool.errors import ConfigError, Interrupted, TrainingError
from fltool.fileio import atomic_path, json_digest, read_json, save_figure, write_json
from fltool.progress import ProgressEvent, ProgressFn, no_progress

DEFAULT_LOSSES = ("CE", "FL")
DEFAULT_PRIORS = (0.01, 0.5)
CURVE_KEYS = ("loss", "loss_cls", "loss_bbox", "pos_prob", "num_pos")
RUN_FILE = "prior_run.json"
_NONFINITE = re.compile(r"non-finite loss at iteration (\d+)")


@dataclass
class PriorOptions:
    config: str
    work_dir: Path
    max_iters: int = 300
    seed: int = 0
    losses: Sequence[str] = DEFAULT_LOSSES
    priors: Sequence[float] = DEFAULT_PRIORS
    cfg_options: Union[Sequence[str], None] = None


@dataclass
class PriorRun:
    """One (loss, prior) run: its settings, what happened, and its curve (one dict per iteration)."""

    loss: str  # the preset's canonical name
    prior: float
    bias: float
    work_dir: Path
    status: str = "missing"  # "finished" | "diverged" | "failed" | "missing"
    diverged_at: Optional[int] = None
    error: str = ""
    curve: List[dict] = field(default_factory=list)
    metrics: dict = field(default_factory=dict)
    score_thr: Optional[float] = None
    train_command: str = ""

    @property
    def name(self) -> str:
        return run_name(self.loss, self.prior)

    @property
    def final_pos_prob(self) -> Optional[float]:
        """Mean ``pos_prob`` over the last tenth of the logged iterations."""
        values = [row["pos_prob"] for row in self.curve if row.get("pos_prob") is not None]
        if not values:
            return None
        tail = values[-max(1, len(values) // 10):]
        return sum(tail) / len(tail)

    @property
    def collapsed(self) -> Optional[bool]:
        """Collapsed to background (see the module docstring); None for a run that did not finish."""
        if self.status != "finished":
            return None
        ap = self.metrics.get("AP")
        prob = self.final_pos_prob
        thr = self.score_thr if self.score_thr is not None else 0.05
        return bool(ap is None or ap <= 0 or (prob is not None and prob < thr))

    @property
    def verdict(self) -> str:
        if self.status == "diverged":
            return f"diverged at iteration {self.diverged_at}"
        if self.status != "finished":
            return self.status if not self.error else f"{self.status}: {self.error}"
        return "collapsed to background" if self.collapsed else "trained"

    def to_dict(self) -> dict:
        return {"name": self.name, "loss": self.loss, "prior_prob": self.prior, "bias": self.bias,
                "status": self.status, "diverged_at": self.diverged_at, "error": self.error,
                "verdict": self.verdict, "collapsed": self.collapsed, "final_pos_prob": self.final_pos_prob,
                "score_thr": self.score_thr, "metrics": self.metrics, "work_dir": str(self.work_dir),
                "train_command": self.train_command, "curve": self.curve}


@dataclass
class PriorResult:
    config: str
    work_dir: Path
    max_iters: int
    seed: int
    runs: List[PriorRun]
    trained: int = 0
    reused: int = 0
    notes: List[str] = field(default_factory=list)

    def summary(self) -> dict:
        return {
            "config": self.config, "max_iters": self.max_iters, "seed": self.seed,
            "definitions": {
                "bias": "b = -log((1 - pi) / pi): pi = 0.01 is the paper's prior, pi = 0.5 gives b = 0",
                "diverged": "a non-finite loss stopped the run (NonFiniteLossHook) at that iteration",
                "collapsed": "finished with AP 0 (or no detections), or with pos_prob (mean over the last tenth of "
                             "the iterations) below the inference score threshold test_cfg.score_thr",
                "pos_prob": "mean sigmoid probability of the true class over the positive anchors of a batch"},
            "runs": [{k: v for k, v in run.to_dict().items() if k != "curve"} for run in self.runs],
            "notes": self.notes,
        }


def run_name(loss: str, prior: float) -> str:
    return f"{loss.replace('*', 'star').replace(':', 'to')}_pi{prior:g}"


def check_priors(priors: Sequence[float]) -> tuple:
    values = tuple(float(p) for p in priors)
    if not values:
        raise ConfigError("no prior given", "give one or more pi values, e.g. --priors 0.01,0.5")
    bad = [p for p in values if not 0 < p < 1]
    if bad:
        raise ConfigError(f"a prior pi must lie strictly between 0 and 1, got {bad[0]:g}",
                          "pi = 0.01 is the paper's; pi = 0.5 gives bias 0")
    if len(set(values)) != len(values):
        raise ConfigError(f"a prior is listed twice in {list(values)}", "give each pi once")
    return values


def _settings(opts: PriorOptions, config_digest: str, loss: str, prior: float) -> dict:
    return {"config": Path(opts.config).name, "config_digest": config_digest, "loss": loss, "prior_prob": prior,
            "max_iters": opts.max_iters, "seed": opts.seed, "cfg_options": list(opts.cfg_options or [])}


def _recorded(run: PriorRun, settings: dict) -> bool:
    """Fill ``run`` from its ``prior_run.json`` if that was made with ``settings``; whether it was."""
    try:
        record = read_json(run.work_dir / RUN_FILE)
    except ConfigError:  # a damaged record: the run is made again
        record = None
    if not isinstance(record, dict) or record.get("settings_hash") != json_digest(settings):
        return False
    run.status, run.diverged_at, run.error = record["status"], record["diverged_at"], record["error"]
    run.curve, run.metrics = record["curve"], record["metrics"]
    return True


def _losses(opts: PriorOptions) -> list[tuple[str, dict]]:
    """(canonical name, loss_cls dict) of each loss preset asked for: presets that only change the loss."""
    from fltool.engine.sweep.presets import loss_preset, preset_head_options

    losses = []
    for name in opts.losses:
        canonical, loss_dict = loss_preset(name)
        if preset_head_options(name):
            raise ConfigError(f"loss preset {canonical} changes the head", "use CE, FL or FL* presets here")
        losses.append((canonical, loss_dict))
    if len({name for name, _ in losses}) != len(losses):
        raise ConfigError(f"a loss is listed twice in {list(opts.losses)}", "give each loss once")
    return losses


def _train_run(run: PriorRun, opts: PriorOptions, options: dict, first: bool, index: int, total: int,
               progress: ProgressFn) -> None:
    """Train one (loss, prior) run from the start, keeping its curve; a diverging loss is its result."""
    from fltool.engine.train import TrainOptions, train

    def record_iter(event: ProgressEvent) -> None:
        if event.kind == "train_iter":
            run.curve.append({"iteration": event.iteration,
                              **{k: event.values[k] for k in CURVE_KEYS if k in event.values}})
        progress(event)

    if run.work_dir.exists():  # unfinished, or made with other settings: start it again
        shutil.rmtree(run.work_dir)
    try:
        result = train(TrainOptions(config=opts.config, work_dir=run.work_dir, cfg_options=options, seed=opts.seed,
                                    max_iters=opts.max_iters, data_check="check" if first else "skip"), record_iter)
        run.status, run.metrics = "finished", {k: v for k, v in result.metrics.items() if k != "per_class_AP"}
    except Interrupted as exc:
        raise Interrupted(f"stopped in run {index}/{total} ({run.name}): {exc.message}", exc.exit_code - 128,
                          "the same command continues: finished runs are kept, this one starts again") from None
    except TrainingError as exc:
        match = _NONFINITE.search(exc.message)
        if match:  # NonFiniteLossHook: the loss of this iteration was not finite
            run.status, run.diverged_at = "diverged", int(match.group(1))
        else:
            run.status = "failed"
        run.error = exc.message


def run_prior_experiment(opts: PriorOptions, progress: ProgressFn = no_progress) -> PriorResult:
    """Train every (loss, prior) pair not done yet and collect what each run did (see the module docstring)."""
    from fltool.engine.config import load_config, parse_cfg_options, resolve_config
    from fltool.engine.sweep.grid import config_digest, value_text
    from fltool.engine.sweep.records import train_command_line
    from fltool_plugins.prior import bias_prior

    if opts.max_iters < 1:
        raise ConfigError(f"--max-iters must be >= 1, got {opts.max_iters}")
    priors, losses = check_priors(opts.priors), _losses(opts)
    base_options = parse_cfg_options(opts.cfg_options)
    cfg = load_config(opts.config, base_options)  # checks the config and the options before hours of training
    score_thr = ((cfg.get("model") or {}).get("test_cfg") or {}).get("score_thr")
    digest = config_digest(resolve_config(opts.config))
    runs, trained, reused, total = [], 0, 0, len(losses) * len(priors)
    for loss_name, loss_dict in losses:
        for prior in priors:
            bias = bias_prior(prior) + 0.0  # -log(1) is -0.0
            run = PriorRun(loss_name, prior, bias, Path(opts.work_dir) / run_name(loss_name, prior),
                           score_thr=score_thr)
            items = [*list(opts.cfg_options or []),
                     *[f"model.bbox_head.loss_cls.{k}={value_text(v)}" for k, v in loss_dict.items()],
                     f"model.bbox_head.prior_prob={value_text(prior)}"]
            run.train_command = train_command_line(opts.config, run.work_dir, opts.seed, opts.max_iters, items)
            settings = _settings(opts, digest, loss_name, prior)
            runs.append(run)
            if _recorded(run, settings):
                reused += 1
                continue
            index = len(runs)
            progress(ProgressEvent("sweep_run", f"run {index}/{total}: {loss_name}, pi = {prior:g} "
                                                f"(bias {run.bias:.3f})", iteration=index, max_iters=total))
            options = {**base_options, "model.bbox_head.loss_cls": dict(_delete_=True, **loss_dict),
                       "model.bbox_head.prior_prob": prior}
            _train_run(run, opts, options, trained == 0, index, total, progress)
            trained += 1
            write_json(run.work_dir / RUN_FILE, {"settings_hash": json_digest(settings), "settings": settings,
                                                 **run.to_dict()})
            progress(ProgressEvent("sweep_run_end", f"run {index}/{total} {run.name}: {run.verdict}",
                                   iteration=index, max_iters=total, values=dict(run.metrics)))
    notes = [] if score_thr is not None else ["the config has no model.test_cfg.score_thr: collapse is judged "
                                              "against 0.05"]
    return PriorResult(str(opts.config), Path(opts.work_dir), opts.max_iters, opts.seed, runs, trained, reused, notes)


# ---------------------------------------------------------------------------------------------------------------------
# Outputs: PNG (the curves), CSV (every logged iteration), JSON (the summary)
# ---------------------------------------------------------------------------------------------------------------------

@dataclass
class PriorFiles:
    png: Path
    csv: Path
    json: Path


def write_prior_csv(runs: Sequence[PriorRun], path: Path) -> Path:
    """One row per run and logged iteration: run, loss, prior, bias, iteration, then CURVE_KEYS."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["run", "loss_preset", "prior_prob", "bias", "iteration", *CURVE_KEYS])
        for run in runs:
            for row in run.curve:
                values = [row.get(k) for k in CURVE_KEYS]
                writer.writerow([run.name, run.loss, repr(run.prior), repr(run.bias), row["iteration"],
                                 *["" if v is None else repr(float(v)) for v in values]])
    return path


def plot_prior(runs: Sequence[PriorRun], path: Path, title: str = "") -> Path:
    """Two panels against the iteration: the classification loss (log scale) and pos_prob, one curve per run; a
    diverged run ends in an x at the iteration whose loss was not finite."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_prob) = plt.subplots(1, 2, figsize=(11, 4.4))
    for run in runs:
        style = "-" if run.prior < 0.5 else "--"
        label = f"{run.loss}, π = {run.prior:g} (bias {run.bias:.2f}): {run.verdict}"
        its = [row["iteration"] for row in run.curve if _finite(row.get("loss_cls"))]
        (line,) = ax_loss.plot(its, [row["loss_cls"] for row in run.curve if _finite(row.get("loss_cls"))],
                               style, linewidth=1.4, label=label)
        probs = [(row["iteration"], row["pos_prob"]) for row in run.curve if _finite(row.get("pos_prob"))]
        ax_prob.plot([i for i, _ in probs], [p for _, p in probs], style, linewidth=1.4, color=line.get_color())
        if run.status == "diverged" and its:
            last = [row["loss_cls"] for row in run.curve if _finite(row.get("loss_cls"))][-1]
            ax_loss.plot([run.diverged_at], [last], "x", markersize=10, color=line.get_color())
    ax_loss.set_yscale("log")
    ax_loss.set_xlabel("iteration")
    ax_loss.set_ylabel("classification loss (per positive anchor)")
    ax_loss.grid(True, alpha=0.3, which="both")
    ax_loss.legend(fontsize=7, loc="upper right")
    thr = next((r.score_thr for r in runs if r.score_thr is not None), 0.05)
    ax_prob.axhline(thr, color="grey", linewidth=0.8, linestyle=":")
    ax_prob.text(0, thr, f" score threshold {thr:g}", fontsize=7, va="bottom", color="grey")
    ax_prob.set_xlabel("iteration")
    ax_prob.set_ylabel("mean probability of the true class, positive anchors")
    ax_prob.set_ylim(0, 1)
    ax_prob.grid(True, alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path, dpi=120)


def _finite(value: Any) -> bool:
    return value is not None and math.isfinite(float(value))


def save_prior(result: PriorResult, out_dir: Optional[Path] = None, stem: str = "prior") -> PriorFiles:
    out_dir = Path(out_dir or result.work_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    title = (f"{Path(result.config).stem}: the prior pi against bias 0, {result.max_iters} iterations, "
             f"seed {result.seed}")
    png = plot_prior(result.runs, out_dir / f"{stem}.png", title)
    csv_path = write_prior_csv(result.runs, out_dir / f"{stem}.csv")
    json_path = write_json(out_dir / f"{stem}.json", result.summary())
    return PriorFiles(png, csv_path, json_path)
