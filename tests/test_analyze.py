"""gptx.analyze on fake run folders: the study's noise runs, paired designs, odd inputs, the CLI."""

import csv
import hashlib
import json
import math
import subprocess
import sys

import numpy as np
import pytest
from scipy import stats as sps

from gptx import analyze
from gptx.analysis import runs, stats
from gptx.analysis.report import table

PARAMS = [f"trf_blocks.{i}.att.W_query.weight" for i in range(25)] + ["out_head.weight"]


def sha(*parts) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()


def params(init_seed: int, changed: int = 0) -> dict:
    """Per-parameter init hashes as the baseline draws them at init_seed; the last `changed` ones differ."""
    return {n: sha(init_seed, n, i >= len(PARAMS) - changed) for i, n in enumerate(PARAMS)}


def make_run(root, name, intervention=("baseline",), init_seed=42, train_seed=None, loss=3.7, *, replica=0,
             status="completed", init_hash=None, final_hash=None, data_seed=None, curve=True, **extra):
    """A run folder as training writes it: result.json, and metrics.jsonl unless curve=False."""
    folder = root / name
    folder.mkdir(parents=True)
    result = {"status": status, "intervention": list(intervention), "init_seed": init_seed,
              "train_seed": train_seed, "data_seed": data_seed, "replica": replica, "test_loss": loss,
              "val_loss": loss, "train_loss": loss,
              "init_weights_sha256": init_hash or sha("init", init_seed),
              "final_weights_sha256": final_hash or sha("final", name), "steps": 10, "tokens": 40960, **extra}
    (folder / "result.json").write_text(json.dumps(result))
    if curve:
        rows = [{"step": s, "tokens": 4096 * s, "train_loss": 10 - s / 2, "lr": 4e-4, "grad_norm": 1.0,
                 **({"val_loss": 10 - s / 2} if s % 5 == 0 else {})} for s in range(11)]
        torn = '{"step": 11, "tok'  # a killed run leaves half a line
        (folder / "metrics.jsonl").write_text("\n".join(map(json.dumps, rows)) + "\n" + torn)
    return folder


def study(root):
    """The study's noise runs (two unpublished cells filled in) and single-run interventions at seed 42."""
    b = ("baseline",)
    make_run(root, "b42", b, 42, None, 3.691526, final_hash="same", init_param_sha256=params(42))
    make_run(root, "b42_rerun", b, 42, None, 3.691526, replica=1, final_hash="same",
             init_param_sha256=params(42))
    make_run(root, "b22", b, 22, None, 3.673453)
    make_run(root, "b67", b, 67, None, 3.653592)
    make_run(root, "b42_t23", b, 42, 23, 3.681356)
    make_run(root, "b42_t67", b, 42, 67, 3.680505)
    make_run(root, "b22_t23", b, 22, 23, 3.674)
    make_run(root, "b67_t23", b, 67, 23, 3.664)
    for arm, loss in [("grad_clip", 3.678317), ("lr_schedule", 3.601917)]:
        make_run(root, arm, (arm,), 42, None, loss, init_param_sha256=params(42))
    tied = {k: v for k, v in params(42).items() if k != "out_head.weight"}  # the head is the embedding
    make_run(root, "weight_tying", ("weight_tying",), 42, None, 3.874305, init_hash=sha("tied", 42),
             init_param_sha256=tied)
    qkv = {**params(42, changed=24), "trf_blocks.0.att.b_query": "x"}  # extra draws shift later layers
    make_run(root, "qkv_bias", ("qkv_bias",), 42, None, 3.669385, init_hash=sha("qkv", 42),
             init_param_sha256=qkv)
    make_run(root, "fp32_nan", ("fp32",), 42, None, float("nan"))
    make_run(root, "fp32_killed", ("fp32",), 42, None, None, status="running")
    return root


