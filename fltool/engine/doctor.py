"""``fltool doctor``: what the installed stack is, and whether it works.

Each check imports the real package and reports its version; a broken or missing piece becomes a problem with the
command that fixes it. Nothing here prints: the CLI formats the returned :class:`StackReport`.
"""
from __future__ import annotations

import importlib
import platform
import sys
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from typing import Callable, Optional

REBUILD_MMCV = ("MMCV_WITH_OPS=1 .venv/bin/python -m pip install --no-build-isolation --no-cache-dir "
                "--force-reinstall --no-deps mmcv==2.1.0")


@dataclass
class Check:
    name: str
    version: str
    ok: bool
    detail: str = ""
    fix: str = ""
    required: bool = True


@dataclass
class StackReport:
    checks: list[Check] = field(default_factory=list)

    @property
    def problems(self) -> list[Check]:
        return [c for c in self.checks if c.required and not c.ok]

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict:
        return {"ok": self.ok, "checks": [c.__dict__ for c in self.checks]}


def _dist_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def _import(name: str):
    return importlib.import_module(name)


def _check(name: str, fn: Callable[[], Check], fix: str, required: bool = True) -> Check:
    try:
        return fn()
    except Exception as exc:  # any import-time failure is exactly what doctor exists to report
        text = f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
        return Check(name, _dist_version(name), False, text, fix, required)


def _python() -> Check:
    return Check("python", platform.python_version(), sys.version_info >= (3, 9), sys.executable)


def _torch() -> Check:
    torch = _import("torch")
    threads = torch.get_num_threads()
    if torch.cuda.is_available():
        dev = torch.cuda.get_device_name(0)
        detail = f"CUDA {torch.version.cuda}, {torch.cuda.device_count()} x {dev}; {threads} CPU threads"
    else:
        detail = f"CPU only; {threads} threads"
    return Check("torch", torch.__version__, True, detail)


#: Environment variables that change which instructions the CPU kernels use, or how many threads they run.
ISA_ENV = ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY", "OMP_NUM_THREADS", "MKL_NUM_THREADS")

_ONEDNN_PROBE = (
    "import torch\n"
    "x = torch.randn(2, 32, 16, 16).to(memory_format=torch.channels_last)\n"
    "w = torch.randn(32, 32, 3, 3).to(memory_format=torch.channels_last)\n"
    "torch.nn.functional.conv2d(x, w, padding=1)\n")


def onednn_info(timeout: float = 60.0) -> dict:
    """What oneDNN (PyTorch's CPU convolutions) reports in this environment: its ISA, threads and the convolution
    implementation it picks, read from ONEDNN_VERBOSE in a child process (the variable must be set at start-up)."""
    import os
    import subprocess

    env = dict(os.environ, ONEDNN_VERBOSE="1")
    try:
        proc = subprocess.run([sys.executable, "-c", _ONEDNN_PROBE], capture_output=True, text=True, env=env,
                              timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}
    info: dict = {}
    for line in proc.stdout.splitlines():
        parts = line.split(",")
        if len(parts) > 4 and parts[2] == "info" and parts[3] == "cpu":  # e.g. runtime:OpenMP,nthr:2 / isa:...
            for part in parts[4:]:
                key, _, value = part.partition(":")
                info[key] = value
        elif len(parts) > 6 and parts[2] == "primitive" and parts[3] == "exec" and parts[5] == "convolution":
            info.setdefault("convolution", parts[6])
    return info


def cpu_report() -> dict:
    """The CPU as the kernels see it: :func:`machine_facts` with what oneDNN reports (its ISA, threads, the
    convolution it picks) and the inter-op threads."""
    import torch

    onednn = onednn_info()
    return {**machine_facts(), "onednn_isa": onednn.get("isa", "unknown"), "onednn_threads": onednn.get("nthr"),
            "onednn_convolution": onednn.get("convolution"), "interop_threads": torch.get_num_interop_threads()}


