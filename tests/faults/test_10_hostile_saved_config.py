"""Scenario 10: hostile saved config and files (`_target_: os.system`, callbacks, launcher setup,
`env_set`, `${oc.env:SECRET}`, a pickle `ckpt.pt`): rejected before any import or side effect.

tests/test_reproduce.py and tests/test_runconfig.py check each trap on its own, mostly in-process.
Here `python -m gptx.reproduce`, in a fresh interpreter, gets a folder whose config.yaml asks
`os.system` to create a file (refused in one line, nothing runs), then a folder with every other trap
at once, whose reproduction must run under gptx's own settings without springing any of them or
writing the secret anywhere.
"""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import pytest
import yaml
from faultkit import TINY, run_gptx, tree_digest

from conftest import Bomb

pytestmark = pytest.mark.slow

SECRET = "hunter2-do-not-print"




@pytest.fixture(scope="module")
def completed(tmp_path_factory) -> Path:
    cwd = tmp_path_factory.mktemp("original")
    proc = run_gptx(*TINY, f"hydra.run.dir={cwd / 'run'}", cwd=cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return cwd / "run"


@pytest.fixture
def run(completed, tmp_path) -> Path:
    return Path(shutil.copytree(completed, tmp_path / "run"))


def edit_yaml(path: Path, edit) -> None:
    tree = yaml.safe_load(path.read_text())
    edit(tree)
    path.write_text(yaml.safe_dump(tree, sort_keys=False))


def reproduce(run: Path, *args: str, cwd: Path):
    return run_gptx(str(run), *args, module="gptx.reproduce", cwd=cwd, env={"SECRET": SECRET})


def test_scenario_10_os_system_in_the_saved_config_runs_nothing(run, tmp_path):
    marker = tmp_path / "os_system_ran"
    edit_yaml(run / ".hydra" / "config.yaml",
              lambda c: c.update({"_target_": "os.system", "_args_": [f"touch {marker}"]}))
    before = tree_digest(run)
    proc = reproduce(run, cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.startswith("gptx: error: ") and proc.stderr.count("\n") == 1, proc.stderr
    assert "key '_target_' is not allowed" in proc.stderr
    assert not marker.exists() and proc.stdout == ""
    assert tree_digest(run) == before and not (run / "reproductions").exists()


def test_scenario_10_every_other_trap_at_once_is_ignored_and_nothing_leaks(run, tmp_path):
    marker = tmp_path / "sprung"

    def arm(tree):
        hydra = tree["hydra"]
        hydra["callbacks"] = {"evil": {"_target_": "os.system", "_args_": [f"touch {marker}"]}}
        hydra["job"]["env_set"] = {"LEAK": "${oc.env:SECRET}", "LD_PRELOAD": str(tmp_path / "evil.so")}
        hydra["launcher"]["setup"] = [f"touch {marker}"]
        hydra["run"]["dir"] = "${oc.env:SECRET}"

    edit_yaml(run / ".hydra" / "hydra.yaml", arm)
    (run / "ckpt.pt").write_bytes(pickle.dumps(Bomb(marker)))
    (run / "optimizer.pkl").write_bytes(pickle.dumps(Bomb(marker)))
    before = tree_digest(run)
    proc = reproduce(run, "--show-hydra", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith("IDENTICAL\n")
    assert "note: ignored: " in proc.stderr and "callback evil: os.system" in proc.stderr
    assert f"warning: {run / 'ckpt.pt'} may hold a pickle; gptx never opens it" in proc.stderr
    assert not marker.exists()
    assert SECRET not in proc.stdout + proc.stderr
    [new] = list((run / "reproductions").iterdir())
    assert all(SECRET.encode() not in p.read_bytes() for p in new.rglob("*") if p.is_file())
    assert not (tmp_path / SECRET).exists()  # `hydra.run.dir` was not used either
    after = {k: v for k, v in tree_digest(run).items() if not k.startswith("reproductions/")}
    assert after == before  # the original folder untouched
