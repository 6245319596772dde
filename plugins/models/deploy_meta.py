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
- ``fltool.source``: the config and checkpoint it came from, the opset and fltool's version;
- ``fltool.thresholds`` (optional, absent in files exported before it or from runs without one): the score
  thresholds ``fltool analyze pr`` chose for the run, ``{"overall": t, "per_class": {name: t}, ...}``: keep a
  detection when its score is at least its class's threshold, else the overall one.

An OpenVINO IR (``fltool export --format openvino``) carries the same keys and values, as one JSON object
(:meth:`DeployMeta.to_json`), in its ``rt_info`` under :data:`RT_INFO_PATH` (``<rt_info><fltool><meta value=...>``
in the .xml): ``model.get_rt_info(["fltool", "meta"])``.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Optional

SCHEMA = "fltool.onnx-detector/1"
PREFIX = "fltool."
_FIELDS = ("schema", "classes", "input", "preprocess", "postprocess", "outputs", "source")
OPTIONAL_FIELD = "thresholds"
#: Where an OpenVINO IR keeps the metadata: ``model.set_rt_info(meta.to_json(), list(RT_INFO_PATH))``.
RT_INFO_PATH = ("fltool", "meta")


class MetadataError(ValueError):
    """An ONNX file without fltool metadata, or with metadata that is not JSON or not of the shape written here."""


@dataclass
class DeployMeta:
    classes: list
    input: dict  # name, layout, dtype, batch, fixed_hw ([H, W] or None)
    preprocess: dict  # resize {scale [w, h], keep_ratio}, bgr_to_rgb, mean, std, size_divisor, pad_value
    postprocess: dict  # score_thr, nms_pre, iou_threshold, max_per_img, min_bbox_size
    outputs: dict = field(default_factory=dict)
    source: dict = field(default_factory=dict)
    schema: str = SCHEMA
    thresholds: Optional[dict] = None  # optional: written only when the run has chosen thresholds

    @property
    def fixed_hw(self) -> Optional[tuple]:
        hw = self.input.get("fixed_hw")
        return (int(hw[0]), int(hw[1])) if hw else None

    def to_props(self) -> dict:
        """``{'fltool.classes': '[...]', ...}``: what goes into the ONNX model's ``metadata_props``."""
        data = asdict(self)
        props = {PREFIX + key: data[key] if key == "schema" else json.dumps(data[key]) for key in _FIELDS}
        if self.thresholds is not None:
            props[PREFIX + OPTIONAL_FIELD] = json.dumps(self.thresholds)
        return props

    def to_json(self) -> str:
        """:meth:`to_props` as one JSON object: what an OpenVINO IR keeps in its rt_info (:data:`RT_INFO_PATH`)."""
        return json.dumps(self.to_props(), sort_keys=True)

    @classmethod
    def from_json(cls, text: Any, source: str = "the model") -> "DeployMeta":
        """The metadata of :meth:`to_json`'s text (a MetadataError when it is not that)."""
        try:
            props = json.loads(str(text))
        except (TypeError, ValueError, RecursionError) as exc:
            raise MetadataError(f"{source}: its fltool metadata is not JSON ({type(exc).__name__})") from None
        if not isinstance(props, dict):
            raise MetadataError(f"{source}: its fltool metadata is not a JSON object")
        return cls.from_props(props, source)

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
            except (KeyError, TypeError, ValueError) as exc:
                raise MetadataError(f"{source}: metadata {PREFIX + key} is missing or not JSON ({exc})") from None
            except RecursionError:
                raise MetadataError(f"{source}: metadata {PREFIX + key} is JSON nested too deeply to read") from None
        problem = _problem(values)
        if problem:
            raise MetadataError(f"{source}: metadata {problem}")
        return cls(**values, thresholds=_optional_thresholds(props, source))


def _optional_thresholds(props: dict, source: str) -> Optional[dict]:
    """``fltool.thresholds`` where the file has it (None where not: older files read as before)."""
    if PREFIX + OPTIONAL_FIELD not in props:
        return None
    try:
        value = json.loads(props[PREFIX + OPTIONAL_FIELD])
    except (TypeError, ValueError, RecursionError) as exc:
        raise MetadataError(f"{source}: metadata {PREFIX}{OPTIONAL_FIELD} is not JSON ({exc})") from None
    per_class = value.get("per_class", {}) if isinstance(value, dict) else None
    if not (isinstance(value, dict) and _number(value.get("overall")) and isinstance(per_class, dict)
            and all(isinstance(k, str) and _number(v) for k, v in per_class.items())):
        raise MetadataError(f"{source}: metadata {PREFIX}{OPTIONAL_FIELD} must be an object with a number 'overall' "
                            f"and 'per_class' numbers, got {json.dumps(value, default=str)[:80]}")
    return value


def _number(value: Any) -> bool:
    """A finite int or float (not a bool, not an int beyond the float range)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _pixels(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and all(
        _number(v) and v > 0 and float(v).is_integer() for v in value)


def _problem(values: dict) -> Optional[str]:
    """What is wrong with the parsed metadata (the first thing found, naming the key and the value), or None.
    Checked here so that whoever reads a :class:`DeployMeta` can rely on its shape."""
    def wrong(key: str, want: str, value: Any) -> str:
        return f"{PREFIX}{key} must be {want}, got {json.dumps(value, default=str)[:80]}"

    classes = values["classes"]
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
        return wrong("classes", "a list of class names", classes)
    for key in _FIELDS[2:]:
        if not isinstance(values[key], dict):
            return wrong(key, "a JSON object", values[key])
    hw = values["input"].get("fixed_hw")
    if hw is not None and not _pixels(hw):
        return wrong("input.fixed_hw", "[height, width] in pixels or null", hw)
    prep = values["preprocess"]
    resize = prep.get("resize")
    if not isinstance(resize, dict):
        return wrong("preprocess.resize", "an object with scale [width, height] and keep_ratio", resize)
    if not _pixels(resize.get("scale")):
        return wrong("preprocess.resize.scale", "[width, height] in pixels", resize.get("scale"))
    if not isinstance(resize.get("keep_ratio"), bool):
        return wrong("preprocess.resize.keep_ratio", "true or false", resize.get("keep_ratio"))
    if not isinstance(prep.get("bgr_to_rgb"), bool):
        return wrong("preprocess.bgr_to_rgb", "true or false", prep.get("bgr_to_rgb"))
    for key in ("mean", "std"):
        given = prep.get(key)
        if not (isinstance(given, list) and len(given) in (1, 3) and all(_number(v) for v in given)) \
                or (key == "std" and 0 in given):
            return wrong(f"preprocess.{key}", "1 or 3 numbers (per channel)" + (", none 0" if key == "std" else ""),
                         given)
    if "pad_value" in prep and not _number(prep["pad_value"]):
        return wrong("preprocess.pad_value", "a number", prep["pad_value"])
    for key in ("score_thr", "nms_pre", "iou_threshold", "max_per_img"):
        if not _number(values["postprocess"].get(key)):
            return wrong(f"postprocess.{key}", "a number", values["postprocess"].get(key))
    return None