def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> set[str]:
    """The instruction-set flags the kernel lists for the first CPU (empty where there is no /proc/cpuinfo)."""
    try:
        with open(cpuinfo) as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def machine_facts() -> dict:
    """Where a run's numbers were measured, cheaply (no child process; the training records keep it): the CPU,
    whether it has AVX-512, the ISA ATen dispatches to, the ISA overrides in the environment (``ONEDNN_MAX_CPU_ISA``
    caps oneDNN's convolutions below what the CPU has), threads, and the GPU if one is visible."""
    import os

    import torch

    from fltool.engine.precision import native_bf16
    from fltool.fileio import cpu_name

    return {"cpu": cpu_name(), "cores": os.cpu_count(), "cpu_avx512": "avx512f" in cpu_flags(),
            "native_bf16": native_bf16(),
            "aten_isa": torch.backends.cpu.get_cpu_capability(), "torch_threads": torch.get_num_threads(),
            "env": {k: os.environ[k] for k in ISA_ENV if k in os.environ},
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def isa_text(facts: dict) -> str:
    """One line for a report: ATen's ISA, whether the CPU has AVX-512, the overrides set (of :func:`machine_facts`)."""
    return (f"ATen {facts['aten_isa']}, CPU {'with' if facts['cpu_avx512'] else 'without'} AVX-512"
            + "".join(f", {k}={v}" for k, v in facts["env"].items()))


def _cpu() -> Check:
    info = cpu_report()
    env = ", ".join(f"{k}={v}" for k, v in info["env"].items())
    detail = (f"{info['cpu']}, {info['cores']} cores; ATen {info['aten_isa']}; oneDNN {info['onednn_isa']}"
              f"{' (conv: ' + info['onednn_convolution'] + ')' if info['onednn_convolution'] else ''}; "
              f"threads: {info['torch_threads']} torch, {info['onednn_threads'] or '?'} oneDNN"
              f"{'; set: ' + env if env else ''}")
    return Check("cpu", str(info["aten_isa"]).lower(), True, detail, required=False)


def _mmcv() -> Check:
    mmcv = _import("mmcv")
    try:
        _import("mmcv.ops")
        _import("mmcv._ext")
    except Exception as exc:
        return Check("mmcv", mmcv.__version__, False, f"ops compiled: no ({type(exc).__name__}: {exc})"[:200],
                     f"rebuild MMCV with its ops: {REBUILD_MMCV}")
    return Check("mmcv", mmcv.__version__, True, "ops compiled: yes")


def _mmdet() -> Check:
    mmdet = _import("mmdet")  # asserts a compatible mmcv/mmengine at import
    return Check("mmdet", mmdet.__version__, True)


def _mmengine() -> Check:
    mmengine = _import("mmengine")
    return Check("mmengine", mmengine.__version__, True)


def _pycocotools() -> Check:
    _import("pycocotools.coco")
    _import("pycocotools.cocoeval")
    return Check("pycocotools", _dist_version("pycocotools"), True)


def _numpy() -> Check:
    np = _import("numpy")
    return Check("numpy", np.__version__, True)


def _opencv() -> Check:
    cv2 = _import("cv2")
    return Check("opencv", cv2.__version__, True)


def _kernel() -> Check:
    from fltool_plugins.losses import kernel_info
    from fltool_plugins.losses.functional import KERNEL_OPT_OUT

    info = kernel_info()
    if KERNEL_OPT_OUT:  # the user chose the PyTorch fallback: not a fault
        return Check("fltool kernel", "off", True, info["detail"])
    # The kernel is part of the product on CPU: a missing one is a broken install, not a warning. The build in use is
    # the best one the CPU runs (FLTOOL_KERNEL_ISA or ATEN_CPU_CAPABILITY may lower it); the detail says why.
    built = f"; builds installed: {', '.join(info['built']) or 'none'}"
    return Check("fltool kernel", info["isa"] if info["available"] else "not built", info["available"],
                 info["detail"] + built, "reinstall the project: .venv/bin/python -m pip install "
                 "--no-build-isolation -e . (or set FLTOOL_NO_EXT=1 to run the losses in pure PyTorch)")


def _bf16() -> Check:
    from fltool.engine.precision import choose_precision, native_bf16

    native = native_bf16()
    return Check("bf16", native or "none", True, choose_precision("auto", "cpu", native).reason, required=False)


def stack_report(extra: Optional[list[Callable[[], Check]]] = None) -> StackReport:
    """Run every check; never raises."""
    reinstall = "run scripts/setup.sh (or make setup)"
    checks = [
        _check("python", _python, reinstall),
        _check("torch", _torch, "install torch first: .venv/bin/python -m pip install torch==2.13.0"),
        _check("cpu", _cpu, "", required=False),
        _check("bf16", _bf16, "", required=False),
        _check("mmcv", _mmcv, f"rebuild MMCV with its ops: {REBUILD_MMCV}"),
        _check("mmengine", _mmengine, ".venv/bin/python -m pip install mmengine==0.10.7"),
        _check("mmdet", _mmdet, ".venv/bin/python -m pip install mmdet==3.3.0 (it needs mmcv>=2.0.0rc4,<2.2.0)"),
        _check("pycocotools", _pycocotools, ".venv/bin/python -m pip install 'pycocotools>=2.0.9'"),
        _check("numpy", _numpy, reinstall),
        _check("opencv", _opencv, ".venv/bin/python -m pip install opencv-python-headless"),
        _check("fltool kernel", _kernel,
               "reinstall the project: .venv/bin/python -m pip install --no-build-isolation -e ."),
    ]
    for fn in extra or []:
        checks.append(_check(fn.__name__, fn, reinstall))
    return StackReport(checks)