def paired_sweep(root, effect=-0.02, seeds=range(1, 6), arms=("grad_clip",)):
    """Baseline and interventions at the same init seeds: initial-weight noise large, training noise small."""
    for s in seeds:
        start = 3.7 + 0.02 * math.sin(3 * s)
        make_run(root, f"b{s}", init_seed=s, loss=start, curve=False)
        retrained = start + 0.001 * math.cos(5 * s)
        make_run(root, f"b{s}_t9", init_seed=s, train_seed=9, loss=retrained, curve=False)
        for k, arm in enumerate(arms):
            parts = arm.split("+")
            loss = start + effect * len(parts) + 0.001 * math.cos(s + k)
            make_run(root, f"{arm}{s}", parts, s, None, loss, curve=False)


@pytest.fixture
def study_summary(tmp_path):
    return analyze.write_report([study(tmp_path / "sweep")], tmp_path / "out")


@pytest.fixture
def study_pooled(tmp_path):
    """The study read with --assume-equal-noise: one-run arms judged against the pooled training noise."""
    return analyze.write_report([study(tmp_path / "sweep")], tmp_path / "pooled", plots=False, equal_noise=True)


def test_study_noise_three_ways(study_summary):
    noise = study_summary["noise"]
    init = noise["init_seed"]
    assert init["n_runs"] == 3 and init["mean"] == pytest.approx(3.672857, abs=5e-7)
    assert init["sd"] == pytest.approx(0.018974, abs=5e-7)
    assert init["sd_population"] == pytest.approx(0.015492, abs=5e-7)
    assert init["sd_ci"] == pytest.approx([0.009879, 0.119247], abs=5e-7)
    train = noise["train_seed"]  # pooled over init 42 (none, 23, 67), 22 (none, 23) and 67 (none, 23)
    sd, df = stats.pooled_sd([[3.691526, 3.681356, 3.680505], [3.673453, 3.674], [3.653592, 3.664]])
    assert (train["n_groups"], train["df"], train["sd"]) == (3, df, pytest.approx(sd))
    pinned = noise["init_seed_train_pinned"]
    assert pinned["n_runs"] == 3 and pinned["mean"] == pytest.approx((3.681356 + 3.674 + 3.664) / 3)


def test_train_seed_noise_of_one_group_matches_the_study(tmp_path):
    for name, t, loss in [("a", None, 3.691526), ("b", 23, 3.681356), ("c", 67, 3.680505)]:
        make_run(tmp_path, name, train_seed=t, loss=loss)
    train = analyze.write_report([tmp_path], tmp_path / "out")["noise"]["train_seed"]
    assert train["mean"] == pytest.approx(3.684462, abs=5e-7)
    assert train["sd_population"] == pytest.approx(0.005007, abs=5e-7)
    assert train["sd"] == pytest.approx(0.006132, abs=5e-7)


def test_study_grid_anova(study_summary):
    grid = study_summary["noise"]["grid"]
    assert grid["init_seeds"] == [22, 42, 67] and grid["train_seeds"] == [23, None]  # 67 ran only at 42
    ref = stats.two_way_anova([[3.674, 3.673453], [3.681356, 3.691526], [3.664, 3.653592]])
    assert (grid["var_init"], grid["var_residual"]) == pytest.approx((ref.var_init, ref.var_residual))
    assert grid["df_residual"] == 2


def test_study_one_run_arms_get_no_verdict_on_their_own_noise(study_summary):
    arms = study_summary["arms"]
    assert study_summary["order"][0] == "weight_tying" and study_summary["order"][-1] == "lr_schedule"
    assert arms["baseline"]["n"] == 7 and arms["baseline"]["n_runs"] == 8  # the rerun is a repeat
    for a in ("grad_clip", "lr_schedule", "qkv_bias", "weight_tying"):
        assert arms[a]["verdict"] == "not testable" and arms[a]["p"] is None and arms[a]["method"] == "one run"
        assert "--assume-equal-noise" in arms[a]["why_not_testable"]  # the assumption a verdict would need
    assert arms["lr_schedule"]["delta"] == pytest.approx(-0.0817558, abs=1e-6)  # the estimate, untested


