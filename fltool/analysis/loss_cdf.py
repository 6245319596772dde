"""Figure 4 of the paper: the cumulative distribution of the focal loss over positive and negative samples.

A trained detector is run over images; the model's own assigner labels each anchor positive (IoU >= pos_iou_thr,
0.5 for RetinaNet, plus each box's best anchor when the assigner's ``min_pos_iou`` allows low-quality matches, as
MMDetection's RetinaNet does), negative (IoU < neg_iou_thr, 0.4) or ignored (between; label weight 0); see
:mod:`fltool.analysis.assignment`. A *sample* is one (anchor, class) element of the classification loss, as in
the paper:

- positives: (positive anchor, its ground-truth class), one per positive anchor;
- negatives: (negative anchor, every class), K per negative anchor. The other classes of a positive anchor (also
  y = 0 elements of the training loss) are left out, as the paper's split into positive and negative anchors does.

For each gamma, FL(p_t) = -(1 - p_t)^gamma log(p_t) of every sample is computed with the project's
:func:`fltool_plugins.losses.functional.sigmoid_focal_loss` (float64), each set is normalised to sum to one, sorted
from lowest to highest loss, and accumulated against the fraction of samples.

alpha: none is applied (``alpha=None``). alpha_t is one constant within the positives (alpha) and one within the
negatives (1 - alpha), so it cancels in each set's normalisation: the curves and the fractions are the same with
the model's alpha = 0.25; only the un-normalised ``total_loss`` values would scale by it.

Bounded memory. With x_t = s x (s = +1 for a positive, -1 for a negative) every sample's loss is one strictly
decreasing function of x_t, the same for both sets and every gamma, so sorting by loss is sorting by x_t. Each set
streams into a fixed histogram over x_t (``bins_per_unit`` bins per logit unit on [-limit, limit), plus an overflow
bin at each end) holding the sample count and, per gamma, the float64 sum of the samples' exact losses. Memory is
O(bins x gammas) whatever the number of samples.

Accuracy. At every bin boundary the cumulative curve is exact (it sums the exact losses of all samples on one side),
so the curve points returned (and written to the CSV) lie on the exact curve; between them the curve is drawn
linearly. The fraction of hardest samples carrying a share q of the loss is interpolated inside the bin where the
cumulative loss crosses q, using that bin's mean loss. Inside a bin of width h every loss lies between the loss at
its two edges, and |d log FL / d x_t| <= 1 + gamma, so the count taken from that bin is off by at most
(e^{(1 + gamma) h} - 1) times itself (2.4% for gamma = 2, h = 1/128), never more than the bin's count. The bound
actually reached, computed from the crossing bin's edges, is reported next to every fraction. When every bin
holds samples of a single value (e.g. a synthetic set), the fractions are exact.
"""
from __future__ import annotations

import csv
import math
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor

from fltool.analysis.assignment import assign_logits, check_anchor_head, split_loader_config
from fltool.errors import CheckpointError, ConfigError, DataError
from fltool.fileio import atomic_path, save_figure, write_json
from fltool.progress import ProgressEvent, ProgressFn, no_progress

DEFAULT_GAMMAS: Tuple[float, ...] = (0.0, 0.5, 1.0, 2.0)
LOSS_SHARES: Tuple[float, ...] = (0.5, 0.9)  # the summary's "fraction of hardest samples carrying q of the loss"
_CHUNK = 1 << 20  # samples per loss evaluation inside LossHistogram.add (bounds its temporaries)


def check_gammas(gammas: Sequence[float]) -> Tuple[float, ...]:
    """The gammas as floats: at least one, each finite and >= 0, no repeats."""
    values = tuple(float(g) for g in gammas)
    if not values:
        raise ConfigError("no gamma given", "give one or more values, e.g. --gammas 0,0.5,1,2")
    bad = [g for g in values if not math.isfinite(g) or g < 0]
    if bad:
        raise ConfigError(f"gamma must be a finite number >= 0, got {bad[0]}", "e.g. --gammas 0,0.5,1,2")
    if len(set(values)) != len(values):
        raise ConfigError(f"gamma listed twice in {list(values)}", "give each gamma once")
    return values


