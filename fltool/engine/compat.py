"""Workarounds for this stack's known incompatibilities — all of them, in this one module.

MMEngine 0.10.7 and MMCV 2.1.0 (the last releases mmdet 3.3.0 accepts) predate today's PyTorch, setuptools and
numpy. Each workaround below names the upstream issue it works around; ``apply()`` installs them once per process
and is called by every engine entry point before MMEngine builds anything.

1. ``torch.load`` defaults to ``weights_only=True`` since PyTorch 2.6, and MMEngine's checkpoints hold MMEngine
   objects (``HistoryBuffer``), numpy arrays and ``builtins.getattr`` references, so resuming fails with
   ``UnpicklingError`` (open-mmlab/mmengine#1655, fix proposed in #1650 by turning weights_only off, i.e. by
   unpickling anything). fltool instead saves checkpoints that hold only tensors and plain Python values (see
   ``fltool_plugins.hooks.checkpoint``) and registers a local loader that keeps ``weights_only=True``; a file that
   needs more is refused unless the user trusts it explicitly (``fltool.engine.checkpoint``).
2. ``pkg_resources``: MMEngine's ``is_installed``/``get_installed_path`` import it, warn on every call and reload it
   (slow), and setuptools >= 81 removes it; they resolve the ``mmdet::`` prefix of configs. Replaced with
   ``importlib.metadata`` equivalents, as upstream did after the 0.10.7 release (open-mmlab/mmengine#1676).
3. ``mmdet::`` config resolution therefore works with any setuptools; the pkg_resources deprecation warning that
   MMCV/MMEngine imports still trigger is filtered.
4. Distributed training on CPU: MMDetection's runtime config asks for ``nccl``, which a CPU-only PyTorch lacks, and
   MMEngine's ``init_dist`` calls ``torch.cuda.set_device`` and ``Runner.wrap_model`` passes
   ``device_ids=[LOCAL_RANK]`` to DDP, both wrong on CPU (open-mmlab/mmengine#973 touches the same code). fltool
   initialises the process group itself (gloo on CPU, nccl on CUDA) before the Runner is built — MMEngine then
   skips its own ``init_dist`` — and sets ``model_wrapper_cfg.device_ids=None`` on CPU.
5. Weights named by zoo name or URL (``torchvision://resnet50``, ``open-mmlab://...``, ``https://...``, e.g. a
   backbone's ``init_cfg``): MMEngine's loaders unpickle the downloaded file with ``torch.hub``'s
   ``weights_only=False`` (the unpickling of item 1, for files from the network), and ``torchvision://`` imports
   torchvision only to look up a URL that MMEngine ships itself (``mmengine/hub/torchvision_0.12.json``;
   ``get_torchvision_models`` in mmengine/runner/checkpoint.py). fltool registers loaders for these schemes that
   use the same tables and torch.hub cache file and read it like item 1 (``fltool.engine.hub``).
6. Leaving a distributed run early (a stop signal, an error) with the gloo process group still alive: the process
   then dies in interpreter teardown now and then, ``terminate called without an active exception`` and exit -6
   (SIGABRT) instead of the promised 143 or 1, when the peer rank has already gone (seen here in one of several runs
   of the 2-rank SIGTERM test). pytorch/pytorch#190489 reports this abort for a gloo group never destroyed, and
   pytorch/pytorch#179291 explains it: gloo's worker threads still hold work whose tensors are freed during
   interpreter finalisation. MMEngine never destroys the group. ``exit_distributed`` flushes and exits the process
   at once on that path, before Python's and C++'s teardown run. The same abort hit a run that had *finished*
   (CI, 2-rank torchrun test: rank 1 exit -6 after its last evaluation), so on success ``end_distributed``
   destroys the group while the interpreter is whole -- only then, as torchtitan does (pytorch/torchtitan#1342):
   destroying it while a failed peer may still be inside a collective can hang. Destroying was not enough (CI,
   2-rank SIGTERM test: the resumed run's rank 1 exited -6 once more after finishing): the DDP wrapper and its
   reducer keep their own reference to the gloo group, so ``destroy_process_group`` only unregisters it and the
   C++ object is still freed in finalisation. A successful distributed command therefore also leaves at once
   (exit 0, streams and log handlers flushed) after destroying the group.
7. ``torchrun --max-restarts``: the workers of a restart reach the elastic agent's TCPStore, which outlives the
   failed attempt (``TORCHELASTIC_USE_AGENT_STORE``; torch/distributed/rendezvous.py assumes "a new TCPStore for
   every retry", so it adds no per-attempt prefix). Gloo's process group then read the *previous* attempt's peer
   addresses from it: the restarted ranks hung in ``init_process_group`` or failed with "connectFullMesh ...
   Connection refused" to the dead worker's port (seen with torch 2.13 and a rank killed by SIGKILL; a plain gloo
   script shows the same race). A restarted rank therefore puts its process group's keys under
   ``fltool/restart_<n>/`` of that store.
8. OpenVINO's CPU plugin (2026.4) gives the thread that creates it a larger alternate signal stack (for AMX's
   larger signal frames, openvinotoolkit/openvino#11894) and, when it is destroyed, puts back the stack it found and
   unmaps its own. Two plugins whose lifetimes overlap without nesting (two ``ov.Core`` objects, or NNCF's, freed in
   the order they were made) leave the thread on a stack that has been unmapped: the next signal delivered to it
   (Ctrl-C, SIGTERM, the stop signal of a run) kills the process with SIGSEGV before any handler runs, and
   faulthandler cannot say where (it needs that stack too). Seen in the test suite: a sweep stopped by SIGINT after
   the OpenVINO tests in the same process. ``repair_signal_stack`` puts a valid stack back (one fltool keeps for the
   life of the process) where the current one is no longer mapped; it runs after fltool's OpenVINO work and
   before a run installs its stop-signal handlers.
9. OpenVINO's bundled oneDNN honours ``ONEDNN_MAX_CPU_ISA`` but OpenVINO's own kernels choose by the CPU, so with
   the variable set below what the CPU has, the two disagree about memory layouts and compiling or running a model
   crashes the process (SIGSEGV in JIT code, or "Reorder could not execute a primitive"; seen here with
   ``ONEDNN_MAX_CPU_ISA=AVX2`` on AVX-512). openvinotoolkit/openvino#36980 adds ``OV_CPU_MAX_ISA`` to set both, in
   debug builds only. ``openvino_isa_cap`` names the variable so that fltool refuses OpenVINO in one line instead.
"""
from __future__ import annotations