def test_study_arms_sorted_worst_first_and_verdicts(study_pooled):
    arms = study_pooled["arms"]
    assert arms["grad_clip"]["sd"] is None and arms["grad_clip"]["method"] == "pooled"
    assert "equals the baseline's" in arms["grad_clip"]["assumption"]
    assert arms["grad_clip"]["verdict"] == "no detectable effect" and arms["grad_clip"]["min_detectable"] > 0
    assert arms["lr_schedule"]["verdict"] == "better"
    # weight tying removes the head: its initial function is not the baseline's, so one run is unpaired
    assert arms["weight_tying"]["pairing"] == "unpaired" and arms["weight_tying"]["verdict"] != "worse"
    assert all(arms[a]["tentative"] for a in ("grad_clip", "lr_schedule", "weight_tying"))  # one run each
    names = ("grad_clip", "lr_schedule", "qkv_bias", "weight_tying")
    assert [arms[a]["p_holm"] for a in names] == pytest.approx(stats.holm([arms[a]["p"] for a in names]))


def test_study_one_estimand_per_row(study_pooled):
    study_summary = study_pooled
    for arm in ("grad_clip", "lr_schedule", "qkv_bias", "weight_tying"):
        e = study_summary["arms"][arm]
        assert e["ci"][0] < e["delta"] < e["ci"][1] and e["df"] > 0
        assert e["z"] == pytest.approx(e["delta"] / e["sd_difference"])
    gc = study_summary["arms"]["grad_clip"]
    assert gc["pairing"] == "paired"  # same init seed, identical initial weights: judged on training noise
    assert gc["sd_difference"] == pytest.approx(math.sqrt(2) * study_summary["design"]["sd_train"])
    assert study_summary["arms"]["qkv_bias"]["pairing"] == "unpaired"  # its extra draws moved 24 parameters


def test_init_weights_and_shared_parameter_identity(study_summary):
    arms = study_summary["arms"]
    ident = {a: (arms[a]["param_identity"]["identical"], arms[a]["param_identity"]["shared"])
             for a in ("grad_clip", "qkv_bias", "weight_tying")}
    assert ident == {"grad_clip": (26, 26), "qkv_bias": (2, 26), "weight_tying": (25, 25)}
    assert arms["qkv_bias"]["param_identity"]["only_in_arm"] == ["trf_blocks.0.att.b_query"]
    assert arms["weight_tying"]["param_identity"]["only_in_baseline"] == ["out_head.weight"]
    # every shared parameter identical, but the parameter set differs: one run pairs with nothing
    assert arms["weight_tying"]["pairing"] == "paired"  # at one shared init seed: by seed, untested


def test_excluded_runs_are_listed_never_dropped(study_summary):
    excluded = {e["path"].rsplit("/", 1)[-1]: e for e in study_summary["excluded"]}
    assert excluded["fp32_nan"]["status"] == "diverged" and "nan" in excluded["fp32_nan"]["reason"]
    killed = excluded["fp32_killed"]
    assert killed["status"] == "running" and "incomplete" in killed["reason"]
    assert "fp32" not in study_summary["arms"]
    assert study_summary["n_runs"] == 14 and study_summary["n_included"] == 12


def test_output_files(study_summary, tmp_path):
    out = tmp_path / "out"
    assert {p.name for p in out.iterdir()} == {"report.md", "runs.csv", "summary.json", "noise.png",
                                               "curves.png"}
    json.loads((out / "summary.json").read_text(), parse_constant=lambda c: pytest.fail(f"not JSON: {c}"))
    rows = list(csv.DictReader((out / "runs.csv").open()))
    assert len(rows) == 14 and {r["status"] for r in rows} == {"completed", "diverged", "incomplete"}
    report = (out / "report.md").read_text()
    for needle in ("## Arms", "## Interventions vs baseline", "## Noise (baseline arm", "barely estimated",
                   "## Design model", "## Nondeterminism floor", "the floor is zero",
                   "2/26 shared parameters started identical", "(indicative, n = 6 runs)",
                   "## Left out of the statistics", "## Method"):
        assert needle in report
    assert (out / "noise.png").read_bytes()[:4] == (out / "curves.png").read_bytes()[:4] == b"\x89PNG"


