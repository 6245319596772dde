"""``fltool analyze``: the paper's analysis figures. Thin wrappers over fltool.analysis."""
from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import List, Optional

import typer
from typing_extensions import Annotated

from fltool.cli.common import (
    CfgOptionsOpt,
    CheckpointArg,
    ConfigArg,
    WorkDirOpt,
    command,
    console,
    err_console,
    new_app,
    table,
)
from fltool.cli.dataopts import DataOpt, FormatOpt, ImgSizeOpt, ValFractionOpt, data_options, with_data
from fltool.cli.progress import ProgressDisplay

app = new_app("Analyse losses, datasets and trained models: the paper's Figure 4 (loss CDF), Figures 1, 5, 6 (loss "
              "curves), the prior's role in stability, and a dataset's imbalance under a model's anchors.")


class Split(str, Enum):
    val = "val"
    test = "test"
    train = "train"


def parse_gammas(value: str) -> List[float]:
    """``"0,0.5,1,2"`` to floats; a bad list is a usage error (exit 2)."""
    try:
        gammas = [float(part) for part in value.split(",") if part.strip()]
    except ValueError:
        raise typer.BadParameter(f"'{value}' is not a comma-separated list of numbers (e.g. 0,0.5,1,2)") from None
    if not gammas:
        raise typer.BadParameter("give at least one gamma (e.g. 0,0.5,1,2)")
    if any(not g >= 0 or g == float("inf") for g in gammas):
        raise typer.BadParameter(f"every gamma must be a finite number >= 0, got {value}")
    if len(set(gammas)) != len(gammas):
        raise typer.BadParameter(f"a gamma is listed twice in {value}")
    return gammas


def _check_gammas(value: str) -> str:
    parse_gammas(value)  # in the option's callback, so that a bad list is Click's usage error
    return value


def _pct(value: Optional[float], error: Optional[float]) -> str:
    if value is None:
        return "n/a"
    from fltool.analysis.loss_cdf import percent

    text = percent(value)
    if error:
        text += f" ± {error * 100:.1g} pp"  # the bound, in percentage points
    return text


@command(app, "loss-cdf")
def loss_cdf(
    config: ConfigArg,
    checkpoint: CheckpointArg,
    num_images: Annotated[Optional[int], typer.Option("--num-images", min=1, help="Use the first N images of the "
                                                      "split (default: all).")] = None,
    split: Annotated[Split, typer.Option("--split", help="Which dataloader's images: val, test or train (train "
                                         "images go through the test pipeline).")] = Split.val,
    gammas: Annotated[str, typer.Option("--gammas", callback=_check_gammas,
                                           help="Comma-separated gammas, one curve each.")] = "0,0.5,1,2",
    work_dir: WorkDirOpt = None,
    cfg_options: CfgOptionsOpt = None,
    bins_per_unit: Annotated[int, typer.Option("--bins-per-unit", min=1, max=4096, help="Histogram bins per logit "
                                               "unit (finer: tighter error bounds).")] = 128,
    trust_checkpoint: Annotated[bool, typer.Option("--trust-checkpoint", help="Allow full unpickling of the "
                                                   "checkpoint (only for files you trust).")] = False,
    data: DataOpt = None,
    data_format: FormatOpt = None,
    val_fraction: ValFractionOpt = None,
    img_size: ImgSizeOpt = None,
) -> None:
    """Figure 4: the cumulative distribution of the focal loss over positive and negative anchors of a trained model.

    Anchors are labelled by the model's own assigner (RetinaNet: IoU >= 0.5 positive, < 0.4 negative, ignored between).
    For every gamma, FL of each sample is normalised within positives and within negatives, sorted and accumulated.

    Writes to the work dir: loss_cdf.png (two panels, like Figure 4), loss_cdf.csv (the curves), loss_cdf.json
    (sample counts and, per gamma, the fraction of hardest samples carrying 50% and 90% of the loss, with error bounds).
    Memory is bounded (a streaming histogram), whatever the number of images.
    """
    from fltool.analysis.loss_cdf import LossCdfOptions, run_loss_cdf, save_loss_cdf

    data_opts = data_options(data, data_format, val_fraction, img_size)
    with ProgressDisplay(err_console) as display:
        config, work_dir = with_data(config, data_opts, work_dir, display)
        opts = LossCdfOptions(config=config, checkpoint=checkpoint, work_dir=work_dir, cfg_options=cfg_options,
                              split=split.value, num_images=num_images, gammas=parse_gammas(gammas),
                              bins_per_unit=bins_per_unit, trust_checkpoint=trust_checkpoint)
        result = run_loss_cdf(opts, progress=display)
    files = save_loss_cdf(result, result.work_dir)
    for note in result.notes:
        err_console.print(f"note: {note}", highlight=False, soft_wrap=True)
    rows = []
    for s in (result.positive, result.negative):
        for row in s.per_gamma():
            rows.append([s.name, f"{row['gamma']:g}", s.count,
                         _pct(row["hardest_fraction_50"], row["hardest_fraction_50_error_bound"]),
                         _pct(row["hardest_fraction_90"], row["hardest_fraction_90_error_bound"])])
    caption = (f"{result.num_images} {result.split} images; anchors: {result.anchors['positive']} positive, "
               f"{result.anchors['negative']} negative, {result.anchors['ignored']} ignored; "
               f"peak RSS {result.memory['peak_rss_mb']:.0f} MB; {result.wall_s:.0f} s")
    console.print(table(f"fltool analyze loss-cdf: {Path(checkpoint).name}",
                        ["set", "gamma", "samples", "hardest carrying 50%", "hardest carrying 90%"], rows,
                        caption=caption))
    console.print(f"plot:    {files.png}\ncurves:  {files.csv}\nsummary: {files.json}", highlight=False)


