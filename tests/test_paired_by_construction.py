"""A miniature sweep with repeats and a stack: the report shows the floor and interaction sections,
and per-parameter initialisation keeps shared parameters identical across arms."""

from __future__ import annotations

import json

import pytest

from conftest import TINY, run_gptx

pytestmark = pytest.mark.slow


def test_miniature_sweep_report_has_floor_interactions_and_identical_shared_parameters(tmp_path):
    proc = run_gptx("-m", "sweep=paired", "intervention=baseline,grad_clip,qkv_bias,[grad_clip,qkv_bias]",
                    "init_seed=1,2,3", "replica=0,1", *TINY, "train.max_steps=2", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    sweep = tmp_path / "multirun_outputs" / "paired"
    results = [json.loads(p.read_text()) for p in sweep.rglob("result.json")]
    assert len(results) == 4 * 3 * 2 and all(r["status"] == "completed" for r in results)

    proc = run_gptx(str(sweep), module="gptx.analyze", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = (sweep / "report.md").read_text()
    assert "## Nondeterminism floor" in report and "## Interactions" in report
    summary = json.loads((sweep / "summary.json").read_text())
    assert summary["floor"] and "grad_clip+qkv_bias" in json.dumps(summary.get("interactions"))

    # Repeats on CPU are bitwise identical; qkv_bias shares every baseline parameter bit for bit.
    by_key = {}
    for r in results:
        by_key.setdefault((r["arm"], r["init_seed"]), set()).add(r["final_weights_sha256"])
    assert all(len(hashes) == 1 for hashes in by_key.values())
    base = next(r for r in results if r["arm"] == "baseline" and r["init_seed"] == 1)
    qkv = next(r for r in results if r["arm"] == "qkv_bias" and r["init_seed"] == 1)
    shared = base["init_param_sha256"].keys() & qkv["init_param_sha256"].keys()
    assert len(shared) == len(base["init_param_sha256"])
    assert all(base["init_param_sha256"][k] == qkv["init_param_sha256"][k] for k in shared)