def test_nondeterminism_floor(tmp_path):
    make_run(tmp_path, "a0", loss=3.70, final_hash="h")
    make_run(tmp_path, "a1", loss=3.70, replica=1, final_hash="h")
    make_run(tmp_path, "b0", init_seed=1, loss=3.70, final_hash="x")
    make_run(tmp_path, "b1", init_seed=1, loss=3.72, replica=1, final_hash="y")
    floor = analyze.write_report([tmp_path], tmp_path / "out")["floor"]
    assert (floor["n_groups"], floor["n_bitwise_identical"], floor["n_differing"]) == (2, 1, 1)
    assert floor["sd"] == pytest.approx(stats.pooled_sd([[3.70, 3.70], [3.70, 3.72]])[0]) and floor["df"] == 2
    assert {g["init_seed"]: g["bitwise_identical"] for g in floor["groups"]} == {1: False, 42: True}


def test_paired_design_is_judged_on_training_noise(tmp_path):
    paired_sweep(tmp_path)
    s = analyze.write_report([tmp_path], tmp_path / "out")
    gc = s["arms"]["grad_clip"]
    assert gc["pairing"] == "paired" and gc["n_blocks_shared"] == 5 and gc["verdict"] == "better"
    assert not gc["tentative"] and gc["bootstrap_ci"] is not None  # five shared init seeds
    assert s["planning"]["paired"]["seeds"] < s["planning"]["unpaired"]["seeds"]


def test_the_issue_example_is_not_testable(tmp_path):
    # baseline at init 42 x train null/23/67; one arm at init 67: it differs by initial-weight noise too
    for t, loss in ((None, 3.691526), (23, 3.681356), (67, 3.680505)):
        make_run(tmp_path, f"b{t}", init_seed=42, train_seed=t, loss=loss, curve=False)
    make_run(tmp_path, "g67", ("grad_clip",), init_seed=67, loss=3.653592, curve=False)
    gc = analyze.write_report([tmp_path], tmp_path / "out")["arms"]["grad_clip"]
    assert gc["verdict"] == "not testable" and "initial-weight noise" in gc["why_not_testable"]
    assert gc["p"] is None and gc["z"] is None


def test_identical_final_weights_are_reported_as_no_change(tmp_path):
    for s_ in range(1, 4):
        make_run(tmp_path, f"b{s_}", init_seed=s_, loss=3.7 + 0.01 * s_, final_hash=f"w{s_}", curve=False)
        make_run(tmp_path, f"g{s_}", ("grad_clip",), init_seed=s_, loss=3.7 + 0.01 * s_, final_hash=f"w{s_}",
                 curve=False, grad_clip_active_steps=0, grad_norm_max=1.6)
        make_run(tmp_path, f"n{s_}", ("no_dropout",), init_seed=s_, loss=3.69 + 0.01 * s_, curve=False)
        make_run(tmp_path, f"s{s_}", ("grad_clip", "no_dropout"), init_seed=s_, loss=3.68 + 0.01 * s_,
                 curve=False)
    s = analyze.write_report([tmp_path], tmp_path / "out")
    (i,) = s["interactions"]  # grad_clip's Δ is exactly 0: interaction = Δ_stack − Δ_no_dropout
    assert i["stack"] == "grad_clip+no_dropout" and i["estimate"] == pytest.approx(-0.01, abs=1e-9)
    gc = s["arms"]["grad_clip"]
    assert gc["verdict"] == "identical to the baseline" and gc["delta"] == 0.0 and gc["p"] is None
    assert "clipping was active on 0 of 30 steps (largest pre-clip norm 1.6)" in gc["identical_why"]
    assert "this intervention changed nothing in this set-up" in (tmp_path / "out" / "report.md").read_text()
    assert s["arms"]["no_dropout"]["pairing"] == "paired" and "grad_clip" not in s["design"]["arms"]


