"""The embedded synthetic dataset: deterministic, COCO-valid, tight boxes, the intended mix, atomic caching."""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from fltool.data import synth
from fltool.data.synth import SynthSpec, default_dataset, generate, render_image, size_name
from fltool.data.synth.render import _iou
from fltool.errors import ConfigError

SMALL = SynthSpec(num_train=12, num_val=8)


def file_hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory):
    return generate(SMALL, tmp_path_factory.mktemp("synth") / "ds")


@pytest.fixture(scope="module")
def default_val_split():
    """The default spec's val split, drawn in memory (no PNG encoding): ~1 s."""
    spec = SynthSpec()
    return spec, [render_image(spec, "val", i) for i in range(spec.num_val)]


def test_same_spec_gives_byte_identical_files_and_another_seed_differs(small_dataset, tmp_path):
    again = generate(SMALL, tmp_path / "again")
    first, second = file_hashes(small_dataset.root), file_hashes(again.root)
    assert len(first) == SMALL.num_train + SMALL.num_val + 3  # images + train/val/meta json
    assert first == second

    other = generate(replace(SMALL, seed=1), tmp_path / "other")
    other_hashes = file_hashes(other.root)
    assert other_hashes["images/train_000000.png"] != first["images/train_000000.png"]
    assert other.meta()["content_hash"] != small_dataset.meta()["content_hash"]


def test_val_images_do_not_depend_on_the_number_of_train_images():
    a = render_image(SMALL, "val", 3)
    b = render_image(replace(SMALL, num_train=500), "val", 3)
    assert np.array_equal(a.pixels, b.pixels) and a.boxes == b.boxes


def test_json_loads_in_pycocotools_with_every_box_and_category(small_dataset):
    from pycocotools.coco import COCO

    meta = small_dataset.meta()
    for split, path in (("train", small_dataset.train_json), ("val", small_dataset.val_json)):
        coco = COCO(str(path))
        assert len(coco.getImgIds()) == meta["splits"][split]["images"]
        assert len(coco.getAnnIds()) == meta["splits"][split]["boxes"] > 0
        assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == list(small_dataset.classes)
        ann = coco.loadAnns(coco.getAnnIds())[0]
        assert ann["iscrowd"] == 0 and ann["area"] == ann["bbox"][2] * ann["bbox"][3]
        img = coco.loadImgs(ann["image_id"])[0]
        assert (img["width"], img["height"]) == (256, 256)
        assert (small_dataset.img_dir / img["file_name"]).is_file()


def test_png_files_hold_exactly_the_rendered_pixels_and_json_boxes(small_dataset):
    coco = json.loads(small_dataset.val_json.read_text())
    drawn = render_image(SMALL, "val", 2)
    img = coco["images"][2]
    assert np.array_equal(np.asarray(Image.open(small_dataset.img_dir / img["file_name"])), drawn.pixels)
    boxes = [a["bbox"] for a in coco["annotations"] if a["image_id"] == img["id"]]
    assert boxes == drawn.boxes


def test_boxes_tightly_fit_the_drawn_pixels():
    """Without noise each shape is one flat colour: every inner box edge has a pixel of it, the ring outside none."""
    spec = replace(SMALL, noise_std=0.0)
    checked = 0
    for index in range(4):
        drawn = render_image(spec, "train", index)
        padded = np.pad(drawn.pixels.astype(int), ((1, 1), (1, 1), (0, 0)), constant_values=-1)
        for (x0, y0, mask), box in zip(drawn.masks, drawn.boxes):
            ys, xs = np.nonzero(mask)
            colour = drawn.pixels[y0 + ys[0], x0 + xs[0]]
            assert (drawn.pixels[y0 + ys, x0 + xs] == colour).all()  # the whole shape was drawn, unoccluded
            x, y, w, h = (int(v) for v in box)
            is_shape = (padded == colour).all(axis=2)  # (H+2, W+2), padded coordinates are +1
            inside = is_shape[y + 1:y + h + 1, x + 1:x + w + 1]
            assert inside[0].any() and inside[-1].any() and inside[:, 0].any() and inside[:, -1].any()
            ring = is_shape[y:y + h + 2, x:x + w + 2].copy()
            ring[1:-1, 1:-1] = False
            assert not ring.any()
            checked += 1
    assert checked > 10


