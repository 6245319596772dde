"""The CLI's foundation: doctor, config resolution, --cfg-options, and the one-line error convention."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from fltool.cli.common import expand_cfg_options
from fltool.cli.main import app
from fltool.engine import doctor as doctor_mod
from fltool.engine.config import load_config, parse_cfg_options, resolve_config
from fltool.errors import ConfigError

runner = CliRunner()
DEFAULT = "retinanet_r18-gn_synth_256"


# -- doctor ----------------------------------------------------------------------------------------------------
def test_doctor_reports_every_component_with_versions_and_mmcv_ops():
    result = runner.invoke(app, ["doctor", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    by_name = {c["name"]: c for c in report["checks"]}
    for name in ("python", "torch", "mmcv", "mmengine", "mmdet", "pycocotools"):
        assert by_name[name]["ok"], by_name[name]
        assert by_name[name]["version"][0].isdigit()
    assert by_name["mmcv"]["detail"] == "ops compiled: yes"
    assert "threads" in by_name["torch"]["detail"]


def test_cpu_flags_reads_the_flags_line_of_cpuinfo(tmp_path):
    """The AVX-512 bit in a run's record comes from here: the flags line, not another line that names a flag."""
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: AMD EPYC avx512f-free\nflags\t\t: fpu sse avx avx2 fma\n"
                    "processor\t: 1\nflags\t\t: fpu avx512f\n")
    assert doctor_mod.cpu_flags(str(info)) == {"fpu", "sse", "avx", "avx2", "fma"}
    assert doctor_mod.cpu_flags(str(tmp_path / "absent")) == set()


def test_machine_facts_name_the_cpu_its_isa_and_the_overrides(monkeypatch):
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    monkeypatch.delenv("ATEN_CPU_CAPABILITY", raising=False)
    facts = doctor_mod.machine_facts()
    assert facts["aten_isa"] == torch.backends.cpu.get_cpu_capability()
    assert facts["torch_threads"] == torch.get_num_threads() and facts["cores"] >= 1
    assert facts["env"]["ONEDNN_MAX_CPU_ISA"] == "AVX2" and "ATEN_CPU_CAPABILITY" not in facts["env"]
    assert facts["cpu_avx512"] == ("avx512f" in doctor_mod.cpu_flags())
    assert facts["gpu"] is None or isinstance(facts["gpu"], str)


@pytest.mark.skipif("avx2" not in doctor_mod.cpu_flags(),
                    reason="needs an x86 CPU with AVX2 to limit the kernels to it")