def test_interactions_in_the_same_model_and_holm(tmp_path):
    paired_sweep(tmp_path, arms=("grad_clip", "qkv_bias", "grad_clip+qkv_bias"))
    (i,) = analyze.write_report([tmp_path], tmp_path / "out")["interactions"]
    assert i["stack"] == "grad_clip+qkv_bias" and i["singles"] == ["grad_clip", "qkv_bias"]
    # same layout in every block: the model's contrast is the mean per-seed stack - grad_clip - qkv_bias
    # + the block's baseline mean (the baseline ran twice a seed: train seed null and 9)
    per_seed = [0.001 * (math.cos(s + 2) - math.cos(s) - math.cos(s + 1)) + 0.0005 * math.cos(5 * s)
                for s in range(1, 6)]
    assert i["estimate"] == pytest.approx(sum(per_seed) / 5, abs=1e-9)
    assert i["p_holm"] == pytest.approx(i["p"])  # one stack: Holm changes nothing
    assert i["method"] == "paired" and i["df"] == 4  # its own per-seed values, n − 1 df
    assert i["p"] == pytest.approx(sps.ttest_1samp(per_seed, 0.0).pvalue, rel=1e-6)
    assert "## Interactions" in (tmp_path / "out" / "report.md").read_text()
    (pooled,) = analyze.write_report([tmp_path], tmp_path / "pooled", equal_noise=True)["interactions"]
    assert pooled["method"] == "pooled" and pooled["estimate"] == pytest.approx(i["estimate"], abs=1e-9)


def test_interaction_unpaired(tmp_path):
    for k, arm in enumerate(("baseline", "grad_clip", "qkv_bias", "grad_clip+qkv_bias")):
        for s in (1, 2):
            loss = 3.7 + 0.01 * s - 0.01 * k + 0.002 * math.sin(7 * k + s)
            make_run(tmp_path, f"{arm}{s}", arm.split("+"), 10 * k + s, None, loss, curve=False)
    (i,) = analyze.write_report([tmp_path], tmp_path / "out")["interactions"]
    means = [3.715 - 0.01 * k + 0.001 * (math.sin(7 * k + 1) + math.sin(7 * k + 2)) for k in range(4)]
    assert i["estimate"] == pytest.approx(means[3] - means[1] - means[2] + means[0], abs=1e-9)


def test_one_run_per_arm(tmp_path):
    make_run(tmp_path, "b", loss=3.7)
    make_run(tmp_path, "g", ("grad_clip",), loss=3.6)
    s = analyze.write_report([tmp_path], tmp_path / "out")
    assert s["arms"]["baseline"]["sd"] is None and s["arms"]["grad_clip"]["z"] is None
    assert s["arms"]["grad_clip"]["verdict"] == "not testable"
    assert "n/a" in table(s)


def test_arms_without_a_baseline(tmp_path):
    make_run(tmp_path, "g1", ("grad_clip",), 1, loss=3.6)
    make_run(tmp_path, "g2", ("grad_clip",), 2, loss=3.61)
    s = analyze.write_report([tmp_path], tmp_path / "out")
    assert s["noise"] is None and s["arms"]["grad_clip"]["verdict"] == "not testable"
    assert "No runs of the baseline arm" in (tmp_path / "out" / "report.md").read_text()


def test_identical_losses_give_undefined_z_not_a_crash(tmp_path):
    for s in (1, 2, 3):
        make_run(tmp_path, f"b{s}", init_seed=s, loss=3.7)
        make_run(tmp_path, f"g{s}", ("grad_clip",), init_seed=s, loss=3.7)
    gc = analyze.write_report([tmp_path], tmp_path / "out")["arms"]["grad_clip"]
    assert gc["z"] is None and gc["p"] is None
    assert gc["verdict"] == "not testable" and "no spread" in gc["why_not_testable"]


def test_other_baseline_and_metric(tmp_path):
    paired_sweep(tmp_path)
    s = analyze.write_report([tmp_path], tmp_path / "out", baseline="grad_clip", metric="val_loss")
    assert s["metric"] == "val_loss" and s["arms"]["baseline"]["verdict"] == "worse"


def test_mixed_models_are_flagged(tmp_path):
    make_run(tmp_path, "tiny", init_seed=1, model="gpt2_tiny")
    make_run(tmp_path, "small", init_seed=2, model="gpt2_small")
    s = analyze.write_report([tmp_path], tmp_path / "out")
    assert s["warnings"] == ["the runs mix model values (gpt2_small, gpt2_tiny); analyse each separately"]
    assert "**Warning**" in (tmp_path / "out" / "report.md").read_text()