@command(app, "loss-curves")
def loss_curves(
    work_dir: Annotated[Path, typer.Option("--work-dir", help="Output folder.")] = Path("work_dirs/loss_curves"),
) -> None:
    """Figures 1, 5 and 6: FL against p_t (gamma 0..5), FL and FL* against x_t, and their derivatives.

    Computed with fltool's own FL/FL* functions and checked against the paper's formulas
    (the table shows the largest relative difference per backend). Writes a PNG and a CSV per figure.
    """
    from fltool.analysis.loss_curves import loss_curves as compute
    from fltool.analysis.loss_curves import save_loss_curves

    curves = compute()
    written = save_loss_curves(curves, work_dir)
    backends = sorted({c.backend for c in curves.checks})
    rows = [[b, len([c for c in curves.checks if c.backend == b]), f"{curves.worst(b):.1e}"] for b in backends]
    console.print(table("fltool analyze loss-curves: project losses vs the paper's formulas",
                        ["backend", "curves", "max relative difference"], rows))
    for path in written:
        console.print(str(path), highlight=False)


@command(app, "anchors")
def anchors(
    config: ConfigArg,
    split: Annotated[Split, typer.Option("--split", help="Which dataloader's images (through the test pipeline: "
                                         "the training resize, no random flip).")] = Split.train,
    num_images: Annotated[Optional[int], typer.Option("--num-images", min=1, help="Use the first N images of the "
                                                      "split (default: all).")] = None,
    work_dir: WorkDirOpt = None,
    cfg_options: CfgOptionsOpt = None,
) -> None:
    """How imbalanced the data is under the model's anchors: positive, negative and ignored anchors per image.

    Uses the config's own anchor generator and assigner (no weights needed) on every image of the split, and reports
    the paper's ratio: mean positive anchors per image over mean anchors per image (COCO: about 1 in 1000).
    Writes anchors.json (the counts, per level too) to the work dir.
    """
    from fltool.analysis.anchors import AnchorStatsOptions, anchor_statistics
    from fltool.fileio import write_json

    opts = AnchorStatsOptions(config=config, cfg_options=cfg_options, split=split.value, num_images=num_images,
                              work_dir=work_dir)
    with ProgressDisplay(err_console) as display:
        stats = anchor_statistics(opts, progress=display)
    path = write_json(stats.work_dir / "anchors.json", stats.summary())
    for note in stats.notes:
        err_console.print(f"note: {note}", highlight=False, soft_wrap=True)
    counts = stats.summary()["positive_per_image_stats"]
    one_in = "n/a" if stats.one_in is None else f"1 in {stats.one_in:,.0f}"
    rows = [["anchors", f"{stats.anchors:,.1f}"], ["positive", f"{stats.positive:,.2f}"],
            ["negative", f"{stats.negative:,.1f}"], ["ignored", f"{stats.ignored:,.1f}"],
            ["ground-truth boxes", f"{stats.boxes:,.2f}"],
            ["positive / all anchors", f"{stats.positive_fraction:.3g} ({one_in})"],
            ["positive per image: min / median / max", f"{counts['min']} / {counts['median']:g} / {counts['max']}"],
            ["positive per level (P3 first)", " / ".join(f"{v:.1f}" for v in stats.positive_per_level)]]
    shapes = ", ".join(f"{h}x{w}" for h, w in stats.input_shapes)
    console.print(table(f"fltool analyze anchors: {Path(config).stem}", ["per image (mean)", "value"], rows,
                        caption=f"{stats.num_images} {stats.split} images, network input {shapes} px; "
                                f"{stats.wall_s:.0f} s"))
    console.print(f"summary: {path}", highlight=False)