import os
import warnings
from typing import Any

_applied = False


def _filter_warnings() -> None:
    # Item 3: MMCV/MMEngine import pkg_resources at import time; the warning is theirs, not the user's.
    warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
    warnings.filterwarnings("ignore", message=".*torch.cuda.amp.*is deprecated", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*`torch.cuda.amp.GradScaler", category=FutureWarning)
    # MMCV/MMDetection decorate functions with torch.jit.script at import time (deprecated in today's PyTorch).
    warnings.filterwarnings("ignore", message=r"`torch\.jit\.(script|interface)` is deprecated",
                            category=DeprecationWarning)


def _is_installed(package: str) -> bool:
    import importlib.util
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        distribution(package)
        return True
    except PackageNotFoundError:
        spec = importlib.util.find_spec(package)
        return spec is not None and spec.origin is not None


def _get_installed_path(package: str) -> str:
    import importlib.util

    from mmengine.utils.package_utils import package2module

    for name in (package, package2module(package)):
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.origin is not None:
            return os.path.dirname(spec.origin)
    raise ModuleNotFoundError(f"package {package} is not installed")


def _patch_package_lookup() -> None:
    # Item 2 (open-mmlab/mmengine#1676): Config._get_cfg_path calls these two names from its own module namespace.
    import mmengine.config.config as mm_config

    mm_config.is_installed = _is_installed
    mm_config.get_installed_path = _get_installed_path


def _register_checkpoint_loader() -> None:
    # Item 1 (open-mmlab/mmengine#1655): replace MMEngine's local-file loader (a bare torch.load) with fltool's.
    from mmengine.runner.checkpoint import CheckpointLoader

    from fltool.engine.checkpoint import load_local_checkpoint

    CheckpointLoader.register_scheme(prefixes="", loader=load_local_checkpoint, force=True)
    # Item 5: zoo names and URLs through the same safe loader (and torchvision:// without torchvision).
    from fltool.engine.hub import load_from_url

    CheckpointLoader.register_scheme(prefixes=("torchvision://", "open-mmlab://", "openmmlab://", "http://",
                                               "https://"), loader=load_from_url, force=True)


def apply() -> None:
    """Install every workaround (idempotent)."""
    global _applied
    if _applied:
        return
    _filter_warnings()
    _patch_package_lookup()
    _register_checkpoint_loader()
    _applied = True


def dist_backend() -> str:
    """Item 4: the process-group backend that works here: nccl with CUDA, gloo on CPU."""
    import torch

    return "nccl" if torch.cuda.is_available() else "gloo"


def init_distributed(launcher: str) -> None:
    """Item 4: initialise torch.distributed for ``launcher`` before MMEngine's Runner would (and get it wrong on CPU).

    ``pytorch``: torchrun's RANK/WORLD_SIZE/LOCAL_RANK/MASTER_ADDR/MASTER_PORT. ``slurm``: SLURM_PROCID/NTASKS/
    LOCALID, with MASTER_ADDR/MASTER_PORT from the environment (a default port is chosen when unset).
    """
    import torch
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return
    if launcher == "slurm":
        os.environ.setdefault("RANK", os.environ["SLURM_PROCID"])
        os.environ.setdefault("WORLD_SIZE", os.environ["SLURM_NTASKS"])
        os.environ.setdefault("LOCAL_RANK", os.environ.get("SLURM_LOCALID", "0"))
        os.environ.setdefault("MASTER_PORT", "29500")
        if "MASTER_ADDR" not in os.environ:
            import subprocess

            nodes = os.environ.get("SLURM_NODELIST", "127.0.0.1")
            first = subprocess.run(["scontrol", "show", "hostname", nodes], capture_output=True, text=True,
                                   check=False).stdout.split()
            os.environ["MASTER_ADDR"] = first[0] if first else "127.0.0.1"
    backend = dist_backend()
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
    restart = os.environ.get("TORCHELASTIC_RESTART_COUNT")
    if launcher == "pytorch" and restart not in (None, "0"):
        # Item 7: a torchrun restart keeps the agent's store; keys of this attempt only, under their own prefix.
        store, rank, world_size = next(dist.rendezvous("env://"))
        store = dist.PrefixStore(f"fltool/restart_{restart}", store)
        dist.init_process_group(backend=backend, store=store, rank=rank, world_size=world_size)
        return
    dist.init_process_group(backend=backend)


def distributed_cfg_overrides(cfg: Any) -> None:
    """Item 4: on CPU, DDP must not be given device ids; the process group uses gloo."""
    import torch

    cfg.setdefault("env_cfg", {}).setdefault("dist_cfg", {})["backend"] = dist_backend()
    if not torch.cuda.is_available():
        wrapper = dict(cfg.get("model_wrapper_cfg") or {})
        wrapper.setdefault("type", "MMDistributedDataParallel")
        wrapper["device_ids"] = None
        cfg.model_wrapper_cfg = wrapper


def _live_process_group() -> Any:
    """Item 6: ``torch.distributed`` when this process has an initialised process group, else None (without
    importing torch in a command that never did)."""
    import sys

    torch = sys.modules.get("torch")
    dist = getattr(torch, "distributed", None) if torch is not None else None
    if dist is None or not dist.is_available() or not dist.is_initialized():
        return None
    return dist


def end_distributed() -> None:
    """Item 6: after a command succeeded in a process with an initialised process group, destroy the group while
    the interpreter is whole, then end the process now with exit 0 (a no-op without a group)."""
    dist = _live_process_group()
    if dist is None:
        return
    dist.destroy_process_group()
    _leave(0)


def exit_distributed(code: int) -> None:
    """Item 6: in a process with an initialised process group, flush and end the process now with ``code``; a no-op
    otherwise (the caller then exits the normal way)."""
    if _live_process_group() is not None:
        _leave(code)


def _leave(code: int) -> None:
    """End the process with ``code`` without interpreter teardown, after flushing what it has written: the standard
    streams and every logging handler (MMEngine's log files among them)."""
    import logging
    import sys

    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001 -- a closed stream must not change the exit code
            pass
    try:
        logging.shutdown()
    except Exception:  # noqa: BLE001 -- nor a handler that fails to close
        pass
    os._exit(code)


# ---- 8. OpenVINO's alternate signal stack ------------------------------------------------------------------------
_SS_DISABLE = 2
_KEPT_STACKS: list = []  # the stacks fltool installed: never freed, so whoever restores one later restores memory


def _stack_struct() -> Any:
    import ctypes

    class StackT(ctypes.Structure):
        _fields_ = [("ss_sp", ctypes.c_void_p), ("ss_flags", ctypes.c_int), ("ss_size", ctypes.c_size_t)]

    return StackT


def _mapped(start: int, size: int, maps: str = "/proc/self/maps") -> bool:
    """Whether ``[start, start + size)`` lies inside one mapping of this process."""
    with open(maps) as f:
        for line in f:
            low, high = (int(x, 16) for x in line.split(None, 1)[0].split("-"))
            if low <= start and start + size <= high:
                return True
    return False


def repair_signal_stack() -> bool:
    """Item 8: where the calling thread's alternate signal stack is no longer mapped, install one that stays; True
    if it did. Linux only (elsewhere, and where the stack is fine or disabled, it does nothing)."""
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    stack_t = _stack_struct()
    current = stack_t()
    if libc.sigaltstack(None, ctypes.byref(current)) != 0:
        return False
    if current.ss_flags & _SS_DISABLE or not current.ss_sp or _mapped(current.ss_sp, current.ss_size):
        return False
    size = max(int(current.ss_size), 64 * 1024)
    buffer = ctypes.create_string_buffer(size)
    _KEPT_STACKS.append(buffer)
    fresh = stack_t(ctypes.cast(buffer, ctypes.c_void_p), 0, size)
    return libc.sigaltstack(ctypes.byref(fresh), None) == 0


def after_openvino() -> None:
    """After fltool's OpenVINO work: free what OpenVINO and NNCF no longer use (destroying their plugins), then
    repair the signal stack they may have left, so that Ctrl-C and SIGTERM still reach their handlers."""
    import gc

    gc.collect()
    repair_signal_stack()


# ---- 9. OpenVINO under ONEDNN_MAX_CPU_ISA -------------------------------------------------------------------------
def openvino_isa_cap(env: Any = None) -> str:
    """Item 9: the value of ``ONEDNN_MAX_CPU_ISA`` when it caps oneDNN (OpenVINO then crashes), else ""."""
    value = str((os.environ if env is None else env).get("ONEDNN_MAX_CPU_ISA", "")).strip()
    return "" if value.upper() in ("", "ALL", "DEFAULT") else value