def test_unreadable_and_statusless_results_are_listed(tmp_path):
    make_run(tmp_path, "ok", loss=3.7)
    (tmp_path / "torn").mkdir()
    (tmp_path / "torn" / "result.json").write_text('{"status": "compl')
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "result.json").write_text('{"test_loss": 3.7, "intervention": ["baseline"]}')
    (tmp_path / "killed_early" / ".hydra").mkdir(parents=True)  # a job killed before writing result.json
    s = analyze.write_report([tmp_path], tmp_path / "out")
    assert sorted(e["status"] for e in s["excluded"]) == ["running", "unknown", "unreadable"]


def test_data_seeds_other_than_the_most_common_are_left_out_of_noise(tmp_path):
    for s in (1, 2, 3):
        make_run(tmp_path, f"b{s}", init_seed=s, loss=3.7 + 0.01 * s, data_seed=0)
    make_run(tmp_path, "b_d5", init_seed=1, loss=9.0, data_seed=5)
    noise = analyze.write_report([tmp_path], tmp_path / "out")["noise"]
    assert noise["init_seed"]["n_runs"] == 3 and noise["other_data_seeds"] == [5]


def test_a_thousand_result_files(tmp_path):
    arms = ["baseline", "grad_clip", "qkv_bias", "grad_clip+qkv_bias", "no_dropout"]
    for i in range(1000):
        loss = 3.7 - 0.01 * (i % 5) + 0.001 * math.sin(i)
        make_run(tmp_path / "sweep", f"run{i}", arms[i % 5].split("+"), init_seed=i // 5,
                 train_seed=None if i % 2 else 7, loss=loss, curve=i < 50)
    s = analyze.write_report([tmp_path / "sweep"], tmp_path / "out")
    assert s["n_included"] == 1000 and s["arms"]["no_dropout"]["verdict"] == "better"
    assert len(s["interactions"]) == 1


def test_cli_writes_into_the_single_path(tmp_path, capsys):
    paired_sweep(tmp_path)
    assert analyze.main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "grad_clip" in out and "verdict" in out and (tmp_path / "report.md").exists()