def test_default_spec_val_split_is_at_least_30_percent_small_with_all_sizes(default_val_split):
    _, images = default_val_split
    sizes = [size_name(b[2] * b[3]) for im in images for b in im.boxes]
    fractions = {s: sizes.count(s) / len(sizes) for s in ("small", "medium", "large")}
    assert fractions["small"] >= 0.30
    assert fractions["medium"] >= 0.20 and fractions["large"] >= 0.05
    assert min(min(b[2], b[3]) for im in images for b in im.boxes) >= 12  # small, yet not specks


def test_default_spec_classes_are_imbalanced_in_the_configured_order(default_val_split):
    spec, images = default_val_split
    counts = np.bincount([label for im in images for label in im.labels], minlength=len(spec.classes))
    assert list(counts) == sorted(counts, reverse=True)  # circle > square > triangle > cross
    assert counts[-1] / counts[0] < 0.3
    assert 4 <= np.mean([len(im.boxes) for im in images]) <= 12


def test_labelled_boxes_overlap_less_than_max_iou(default_val_split):
    spec, images = default_val_split
    for im in images:
        for i, box in enumerate(im.boxes):
            assert _iou(box, im.boxes[i + 1:] + im.distractor_boxes) < spec.max_iou


def test_distractors_are_drawn_but_not_annotated(small_dataset):
    """The same image with and without distractors differs only inside the distractor boxes; labels are equal."""
    with_d = replace(SMALL, distractors_per_image=(3, 3), noise_std=0.0)
    without = replace(with_d, distractors_per_image=(0, 0))
    a, b = render_image(with_d, "train", 5), render_image(without, "train", 5)
    assert a.boxes == b.boxes and a.labels == b.labels and len(a.distractor_boxes) >= 1
    changed = (a.pixels != b.pixels).any(axis=2)
    inside = np.zeros_like(changed)
    for x, y, w, h in a.distractor_boxes:
        inside[int(y):int(y + h), int(x):int(x + w)] = True
    assert changed.sum() > 20 and not (changed & ~inside).any()

    coco = json.loads(small_dataset.train_json.read_text())
    distractors = [d["bbox"] for img in coco["images"] for d in img["distractors"]]
    assert distractors and not any(a["bbox"] in distractors for a in coco["annotations"])


def test_spec_that_cannot_fit_large_shapes_is_a_config_error_with_a_hint():
    with pytest.raises(ConfigError) as info:
        SynthSpec(image_size=128)
    assert "large shapes" in info.value.message and "160" in info.value.hint
    assert SynthSpec(image_size=128, size_mix=(0.6, 0.4, 0.0)).max_side == 76


def test_spec_from_meta_json_lists_equals_the_original(small_dataset):
    assert small_dataset.spec == SMALL and small_dataset.spec.short_hash() == SMALL.short_hash()


# ---------------------------------------------------------------------------------------------- the cache

def test_default_dataset_is_generated_once_then_reused(tmp_path, monkeypatch):
    first = default_dataset(SMALL, cache_dir=tmp_path)
    assert first.root == tmp_path / f"synth-{SMALL.short_hash()}"
    assert first.train_json.is_file() and first.classes == SMALL.classes

    def must_not_run(*args, **kwargs):
        raise AssertionError("generated again")

    monkeypatch.setattr(synth, "generate", must_not_run)
    monkeypatch.setenv("FLTOOL_CACHE", str(tmp_path))
    assert default_dataset(SMALL).root == first.root


def test_interrupted_generation_leaves_nothing_that_looks_complete(tmp_path):
    def interrupt(done, total):
        if done == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        default_dataset(SMALL, cache_dir=tmp_path, progress=interrupt)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"synth-{SMALL.short_hash()}.lock"]