def focal_loss_of_xt(x_t: Tensor, gamma: float) -> Tensor:
    """FL(p_t) = -(1 - p_t)^gamma log(p_t) with p_t = sigmoid(x_t), no alpha, by the project's sigmoid_focal_loss.

    x_t is the signed logit (x for a positive sample, -x for a negative one); FL of x_t with target 1 is the loss of
    either sample. Computed in float64 (the PyTorch closed form).
    """
    from fltool_plugins.losses.functional import sigmoid_focal_loss

    x = x_t.detach().to(torch.float64).reshape(-1, 1)  # (n,) -> (n, 1): one class
    target = torch.zeros(x.shape[0], dtype=torch.int64)  # class 0 of 1: y = 1, so x_t = x
    return sigmoid_focal_loss(x, target, gamma=gamma, alpha=None, reduction="none").reshape(-1)


# ---------------------------------------------------------------------------------------------------------------------
# The streaming histogram
# ---------------------------------------------------------------------------------------------------------------------

@dataclass
class SetCdf:
    """The loss CDF of one set of samples (positives or negatives), for every gamma.

    ``fraction`` (P,) and ``cumulative`` (G, P): the curve in the paper's order (lowest loss first), from (0, 0) to
    (1, 1), at the bin boundaries where it is exact. ``hardest[q]`` (G,): the fraction of hardest samples carrying a
    share q of the set's loss, ``hardest_error[q]`` (G,) its bound. NaN where a set is empty or its loss is 0.
    """

    name: str
    count: int
    gammas: Tuple[float, ...]
    fraction: np.ndarray
    cumulative: np.ndarray
    total_loss: np.ndarray
    hardest: Dict[float, np.ndarray]
    hardest_error: Dict[float, np.ndarray]

    def per_gamma(self) -> List[dict]:
        rows = []
        for i, gamma in enumerate(self.gammas):
            row: Dict[str, Any] = {"gamma": gamma, "total_loss": _num(self.total_loss[i])}
            for q in self.hardest:
                pct = f"{round(q * 100):d}"
                row[f"hardest_fraction_{pct}"] = _num(self.hardest[q][i])
                row[f"hardest_fraction_{pct}_error_bound"] = _num(self.hardest_error[q][i])
            rows.append(row)
        return rows


def _num(value: float) -> Optional[float]:
    return None if not math.isfinite(value) else float(value)