def test_doctor_reports_the_isa_aten_and_onednn_use_and_the_overrides_that_set_it():
    """A user whose numbers differ from the README's needs to see which instructions the kernels run."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, ONEDNN_MAX_CPU_ISA="AVX2", ATEN_CPU_CAPABILITY="avx2")
    proc = subprocess.run([sys.executable, "-m", "fltool", "doctor", "--json"], capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    cpu = {c["name"]: c for c in json.loads(proc.stdout)["checks"]}["cpu"]
    assert cpu["version"] == "avx2"
    assert "ATen AVX2" in cpu["detail"] and "oneDNN Intel AVX2" in cpu["detail"] and ":avx2" in cpu["detail"]
    assert "ONEDNN_MAX_CPU_ISA=AVX2" in cpu["detail"] and "threads: " in cpu["detail"]
    native = doctor_mod.cpu_report()
    assert native["aten_isa"] in ("AVX2", "AVX512", "DEFAULT") and native["onednn_isa"] != "unknown"
    assert native["torch_threads"] >= 1 and int(native["onednn_threads"]) >= 1


def test_doctor_exits_1_with_the_rebuild_command_when_mmcv_ops_are_missing(monkeypatch):
    real_import = doctor_mod._import

    def broken(name):
        if name in ("mmcv.ops", "mmcv._ext"):
            raise ImportError("libmmcv_ext.so: cannot open shared object file")
        return real_import(name)

    monkeypatch.setattr(doctor_mod, "_import", broken)
    result = runner.invoke(app, ["doctor"])
    assert result.exit_code == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("fltool: error: mmcv is broken: ops compiled: no")
    assert "MMCV_WITH_OPS=1" in last


# -- config resolution -------------------------------------------------------------------------------------------
def test_config_resolves_by_bare_name_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = resolve_config(DEFAULT)
    assert path.name == f"{DEFAULT}.py" and path.is_file()
    assert resolve_config(f"{DEFAULT}.py") == path


def test_config_resolves_by_path(tmp_path):
    cfg_file = tmp_path / "mine.py"
    cfg_file.write_text("x = 1\n")
    assert resolve_config(str(cfg_file)) == cfg_file.resolve()


def test_unknown_config_name_suggests_the_nearest_shipped_one():
    with pytest.raises(ConfigError) as err:
        resolve_config("retinanet_r18-gn_synth_265")
    assert f"did you mean '{DEFAULT}'" in err.value.one_line()


def test_missing_config_path_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="config not found"):
        resolve_config(str(tmp_path / "nope" / "x.py"))


def test_work_dir_priority_is_cli_then_config_then_work_dirs_name(tmp_path):
    cfg_file = tmp_path / "exp_a.py"
    cfg_file.write_text("model = dict(type='X')\n")
    assert load_config(str(cfg_file)).work_dir == str(Path("work_dirs") / "exp_a")
    assert load_config(str(cfg_file), work_dir=tmp_path / "cli").work_dir == str(tmp_path / "cli")
    cfg_file.write_text("model = dict(type='X')\nwork_dir = 'from_config'\n")
    assert load_config(str(cfg_file)).work_dir == "from_config"
    assert load_config(str(cfg_file), work_dir="cli_wins").work_dir == "cli_wins"


def test_train_list_shows_the_shipped_configs():
    result = runner.invoke(app, ["train", "--list"])
    assert result.exit_code == 0, result.output
    assert DEFAULT in result.stdout and "(default)" in result.stdout


# -- --cfg-options ---------------------------------------------------------------------------------------------
def test_cfg_options_parse_nested_keys_lists_tuples_and_scalars():
    opts = parse_cfg_options(["model.bbox_head.loss_cls.gamma=1.5", "a.b=[1,2,(3,4)]", "t=(1,2)",
                              "flag=True", "name=abc", "csv=1,2"])
    assert opts["model.bbox_head.loss_cls.gamma"] == 1.5
    assert opts["a.b"] == [1, 2, (3, 4)]
    assert opts["t"] == (1, 2)
    assert opts["flag"] is True and opts["name"] == "abc" and opts["csv"] == [1, 2]


def test_cfg_options_without_equals_is_a_config_error():
    with pytest.raises(ConfigError, match="is not key=value"):
        parse_cfg_options(["model.depth"])


def test_cfg_options_merge_into_the_config_and_reject_unknown_keys_with_a_suggestion(tmp_path):
    cfg_file = tmp_path / "c.py"
    cfg_file.write_text("model = dict(head=dict(loss=dict(gamma=2.0, alpha=0.25)), stages=[dict(k=1), dict(k=2)])\n")
    cfg = load_config(str(cfg_file), ["model.head.loss.gamma=0.5", "model.stages.1.k=7", "+extra.new=3"])
    assert cfg.model.head.loss.gamma == 0.5 and cfg.model.stages[1].k == 7 and cfg.extra.new == 3
    with pytest.raises(ConfigError) as err:
        load_config(str(cfg_file), ["model.head.loss.gama=0.5"])
    assert "unknown config key 'model.head.loss.gama'" in err.value.one_line()
    assert "did you mean 'model.head.loss.gamma'" in err.value.one_line()


def test_mmdet_style_space_separated_cfg_options_and_bare_resume_are_normalised():
    args = ["cfg.py", "--cfg-options", "a=1", "b.c=[1,2]", "--seed", "3", "--resume"]
    assert expand_cfg_options(args) == ["cfg.py", "--cfg-options", "a=1", "--cfg-options", "b.c=[1,2]",
                                        "--seed", "3", "--resume", "auto"]


# -- error convention ------------------------------------------------------------------------------------------
def test_domain_error_is_one_stderr_line_and_exit_1(tmp_path):
    result = runner.invoke(app, ["eval", str(tmp_path / "missing_config.py"), str(tmp_path / "x.pth")])
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fltool: error: ")
    assert "Traceback" not in result.output


def test_usage_error_exits_2():
    result = runner.invoke(app, ["train", "--max-iters", "notanumber"])
    assert result.exit_code == 2


def test_groups_show_help_without_arguments_and_accept_short_help():
    for group in ("bench", "analyze", "data"):
        result = runner.invoke(app, [group])
        assert "Usage" in result.output, group
        assert runner.invoke(app, [group, "-h"]).exit_code == 0


def test_version_flag_prints_the_version():
    from fltool import __version__

    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout.strip() == f"fltool {__version__}"


def test_debug_switch_shows_the_traceback(tmp_path, monkeypatch):
    monkeypatch.setenv("FLTOOL_DEBUG", "1")
    result = runner.invoke(app, ["eval", str(tmp_path / "missing_config.py"), str(tmp_path / "x.pth")])
    assert result.exit_code == 1
    assert "Traceback" in result.stderr and result.stderr.strip().splitlines()[-1].startswith("fltool: error:")