def _parse_floats(value: str, what: str) -> List[float]:
    try:
        values = [float(part) for part in value.split(",") if part.strip()]
    except ValueError:
        raise typer.BadParameter(f"'{value}' is not a comma-separated list of numbers (e.g. {what})") from None
    if not values:
        raise typer.BadParameter(f"give at least one value (e.g. {what})")
    return values


@command(app, "prior")
def prior(
    config: ConfigArg,
    work_dir: Annotated[Path, typer.Option("--work-dir", help="Folder of the runs and the outputs (rerun the same "
                                           "command to continue: finished runs are kept).")] = Path(
                                               "work_dirs/prior"),
    max_iters: Annotated[int, typer.Option("--max-iters", min=1, help="Iterations per run (LR schedule scaled).")]
    = 300,
    seed: Annotated[int, typer.Option("--seed", help="Seed of every run.")] = 0,
    losses: Annotated[str, typer.Option("--losses", help="Comma-separated loss presets of `fltool sweep` (CE, "
                                        "CE-a0.5, FL, FL-g1-a0.25, FL*, ...).")] = "CE,FL",
    priors: Annotated[str, typer.Option("--priors", help="Comma-separated pi of the bias prior b = -log((1 - pi) / "
                                        "pi): 0.01 is the paper's, 0.5 gives bias 0.")] = "0.01,0.5",
    cfg_options: CfgOptionsOpt = None,
) -> None:
    """The prior's role (paper, sections 3.3 and 4.1): train the same model with each loss and each prior for a few
    hundred iterations; record each loss curve and whether the run diverged (a non-finite loss, as "diverged at
    iteration N") or collapsed to background (AP 0, or the positives' mean probability below the score threshold).

    Writes to the work dir: prior.png (classification loss and positives' probability against the iteration, one
    curve per run), prior.csv (every iteration of every run), prior.json (what each run did and its command).
    """
    from fltool.analysis.prior import PriorOptions, run_prior_experiment, save_prior
    from fltool.cli.sweep import SweepDisplay

    opts = PriorOptions(config=config, work_dir=work_dir, max_iters=max_iters, seed=seed,
                        losses=[part.strip() for part in losses.split(",") if part.strip()],
                        priors=_parse_floats(priors, "0.01,0.5"), cfg_options=list(cfg_options or []) or None)
    with SweepDisplay(err_console) as display:
        result = run_prior_experiment(opts, progress=display)
    files = save_prior(result)
    for note in result.notes:
        err_console.print(f"note: {note}", highlight=False, soft_wrap=True)
    rows = []
    for run in result.runs:
        last = next((row for row in reversed(run.curve) if row.get("loss_cls") is not None), {})
        prob = run.final_pos_prob
        rows.append([run.loss, f"{run.prior:g}", f"{run.bias:.3f}", run.verdict,
                     "n/a" if not last else f"{last['loss_cls']:.4g}", "n/a" if prob is None else f"{prob:.3f}",
                     run.metrics.get("AP")])
    console.print(table(f"fltool analyze prior: {Path(config).stem}",
                        ["loss", "pi", "bias", "outcome", "last loss_cls", "pos_prob (last 10%)", "AP"], rows,
                        caption=f"{result.max_iters} iterations per run, seed {result.seed}; trained "
                                f"{result.trained}, reused {result.reused}; AP: COCO bbox, val split"))
    console.print(f"plot:    {files.png}\ncurves:  {files.csv}\nsummary: {files.json}", highlight=False)
