"""Figures 1, 5 and 6 of the paper, computed with the project's own loss functions, and checked against the paper.

- Figure 1: FL(p_t) = -(1 - p_t)^gamma log(p_t) against p_t, for gamma in {0, 0.5, 1, 2, 5} (gamma = 0 is CE).
- Figure 5: CE, FL (gamma 2) and FL* (gamma 2, beta 1; gamma 4, beta 0) against x_t = s x.
- Figure 6: their derivatives d loss / d x against x_t (for y = 1, so x_t = x and d/dx = d/dx_t).

Every value comes from :func:`fltool_plugins.losses.functional.sigmoid_focal_loss` /
:func:`~fltool_plugins.losses.functional.sigmoid_focal_loss_star` (losses by the forward pass, derivatives by their
closed-form backward through autograd), with no alpha (the paper's figures are unweighted). Each curve is also
evaluated from the paper's formulas (PAPER.md, appendices A and B) in numpy float64, independently of the project's
code, and the largest relative difference is reported per curve and backend (float64 runs the PyTorch closed form,
float32 on CPU the C++ kernel), so drawing the figures also tests the losses.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from fltool.fileio import atomic_path, save_figure

FIG1_GAMMAS: Tuple[float, ...] = (0.0, 0.5, 1.0, 2.0, 5.0)


@dataclass(frozen=True)
class LossVariant:
    """One curve of Figures 5 and 6: FL with its gamma (``star`` False; gamma 0 is CE) or FL* with gamma and beta."""

    label: str
    star: bool
    gamma: float
    beta: float = 0.0


FIG5_VARIANTS: Tuple[LossVariant, ...] = (
    LossVariant("CE", star=False, gamma=0.0),
    LossVariant("FL γ=2", star=False, gamma=2.0),
    LossVariant("FL* γ=2 β=1", star=True, gamma=2.0, beta=1.0),
    LossVariant("FL* γ=4 β=0", star=True, gamma=4.0, beta=0.0),
)


@dataclass
class Figure:
    """One figure's data: x values (n,), one curve (n,) per label, axis names."""

    name: str
    x_label: str
    y_label: str
    x: np.ndarray
    curves: Dict[str, np.ndarray]
    y_lim: Optional[Tuple[float, float]] = None
    x_lim: Optional[Tuple[float, float]] = None


@dataclass
class CurveCheck:
    """Largest relative difference between the project's values and the paper's formula for one curve."""

    figure: str
    curve: str
    backend: str
    max_rel_error: float


@dataclass
class LossCurves:
    figures: List[Figure]
    checks: List[CurveCheck] = field(default_factory=list)

    def figure(self, name: str) -> Figure:
        return next(f for f in self.figures if f.name == name)

    def worst(self, backend: str) -> float:
        return max(c.max_rel_error for c in self.checks if c.backend == backend)


# ---------------------------------------------------------------------------------------------------------------------
# The paper's formulas in numpy (the reference), and the project's functions
# ---------------------------------------------------------------------------------------------------------------------

def _softplus(u: np.ndarray) -> np.ndarray:
    return np.maximum(u, 0) + np.log1p(np.exp(-np.abs(u)))


def _sigmoid(u: np.ndarray) -> np.ndarray:
    return np.exp(-_softplus(-u))


def paper_loss(v: LossVariant, x_t: np.ndarray) -> np.ndarray:
    """CE/FL: -(1 - p_t)^gamma log p_t; FL*: -log(sigmoid(gamma x_t + beta)) / gamma (PAPER.md)."""
    if v.star:
        return _softplus(-(v.gamma * x_t + v.beta)) / v.gamma
    return _sigmoid(-x_t) ** v.gamma * _softplus(-x_t)


def paper_grad(v: LossVariant, x_t: np.ndarray) -> np.ndarray:
    """Appendix B for y = 1 (s = 1): dFL/dx = (1 - p_t)^gamma (gamma p_t log p_t + p_t - 1); dFL*/dx = p*_t - 1."""
    if v.star:
        return -_sigmoid(-(v.gamma * x_t + v.beta))  # p*_t - 1, without cancellation
    p_t, q = _sigmoid(x_t), _sigmoid(-x_t)  # q = 1 - p_t
    return q ** v.gamma * (v.gamma * p_t * -_softplus(-x_t) - q)


def project_loss_and_grad(v: LossVariant, x_t: np.ndarray, dtype: torch.dtype = torch.float64,
                          backend: str = "auto") -> Tuple[np.ndarray, np.ndarray]:
    """(loss, d loss / d x) of y = 1 samples at logits x_t, by the project's loss function (no alpha)."""
    from fltool_plugins.losses.functional import sigmoid_focal_loss, sigmoid_focal_loss_star

    x = torch.tensor(x_t, dtype=dtype).reshape(-1, 1).requires_grad_(True)  # (n,) -> (n, 1): one class
    target = torch.zeros(x.shape[0], dtype=torch.int64)  # class 0 of 1: y = 1
    if v.star:
        loss = sigmoid_focal_loss_star(x, target, gamma=v.gamma, beta=v.beta, alpha=None, backend=backend)
    else:
        loss = sigmoid_focal_loss(x, target, gamma=v.gamma, alpha=None, backend=backend)
    (grad,) = torch.autograd.grad(loss.sum(), x)
    return loss.detach().double().reshape(-1).numpy(), grad.double().reshape(-1).numpy()


