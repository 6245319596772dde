"""``fltool sweep``: train and evaluate every point of a grid of loss (or any config) settings, once per seed, and
tabulate AP/AP50/AP75 per point as in the paper's Table 1a/1b and Table 3.

The grid
    ``--set KEY=V1,V2,...`` (repeatable) is one axis; the grid is the cartesian product of the axes, in the order
    given. ``loss.X`` is short for ``model.bbox_head.loss_cls.X``; any other key is a full config key, checked like
    ``--cfg-options``. Values use MMEngine's syntax, element by element (``0``, ``0.25``, ``None``, ``abc``,
    ``[1,2]``). The axis ``loss=...`` takes the presets of :data:`LOSS_PRESETS` (``CE``, ``CE-a0.75``, ``FL``,
    ``FL*``, ``FL*-g4-b0``, ``OHEM-1:3-b128``): a preset replaces the whole ``loss_cls`` dict (an OHEM preset also
    switches the head to ``OHEMRetinaHead``), and ``loss.X`` axes then set its fields.

The sweep folder
    ``sweep.json`` (command, config, axes, seeds, points), ``<point id>/point.json`` (the point's exact settings),
    ``<point id>/seed<k>/`` (that run's work dir: ``run.json`` with the settings it was started with, checkpoints,
    logs, ``metrics.json``), and the report: ``results.csv``, ``results.json``, ``heatmap.png``.

Resuming
    A run whose ``metrics.json`` exists and whose ``run.json`` matches is skipped; an unfinished run resumes from its
    last checkpoint (``resume='auto'``) or starts again. A sweep stopped by SIGINT/SIGTERM raises
    :class:`~fltool.errors.Interrupted` with the same signal; the same command continues it. Re-running in a folder
    made by another grid is refused unless the new grid only adds points.

The package, one idea per module: :mod:`.presets` (loss presets), :mod:`.grid` (axes, points, checks against the
config), :mod:`.records` (the folder's records and commands), :mod:`.run` (training the runs), :mod:`.report`
(tables and files).
"""
from fltool.engine.sweep.grid import (
                                         LOSS_ALIAS,
                                         LOSS_KEY,
                                         Axis,
                                         Grid,
                                         Point,
                                         build_grid,
                                         config_digest,
                                         parse_axes,
                                         parse_axis,
                                         point_id,
                                         value_text,
)
from fltool.engine.sweep.presets import (
                                         LOSS_ARGS,
                                         LOSS_PRESETS,
                                         LossPreset,
                                         check_loss_fields,
                                         loss_preset,
                                         presets_help,
)
from fltool.engine.sweep.records import (
                                         METRICS,
                                         SWEEP_FILE,
                                         SweepOptions,
                                         check_same_sweep,
                                         read_sweep_record,
                                         run_dir_of,
                                         sweep_command,
                                         train_command,
)
from fltool.engine.sweep.report import (
                                         TABLE_METRICS,
                                         PointListing,
                                         PointSummary,
                                         RunRecord,
                                         SweepResult,
                                         build_report,
                                         collect,
                                         list_points,
                                         summarise,
)
from fltool.engine.sweep.run import run_sweep

__all__ = ["LOSS_ALIAS", "LOSS_ARGS", "LOSS_KEY", "LOSS_PRESETS", "METRICS", "SWEEP_FILE", "TABLE_METRICS", "Axis",
           "Grid", "LossPreset", "Point", "PointListing", "PointSummary", "RunRecord", "SweepOptions", "SweepResult",
           "build_grid", "build_report", "check_loss_fields", "check_same_sweep", "collect", "config_digest",
           "list_points", "loss_preset", "parse_axes", "parse_axis", "point_id", "presets_help", "read_sweep_record",
           "run_dir_of", "run_sweep", "summarise", "sweep_command", "train_command", "value_text"]
