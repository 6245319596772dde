"""Property-based tests (hypothesis) of the dataset readers and the checkpoint / ONNX metadata loaders.

Whatever malformed input they are given (COCO JSON, Pascal VOC XML, YOLO label files and data.yaml, checkpoint files,
the ``fltool.*`` metadata of an ONNX file), they must return a result or raise one of fltool's own errors
(:class:`fltool.errors.FltoolError`): any other exception fails the test, and hypothesis shrinks it to a minimal input.

Settings (:data:`SETTINGS`): ``deadline=None`` (one case does file I/O, torch.save/load or image decoding, whose time
varies on a busy machine), ``database=None`` (no replay database: each run draws fresh cases; the crashes found so far
are pinned as explicit ``@example`` cases, run every time), and a ``max_examples`` per test (:data:`EXAMPLES`) chosen
so that the whole module runs in about 20-35 s on 2 CPU cores. Every case works in a fresh
``tempfile.TemporaryDirectory`` (pytest's ``tmp_path`` is shared by all the cases of one test).
"""
from __future__ import annotations

import io
import json
import os
import pickle
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Optional
from xml.sax.saxutils import escape

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from fltool.errors import FltoolError

#: max_examples per test; FLTOOL_PROPERTY_SCALE=10 multiplies them for a longer hunt.
EXAMPLES = {test: n * int(os.environ.get("FLTOOL_PROPERTY_SCALE", "1"))
            for test, n in dict(coco=250, voc=200, yolo=150, checkpoint=250, workdir=100, meta=800, onnx=250).items()}
SETTINGS = dict(deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])

#: (file name, width, height) of the tiny real images every dataset case is built around.
IMAGES = (("a.png", 32, 24), ("b.png", 40, 40), ("c.png", 16, 48))


def outcome(fn: Callable, *args: Any, **kwargs: Any) -> Any:
    """What ``fn`` returns, or None when it raised a FltoolError (with a message); any other exception propagates."""
    try:
        return fn(*args, **kwargs)
    except FltoolError as exc:
        assert isinstance(exc.one_line(), str) and exc.message.strip()
        return None


@pytest.fixture(scope="module")
def pngs(tmp_path_factory) -> Path:
    """A folder with the tiny PNGs of :data:`IMAGES`, written once per module."""
    from PIL import Image

    folder = tmp_path_factory.mktemp("pngs")
    for i, (name, w, h) in enumerate(IMAGES):
        Image.new("RGB", (w, h), (40 * i, 90, 200 - 40 * i)).save(folder / name)
    return folder