class LossHistogram:
    """Streaming counts and per-gamma loss sums over x_t for one set of samples; memory O(bins x gammas).

    Bin 0 holds x_t < -limit (the hardest samples), bins 1..2 limit bins_per_unit the intervals
    [-limit + (i - 1) h, -limit + i h) with h = 1 / bins_per_unit, the last bin x_t >= limit (the easiest).
    """

    def __init__(self, gammas: Sequence[float] = DEFAULT_GAMMAS, *, name: str = "samples", limit: float = 32.0,
                 bins_per_unit: int = 128) -> None:
        if not limit > 0 or bins_per_unit < 1:
            raise ConfigError(f"histogram needs limit > 0 and bins_per_unit >= 1, got {limit}, {bins_per_unit}")
        self.gammas = check_gammas(gammas)
        self.name = name
        self.limit = float(limit)
        self.bins_per_unit = int(bins_per_unit)
        inner = int(round(2 * self.limit * self.bins_per_unit))
        self.num_bins = inner + 2
        self.counts = np.zeros(self.num_bins, dtype=np.int64)
        self.loss_sums = np.zeros((len(self.gammas), self.num_bins), dtype=np.float64)

    @property
    def nbytes(self) -> int:
        """Bytes of the accumulated state (constant: it does not depend on how many samples were added)."""
        return int(self.counts.nbytes + self.loss_sums.nbytes)

    @property
    def count(self) -> int:
        return int(self.counts.sum())

    def edges(self) -> np.ndarray:
        """(num_bins + 1,) bin edges in x_t, from -inf to +inf."""
        inner = -self.limit + np.arange(self.num_bins - 1, dtype=np.float64) / self.bins_per_unit
        return np.concatenate(([-np.inf], inner, [np.inf]))

    def add(self, x_t: Union[Tensor, np.ndarray]) -> None:
        """Add samples given by their signed logits x_t (x for positives, -x for negatives)."""
        x_t = torch.as_tensor(x_t).detach().reshape(-1)
        if x_t.numel() == 0:
            return
        if not bool(torch.isfinite(x_t).all()):
            bad = int((~torch.isfinite(x_t)).sum())
            raise DataError(f"{bad} of {x_t.numel()} {self.name} logits are not finite",
                            "the model's scores are NaN/inf: check the checkpoint (a diverged run?)")
        for start in range(0, x_t.numel(), _CHUNK):
            chunk = x_t[start:start + _CHUNK].to(torch.float64)
            idx = torch.floor((chunk + self.limit) * self.bins_per_unit).add_(1)
            idx = idx.clamp_(0, self.num_bins - 1).to(torch.int64).numpy()
            self.counts += np.bincount(idx, minlength=self.num_bins)
            # Group by bin, then sum each group pairwise (np.add.reduceat): a bin of 10^6 equal losses sums to
            # within ~1e-16 relative, where a running sum (np.bincount's) drifts by ~1e-12.
            order = np.argsort(idx, kind="stable")
            sorted_idx = idx[order]
            starts = np.concatenate(([0], np.flatnonzero(np.diff(sorted_idx)) + 1))
            bins = sorted_idx[starts]
            for i, gamma in enumerate(self.gammas):
                loss = focal_loss_of_xt(chunk, gamma).numpy()
                self.loss_sums[i, bins] += np.add.reduceat(loss[order], starts)

    def add_logits(self, logits: Union[Tensor, np.ndarray], positive: bool) -> None:
        """Add samples given by their logits x: x_t = x for positive (y = 1) samples, -x for negative (y = 0) ones."""
        x = torch.as_tensor(logits)
        self.add(x if positive else torch.neg(x))

    def cdf(self, shares: Sequence[float] = LOSS_SHARES) -> SetCdf:
        """The curves and the hardest-sample fractions (see the module docstring for their accuracy)."""
        n = self.count
        totals = self.loss_sums.sum(axis=1)
        nonempty = np.flatnonzero(self.counts[::-1])  # easiest bin first: the paper's ascending-loss order
        counts_up = self.counts[::-1][nonempty]
        sums_up = self.loss_sums[:, ::-1][:, nonempty]
        fraction = np.concatenate(([0.0], np.cumsum(counts_up) / max(n, 1)))
        cumulative = np.concatenate((np.zeros((len(self.gammas), 1)), np.cumsum(sums_up, axis=1)), axis=1)
        for i in range(len(self.gammas)):
            last = cumulative[i, -1]
            cumulative[i] = cumulative[i] / last if last > 0 else np.nan
        hardest = {float(q): np.full(len(self.gammas), np.nan) for q in shares}
        error = {float(q): np.full(len(self.gammas), np.nan) for q in shares}
        edges = self.edges()
        for i, gamma in enumerate(self.gammas):
            if n == 0 or not totals[i] > 0:
                continue
            # Loss at every edge (FL is decreasing in x_t): bin b's losses lie in [edge_loss[b + 1], edge_loss[b]].
            edge_loss = np.empty(self.num_bins + 1)
            edge_loss[0], edge_loss[-1] = np.inf, 0.0
            edge_loss[1:-1] = focal_loss_of_xt(torch.from_numpy(edges[1:-1]), gamma).numpy()
            for q in shares:
                hardest[float(q)][i], error[float(q)][i] = self._hardest(i, float(q), edge_loss)
        return SetCdf(self.name, n, self.gammas, fraction, cumulative, totals, hardest, error)

    def _hardest(self, i: int, share: float, edge_loss: np.ndarray) -> Tuple[float, float]:
        """(fraction of hardest samples carrying ``share`` of the loss, its error bound) for gamma number i."""
        if not 0 < share <= 1:
            raise ValueError(f"a share of the loss lies in (0, 1], got {share}")
        sums, counts, n = self.loss_sums[i], self.counts, self.count
        carried = np.cumsum(sums)  # hardest bin first
        target = share * carried[-1]
        b = min(int(np.searchsorted(carried, target, side="left")), self.num_bins - 1)
        while sums[b] <= 0 and b > 0:  # float rounding at the top: step back to the bin that carries loss
            b -= 1
        before = carried[b - 1] if b > 0 else 0.0
        residual = max(target - before, 0.0)
        taken = residual / (sums[b] / counts[b])  # samples of bin b, at the bin's mean loss
        taken = min(taken, float(counts[b]))
        lo = 0.0 if not math.isfinite(edge_loss[b]) else residual / edge_loss[b]
        hi = float(counts[b]) if edge_loss[b + 1] <= 0 else min(residual / edge_loss[b + 1], float(counts[b]))
        before_count = float(counts[:b].sum())
        bound = max(taken - lo, hi - taken, 0.0)
        return (before_count + taken) / n, bound / n


# ---------------------------------------------------------------------------------------------------------------------
# Running a model over a dataset
# ---------------------------------------------------------------------------------------------------------------------

