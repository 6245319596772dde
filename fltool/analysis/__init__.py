"""Analyses of losses and trained models: the paper's Figure 4 (``loss_cdf``) and Figures 1, 5, 6 (``loss_curves``);
why a detector misses (``errors``: TIDE) and what threshold to ship (``pr``, ``confusion``), on COCO's own matching
(``matching``); runs side by side (``compare``).

Each module returns dataclasses and raises :mod:`fltool.errors` exceptions; the CLI (``fltool analyze``) prints.
"""
