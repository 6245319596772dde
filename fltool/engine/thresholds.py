"""The score thresholds chosen for a run, kept in its work dir as ``thresholds.json``.

``fltool analyze pr`` chooses them (the F1-optimal confidence at IoU 0.5, overall and per class) and writes them here;
``fltool predict --score-thr auto`` applies them (a class's own threshold where one was chosen, else the overall one)
and ``fltool export`` carries them into the ONNX file's metadata (``fltool.thresholds``). They live in the engine so
that predict and export, which sit below the analysis code, can read them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from fltool.errors import ConfigError
from fltool.fileio import read_json, write_json

THRESHOLDS_FILE = "thresholds.json"
SCHEMA = "fltool.thresholds/1"
AUTO = "auto"


@dataclass
class Thresholds:
    """Keep a detection when its score is at least its class's threshold (``per_class``), else ``overall``."""

    overall: float
    per_class: dict = field(default_factory=dict)  # class name -> threshold, only the classes one was chosen for
    criterion: str = "F1-optimal at IoU 0.5"
    source: dict = field(default_factory=dict)  # checkpoint, annotation file, images: where they were chosen

    def for_classes(self, classes: Sequence[str]) -> np.ndarray:
        """The threshold of each label (index = label), for masking ``scores >= thr[labels]``."""
        return np.array([float(self.per_class.get(name, self.overall)) for name in classes], dtype=np.float64)

    def as_dict(self) -> dict:
        return {"schema": SCHEMA, "overall": self.overall, "per_class": dict(self.per_class),
                "criterion": self.criterion, "source": dict(self.source)}

    @classmethod
    def from_dict(cls, data: Any, where: str) -> "Thresholds":
        """Read what :meth:`as_dict` wrote; anything else is a ConfigError naming ``where``."""
        problem = thresholds_problem(data)
        if problem:
            raise ConfigError(f"{where}: {problem}", "choose them again: fltool analyze pr RUN")
        return cls(float(data["overall"]), {str(k): float(v) for k, v in data.get("per_class", {}).items()},
                   str(data.get("criterion", "")), dict(data.get("source") or {}))

    def describe(self, classes: Optional[Sequence[str]] = None) -> str:
        """``0.42 (circle 0.40, square 0.47)``: what predict and export print."""
        names = [c for c in (classes or self.per_class) if c in self.per_class]
        per = ", ".join(f"{c} {self.per_class[c]:.3g}" for c in names)
        return f"{self.overall:.3g}" + (f" overall; per class: {per}" if per else "")


def _score(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) \
        and 0.0 <= value <= 1.0


def thresholds_problem(data: Any) -> Optional[str]:
    """What is wrong with a thresholds record (JSON as read), or None. Shared with the ONNX metadata reader."""
    if not isinstance(data, dict):
        return "the thresholds are not a JSON object"
    if not _score(data.get("overall")):
        return f"overall threshold must be a score in [0, 1], got {str(data.get('overall'))[:40]}"
    per_class = data.get("per_class", {})
    if not isinstance(per_class, dict) or not all(isinstance(k, str) and _score(v) for k, v in per_class.items()):
        return "per_class must map class names to scores in [0, 1]"
    return None


def write_thresholds(folder: Path, thresholds: Thresholds) -> Path:
    return write_json(Path(folder) / THRESHOLDS_FILE, thresholds.as_dict())


def read_thresholds(folder: Path) -> Optional[Thresholds]:
    """The thresholds kept in ``folder`` (a run's work dir), or None where none were chosen."""
    path = Path(folder) / THRESHOLDS_FILE
    data = read_json(path)
    return None if data is None else Thresholds.from_dict(data, str(path))


def run_thresholds(checkpoint: Path, notes: Optional[list] = None) -> Thresholds:
    """The thresholds of the run ``checkpoint`` belongs to (its folder's thresholds.json), or a ConfigError saying
    how to choose them. A note where they were chosen for another checkpoint of the run."""
    folder = Path(checkpoint).parent
    found = read_thresholds(folder)
    if found is None:
        raise ConfigError(f"--score-thr auto: no {THRESHOLDS_FILE} in {folder}",
                          f"choose the thresholds first (fltool analyze pr {folder}), or give a number")
    chosen_for = found.source.get("checkpoint")
    if notes is not None and chosen_for and Path(chosen_for).name != Path(checkpoint).name:
        notes.append(f"{THRESHOLDS_FILE} was chosen for {Path(chosen_for).name}, applied to {Path(checkpoint).name}")
    return found


def parse_score_thr(value: Any) -> Any:
    """``"auto"`` or a score in [0, 1] (a float); anything else is a ConfigError."""
    if isinstance(value, str) and value.strip().lower() == AUTO:
        return AUTO
    try:
        score = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"--score-thr {value!r} is neither a number nor 'auto'",
                          "give a score in [0, 1], or auto for the run's thresholds.json") from None
    if not 0.0 <= score <= 1.0:
        raise ConfigError(f"--score-thr {value} is not in [0, 1]")
    return score