@dataclass
class LossCdfOptions:
    config: str
    checkpoint: Path
    work_dir: Optional[Path] = None
    cfg_options: Union[Sequence[str], dict, None] = None
    split: str = "val"
    num_images: Optional[int] = None
    gammas: Sequence[float] = DEFAULT_GAMMAS
    bins_per_unit: int = 128
    limit: float = 32.0
    trust_checkpoint: bool = False


@dataclass
class LossCdfResult:
    config: str
    checkpoint: str
    split: str
    num_images: int
    gammas: Tuple[float, ...]
    positive: SetCdf
    negative: SetCdf
    anchors: Dict[str, int]
    assigner: Dict[str, Any]
    binning: Dict[str, float]
    memory: Dict[str, float]
    wall_s: float
    work_dir: Path
    notes: List[str] = field(default_factory=list)

    def summary(self) -> dict:
        """The JSON summary: sample counts and, per set and gamma, the hardest fractions carrying 50%/90%."""
        return {
            "config": self.config, "checkpoint": self.checkpoint, "split": self.split, "num_images": self.num_images,
            "gammas": list(self.gammas),
            "loss": "FL(p_t) = -(1 - p_t)^gamma log(p_t), alpha not applied (it is constant within each set and "
                    "cancels in the normalisation)",
            "samples": {"positive": self.positive.count, "negative": self.negative.count},
            "anchors": self.anchors, "assigner": self.assigner,
            "positive": self.positive.per_gamma(), "negative": self.negative.per_gamma(),
            "binning": self.binning, "memory": self.memory, "wall_s": round(self.wall_s, 2), "notes": self.notes,
        }


def _max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def run_loss_cdf(opts: LossCdfOptions, progress: ProgressFn = no_progress) -> LossCdfResult:
    """Run a checkpoint over a split's images and accumulate the loss CDF of its positive and negative samples."""
    from mmdet.models.utils import unpack_gt_instances
    from mmengine.runner import Runner

    from fltool.engine import runner as rn
    from fltool.engine.checkpoint import checkpoint_state_dict

    start = time.time()
    rss_start = _max_rss_mb()
    gammas = check_gammas(opts.gammas)
    ckpt = Path(opts.checkpoint)
    if not ckpt.is_file():
        raise CheckpointError(f"checkpoint not found: {ckpt}", "give the .pth file written by `fltool train`")
    if opts.num_images is not None and opts.num_images < 1:
        raise ConfigError(f"--num-images must be >= 1, got {opts.num_images}")
    progress(ProgressEvent("stage", "loading config"))
    cfg, loader_cfg = split_loader_config(opts.config, opts.cfg_options, opts.work_dir, opts.split, opts.num_images,
                                          progress)
    progress(ProgressEvent("stage", f"loading checkpoint {ckpt.name}"))
    state = checkpoint_state_dict(ckpt, trust=opts.trust_checkpoint)

    with rn.captured_stdout(rn.stdout_log(cfg)):
        runner, model = rn.built_runner_with_weights(cfg, None, str(ckpt))
        if not hasattr(model, "extract_feat") or not hasattr(model, "bbox_head"):
            raise ConfigError(f"the model is a {type(model).__name__}, not a single-stage detector",
                              "loss-cdf analyses single-stage detectors such as RetinaNet")
        check_anchor_head(model.bbox_head)
        rn.load_weights_strict(model, state, str(ckpt))
        del state
        with rn.translate_errors():
            loader = Runner.build_dataloader(loader_cfg, seed=0)
    total_images = len(loader.dataset)
    if total_images == 0:
        raise DataError(f"the {opts.split} split has no images", "choose another --split")

    head = model.bbox_head
    positives = LossHistogram(gammas, name="positive", limit=opts.limit, bins_per_unit=opts.bins_per_unit)
    negatives = LossHistogram(gammas, name="negative", limit=opts.limit, bins_per_unit=opts.bins_per_unit)
    anchors = {"positive": 0, "negative": 0, "ignored": 0}
    done, rss_first = 0, float("nan")
    model.eval()
    message = f"loss-cdf: {opts.split} images"
    progress(ProgressEvent("stage", message, 0, total_images))
    with torch.no_grad(), rn.translate_errors():
        for data_batch in loader:
            data = model.data_preprocessor(data_batch, False)
            cls_scores, _ = head(model.extract_feat(data["inputs"]))
            gts, gts_ignore, metas = unpack_gt_instances(data["data_samples"])
            assigned = assign_logits(head, cls_scores, gts, metas, gts_ignore)
            positives.add_logits(assigned.positive, positive=True)
            negatives.add_logits(assigned.negative, positive=False)
            anchors["positive"] += assigned.positive_anchors
            anchors["negative"] += assigned.negative_anchors
            anchors["ignored"] += assigned.ignored_anchors
            done += len(metas)
            if math.isnan(rss_first):
                rss_first = _max_rss_mb()
            progress(ProgressEvent("stage", message, done, total_images))

    notes = []
    if positives.count == 0:
        notes.append("no positive samples: the images have no ground-truth boxes the assigner could match")
    if negatives.count == 0:
        raise DataError(f"no negative samples in {done} images of the {opts.split} split",
                        "use more images (--num-images) or another split")
    assigner = {k: v for k, v in dict(head.train_cfg.get("assigner", {})).items()}
    return LossCdfResult(
        config=str(opts.config), checkpoint=str(ckpt), split=opts.split, num_images=done, gammas=gammas,
        positive=positives.cdf(), negative=negatives.cdf(), anchors=anchors, assigner=assigner,
        binning={"x_t_limit": opts.limit, "bins_per_unit": opts.bins_per_unit,
                 "note": "curve points are exact at the listed fractions (bin boundaries); each hardest fraction "
                         "is within its error bound of the exact value"},
        memory={"peak_rss_mb": round(_max_rss_mb(), 1), "peak_rss_mb_after_first_batch": round(rss_first, 1),
                "peak_rss_mb_before_model": round(rss_start, 1),
                "accumulator_bytes": positives.nbytes + negatives.nbytes},
        wall_s=time.time() - start, work_dir=Path(cfg.work_dir), notes=notes)


