"""scripts/build_progress.py: the first set-up's long MMCV compile shows files compiled of total, keeps the whole
log, and puts the cause of a failed build on screen."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "build_progress.py"


def _run(lines: list, log: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), str(log), "MMCV ops"], input="\n".join(lines) + "\n",
                          capture_output=True, text=True, timeout=60)


def test_ninja_steps_become_progress_lines_and_everything_lands_in_the_log(tmp_path):
    lines = ["Collecting mmcv==2.1.0", "  Building wheel for mmcv (setup.py): started", "running build_ext"]
    lines += [f"[{i}/20] c++ -MMD -MF /tmp/b/file{i}.o.d -c file{i}.cpp" for i in range(1, 21)]
    lines += ["  Building wheel for mmcv (setup.py): finished with status 'done'", "Successfully installed mmcv-2.1.0"]
    log = tmp_path / "build.log"
    proc = _run(lines, log)
    assert proc.returncode == 0
    progress = [ln for ln in proc.stderr.splitlines() if "compiled" in ln]
    # not a terminal: the first file, then one line per tenth of the files, the last one at 20/20
    assert len(progress) == 11 and progress[0].startswith("setup: MMCV ops: compiled 1/20 files, ")
    assert progress[-1].startswith("setup: MMCV ops: compiled 20/20 files, ")
    assert "elapsed" in progress[0] and "left" in progress[0]
    assert "Successfully installed mmcv-2.1.0" in proc.stderr and "c++ -MMD" not in proc.stderr
    assert log.read_text().splitlines() == lines


def test_a_failed_build_prints_the_last_lines_of_the_log(tmp_path):
    lines = ["Collecting mmcv==2.1.0", "[1/20] c++ -c a.cpp", "a.cpp:3:10: fatal error: torch/extension.h: No such "
             "file or directory", "ninja: build stopped: subcommand failed.", "error: subprocess-exited-with-error"]
    proc = _run(lines, tmp_path / "build.log")
    assert proc.returncode == 0  # pip's own status is what fails the set-up (pipefail)
    assert "last lines of" in proc.stderr and "fatal error: torch/extension.h" in proc.stderr
