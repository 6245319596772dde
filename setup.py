"""Build script for fltool's C++ focal-loss kernel.

Everything else about the package lives in pyproject.toml. The kernel is compiled against the torch that is already
installed (hence ``pip install --no-build-isolation``); it vectorises with ATen's ``at::vec`` (8 float lanes, with
its own inline exp/log1p polynomials) when the build machine has AVX2+FMA, and falls back to ATen's portable path
otherwise. Set ``FLTOOL_NO_EXT=1`` to skip it:
the losses then run their pure-PyTorch closed form (the same maths, slower on CPU).
"""
import os
import platform
import shutil
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
PACKAGE_DIR = {"fltool": "fltool", "fltool_plugins": "plugins"}
# Found, not listed: a subpackage missing from a hand-kept list is missing from every non-editable install.
PACKAGES = [name for top, folder in PACKAGE_DIR.items()
            for name in [top] + [f"{top}.{sub}" for sub in find_packages(where=str(HERE / folder))]]


def _cpu_has(*flags: str) -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
    except OSError:
        return False
    words = set(text.split())
    return all(flag in words for flag in flags)


def _extensions():
    if os.environ.get("FLTOOL_NO_EXT") == "1":
        return [], {}
    from torch.utils.cpp_extension import BuildExtension, CppExtension

    args = ["-O3", "-g0", "-std=c++17", "-fopenmp"]  # -g0: no debug info (Python's CFLAGS carry -g)
    if platform.machine() in ("x86_64", "AMD64") and _cpu_has("avx2", "fma"):
        # at::vec picks its AVX2 specialisation from these macros (Sleef, exported by libtorch_cpu, for pow).
        args += ["-mavx2", "-mfma", "-DCPU_CAPABILITY=AVX2", "-DCPU_CAPABILITY_AVX2"]
    ext = CppExtension(
        name="fltool_plugins._focal_ext",
        sources=["plugins/csrc/focal_loss.cpp"],
        extra_compile_args=args,
        extra_link_args=["-fopenmp"],
    )
    return [ext], {"build_ext": BuildExtension.with_options(use_ninja=True)}


class BuildPyWithConfigs(build_py):
    """Ship configs/ inside the package (fltool/configs) so that a non-editable install (``pip install .``, a wheel)
    finds its configs, as MMDetection ships its own in mmdet/.mim; an editable install reads the checkout's."""

    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return
        shutil.copytree(HERE / "configs", Path(self.build_lib) / "fltool" / "configs",
                        dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


ext_modules, cmdclass = _extensions()
cmdclass["build_py"] = BuildPyWithConfigs
setup(package_dir=PACKAGE_DIR, packages=PACKAGES, ext_modules=ext_modules, cmdclass=cmdclass,
      package_data={"fltool": ["reference/*.json"]})
