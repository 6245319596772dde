"""The trust boundary: a config that comes with a file the user hands over (stored in a checkpoint, dumped beside
it, named by an ONNX file) is read as data and never run (fltool.engine.config_data); one the user names is run.
MMEngine runs every config it reads, so each test here fails on a loader that hands such text to Config.fromfile."""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from fltool.cli.main import app
from fltool.engine.config_data import (
    NotData,
    escape_templates,
    parse_config_data,
    read_found_config,
    read_found_config_file,
)
from fltool.engine.workdir import onnx_config, resolve_run
from fltool.errors import ConfigError

runner = CliRunner()


def _with_stored_config(tiny_run, path: Path, text: str) -> Path:
    """The tiny run's checkpoint, still loadable with weights_only=True, whose meta['cfg'] is ``text``."""
    ckpt = torch.load(tiny_run.work_dir / "iter_4.pth", weights_only=True)
    ckpt["meta"]["cfg"] = text
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, path)
    torch.load(path, weights_only=True)  # a tensors-only file: the loader's own check passes it
    return path


def _stored_text(tiny_run) -> str:
    return torch.load(tiny_run.work_dir / "iter_4.pth", weights_only=True)["meta"]["cfg"]


@pytest.fixture()
def private_tmp(tmp_path, monkeypatch):
    """tempfile's folder for this test alone, to see what a command leaves there."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


@pytest.mark.parametrize("command", ["predict", "export"])
def test_code_in_a_checkpoints_stored_config_is_refused_and_never_runs(tiny_run, tmp_path, private_tmp, command):
    marker = tmp_path / "pwned"
    evil = f"import os\nopen({str(marker)!r}, 'w').write('ran')\n" + _stored_text(tiny_run)
    model = _with_stored_config(tiny_run, tmp_path / "alone" / "model.pth", evil)
    image = next((tiny_run.work_dir.parent).rglob("*.png"), None) or model
    args = ["predict", str(model), str(image), "--out-dir", str(tmp_path / "out")] if command == "predict" else \
        ["export", str(model), "--no-check"]
    result = runner.invoke(app, args)
    assert result.exit_code == 1, result.output
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("fltool: error: the config stored in model.pth is not plain data (line 1: an import")
    assert "--config" in line and "--trust-checkpoint" in line
    assert not marker.exists()
    assert list(private_tmp.iterdir()) == []  # no fltool-cfg-* folder (or anything else) left behind
    assert sorted(p.name for p in model.parent.iterdir()) == ["model.pth"]


def test_trust_checkpoint_runs_the_stored_config_and_leaves_no_temporary_file(tiny_run, tmp_path, private_tmp):
    marker = tmp_path / "ran"
    text = f"import os\nopen({str(marker)!r}, 'w').write('ran')\n" + _stored_text(tiny_run)
    model = _with_stored_config(tiny_run, tmp_path / "alone" / "model.pth", text)
    run = resolve_run(model, trust=True)
    assert marker.read_text() == "ran" and run.cfg.model.bbox_head.type == "FocalRetinaHead"
    assert list(private_tmp.iterdir()) == []


def test_a_plain_data_stored_config_is_read_without_running_or_writing_anything(tiny_run, tmp_path, private_tmp):
    model = _with_stored_config(tiny_run, tmp_path / "alone" / "model.pth", _stored_text(tiny_run))
    run = resolve_run(model)
    assert run.config is None and run.config_source == "checkpoint meta"
    assert run.cfg.model.bbox_head.type == "FocalRetinaHead"
    assert run.cfg.filename == str(model.parent / "model_config.py") and not (model.parent / "model_config.py").exists()
    assert list(private_tmp.iterdir()) == []


@pytest.mark.parametrize("payload,why", [
    ("x = dict(type='os.system', command='touch pwned')", "x.type = 'os.system' is not a registered type"),
    ("model = dict(backbone=dict(type='posix.system'))", "model.backbone.type = 'posix.system'"),
    ("custom_imports = dict(imports=['antigravity'])", "custom_imports names antigravity"),
    ("x = __import__('os')", "a call of __import__()"),
    ("x = open('/etc/passwd').read()", "a call of open('/etc/passwd').read()"),
    ("x = [1][0]", "subscript expression"),
    ("x = 1 + 1", "binop expression"),
    ("x = f'{1}'", "joinedstr expression"),
    ("x = lambda: 0", "lambda expression"),
    ("x = os.environ", "the attribute os.environ"),
    ("x = y", "the name y"),
    ("def f():\n    pass", "FunctionDef statement"),
    ("_base_ = ['a.py']", "_base_"),
    ("x = dict(**{'a': 1})", "a call of dict()"),
])
def test_what_a_found_config_may_not_hold_is_refused_with_where(payload, why):
    with pytest.raises(ConfigError) as refused:
        read_found_config(payload, "stored in m.pth", "m_config.py")
    assert why in refused.value.message and "--trust-checkpoint" in refused.value.hint


def test_a_config_nested_beyond_reading_is_refused_not_a_recursion_error():
    for text in ("x = " + "[" * 200_000 + "]" * 200_000, "x = " + "dict(a=" * 250 + "1" + ")" * 250):
        with pytest.raises(NotData, match="nested"):
            parse_config_data(text)


def test_dumped_configs_round_trip_as_data(tiny_run):
    data = parse_config_data(_stored_text(tiny_run))
    assert data["model"]["bbox_head"]["type"] == "FocalRetinaHead"
    assert data["train_cfg"]["max_iters"] == 4 and isinstance(data["model"]["backbone"]["out_indices"], tuple)


def test_a_config_beside_a_checkpoint_is_read_as_data_too(tiny_run, tmp_path):
    folder = tmp_path / "run"
    shutil.copy(tiny_run.work_dir / "iter_4.pth", folder.mkdir() or folder / "iter_4.pth")
    marker = tmp_path / "pwned"
    (folder / "cfg.py").write_text(f"import os\nopen({str(marker)!r}, 'w')\n")
    with pytest.raises(ConfigError, match="cfg.py found beside the model is not plain data"):
        resolve_run(folder / "iter_4.pth")
    assert not marker.exists()
    (folder / "cfg.py").write_text(_stored_text(tiny_run))
    run = resolve_run(folder / "iter_4.pth")
    assert run.config_source == "work dir" and run.cfg.model.bbox_head.type == "FocalRetinaHead"


@pytest.mark.parametrize("named", ["../evil.py", "/tmp/evil.py", "sub/evil.py", "..", "link.py"])
def test_an_onnx_files_config_name_that_leaves_its_folder_is_ignored(tmp_path, named):
    outside = tmp_path / "evil.py"
    marker = tmp_path / "pwned"
    outside.write_text(f"open({str(marker)!r}, 'w')\n")
    folder = tmp_path / "model"
    (folder / "sub").mkdir(parents=True)
    shutil.copy(outside, folder / "sub" / "evil.py")
    (folder / "link.py").symlink_to(outside)
    onnx_file = folder / "m.onnx"
    onnx_file.write_bytes(b"")
    notes: list = []
    assert onnx_config(onnx_file, None, named, notes=notes) is None
    assert "only a config file beside the model is read" in notes[0] and not marker.exists()


def test_an_onnx_files_config_beside_it_is_read_as_data(tiny_run, tmp_path):
    (tmp_path / "cfg.py").write_text(_stored_text(tiny_run))
    run = onnx_config(tmp_path / "m.onnx", None, "cfg.py")
    assert run.config_source == "beside model" and run.cfg.model.bbox_head.type == "FocalRetinaHead"
    (tmp_path / "bad.py").write_text("import os\n")
    with pytest.raises(ConfigError, match="not plain data"):
        onnx_config(tmp_path / "m.onnx", None, "bad.py")


# -- class names that MMEngine's config syntax would rewrite -------------------------------------------------------
NAMES = ("{{ fileDirname }}", "{{fileBasename}}", "{{ $HOME:x }}", "{{ _base_.a }}", "a{{b{{{c", "it's \"q\" {{",
         "\\{{ x }}", "{ {", "plain")


def test_written_configs_read_back_to_the_same_strings(tmp_path):
    from mmengine.config import Config

    from fltool.engine.config_data import config_text

    cfg = Config(dict(metainfo=dict(classes=NAMES), x={"{{ fileExtname }}": ["{{ fileDirname }}"]}))
    path = tmp_path / "written.py"
    path.write_text(config_text(cfg))
    back = Config.fromfile(str(path), lazy_import=False)
    assert tuple(back.metainfo.classes) == NAMES and back.x == {"{{ fileExtname }}": ["{{ fileDirname }}"]}
    assert read_found_config_file(path).metainfo.classes == NAMES
    assert escape_templates("x = 'no braces'\n") == "x = 'no braces'\n"
