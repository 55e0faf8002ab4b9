"""The example plugin (examples/gptx-swiglu) end to end: installed, swept against the baseline, analysed,
reproduced IDENTICAL, refused once its source changes; a saved config naming an unregistered component is
one line.

Each test installs the package into its own folder (`pip install --no-deps --target`, put first on
PYTHONPATH of the commands it runs), so an edited copy is a real installed package and the developer's
environment is left alone. CI also installs it into its environment (.ci/run), which
`test_ci_installed_the_example_plugin` checks.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

import pytest

from conftest import REPO, TINY, run_gptx

EXAMPLE = REPO / "examples" / "gptx-swiglu"


def install(package: Path, target: Path) -> dict[str, str]:
    """pip-install `package` into `target`; the environment that puts it first on the path."""
    done = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                           "--target", str(target), str(package)], capture_output=True, text=True, timeout=300)
    if done.returncode:
        pytest.fail(f"could not install {package}: {done.stderr.strip()}")
    return {"PYTHONPATH": os.pathsep.join([str(target), os.environ.get("PYTHONPATH", "")])}


def test_ci_installed_the_example_plugin():
    try:
        dist = distribution("gptx-swiglu")
    except PackageNotFoundError:
        if os.environ.get("CI") == "true":
            pytest.fail("gptx-swiglu is not installed: .ci/run must `pip install -e examples/gptx-swiglu`")
        pytest.skip("gptx-swiglu is not installed here (pip install -e examples/gptx-swiglu); CI installs it")
    assert {ep.name for ep in dist.entry_points if ep.group == "gptx.components"} == {"mlp.swiglu", "norm.rms_norm"}


@pytest.mark.slow
def test_sweep_against_the_baseline_then_reproduce_identical_then_refuse_changed_code(tmp_path):
    env = install(EXAMPLE, tmp_path / "site")
    out = run_gptx("-m", "intervention=baseline,swiglu", "init_seed=1,2,3", "sweep=plugin", *TINY,
                   cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    sweep = tmp_path / "multirun_outputs" / "plugin"
    report = (sweep / "report.md").read_text()
    assert "| `swiglu` | 3 |" in report
    summary = json.loads((sweep / "summary.json").read_text())
    assert summary  # the analysis ran on both arms
    run = sweep / "intervention=swiglu,init_seed=2"
    result = json.loads((run / "result.json").read_text())
    used = result["components"]["mlp.swiglu"]
    assert (used["distribution"], used["version"], used["object"]) == ("gptx-swiglu", "0.1.0", "gptx_swiglu:SwiGLU")
    assert result["components"]["norm.layer_norm"]["distribution"] == "gptx"
    base = json.loads((sweep / "intervention=baseline,init_seed=2" / "result.json").read_text())
    shared = set(base["init_param_sha256"]) & set(result["init_param_sha256"])
    assert "trf_blocks.0.att.W_query.weight" in shared
    assert all(base["init_param_sha256"][n] == result["init_param_sha256"][n] for n in shared)

    same = run_gptx(str(run), module="gptx.reproduce", cwd=tmp_path, env=env)
    assert same.returncode == 0, same.stderr[-3000:]
    assert same.stdout.splitlines()[0] == "IDENTICAL"

    edited = tmp_path / "edited"
    shutil.copytree(EXAMPLE, edited, ignore=shutil.ignore_patterns("*.egg-info", "build", "__pycache__"))
    source = edited / "gptx_swiglu" / "__init__.py"
    text = source.read_text()
    assert "F.silu(self.gate(x))" in text
    source.write_text(text.replace("F.silu(self.gate(x))", "F.gelu(self.gate(x))"))
    changed_env = install(edited, tmp_path / "site-edited")
    refused = run_gptx(str(run), module="gptx.reproduce", cwd=tmp_path, env=changed_env)
    assert refused.returncode == 2
    assert refused.stdout == ""
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gptx: error: DIFFERENT CODE, not run: mlp.swiglu "
                                                   "from gptx-swiglu 0.1.0: source sha256 ")
    assert len(list((run / "reproductions").iterdir())) == 1  # the IDENTICAL one: the refusal left none


@pytest.mark.slow
def test_a_saved_config_naming_an_unregistered_component_is_one_line(tmp_path):
    out = run_gptx(*TINY, "train.max_steps=1", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    config = tmp_path / "run" / ".hydra" / "config.yaml"
    config.write_text(config.read_text().replace("mlp: gelu_mlp", "mlp: swiglu_from_nowhere"))
    refused = run_gptx(str(tmp_path / "run"), module="gptx.reproduce", cwd=tmp_path)
    assert refused.returncode == 2
    (line,) = refused.stderr.strip().splitlines()
    assert line.startswith("gptx: error: model.mlp=swiglu_from_nowhere is not a registered mlp: "
                           "this installation has gelu_mlp")
    assert not (tmp_path / "run" / "reproductions").exists()

