"""Build script for fltool's C++ focal-loss kernel.

Everything else about the package lives in pyproject.toml. The kernel is compiled against the torch that is already
installed (hence ``pip install --no-build-isolation``) and vectorised with ATen's ``at::vec``, once per instruction set
as ATen builds its own kernels: the portable build ``_focal_ext`` everywhere and, on x86-64, ``_focal_ext_avx2``
(AVX2 + FMA, 8 float lanes) and ``_focal_ext_avx512`` (AVX-512 F/BW/VL/DQ, 16 lanes), whatever the build machine has
(any x86-64 compiler accepts both flag sets; only running a build needs the CPU). At import, fltool_plugins.losses
picks the best one the CPU runs. Set ``FLTOOL_NO_EXT=1`` to skip them all: the losses then run their pure-PyTorch
closed form (the same maths, slower on CPU).
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


# Kernel variants: module name -> (source, compile flags). at::vec picks its specialisation from the CPU_CAPABILITY
# macros; each x86 variant has its own small source file that includes focal_loss.cpp, so that the three objects do not
# share a path in the build directory.
_X86_VARIANTS = {
    "_focal_ext_avx2": ("focal_loss_avx2.cpp", ["-mavx2", "-mfma", "-DCPU_CAPABILITY=AVX2", "-DCPU_CAPABILITY_AVX2"]),
    "_focal_ext_avx512": ("focal_loss_avx512.cpp", ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mfma",
                                                    "-DCPU_CAPABILITY=AVX512", "-DCPU_CAPABILITY_AVX512"]),
}


def _extensions():
    if os.environ.get("FLTOOL_NO_EXT") == "1":
        return [], {}
    from torch.utils.cpp_extension import BuildExtension, CppExtension

    args = ["-O3", "-g0", "-std=c++17", "-fopenmp"]  # -g0: no debug info (Python's CFLAGS carry -g)
    variants = {"_focal_ext": ("focal_loss.cpp", [])}  # portable: every platform, and x86 CPUs without AVX2
    if platform.machine() in ("x86_64", "AMD64"):
        variants.update(_X86_VARIANTS)
    exts = [CppExtension(name=f"fltool_plugins.{module}", sources=[f"plugins/csrc/{source}"],
                         extra_compile_args=args + flags, extra_link_args=["-fopenmp"])
            for module, (source, flags) in variants.items()]
    return exts, {"build_ext": BuildExtension.with_options(use_ninja=True)}


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