# ---------------------------------------------------------------------------------------------------------------------
# Outputs: PNG (Figure 4), CSV (the curves), JSON (the summary)
# ---------------------------------------------------------------------------------------------------------------------

@dataclass
class LossCdfFiles:
    png: Path
    csv: Path
    json: Path


def _gamma_label(gamma: float) -> str:
    return f"{gamma:g}"


def write_curves_csv(sets: Sequence[SetCdf], path: Path) -> Path:
    """One row per curve point: set, fraction of samples, then the cumulative normalised loss for every gamma."""
    gammas = sets[0].gammas
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["set", "fraction_of_samples"] + [f"cum_loss_gamma_{_gamma_label(g)}" for g in gammas])
        for s in sets:
            for j, frac in enumerate(s.fraction):
                writer.writerow([s.name, repr(float(frac))] + [repr(float(s.cumulative[i, j]))
                                                               for i in range(len(gammas))])
    return path


def percent(fraction: float, digits: int = 3) -> str:
    """A fraction as a percentage with ``digits`` significant digits, never rounded away: the hardest fractions of a
    well-trained model's negatives are thousandths of a percent (1.43e-05 -> ``0.00143%``, not ``0.00%``)."""
    text = np.format_float_positional(100 * fraction, precision=digits, unique=False, fractional=False, trim="k")
    return text.rstrip(".") + "%"  # trailing zeros are significant (5.60%); a bare point is not (100.)


def plot_loss_cdf(sets: Sequence[SetCdf], path: Path, title: str = "") -> Path:
    """Figure 4: one panel per set, cumulative normalised loss against the fraction of samples, one curve per gamma."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(sets), figsize=(5.2 * len(sets), 4.4), squeeze=False)
    for ax, s in zip(axes[0], sets):
        for i, gamma in enumerate(s.gammas):
            h90 = s.hardest.get(0.9, np.full(len(s.gammas), np.nan))[i]
            share = f" (90% in hardest {percent(h90)})" if math.isfinite(h90) else ""
            ax.plot(s.fraction, s.cumulative[i], label=f"γ = {_gamma_label(gamma)}{share}", linewidth=1.6)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel(f"fraction of {s.name} samples")
        ax.set_ylabel("cumulative normalized loss")
        ax.set_title(f"{s.name} samples (n = {s.count:,})")
        ax.grid(True, alpha=0.3)
        ax.legend(loc="upper left", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path, dpi=120)


def save_loss_cdf(result: LossCdfResult, out_dir: Path, stem: str = "loss_cdf") -> LossCdfFiles:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sets = (result.positive, result.negative)
    title = f"{Path(result.checkpoint).name}: {result.num_images} {result.split} images"
    png = plot_loss_cdf(sets, out_dir / f"{stem}.png", title)
    csv_path = write_curves_csv(sets, out_dir / f"{stem}.csv")
    json_path = write_json(out_dir / f"{stem}.json", result.summary())
    return LossCdfFiles(png, csv_path, json_path)
