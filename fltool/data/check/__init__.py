"""Checking a COCO-format detection dataset before training on it.

:func:`check_coco` reads an annotation file (and, unless ``decode=False``, fully decodes every image) and returns a
:class:`CheckReport`: the dataset's figures (images, boxes, class counts, COCO size histogram) and its problems as
:class:`Issue` records, each with a count and the first few offenders.

What counts as bad, and what :func:`drop_bad_records` does with it:

- a bad *image* (file missing, unreadable or truncated, decoded size differs from the JSON, a required field
  missing or malformed, an id shared by several images) is dropped together with all its annotations: dropping only
  some boxes of an image would turn real objects into background;
- a bad *annotation* (zero or negative width/height, a required field missing or malformed, an unknown category or
  image id, an id already used by an earlier annotation, a box entirely outside its image) is dropped;
- a box *partly* outside its image is an error too, but is clipped to the image instead (area = clipped w*h);
- warnings (images without boxes, near-duplicate boxes, EXIF rotation, ...) never drop anything.

Images are decoded with Pillow with truncated-image loading switched off: OpenCV (which MMDetection uses) decodes a
truncated JPEG without complaint, filling the missing part with grey.

The package's parts: :mod:`.report` (the issue kinds and the report), :mod:`.coco` (the check), :mod:`.clean`
(dropping bad records) and :mod:`.config` (the datasets of a training config).
"""
from fltool.data.check.clean import drop_bad_records
from fltool.data.check.coco import Progress, check_coco, default_img_dir, load_coco_json
from fltool.data.check.config import check_config_datasets
from fltool.data.check.report import (
                                      ANNOTATION_FIELDS,
                                      DUPLICATE_IOU,
                                      EDGE_TOLERANCE,
                                      ERROR,
                                      IMAGE_FIELDS,
                                      KINDS,
                                      MEDIUM_MAX_AREA,
                                      SIZE_NAMES,
                                      SMALL_MAX_AREA,
                                      WARNING,
                                      CheckReport,
                                      Issue,
                                      IssueCollector,
                                      issue_label,
)

__all__ = ["ANNOTATION_FIELDS", "DUPLICATE_IOU", "EDGE_TOLERANCE", "ERROR", "IMAGE_FIELDS", "KINDS",
           "MEDIUM_MAX_AREA", "SIZE_NAMES", "SMALL_MAX_AREA", "WARNING", "CheckReport", "Issue", "IssueCollector",
           "Progress", "issue_label",
           "check_coco", "check_config_datasets", "default_img_dir", "drop_bad_records", "load_coco_json"]
