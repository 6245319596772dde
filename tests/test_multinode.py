"""Beyond one process: ``torchrun --nnodes=2`` as two node processes on 127.0.0.1 with the c10d rendezvous (gloo on
the CPU), and ``torchrun --max-restarts`` with ``--resume auto`` surviving a worker killed by SIGKILL."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import torch

TESTS = Path(__file__).resolve().parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _env() -> dict:
    return dict(os.environ, OMP_NUM_THREADS="1", GLOO_SOCKET_IFNAME="lo",
                PYTHONPATH=str(TESTS) + os.pathsep + os.environ.get("PYTHONPATH", ""))


def test_two_nodes_with_c10d_rendezvous_train_one_model_and_write_one_set_of_checkpoints(tmp_path):
    port = _free_port()
    wd = tmp_path / "two_nodes"
    config = str(TESTS / "configs" / "tiny_multinode.py")
    nodes = []
    for _ in range(2):  # the same command on each node: torchrun's rendezvous gives them their node ranks
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc_per_node=1",
               "--rdzv_backend=c10d", f"--rdzv_endpoint=127.0.0.1:{port}", "--rdzv_id=fltool-test",
               "--local_addr=127.0.0.1", "-m", "fltool", "train", config, "--launcher", "pytorch",
               "--work-dir", str(wd)]
        nodes.append(subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    results = [(p.wait(timeout=400), *p.communicate()) for p in nodes]
    assert [code for code, _, _ in results] == [0, 0], [err[-2500:] for _, _, err in results]

    digests = [(wd / f"digest_rank{rank}.txt").read_text().split() for rank in (0, 1)]
    assert digests[0][0] == digests[1][0]  # both nodes hold the same trained weights
    assert {d[1] for d in digests} == {"world_size=2"} and {d[2] for d in digests} == {"node=0", "node=1"}
    assert sorted(p.name for p in wd.glob("*.pth")) == ["iter_2.pth", "iter_4.pth"]  # one set, from rank 0
    assert json.loads((wd / "metrics.json").read_text())["iteration"] == 4
    stdout = "".join(out for _, out, _ in results)
    assert stdout.count("fltool train:") == 1  # rank 0 reports; the other node's rank prints nothing


def test_torchrun_max_restarts_with_resume_auto_survives_a_killed_worker(tmp_path):
    wd = tmp_path / "restarts"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "--max-restarts=1",
           "-m", "fltool", "train", str(TESTS / "configs" / "tiny_kill.py"), "--launcher", "pytorch",
           "--resume", "auto", "--work-dir", str(wd)]
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    failed_at = proc.stderr.index("failed (exitcode:")  # torchrun saw the first attempt fail, and restarted it
    assert "iter 3/6" in proc.stderr[failed_at:] and "iter 1/6" not in proc.stderr[failed_at:]  # resumed at 2
    assert json.loads((wd / "metrics.json").read_text())["iteration"] == 6
    assert torch.load(wd / "iter_6.pth", weights_only=True)["meta"]["iter"] == 6
    logs = sorted(wd.glob("*/*.log"))
    assert len(logs) == 2  # one per attempt
    second = logs[-1].read_text()
    assert "Load checkpoint from" in second and "iter_2.pth" in second


def test_the_slurm_batch_script_runs_two_tasks_with_launcher_slurm(tmp_path):
    """scripts/slurm_train.sh under stand-ins for SLURM's srun (two tasks with SLURM_PROCID/LOCALID, as srun sets
    them) and scontrol: the tasks join one gloo group through --launcher slurm and train one model."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text("#!/bin/sh\necho 127.0.0.1\n")
    (bin_dir / "srun").write_text(
        "#!/bin/sh\n"
        "shift  # --kill-on-bad-exit=1\n"
        "for i in 0 1; do SLURM_PROCID=$i SLURM_LOCALID=$i \"$@\" > task$i.out 2> task$i.err & done\n"
        "wait %1 && wait %2\n")
    for stub in ("scontrol", "srun"):
        (bin_dir / stub).chmod(0o755)
    env = dict(_env(), PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", SLURM_NTASKS="2", SLURM_JOB_NUM_NODES="1",
               SLURM_JOB_NODELIST="node1", SLURM_JOB_ID="4242", SLURM_SUBMIT_DIR=str(TESTS.parent),
               MASTER_PORT=str(_free_port()), FLTOOL_PYTHON=sys.executable)
    wd = tmp_path / "slurm"
    proc = subprocess.run(["bash", str(TESTS.parent / "scripts" / "slurm_train.sh"),
                           str(TESTS / "configs" / "tiny_multinode.py"), "--work-dir", str(wd)],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, (proc.stdout + proc.stderr + (tmp_path / "task0.err").read_text())[-3000:]
    assert "2 tasks on 1 node(s), rendezvous 127.0.0.1:" in proc.stdout
    digests = [(wd / f"digest_rank{rank}.txt").read_text().split() for rank in (0, 1)]
    assert digests[0][0] == digests[1][0] and digests[0][1] == "world_size=2"
    log = next(wd.glob("*/*.log")).read_text()
    assert "Distributed launcher: slurm" in log
    assert json.loads((wd / "metrics.json").read_text())["iteration"] == 4