def test_cli_mixed_sweeps_into_one_report(tmp_path, capsys):
    study(tmp_path / "noise_sweep")
    paired_sweep(tmp_path / "paired_sweep", arms=("no_dropout",))
    out = tmp_path / "report"
    argv = [str(tmp_path / "noise_sweep"), str(tmp_path / "paired_sweep"), "--out", str(out)]
    assert analyze.main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_runs"] == 14 + 15 and {"grad_clip", "no_dropout", "qkv_bias"} <= set(summary["arms"])
    assert "no_dropout" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["{tmp}/empty"], "no result.json found"),
    (["{tmp}/missing"], "does not exist"),
    (["{tmp}/run", "{tmp}/run"], "--out"),
    (["{tmp}/run", "--metric", "bogus"], "no run has a numeric 'bogus'"),
])
def test_cli_user_errors_are_one_line_exit_2(tmp_path, capsys, argv, message):
    (tmp_path / "empty").mkdir()
    make_run(tmp_path, "run")
    assert analyze.main([a.format(tmp=tmp_path) for a in argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_cli_unknown_baseline_lists_the_arms_and_overwrites_nothing(tmp_path, capsys):
    paired_sweep(tmp_path, arms=("grad_clip", "qkv_bias"))
    assert analyze.main([str(tmp_path)]) == 0
    before = {p: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    capsys.readouterr()
    assert analyze.main([str(tmp_path), "--baseline", "grad_clipp"]) == 2
    out, err = capsys.readouterr()
    assert err == ("gptx: error: --baseline 'grad_clipp' is not an arm of these runs; the arms: baseline, "
                   "grad_clip, qkv_bias\n") and out == ""
    assert {p: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before


def test_cli_bad_arguments_are_one_line_exit_2(capsys):
    with pytest.raises(SystemExit) as exit_:
        analyze.main([])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1 and "required: paths" in err


def test_reproductions_are_not_counted_as_runs(tmp_path):
    make_run(tmp_path, "base42", ("baseline",), 42, None, 3.69)
    make_run(tmp_path, "base22", ("baseline",), 22, None, 3.67)
    make_run(tmp_path / "base42" / "reproductions", "2026-01-01_00-00-00", ("baseline",), 42, None, 3.69)
    assert len(runs.load_runs([tmp_path])) == 2
    assert len(runs.load_runs([tmp_path / "base42" / "reproductions"])) == 1  # named itself, a reproduction counts


def test_a_completed_run_with_a_null_loss_diverged(tmp_path):
    make_run(tmp_path, "ok", loss=3.7)
    make_run(tmp_path, "nan", init_seed=1, loss=None)  # a NaN test loss is written as null
    (excluded,) = analyze.write_report([tmp_path], tmp_path / "out")["excluded"]
    assert excluded["status"] == "diverged" and "null" in excluded["reason"]


def test_copies_of_one_run_count_once(tmp_path):
    for copy in ("copy_a", "copy_b"):
        for s in (1, 2, 3):
            make_run(tmp_path / copy, f"b{s}", init_seed=s, loss=3.7 + 0.01 * s, final_hash=f"w{s}",
                     config_sha256=f"c{s}", hostname="node1", wall_seconds=100.0 + s, curve=False)
    s = analyze.write_report([tmp_path], tmp_path / "out")
    assert s["arms"]["baseline"]["n_runs"] == 3 and s["floor"]["n_groups"] == 0  # no floor of zero measured
    assert sum("duplicate copy" in e["reason"] for e in s["excluded"]) == 3


def test_test_set_sampling_noise_from_per_sequence_losses(tmp_path):
    rng = np.random.default_rng(0)
    for s in (1, 2, 3):
        base = rng.normal(3.7, 0.5, 64).astype(np.float32)
        arm = base + rng.normal(-0.01, 0.02, 64).astype(np.float32)
        for name, intervention, x in ((f"b{s}", ("baseline",), base), (f"g{s}", ("grad_clip",), arm)):
            folder = make_run(tmp_path, name, intervention, init_seed=s, loss=float(x.mean()), curve=False)
            np.save(folder / "test_losses.npy", x)
    gc = analyze.write_report([tmp_path], tmp_path / "out")["arms"]["grad_clip"]
    assert gc["test_set"]["n_seeds"] == 3 and gc["test_set"]["n_sequences"] == 64
    assert gc["test_set"]["se"] == pytest.approx(0.02 / 8, rel=0.3)
    assert "Test-set sampling noise" in (tmp_path / "out" / "report.md").read_text()


def test_cli_min_effect_and_no_plots(tmp_path, capsys):
    paired_sweep(tmp_path)
    assert analyze.main([str(tmp_path), "--min-effect", "0.05", "--no-plots"]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["planning"]["min_effect"] == 0.05 and not (tmp_path / "noise.png").exists()


def test_the_analysis_never_imports_torch():
    code = ("import sys, gptx.analyze, gptx.analysis.simulate, gptx.analysis.plots; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


# --- each arm against its own noise; identical means identical (issue: verdicts under misbehaving noise) --

def test_each_arm_is_judged_on_its_own_differences(tmp_path):
    from scipy import stats as sps
    rng = np.random.default_rng(1)
    diffs = {}
    for s in range(1, 6):
        base = 3.7 + rng.normal(0, 0.02)
        make_run(tmp_path, f"b{s}", init_seed=s, loss=base, curve=False)
        for arm, sd in (("no_dropout", 0.0005), ("lr_schedule", 0.02)):  # one quiet arm, one noisy arm
            loss = base - 0.01 + rng.normal(0, sd)
            make_run(tmp_path, f"{arm}{s}", (arm,), s, None, loss, curve=False)
            diffs.setdefault(arm, []).append(loss - base)
    s = analyze.write_report([tmp_path], tmp_path / "out", plots=False)
    for arm, d in diffs.items():
        e, ref = s["arms"][arm], sps.ttest_1samp(d, 0.0)
        assert e["method"] == "paired" and e["df"] == 4 and e["p"] == pytest.approx(ref.pvalue)
        assert e["sd_difference"] == pytest.approx(np.std(d, ddof=1)) and "own variance" in e["assumption"]
    assert s["arms"]["no_dropout"]["verdict"] == "better"
    assert s["arms"]["lr_schedule"]["verdict"] == "no detectable effect"  # its own noise is 40 x larger


def test_an_arm_with_other_parameters_is_paired_by_its_own_differences(tmp_path):
    paired_sweep(tmp_path, arms=("weight_tying",))
    for s in range(1, 6):  # weight tying removes the head: another parameter set, another initial function
        r = json.loads((tmp_path / f"weight_tying{s}" / "result.json").read_text())
        r.update(init_weights_sha256=sha("tied", s), init_param_sha256={"a": "x"})
        (tmp_path / f"weight_tying{s}" / "result.json").write_text(json.dumps(r))
    e = analyze.write_report([tmp_path], tmp_path / "out", plots=False)["arms"]["weight_tying"]
    assert e["method"] == "paired" and e["df"] == 4 and e["verdict"] == "better"


def test_a_data_seed_the_baseline_never_ran_gets_no_verdict(tmp_path):
    for s in range(1, 4):
        make_run(tmp_path, f"b{s}", init_seed=s, loss=3.7 + 0.01 * s, curve=False)
        make_run(tmp_path, f"g{s}", ("grad_clip",), init_seed=s, loss=3.6 + 0.01 * s + 0.001 * s * s,
                 data_seed=7, curve=False)
    s = analyze.write_report([tmp_path], tmp_path / "out", plots=False)
    gc = s["arms"]["grad_clip"]
    assert gc["verdict"] == "not testable" and "data seed(s) 7 the baseline never ran" in gc["why_not_testable"]
    assert any("data seed(s) 7" in w for w in s["warnings"])
    pooled = analyze.write_report([tmp_path], tmp_path / "pooled", plots=False, equal_noise=True)
    assert pooled["arms"]["grad_clip"]["verdict"] == "not testable"  # no assumption lends it a verdict


def test_same_weights_but_another_metric_is_not_identical(tmp_path):
    for s_ in range(1, 4):  # an evaluation-side change: the weights agree, the test loss does not
        make_run(tmp_path, f"b{s_}", init_seed=s_, loss=3.7 + 0.01 * s_, final_hash=f"w{s_}", curve=False)
        make_run(tmp_path, f"g{s_}", ("grad_clip",), init_seed=s_, loss=3.68 + 0.01 * s_ + 1e-4 * s_ * s_,
                 final_hash=f"w{s_}", curve=False)
    gc = analyze.write_report([tmp_path], tmp_path / "out", plots=False)["arms"]["grad_clip"]
    assert gc["verdict"] == "better" and gc["delta"] == pytest.approx(-0.02 + 14e-4 / 3)


def test_identical_at_one_seed_and_failed_at_the_others_is_not_identical(tmp_path):
    for s_ in range(1, 4):
        make_run(tmp_path, f"b{s_}", init_seed=s_, loss=3.7 + 0.01 * s_, final_hash=f"w{s_}", curve=False)
    make_run(tmp_path, "g1", ("grad_clip",), init_seed=1, loss=3.71, final_hash="w1", curve=False)
    for s_ in (2, 3):
        make_run(tmp_path, f"g{s_}", ("grad_clip",), init_seed=s_, loss=None, status="failed", curve=False)
    s = analyze.write_report([tmp_path], tmp_path / "out", plots=False)
    gc = s["arms"]["grad_clip"]
    assert gc["verdict"] != "identical to the baseline" and gc["identical_seeds"] == [1, 3]
    assert "at 1 of 3 seeds only" in (tmp_path / "out" / "report.md").read_text()


def test_identical_at_one_seed_of_one_is_tentative(tmp_path):
    for s_ in (1, 2):
        make_run(tmp_path, f"b{s_}", init_seed=s_, loss=3.7 + 0.01 * s_, final_hash=f"w{s_}", curve=False)
    make_run(tmp_path, "g1", ("grad_clip",), init_seed=1, loss=3.71, final_hash="w1", curve=False)
    gc = analyze.write_report([tmp_path], tmp_path / "out", plots=False)["arms"]["grad_clip"]
    assert gc["verdict"] == "identical to the baseline" and gc["tentative"]
    assert "identical to the baseline (tentative)" in (tmp_path / "out" / "report.md").read_text()
