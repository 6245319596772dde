"""A non-editable install (``pip install .``, a wheel) carries the shipped configs inside the package, so a config
named by its bare name resolves and loads (with its ``_base_`` files) where no checkout sits beside the package.
Found on a GPU machine where fltool was installed with ``pip install --target``: every command said "config not
found"."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

from fltool.engine.config import list_configs

ROOT = Path(__file__).resolve().parents[1]

PROBE = """
import sys
from pathlib import Path
import fltool.engine.config as c
from mmengine.config import Config
lib = Path(sys.argv[1]).resolve()
assert Path(c.__file__).resolve().is_relative_to(lib), c.__file__
assert c.config_dir().resolve() == lib / "fltool" / "configs", c.config_dir()
names = {i.name for i in c.list_configs()}
path = c.resolve_config("retinanet_r18-gn_synth-sparse_384")
assert path.is_relative_to(lib), path
cfg = Config.fromfile(str(path))
print(len(names), cfg.model.bbox_head.type, cfg.model.bbox_head.num_classes, cfg.train_cfg.max_iters)
"""


def python_files(folder: Path) -> set[str]:
    """The modules under ``folder`` (relative paths), leaving out the configs a build copies into the package."""
    return {str(f.relative_to(folder)) for f in folder.rglob("*.py") if "configs" not in f.relative_to(folder).parts}


def clean_copy(tmp_path: Path) -> Path:
    """The checkout without build leftovers: setuptools would otherwise take the file list of an old *.egg-info (and,
    with include_package_data, carry the modules of a package setup.py left out as data of its parent)."""
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".git", ".venv", ".devbuild", ".whl", "work_dirs", "build",
                                                              "*.egg-info", "__pycache__", "*.so", ".pytest_cache"))
    return src


def test_a_built_package_carries_its_configs_and_loads_them_without_the_checkout(tmp_path):
    lib = tmp_path / "lib"
    env = {**os.environ, "FLTOOL_NO_EXT": "1"}
    env.pop("FLTOOL_CONFIG_DIR", None)
    build = subprocess.run([sys.executable, "setup.py", "-q", "build_py", "--build-lib", str(lib)],
                           cwd=clean_copy(tmp_path), env=env, capture_output=True, text=True, timeout=120)
    assert build.returncode == 0, build.stderr[-2000:]
    assert (lib / "fltool" / "configs" / "_base_" / "retinanet_r18-gn_small.py").is_file()
    assert not list((lib / "fltool" / "configs").rglob("__pycache__"))
    # Every module of the checkout is in the build: setup.py lists its packages, and one left off that list would be
    # missing from every non-editable install.
    for package, folder in (("fltool", ROOT / "fltool"), ("fltool_plugins", ROOT / "plugins")):
        modules, built = python_files(folder), python_files(lib / package)
        assert modules <= built, sorted(modules - built)

    # Run from elsewhere with the built package first on the path: the checkout's configs/ must not be what is read.
    probe = subprocess.run([sys.executable, "-c", PROBE, str(lib)], cwd=tmp_path, env={**env, "PYTHONPATH": str(lib)},
                           capture_output=True, text=True, timeout=120)
    assert probe.returncode == 0, probe.stderr[-2000:]
    count, head, num_classes, iters = probe.stdout.split()
    assert int(count) == len(list_configs())  # the checkout's shipped configs, every one of them
    assert (head, num_classes, iters) == ("FocalRetinaHead", "4", "1200")


def test_an_sdist_carries_the_configs_and_the_kernel_source(tmp_path):
    # A wheel built from the sdist (pip's route for `pip install fltool-0.1.0.tar.gz`) copies configs/ from it.
    env = {**os.environ, "FLTOOL_NO_EXT": "1"}
    build = subprocess.run([sys.executable, "setup.py", "-q", "sdist", "-d", str(tmp_path)], cwd=clean_copy(tmp_path),
                           env=env, capture_output=True, text=True, timeout=120)
    assert build.returncode == 0, build.stderr[-2000:]
    (archive,) = tmp_path.glob("fltool-*.tar.gz")
    with tarfile.open(archive) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    configs = {str(p.relative_to(ROOT)) for p in (ROOT / "configs").rglob("*.py")}
    assert configs <= names, sorted(configs - names)[:5]
    assert "plugins/csrc/focal_loss.cpp" in names
    assert not [n for n in names if "__pycache__" in n]
