"""``fltool tune``: Optuna's search over the loss (gamma, alpha, prior), the optimiser, the anchors, the batch and
input size, where every trial is a normal ``fltool train`` run (its own work dir, metrics and checkpoints).

One idea per module: :mod:`.space` (``--space``/``--preset`` items and the aliases they share with ``fltool sweep``),
:mod:`.study` (the study: storage, sampler, pruner, workers, one trial), :mod:`.report` (trials table, best config,
plots), :mod:`.run` (the command).
"""
from fltool.engine.tune.report import TrialRow, TuneResult
from fltool.engine.tune.run import run_tune, tune_command
from fltool.engine.tune.space import PRESETS, Param, parse_param, parse_space
from fltool.engine.tune.study import TUNE_HINT, TuneOptions

__all__ = ["PRESETS", "TUNE_HINT", "Param", "TrialRow", "TuneOptions", "TuneResult", "parse_param", "parse_space",
           "run_tune", "tune_command"]
