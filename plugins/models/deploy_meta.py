"""What an exported detector carries in its ONNX metadata, so a consumer needs nothing else to run it.

Written by ``fltool export`` into the model's ``metadata_props`` as JSON strings under ``fltool.*`` keys (visible in
Netron, readable with ``onnx.load(f).metadata_props`` or ONNX Runtime's ``get_modelmeta().custom_metadata_map``):

- ``fltool.classes``: the class names, index = label;
- ``fltool.input``: the input's name, layout, dtype, batch size and fixed ``[H, W]`` (``null`` when any size works);
- ``fltool.preprocess``: how to turn a decoded image into the input: the test pipeline's resize (MMDetection's
  ``Resize`` ``scale`` as ``[w, h]`` and ``keep_ratio``), the channel order the network wants (``bgr_to_rgb``:
  flip the BGR image OpenCV decodes), ``mean``/``std`` per channel on 0-255 values (in the network's order), and
  the padding (to a multiple of ``size_divisor`` with ``pad_value``, bottom and right, after normalising; a
  dynamic graph pads by itself, a fixed one wants the image padded to its size);
- ``fltool.postprocess``: the thresholds inside the graph (``score_thr``, ``nms_pre`` per level, NMS
  ``iou_threshold``, ``max_per_img``, ``min_bbox_size``);
- ``fltool.outputs``: what the outputs are (boxes in input pixels: divide by the resize factor for the original);
- ``fltool.source``: the config and checkpoint it came from, the opset and fltool's version.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Optional

SCHEMA = "fltool.onnx-detector/1"
PREFIX = "fltool."
_FIELDS = ("schema", "classes", "input", "preprocess", "postprocess", "outputs", "source")


class MetadataError(ValueError):
    """An ONNX file without (readable) fltool metadata."""


@dataclass
class DeployMeta:
    classes: list
    input: dict  # name, layout, dtype, batch, fixed_hw ([H, W] or None)
    preprocess: dict  # resize {scale [w, h], keep_ratio}, bgr_to_rgb, mean, std, size_divisor, pad_value
    postprocess: dict  # score_thr, nms_pre, iou_threshold, max_per_img, min_bbox_size
    outputs: dict = field(default_factory=dict)
    source: dict = field(default_factory=dict)
    schema: str = SCHEMA

    @property
    def fixed_hw(self) -> Optional[tuple]:
        hw = self.input.get("fixed_hw")
        return (int(hw[0]), int(hw[1])) if hw else None

    def to_props(self) -> dict:
        """``{'fltool.classes': '[...]', ...}``: what goes into the ONNX model's ``metadata_props``."""
        data = asdict(self)
        return {PREFIX + key: data[key] if key == "schema" else json.dumps(data[key]) for key in _FIELDS}

    @classmethod
    def from_props(cls, props: dict, source: str = "the model") -> "DeployMeta":
        if props.get(PREFIX + "schema") != SCHEMA:
            found = props.get(PREFIX + "schema")
            raise MetadataError(f"{source} carries no fltool metadata" if found is None else
                                f"{source} has fltool metadata of another version ({found}, expected {SCHEMA})")
        values: dict[str, Any] = {"schema": SCHEMA}
        for key in _FIELDS[1:]:
            try:
                values[key] = json.loads(props[PREFIX + key])
            except (KeyError, ValueError) as exc:
                raise MetadataError(f"{source}: metadata {PREFIX + key} is missing or not JSON ({exc})") from None
        return cls(**values)
