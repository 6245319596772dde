"""Datasets: the embedded synthetic default dataset and a COCO dataset checker (values and exceptions, no printing)."""
from fltool.data.check import CheckReport, Issue, check_coco, check_config_datasets, drop_bad_records
from fltool.data.synth import SynthDataset, SynthSpec, default_dataset, generate

__all__ = ["CheckReport", "Issue", "SynthDataset", "SynthSpec", "check_coco", "check_config_datasets",
           "default_dataset", "drop_bad_records", "generate"]