def _rel_error(value: np.ndarray, reference: np.ndarray) -> float:
    """max |value - reference| / (|reference| + 1e-12) (the floor keeps values near 0 from dividing by 0)."""
    return float(np.max(np.abs(value - reference) / (np.abs(reference) + 1e-12)))


def _backends() -> List[Tuple[str, torch.dtype, str]]:
    from fltool_plugins.losses.functional import kernel_available

    found = [("torch float64", torch.float64, "torch")]
    if kernel_available():
        found.append(("kernel float32", torch.float32, "kernel"))
    else:
        found.append(("torch float32", torch.float32, "torch"))
    return found


# ---------------------------------------------------------------------------------------------------------------------
# The figures
# ---------------------------------------------------------------------------------------------------------------------

def loss_curves(points: int = 1001, x_range: Tuple[float, float] = (-5.0, 5.0)) -> LossCurves:
    """The data of Figures 1, 5 and 6 from the project's losses, each curve checked against the paper's formula."""
    if points < 3:
        raise ValueError(f"points must be >= 3, got {points}")
    checks: List[CurveCheck] = []
    backends = _backends()

    # Figure 1: p_t on (0, 1) (FL is infinite at 0); x_t = logit(p_t).
    p_t = np.linspace(0.0, 1.0, points)[1:-1]
    x_of_p = np.log(p_t) - np.log1p(-p_t)
    fig1: Dict[str, np.ndarray] = {}
    for gamma in FIG1_GAMMAS:
        v = LossVariant("CE" if gamma == 0 else f"FL γ={gamma:g}", star=False, gamma=gamma)
        label = "CE (γ=0)" if gamma == 0 else f"γ={gamma:g}"
        fig1[label] = _checked(v, x_of_p, "figure 1", label, backends, checks, use_grad=False)
    figures = [Figure("fig1_focal_loss", "probability of ground truth class (p_t)", "loss", p_t, fig1,
                      y_lim=(0.0, 5.0), x_lim=(0.0, 1.0))]

    # Figures 5 and 6: x_t on x_range.
    x_t = np.linspace(x_range[0], x_range[1], points)
    fig5, fig6 = {}, {}
    for v in FIG5_VARIANTS:
        fig5[v.label] = _checked(v, x_t, "figure 5", v.label, backends, checks, use_grad=False)
        fig6[v.label] = _checked(v, x_t, "figure 6", v.label, backends, checks, use_grad=True)
    figures.append(Figure("fig5_fl_star", "x_t", "loss", x_t, fig5, (0.0, 5.0)))
    figures.append(Figure("fig6_derivatives", "x_t", "d loss / d x_t", x_t, fig6, (-1.2, 0.05)))
    return LossCurves(figures, checks)


def _checked(v: LossVariant, x_t: np.ndarray, figure: str, label: str, backends: Sequence, checks: List[CurveCheck],
             use_grad: bool) -> np.ndarray:
    """The project's curve (float64), after recording its deviation from the paper's formula on every backend."""
    reference = (paper_grad if use_grad else paper_loss)(v, x_t)
    values = None
    for name, dtype, backend in backends:
        loss, grad = project_loss_and_grad(v, x_t, dtype, backend)
        value = grad if use_grad else loss
        checks.append(CurveCheck(figure, label, name, _rel_error(value, reference)))
        if values is None:
            values = value
    return values


# ---------------------------------------------------------------------------------------------------------------------
# Outputs
# ---------------------------------------------------------------------------------------------------------------------

def _write_csv(fig: Figure, path: Path) -> Path:
    labels = list(fig.curves)
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([fig.x_label] + labels)
        for j, x in enumerate(fig.x):
            writer.writerow([repr(float(x))] + [repr(float(fig.curves[k][j])) for k in labels])
    return path


def _plot(fig: Figure, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, ax = plt.subplots(figsize=(6.0, 4.4))
    for label, y in fig.curves.items():
        ax.plot(fig.x, y, label=label, linewidth=1.6)
    ax.set_xlim(*(fig.x_lim or (float(fig.x[0]), float(fig.x[-1]))))
    if fig.y_lim:
        ax.set_ylim(*fig.y_lim)
    ax.set_xlabel(fig.x_label)
    ax.set_ylabel(fig.y_label)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    figure.tight_layout()
    return save_figure(figure, path, dpi=120)


def save_loss_curves(curves: LossCurves, out_dir: Path) -> List[Path]:
    """Write ``<figure>.png`` and ``<figure>.csv`` for every figure; returns the paths written."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: List[Path] = []
    for fig in curves.figures:
        written.append(_plot(fig, out_dir / f"{fig.name}.png"))
        written.append(_write_csv(fig, out_dir / f"{fig.name}.csv"))
    return written