def copy_images(pngs: Path, folder: Path, names: Optional[list] = None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names or [n for n, _, _ in IMAGES]:
        shutil.copy(pngs / name, folder / name)


def check_converted(dataset: Any) -> None:
    """What ``resolve`` wrote must itself pass through ``check_coco`` (result or DataError)."""
    from fltool.data.check import check_coco

    if dataset is not None:
        for split in (dataset.train, dataset.val):
            outcome(check_coco, split.ann_file, split.img_dir, decode=False)


# ------------------------------------------------------------------------------------------------------- junk values

HUGE_INT = 10 ** 400  # an int JSON parses, but float() cannot hold
JUNK = st.one_of(
    st.none(), st.booleans(),
    st.integers(-(2 ** 70), 2 ** 70),
    st.sampled_from([HUGE_INT, -HUGE_INT, 0, -1, 1e308, -1e-320]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.sampled_from(["", "12", "1e999", "nan", "\ud800", "ünïcødé 😀", "../../x", "\u202e"]),
    st.lists(st.integers(-3, 3), max_size=5),
    st.dictionaries(st.text(max_size=3), st.integers(-3, 3), max_size=2),
)


def one_in(draw: Callable, n: int) -> bool:
    """True about one time in ``n``; shrinks to False (so a minimal failing case keeps the valid parts)."""
    return draw(st.integers(0, n - 1)) == n - 1


@st.composite
def usually(draw: Callable, value: Any, other: st.SearchStrategy, other_one_in: int = 4) -> Any:
    """``value``; one time in ``other_one_in`` a draw from ``other`` instead."""
    return draw(other) if one_in(draw, other_one_in) else value


@st.composite
def maybe(draw: Callable, valid: st.SearchStrategy, junk_one_in: int = 4) -> Any:
    """Mostly a valid value, one time in ``junk_one_in`` a value of any type."""
    return draw(JUNK) if one_in(draw, junk_one_in) else draw(valid)


@st.composite
def record(draw: Callable, fields: dict, drop_one_in: int = 8, junk_one_in: int = 4) -> dict:
    """A dict of ``fields``, each now and then dropped or given a value of the wrong type, maybe an extra key."""
    out = {}
    for key, strategy in fields.items():
        if one_in(draw, drop_one_in):
            continue
        out[key] = draw(maybe(strategy, junk_one_in))
    if one_in(draw, 8):
        out[draw(st.text(max_size=5))] = draw(JUNK)
    return out


@st.composite
def mutated(draw: Callable, value: Any) -> Any:
    """``value`` with parts dropped, cut short or replaced by values of any type (recursively)."""
    if one_in(draw, 12):
        return draw(JUNK)
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            choice = draw(st.integers(0, 9))  # 0-5 kept, 6-8 changed, 9 dropped
            if choice == 9:
                continue
            out[key] = draw(mutated(item)) if choice > 5 else item
        return out
    if isinstance(value, list):
        out = [draw(mutated(item)) if one_in(draw, 5) else item for item in value]
        if one_in(draw, 6):
            out = out[:draw(st.integers(0, len(out)))]
        return out
    return value


def deep_json(levels: int = 200_000, key: bool = True) -> bytes:
    """A JSON document nested ``levels`` deep (an object mentioning "images", so it is taken for COCO)."""
    inner = b"[" * levels + b"]" * levels
    return b'{"images": ' + inner + b', "annotations": [], "categories": []}' if key else inner


# ----------------------------------------------------------------------------------------------------------- COCO

NUMBER = st.one_of(st.integers(-50, 120), st.floats(-50, 120, allow_nan=False))
SPECIAL_COCO = [
    b"", b"   ", b"\xff\xfe\x00\x01garbage\x80", b"not json at all", b"[1, 2, 3]", b"null", b'"images"',
    b'{"images": 5, "annotations": [], "categories": []}',
    b'{"images": [], "annotations": [], "categories": {"1": "cat"}}',
    b'{"images": [], "annotations": [], "categories": []', b'{"images": [}',
    b'\xef\xbb\xbf{"images": [], "annotations": [], "categories": []}',
    b'{"images": [], "annotations": [], "categories": [], "big": ' + b"9" * 5000 + b"}",
    deep_json(), deep_json(key=False), deep_json(50_000),
]


@st.composite
def coco_dict(draw: Callable) -> dict:
    """A COCO dict around the real images: each record now and then dropped, its fields dropped or of a wrong type
    (ids shared or not integers, file names elsewhere, sizes negative/NaN/huge), with extra junk records."""
    names = [n for n, _, _ in IMAGES]
    file_name = st.sampled_from(names + ["missing.png", "../a.png", "/nonexistent/a.png", "", "images/a.png",
                                         "\ud800.png", "ünï 😀.png", "a.png\x00x"])
    size = st.one_of(NUMBER, st.sampled_from([HUGE_INT, 0, -1, 1e300, float("nan"), float("inf")]))
    images = [draw(record(dict(id=usually(i + 1, st.integers(0, 4)), file_name=usually(name, file_name),
                               width=usually(w, size), height=usually(h, size)),
                          drop_one_in=12, junk_one_in=8))
              for i, (name, w, h) in enumerate(IMAGES) if not one_in(draw, 8)]
    categories = [draw(record(dict(id=usually(i + 1, st.integers(0, 3)),
                                   name=usually(name, st.one_of(st.sampled_from(["cat", ""]), st.text(max_size=6))),
                                   supercategory=st.text(max_size=3)), drop_one_in=12, junk_one_in=8))
                  for i, name in enumerate(["cat", "dog"]) if not one_in(draw, 8)]
    bbox_value = st.one_of(NUMBER, NUMBER, NUMBER, JUNK)
    bbox = st.one_of(st.lists(bbox_value, min_size=4, max_size=4), st.lists(bbox_value, max_size=6))
    annotation = record(dict(id=st.integers(0, 6), image_id=st.integers(0, 4), category_id=st.integers(0, 3),
                             bbox=bbox, area=NUMBER, iscrowd=st.sampled_from([0, 1])), drop_one_in=12, junk_one_in=8)
    extra = st.one_of(JUNK, st.dictionaries(st.sampled_from(["id", "file_name", "name"]), JUNK, max_size=2))
    lists = dict(images=images + draw(st.lists(extra, max_size=2)),
                 annotations=draw(st.lists(st.one_of(annotation, annotation, annotation, extra), max_size=6)),
                 categories=categories + draw(st.lists(extra, max_size=2)))
    return draw(record({key: st.just(value) for key, value in lists.items()}, drop_one_in=16, junk_one_in=12))


def coco_bytes(**changes: dict) -> bytes:
    """A valid COCO file of :data:`IMAGES` (one box each, classes cat and dog) with ``changes``:
    ``image_1={'height': nan}`` updates the fields of the image with id 1."""
    images = [{"id": i + 1, "file_name": name, "width": w, "height": h} for i, (name, w, h) in enumerate(IMAGES)]
    for key, fields in changes.items():
        images[int(key.split("_")[1]) - 1].update(fields)
    annotations = [{"id": i, "image_id": i, "category_id": 1, "bbox": [1, 1, 8, 8], "area": 64, "iscrowd": 0}
                   for i in (1, 2, 3)]
    categories = [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]
    return json.dumps(dict(images=images, annotations=annotations, categories=categories)).encode()


@st.composite
def coco_document(draw: Callable) -> bytes:
    if one_in(draw, 4):
        special = st.sampled_from(SPECIAL_COCO)
        return draw(st.one_of(special, special, special, st.binary(max_size=40)))
    return json.dumps(draw(coco_dict()), allow_nan=True).encode()


@settings(max_examples=EXAMPLES["coco"], **SETTINGS)
@given(docs=st.lists(coco_document(), min_size=1, max_size=2), decode=st.booleans())
# the internal errors found before the fixes (minimal inputs), checked on every run:
@example(docs=[deep_json()], decode=False)  # RecursionError in json.loads
@example(docs=[SPECIAL_COCO[12]], decode=False)  # ValueError: an int of 5000 digits
@example(docs=[coco_bytes(image_2={"height": HUGE_INT})], decode=False)  # OverflowError: math.isfinite(10**400)
@example(docs=[coco_bytes(image_1={"height": float("nan")})], decode=False)  # ValueError: int(nan) (median size)
@example(docs=[coco_bytes(image_2={"height": float("inf")})], decode=False)  # OverflowError: int(inf)
@example(docs=[coco_bytes(image_1={"id": [1]})], decode=False)  # TypeError: unhashable id when splitting
@example(docs=[coco_bytes(image_3={"file_name": "\ud800.png"})], decode=False)  # UnicodeEncodeError: the split hash
def test_coco_reader_and_check_give_a_result_or_a_data_error(pngs, docs, decode):
    from fltool.data.check import check_coco
    from fltool.data.formats import resolve

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "ds"
        copy_images(pngs, root / "images")
        files = [root / "ann.json"] if len(docs) == 1 else [root / "train.json", root / "val.json"]
        for file, doc in zip(files, docs):
            file.write_bytes(doc)
        dataset = outcome(resolve, files[0] if len(docs) == 1 else root, Path(tmp) / "cache", fmt="coco")
        check_converted(dataset)
        for file in files:
            outcome(check_coco, file, root / "images", decode=decode)


# ------------------------------------------------------------------------------------------------------------ VOC

NUMBER_TEXT = st.one_of(st.integers(-100, 300).map(str), st.floats(-1e3, 1e3).map(repr),
                        st.sampled_from(["", " ", "nan", "inf", "-inf", "1e999", "9" * 400, "abc", "12px", "0x10",
                                         "1,5", "\u0663", "\u22125", "1e-400", "-0"]))
ENTITIES = '<!DOCTYPE annotation [<!ENTITY c "circle"><!ENTITY big "&c;&c;&c;&c;">]>'


def _el(tag: str, text: str, raw: bool) -> str:
    return f"<{tag}>{text if raw else escape(text)}</{tag}>"


@st.composite
def voc_object(draw: Callable) -> str:
    raw = one_in(draw, 10)  # text left unescaped: '<' or '&' make the XML malformed
    name = draw(usually(draw(st.sampled_from(["circle", "square"])), st.one_of(
        st.sampled_from(["", " ", "&c;", "&big;", "&undefined;"]), st.text(max_size=8)), 3))
    name_raw = raw or name.startswith("&")
    parts = []
    if not one_in(draw, 8):
        parts.append(_el("name", name, name_raw))
    if one_in(draw, 4):
        parts.append(_el("difficult", draw(NUMBER_TEXT), raw))
    coords = "".join(_el(t, draw(usually(str(draw(st.integers(0, 40))), NUMBER_TEXT, 5)), raw)
                     for t in ("xmin", "ymin", "xmax", "ymax") if not one_in(draw, 8))
    nest = draw(st.integers(0, 9))  # 0-6: as it should be
    if nest == 9:
        return f"<bndbox>{coords}</bndbox>" + "".join(parts)  # a box outside any <object>
    if nest == 8:
        parts.append(f"<bndbox><bndbox>{coords}</bndbox></bndbox>")
    elif nest != 7:  # 7: no <bndbox>
        parts.append(f"<bndbox>{coords}</bndbox>")
    return "<object>" + "".join(parts) + "</object>"


@st.composite
def voc_document(draw: Callable, image: str) -> bytes:
    if one_in(draw, 12):
        return draw(st.one_of(st.binary(max_size=60), st.sampled_from(
            [b"", b"<annotation", b"<annotation></annotations>", b"<annotation>\xff\xfe</annotation>",
             b"<annotation/>", b"\x00<annotation>"])))
    head = draw(usually("", st.sampled_from(['<?xml version="1.0"?>', '<?xml version="1.0" encoding="utf-8"?>',
                                             '<?xml version="1.0" encoding="latin-1"?>',
                                             '<?xml version="1.0" encoding="bogus"?>',
                                             '<?xml version="1.0" encoding="utf-16"?>']), 3))
    if one_in(draw, 5):
        head += ENTITIES
    tag = draw(st.sampled_from(["annotation"] * 8 + ["annotations", "Annotation", "annotation:x"]))
    body = []
    if not one_in(draw, 6):
        body.append(_el("filename", draw(usually(image, st.one_of(st.sampled_from(
            ["missing.png", "../a.png", "/abs/a.png", "", "b", "a.PNG", "ünï.png"]), st.text(max_size=6)))), False))
    if not one_in(draw, 4):
        size = "".join(_el(t, draw(usually("40", NUMBER_TEXT)), False)
                       for t in ("width", "height", "depth") if not one_in(draw, 6))
        objects_inside = draw(voc_object()) if one_in(draw, 10) else ""  # <object> in <size>
        body.append(f"<size>{size}{objects_inside}</size>")
    body += draw(st.lists(voc_object(), max_size=4))
    text = f"{head}<{tag}>{''.join(body)}</{tag}>"
    if one_in(draw, 16):
        text = text[:draw(st.integers(0, len(text)))]  # cut short
    return text.encode("utf-8", "surrogatepass")


@st.composite
def voc_dataset(draw: Callable) -> dict:
    names = [n for n, _, _ in IMAGES]
    xmls = {Path(n).stem: draw(voc_document(n)) for n in names if not one_in(draw, 6)}
    if not xmls:
        xmls = {"a": draw(voc_document("a.png"))}
    classes = draw(st.one_of(st.none(), st.none(), st.lists(st.sampled_from(["circle", "square", "", "  ", "ü"]),
                                                            max_size=3).map("\n".join), st.binary(max_size=10)))
    image_sets = draw(st.one_of(st.none(), st.none(), st.tuples(*[st.lists(st.sampled_from(
        ["a", "b", "c", "d", "", "a b"]), max_size=3).map("\n".join)] * 2)))
    return dict(xmls=xmls, classes=classes, image_sets=image_sets, given=draw(st.one_of(
        st.none(), st.lists(st.sampled_from(["circle", "square", "cross"]), min_size=1, max_size=3))))


def write_voc(root: Path, pngs: Path, xmls: dict, classes: Any = None, image_sets: Any = None) -> None:
    copy_images(pngs, root / "JPEGImages")
    (root / "Annotations").mkdir(parents=True)
    for stem, doc in xmls.items():
        (root / "Annotations" / f"{stem}.xml").write_bytes(doc)
    if classes is not None:
        (root / "classes.txt").write_bytes(classes if isinstance(classes, bytes) else classes.encode())
    if image_sets is not None:
        (root / "ImageSets" / "Main").mkdir(parents=True)
        for split, text in zip(("train", "val"), image_sets):
            (root / "ImageSets" / "Main" / f"{split}.txt").write_text(text)


@settings(max_examples=EXAMPLES["voc"], **SETTINGS)
@given(case=voc_dataset())
@example(case=dict(xmls={"a": b'<?xml version="1.0" encoding="bogus"?><annotation></annotation>'}, classes=None,
                   image_sets=None, given=None))  # LookupError: unknown encoding
def test_voc_reader_gives_a_result_or_a_data_error(pngs, case):
    from fltool.data.formats import resolve

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "voc"
        write_voc(root, pngs, case["xmls"], case["classes"], case["image_sets"])
        check_converted(outcome(resolve, root, Path(tmp) / "cache", fmt="voc", classes=case["given"]))


def test_voc_external_entities_and_entity_expansion_stay_refused(pngs, tmp_path):
    """XXE (an entity reading a local file) and billion laughs: the file is an unreadable annotation, nothing
    of the secret file reaches the classes."""
    from fltool.data.formats import resolve

    secret = tmp_path / "secret.txt"
    secret.write_text("SECRETCLASS")
    box = "<bndbox><xmin>1</xmin><ymin>1</ymin><xmax>9</xmax><ymax>9</ymax></bndbox>"
    lol = '<!ENTITY lol "lol">' + "".join(f'<!ENTITY lol{i} "{("&lol%s;" % (i - 1 if i > 1 else "")) * 10}">'
                                          for i in range(1, 10))
    attacks = {"xxe": f'<?xml version="1.0"?><!DOCTYPE annotation [<!ENTITY xxe SYSTEM "file://{secret}">]>'
                      f"<annotation><filename>a.png</filename><object><name>&xxe;</name>{box}</object></annotation>",
               "laughs": f'<?xml version="1.0"?><!DOCTYPE annotation [{lol}]><annotation><filename>a.png</filename>'
                         f"<object><name>&lol9;</name>{box}</object></annotation>"}
    good = {stem: f"<annotation><filename>{stem}.png</filename><object><name>ok</name>{box}</object>"
                  "</annotation>".encode() for stem in "bc"}
    for kind, attack in attacks.items():
        root = tmp_path / kind
        write_voc(root, pngs, {"a": attack.encode(), **good})
        dataset = resolve(root, tmp_path / "cache")
        assert dataset.classes == ("ok",) and dataset.train.num_images + dataset.val.num_images == 2, kind
        unreadable = {i.kind: i.examples for i in dataset.errors}["unreadable_annotation_file"]
        assert unreadable[0].startswith("Annotations/a.xml: "), kind
        assert "SECRETCLASS" not in json.dumps(dataset.to_dict()), kind


# ----------------------------------------------------------------------------------------------------------- YOLO

TOKEN = st.one_of(st.integers(-2, 6).map(str), st.floats(-0.5, 1.5).map(repr),
                  st.sampled_from(["nan", "inf", "-inf", "1e999", "9" * 400, "1e300", "abc", "0x1", "1e-400", "1_0",
                                   "2.0", "-0", "\u0663", "0.5,"]))


@st.composite
def label_line(draw: Callable) -> bytes:
    kind = draw(st.integers(0, 9))
    if kind == 9:
        return b""
    if kind == 8:
        return draw(st.binary(max_size=12)).replace(b"\n", b" ")
    if kind < 6:  # a good line (or one with a class id beyond the names)
        unit = st.floats(0.05, 0.95).map(lambda v: f"{v:.3f}")
        return " ".join([str(draw(st.integers(0, 3)))] + [draw(unit) for _ in range(4)]).encode()
    tokens = draw(st.lists(st.one_of(st.floats(0.05, 0.95).map(lambda v: f"{v:.3f}"), TOKEN), min_size=1,
                           max_size=9))
    if draw(st.booleans()):
        tokens[0] = str(draw(st.integers(0, 2)))
    return draw(st.sampled_from([" ", "\t", "  "])).join(tokens).encode()


YAML_PATHS = ["images/train", "images/val", "images", "../sibling/images", "../sibling", "../../", "..", ".",
              "/nonexistent/images", "missing", "", "list.txt", "~nosuchuser_fltool/images", "images/train\x00x",
              "images/train/a.png", "data.yaml"]
NAMES = st.one_of(
    st.lists(st.sampled_from(["circle", "square", "", "ü"]), max_size=3),
    st.lists(JUNK, max_size=3),
    st.dictionaries(st.integers(-1, 3), st.text(max_size=4), max_size=3),
    st.dictionaries(st.sampled_from(["0", "1", " 1", "1.0", "x", "02"]), st.text(max_size=4), max_size=3),
    st.dictionaries(st.sampled_from([0, 1.5, 1.0, True, None]), st.text(max_size=4), max_size=3),
    st.sampled_from([["circle", "square"], {0: "circle", 1: "square"}, [["circle"], {"a": 1}]]),
    JUNK,
)
SPECIAL_YAML = [b"", b"::::", b"[" * 5000, b"- a\n- b\n", b"train: [\n", b"train: !!python/object/apply:os.system [ls]",
                b"\xff\xfe\x00", b"train: &a [*a]", b"? [a, b]\n: c\ntrain: images/train\n", b"{" * 20_000,
                b"train: images/train\nval: images/val\nnames: &n [a, [*n]]\n"]


@st.composite
def yolo_dataset(draw: Callable) -> dict:
    stems = [Path(n).stem for n, _, _ in IMAGES]
    labels = {stem: b"\n".join(draw(st.lists(label_line(), max_size=5))) for stem in stems if not one_in(draw, 6)}
    if one_in(draw, 6):
        yaml_text = draw(st.one_of(st.sampled_from(SPECIAL_YAML), st.binary(max_size=30)))
    elif one_in(draw, 10):
        yaml_text = None  # no data.yaml: classes.txt or nothing
    else:
        import yaml

        entry = st.one_of(st.sampled_from(YAML_PATHS), st.lists(st.sampled_from(YAML_PATHS), max_size=2), JUNK)
        data = draw(record(dict(train=usually("images/train", entry), val=usually("images/val", entry),
                                names=usually(["circle", "square", "triangle"], NAMES)), 10, 10))
        if one_in(draw, 4):
            data["path"] = draw(st.one_of(st.sampled_from([".", "", "..", "../ds", "/nonexistent",
                                                           "~nosuchuser_fltool"]), JUNK))
        if one_in(draw, 3):
            data["nc"] = draw(st.one_of(st.integers(0, 3), JUNK))
        yaml_text = yaml.safe_dump(data, allow_unicode=draw(st.booleans())).encode("utf-8", "surrogatepass")
    list_txt = draw(st.lists(st.sampled_from(["images/train/a.png", "./images/val/c.png", "/nonexistent.png", "",
                                              "../../../x.png", "a\x00b.png", "~nosuchuser_fltool/a.png"]),
                             max_size=3).map("\n".join))
    classes = draw(st.one_of(st.none(), st.sampled_from(["circle\nsquare\n", "", "\n \n"]), st.binary(max_size=8)))
    return dict(labels=labels, yaml=yaml_text, list_txt=list_txt, classes=classes)


def yolo_case(yaml_text: bytes) -> dict:
    return dict(labels={"a": b"0 0.5 0.5 0.2 0.2"}, yaml=yaml_text, list_txt="", classes=None)


@settings(max_examples=EXAMPLES["yolo"], **SETTINGS)
@given(case=yolo_dataset())
@example(case=yolo_case(b"train: null\nval: null\nnames: [a]\n"))  # KeyError: 'train'
@example(case=yolo_case(b"path: ~nosuchuser_fltool\ntrain: images/train\n"))  # RuntimeError: no home folder
@example(case=yolo_case(b"train: images/train\nval: " + b"1" * 300 + b"\n"))  # OSError: file name too long
@example(case=yolo_case(b"[" * 5000))  # RecursionError in yaml.safe_load
@example(case=yolo_case(b"train: images/train\nnames: {0: a, ' 1': b}\n"))  # KeyError: 1 (names ids)
@example(case=yolo_case(b"train: images/train\nnames: [a, 2024-13-45]\n"))  # ValueError: a date YAML cannot read
def test_yolo_reader_gives_a_result_or_a_data_error(pngs, case):
    from fltool.data.formats import resolve

    with tempfile.TemporaryDirectory() as tmp:
        outer = Path(tmp) / "x" / "y"  # paths leaving the dataset folder ('../..') stay inside the temp dir
        root = outer / "ds"
        copy_images(pngs, root / "images" / "train", ["a.png", "b.png"])
        copy_images(pngs, root / "images" / "val", ["c.png"])
        copy_images(pngs, outer / "sibling" / "images", ["a.png"])
        for stem, text in case["labels"].items():
            split = "val" if stem == "c" else "train"
            (root / "labels" / split).mkdir(parents=True, exist_ok=True)
            (root / "labels" / split / f"{stem}.txt").write_bytes(text)
        (root / "labels").mkdir(exist_ok=True)
        (root / "list.txt").write_text(case["list_txt"])
        if case["yaml"] is not None:
            (root / "data.yaml").write_bytes(case["yaml"])
        if case["classes"] is not None:
            (root / "classes.txt").write_bytes(case["classes"] if isinstance(case["classes"], bytes)
                                               else case["classes"].encode())
        check_converted(outcome(resolve, root, Path(tmp) / "cache", fmt="yolo"))


# ----------------------------------------------------------------------------------------------------- checkpoints

CLASSES = st.one_of(st.lists(st.text(max_size=5), max_size=3), st.tuples(st.text(max_size=3)), JUNK,
                    st.lists(JUNK, max_size=3), st.sampled_from([["circle", "square"], "circle", 3, {"a": 1}]))


def _tensors() -> st.SearchStrategy:
    import torch

    return st.integers(0, 3).map(lambda n: torch.zeros(n))


@st.composite
def checkpoint_object(draw: Callable) -> Any:
    value = st.one_of(JUNK, _tensors())
    dataset_meta = st.one_of(record(dict(classes=CLASSES, palette=JUNK)), JUNK)
    meta = st.one_of(record(dict(dataset_meta=dataset_meta, CLASSES=CLASSES, cfg=st.one_of(
        st.just("model = dict(type='RetinaNet')\n"), st.text(max_size=8)))), JUNK, st.lists(JUNK, max_size=2))
    weights = st.dictionaries(st.text(max_size=4), _tensors(), min_size=1, max_size=3)
    state = usually(None, st.one_of(st.dictionaries(st.text(max_size=4), value, max_size=3), JUNK), 3)
    top = draw(record(dict(meta=meta, state_dict=state, message_hub=JUNK)))
    if top.get("state_dict", 0) is None:
        top["state_dict"] = draw(weights)
    if one_in(draw, 8):
        return draw(st.one_of(JUNK, _tensors(), st.lists(value, max_size=2)))
    return top


@st.composite
def checkpoint_bytes(draw: Callable) -> bytes:
    import torch

    kind = draw(st.integers(0, 9))  # 0-7: written by torch.save
    if kind == 9:
        return draw(st.binary(max_size=100))
    if kind == 8:
        prefix = draw(st.sampled_from([b"PK\x03\x04", b"PK\x05\x06" + b"\x00" * 18, b"\x80\x02", b"\x80\x04\x95",
                                       pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2),
                                       pickle.dumps({"state_dict": 1}, protocol=2)]))
        return prefix + draw(st.binary(max_size=60))
    buffer = io.BytesIO()
    torch.save(draw(checkpoint_object()), buffer, _use_new_zipfile_serialization=not one_in(draw, 6))
    raw = buffer.getvalue()
    damage = draw(st.integers(0, 5))
    if damage == 5:  # truncated
        raw = raw[:draw(st.integers(0, len(raw) - 1))]
    elif damage == 4:  # a byte changed
        at = draw(st.integers(0, len(raw) - 1))
        raw = raw[:at] + bytes([draw(st.integers(0, 255))]) + raw[at + 1:]
    return raw


#: The start of a legacy (pre-zip) torch.save file: magic number, protocol version 1001.
LEGACY_HEAD = b"\x80\x02\x8a\nl\xfc\x9cF\xf9 j\xa8P\x19.\x80\x02M\xe9\x03."


@pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")  # torch, on a damaged legacy file
@settings(max_examples=EXAMPLES["checkpoint"], **SETTINGS)
@given(raw=checkpoint_bytes())
@example(raw=LEGACY_HEAD + b"\x80\x02}q\x00(X")  # struct.error: the string length cut short
@example(raw=LEGACY_HEAD + b"\x80\x02X\x01\x00\x00\x00\xff.")  # UnicodeDecodeError: a string not UTF-8
@example(raw=LEGACY_HEAD + b"\x80\x02e.")  # IndexError: APPENDS with nothing to append to
def test_checkpoint_loaders_give_a_result_or_a_checkpoint_error(raw):
    from fltool.engine.checkpoint import checkpoint_state_dict, load_local_checkpoint

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.pth"
        path.write_bytes(raw)
        outcome(load_local_checkpoint, str(path), map_location="cpu")
        state = outcome(checkpoint_state_dict, path)
        assert state is None or isinstance(state, dict)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")
@settings(max_examples=EXAMPLES["workdir"], report_multiple_bugs=False, **SETTINGS)
@given(raw=checkpoint_bytes())
def test_workdir_checkpoint_classes_and_resolve_run_give_a_result_or_a_checkpoint_error(raw):
    from fltool.engine.workdir import checkpoint_classes, resolve_run

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.pth"
        path.write_bytes(raw)
        classes = outcome(checkpoint_classes, path)
        assert classes is None or all(isinstance(c, str) for c in classes)
        outcome(resolve_run, path)


# -------------------------------------------------------------------------------------------------- ONNX metadata

VALID_META = dict(
    classes=["circle", "square"],
    input={"name": "image", "layout": "NCHW", "dtype": "float32", "batch": 1, "fixed_hw": [160, 160]},
    preprocess={"pixel_range": "0-255, as decoded", "resize": {"scale": [160, 160], "keep_ratio": True},
                "bgr_to_rgb": True, "input_channels": "RGB", "mean": [123.675, 116.28, 103.53],
                "std": [58.395, 57.12, 57.375], "size_divisor": 32, "pad_value": 0.0, "padding": "...",
                "order": "..."},
    postprocess={"score_thr": 0.05, "nms_pre": 1000, "iou_threshold": 0.5, "max_per_img": 100, "min_bbox_size": 0},
    outputs={"boxes": "...", "scores": "...", "labels": "..."},
    source={"config": "tiny.py", "checkpoint": "iter_4.pth", "opset": 17},
)
CONFIG_PREP = [dict(mean=VALID_META["preprocess"]["mean"], std=VALID_META["preprocess"]["std"], bgr_to_rgb=True),
               {}, dict(mean=[0, 0, 0], std=[1, 1, 1]), dict(mean=[[1.0], [2.0], [3.0]], std=None, rgb_to_bgr=True)]


@st.composite
def meta_props(draw: Callable) -> dict:
    from fltool_plugins.models.deploy_meta import PREFIX, SCHEMA

    props = {}
    schema = draw(usually(SCHEMA, st.sampled_from([None, "fltool.onnx-detector/0", ""]), 8))
    if schema is not None:
        props[PREFIX + "schema"] = schema
    damaged = draw(st.sets(st.sampled_from(sorted(VALID_META)), max_size=3))  # a few keys changed, as by hand
    for key, valid in VALID_META.items():
        kind = draw(st.integers(0, 15)) if key in damaged else 0  # 0-12: the value changed in parts
        if kind == 15:
            continue  # missing
        if kind == 14:
            props[PREFIX + key] = draw(st.sampled_from(["", "not json", "{", "[1, 2", "NaN", "\ud800"]))
        elif kind == 13:
            props[PREFIX + key] = draw(st.sampled_from(["[" * 100_000 + "]" * 100_000, "1" * 5000]))
        else:
            props[PREFIX + key] = json.dumps(draw(mutated(valid)) if key in damaged else valid)
    return props


def use_meta(meta: Any, classes: Any, prep: dict) -> None:
    """What predict/eval do with read metadata: the pipeline it implies, the fit with a config, the fixed size."""
    from fltool.engine.backends import check_meta_fits, meta_inputs

    outcome(meta_inputs, meta)
    outcome(check_meta_fits, meta, Path("model.onnx"), classes, prep)
    hw = meta.fixed_hw
    assert hw is None or (len(hw) == 2 and all(isinstance(v, int) and v > 0 for v in hw))


def valid_props(**changes: Any) -> dict:
    """The props fltool export writes (:data:`VALID_META`) with ``changes`` (values as JSON text)."""
    props = {f"fltool.{key}": json.dumps(value) for key, value in VALID_META.items()}
    props["fltool.schema"] = "fltool.onnx-detector/1"
    props.update({f"fltool.{key}": value for key, value in changes.items()})
    return props


NO_RESIZE = valid_props(preprocess=json.dumps({k: v for k, v in VALID_META["preprocess"].items() if k != "resize"}))


@settings(max_examples=EXAMPLES["meta"], **SETTINGS)
@given(props=meta_props(), classes=st.sampled_from([None, [], ["circle", "square"], ["x"]]),
       prep=st.sampled_from(CONFIG_PREP))
@example(props=NO_RESIZE, classes=None, prep={})  # KeyError: 'resize' in meta_inputs
@example(props=valid_props(classes="[" * 100_000 + "]" * 100_000), classes=None, prep={})  # RecursionError
@example(props=valid_props(input='{"fixed_hw": "0"}'), classes=None, prep={})  # IndexError in fixed_hw
@example(props=valid_props(preprocess="null"), classes=None, prep={})  # TypeError in meta_inputs
@example(props=valid_props(classes="null"), classes=["x"], prep={})  # TypeError in check_meta_fits
def test_deploy_meta_from_props_and_its_use_give_a_result_or_an_error_of_fltool(props, classes, prep):
    from fltool_plugins.models import DeployMeta, MetadataError

    try:
        meta = DeployMeta.from_props(props, "model.onnx")
    except MetadataError:  # the plugin's own error (read_meta turns it into a CheckpointError)
        return
    assert DeployMeta.from_props(meta.to_props()).to_props() == meta.to_props()
    use_meta(meta, classes, prep)


@settings(max_examples=EXAMPLES["onnx"], **SETTINGS)
@given(props=meta_props(), garbage=st.one_of(st.none(), st.none(), st.none(), st.binary(max_size=40)),
       classes=st.sampled_from([None, ["circle", "square"]]), prep=st.sampled_from(CONFIG_PREP))
@example(props=NO_RESIZE, garbage=None, classes=None, prep={})  # KeyError: 'resize' in meta_inputs
def test_read_meta_of_an_onnx_file_gives_metadata_or_a_checkpoint_error(props, garbage, classes, prep):
    import onnx

    from fltool.engine.backends import read_meta

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        if garbage is not None:
            path.write_bytes(garbage)
        else:
            node = onnx.helper.make_node("Identity", ["x"], ["y"])
            vi = [onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, [1]) for n in "xy"]
            model = onnx.helper.make_model(onnx.helper.make_graph([node], "g", vi[:1], vi[1:]))
            for key, value in props.items():
                model.metadata_props.add(key=key, value=value.encode("utf-8", "replace").decode())
            onnx.save(model, str(path))
        meta = outcome(read_meta, path)
        if meta is not None:
            use_meta(meta, classes, prep)