def test_leftover_temporary_folder_is_ignored_and_removed(tmp_path):
    name = f"synth-{SMALL.short_hash()}"
    leftover = tmp_path / f".{name}.tmp-12345-dead"
    (leftover / "images").mkdir(parents=True)
    (leftover / "train.json").write_text("{")
    dataset = default_dataset(SMALL, cache_dir=tmp_path)
    assert not leftover.exists()
    assert json.loads(dataset.val_json.read_text())["images"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [name, f"{name}.lock"]


def test_two_processes_generating_at_once_get_one_intact_dataset(tmp_path):
    code = textwrap.dedent(f"""
        from pathlib import Path
        from fltool.data.synth import SynthSpec, default_dataset
        ds = default_dataset(SynthSpec(num_train=12, num_val=8), cache_dir=Path({str(tmp_path)!r}))
        print(ds.meta()["content_hash"])
    """)
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outputs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    hashes = {out.strip() for out, _ in outputs}
    assert len(hashes) == 1
    name = f"synth-{SMALL.short_hash()}"
    assert sorted(p.name for p in tmp_path.iterdir()) == [name, f"{name}.lock"]
    assert file_hashes(tmp_path / name) == file_hashes(generate(SMALL, tmp_path.parent / "fresh").root)


# ---------------------------------------------------------------------------------------------- the CLI

def test_cli_synth_writes_the_dataset_and_prints_counts(tmp_path):
    from fltool.cli.main import app

    out = tmp_path / "ds"
    result = CliRunner().invoke(app, ["data", "synth", str(out), "--num-train", "6", "--num-val", "4",
                                      "--size", "192", "--seed", "3"])
    assert result.exit_code == 0, result.output
    meta = json.loads((out / "meta.json").read_text())
    assert meta["spec"]["image_size"] == 192 and meta["spec"]["seed"] == 3
    assert len(list((out / "images").glob("*.png"))) == 10
    assert "│ boxes " in result.stdout and str(meta["splits"]["train"]["boxes"]) in result.stdout


def test_cli_synth_refuses_a_non_empty_folder_unless_forced(tmp_path):
    from fltool.cli.main import app

    (tmp_path / "keep.txt").write_text("mine")
    args = ["data", "synth", str(tmp_path), "--num-train", "3", "--num-val", "2"]
    refused = CliRunner().invoke(app, args)
    assert refused.exit_code == 1
    assert refused.stderr.strip() == (f"fltool: error: {tmp_path} is not empty; "
                                      "choose an empty folder, or add --force to write into it")
    assert not (tmp_path / "images").exists()

    forced = CliRunner().invoke(app, args + ["--force"])
    assert forced.exit_code == 0, forced.output
    assert (tmp_path / "keep.txt").read_text() == "mine" and (tmp_path / "val.json").is_file()


def test_cli_synth_rewrite_removes_images_of_the_previous_dataset(tmp_path):
    from fltool.cli.main import app

    runner = CliRunner()
    assert runner.invoke(app, ["data", "synth", str(tmp_path), "--num-train", "5", "--num-val", "2"]).exit_code == 0
    assert runner.invoke(app, ["data", "synth", str(tmp_path), "--num-train", "3", "--num-val", "2",
                               "--force"]).exit_code == 0
    assert sorted(p.name for p in (tmp_path / "images").iterdir()) == [
        "train_000000.png", "train_000001.png", "train_000002.png", "val_000000.png", "val_000001.png"]


# ---------------------------------------------------------------------------------------------- presets

def test_sparse_preset_draws_a_few_small_objects_among_many_look_alikes():
    spec = synth.spec_from_args({"preset": "sparse", "num_train": 4, "num_val": 2})
    assert spec.image_size == 384 and spec.num_train == 4  # the preset, then the overrides
    for i in range(4):
        drawn = render_image(spec, "train", i)
        assert 1 <= len(drawn.boxes) <= 3 and len(drawn.distractor_boxes) >= 7
        sides = [max(w, h) for _, _, w, h in drawn.boxes + drawn.distractor_boxes]
        assert max(sides) <= 52  # 48 px at most, times the aspect jitter: few positive anchors each
    assert synth.spec_from_args({}) == SynthSpec() == synth.spec_from_args({"preset": "default"})


def test_an_unknown_preset_or_field_is_a_config_error_naming_the_choices():
    with pytest.raises(ConfigError) as info:
        synth.spec_from_args({"preset": "dense"})
    assert "sparse" in info.value.hint
    with pytest.raises(ConfigError, match="bad synthetic dataset spec"):
        synth.spec_from_args({"preset": "sparse", "image_sise": 256})


def test_cli_synth_sparse_preset_writes_its_spec(tmp_path):
    from fltool.cli.main import app

    out = tmp_path / "ds"
    result = CliRunner().invoke(app, ["data", "synth", str(out), "--preset", "sparse", "--num-train", "2",
                                      "--num-val", "1"])
    assert result.exit_code == 0, result.output
    meta = json.loads((out / "meta.json").read_text())
    assert meta["spec"]["image_size"] == 384 and meta["spec"]["distractors_per_image"] == [9, 18]
    bad = CliRunner().invoke(app, ["data", "synth", str(tmp_path / "x"), "--preset", "nope"])
    assert bad.exit_code == 1 and bad.stderr.startswith("fltool: error: unknown synthetic dataset preset 'nope'")
