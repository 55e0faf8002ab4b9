"""gptx.plan: the seeds a stated effect needs and what they cost, from the study's noise or a pilot sweep."""

import json
import math

import numpy as np
import pytest

from gptx import plan
from gptx.analysis import simulate


@pytest.mark.parametrize("n, effect", [(6, -0.01), (4, -0.012)])
def test_the_analytic_power_of_one_paired_arm_is_what_the_report_achieves(n, effect):
    """One arm, no multiplicity: the noncentral-t power equals the report's simulated power within 3 SE."""
    analytic = plan.fixed_power(n, 1, simulate.SD_INIT, simulate.SD_TRAIN, effect, 0.05, paired=True)
    simulated = simulate.calibrate_cells(simulate.paired_fixed(1, n), 300, seed=2, effect=effect)["power"]
    assert abs(analytic - simulated) <= 3 * math.sqrt(analytic * (1 - analytic) / 300)


def test_with_several_arms_the_plan_is_conservative():
    """Bonferroni in the plan, Holm in the report: the report finds at least what was planned."""
    analytic = plan.fixed_power(5, 3, simulate.SD_INIT, simulate.SD_TRAIN, -0.01, 0.05, paired=True)
    simulated = simulate.calibrate_cells(simulate.paired_fixed(3, 5), 150, seed=3, effect=-0.01)["power"]
    assert simulated >= analytic - 3 * math.sqrt(analytic * (1 - analytic) / (150 * 3))


def test_pairing_cancels_the_init_noise():
    paired = plan.seeds_for(8, 0.0155, 0.0058, 0.01, 0.05, 0.8, paired=True)
    unpaired = plan.seeds_for(8, 0.0155, 0.0058, 0.01, 0.05, 0.8, paired=False)
    assert (paired, unpaired) == (13, 72)  # the verdict's test: own differences on n − 1 df
    assert plan.fixed_power(paired, 8, 0.0155, 0.0058, 0.01, 0.05, True) >= 0.8
    assert plan.fixed_power(paired - 1, 8, 0.0155, 0.0058, 0.01, 0.05, True) < 0.8
    assert plan.seeds_for(8, 0.0155, 0.5, 0.001, 0.05, 0.8, paired=True) is None  # past MAX_SEEDS


def test_the_default_plan_is_the_studys_question_priced(tmp_path, capsys):
    assert plan.main(["--sims", "10", "--out", str(tmp_path)]) == 0
    p = json.loads((tmp_path / "plan.json").read_text())
    assert p["run"]["gpu_hours"] == pytest.approx(27.2)  # 3 h 24 min on 8 GPUs
    paired, unpaired, adaptive = p["designs"]
    assert (paired["init_seeds"], paired["runs"], paired["usd"]) == (13, 117, pytest.approx(117 * 27.2 * 2))
    assert (unpaired["init_seeds"], unpaired["runs"]) == (72, 72 * 9)
    assert adaptive["runs"] < paired["runs"] * 1.5 and adaptive["power"] >= 0.8 - 0.15
    assert p["study"]["runs"] == 15 and p["study"]["power"] < 0.3
    text = (tmp_path / "plan.md").read_text()
    assert "| fixed, paired (per_parameter init) | 13 | 1 | 117 | 0.83 | 3,182 | $6,365 |" in text
    assert text in capsys.readouterr().out


def _pilot(folder, rng, sd_init=0.02, sd_train=0.005):
    """A pilot sweep on disk: baseline and two arms at 5 paired init seeds, 1000 tokens/s a run."""
    u = rng.normal(0, sd_init, 5)
    for arm in ("baseline", "grad_clip", "qkv_bias"):
        for i in range(5):
            run = folder / f"intervention={arm},init_seed={i + 1}"
            run.mkdir(parents=True)
            result = {"status": "completed", "arm": arm, "intervention": [arm], "init_seed": i + 1,
                      "train_seed": None, "data_seed": None, "test_loss": 5.0 + u[i] + rng.normal(0, sd_train),
                      "final_weights_sha256": f"{arm}-{i}", "init_weights_sha256": f"init-{i}",
                      "tokens_per_second": 1000.0, "tokens": 3_600_000, "world_size": 1, "wall_seconds": 3600.0}
            (run / "result.json").write_text(json.dumps(result))


def test_a_pilot_sweep_gives_the_noise_and_the_speed(tmp_path):
    _pilot(tmp_path / "pilot", np.random.default_rng(0))
    before = {p: p.read_bytes() for p in (tmp_path / "pilot").rglob("result.json")}
    assert plan.main([str(tmp_path / "pilot"), "--sims", "5"]) == 0
    p = json.loads((tmp_path / "pilot" / "plan.json").read_text())
    assert p["interventions"] == 2 and p["noise"]["source"].startswith("the pilot")
    assert 0 < p["noise"]["sd_train"] < p["noise"]["sd_train_upper"]
    assert p["conservative"]["paired_init_seeds"] >= p["designs"][0]["init_seeds"]
    assert p["run"]["tokens_per_second"] == 1000.0 and p["run"]["gpu_hours"] == pytest.approx(1.0)
    assert {p: p.read_bytes() for p in (tmp_path / "pilot").rglob("result.json")} == before


@pytest.mark.parametrize("argv, message", [
    (["--power", "1.5"], "--power is out of range (1.5)"),
    (["--min-effect", "0"], "--min-effect is out of range"),
    (["--gpu", "Z80"], "no peak FLOP/s known for --gpu 'Z80'"),
    (["/nonexistent/pilot"], "/nonexistent/pilot does not exist"),
    (["--sims", "many"], "invalid int value"),
])
def test_bad_input_is_one_line_and_exit_2(argv, message, tmp_path, capsys):
    with pytest.raises(SystemExit) if "many" in argv else _nothing() as raised:
        code = plan.main([*argv, "--out", str(tmp_path / "out")])
    code = raised.value.code if raised else code
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_a_pilot_without_a_baseline_is_refused(tmp_path, capsys):
    _pilot(tmp_path / "pilot", np.random.default_rng(0))
    assert plan.main([str(tmp_path / "pilot"), "--baseline", "nope", "--sims", "2"]) == 2
    err = capsys.readouterr().err
    assert "gives no noise estimate" in err and err.count("\n") == 1
    assert not (tmp_path / "pilot" / "plan.json").exists()


class _nothing:
    """A context manager that catches nothing and says so (pytest.raises' counterpart for the table)."""

    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def test_one_default_number_of_seeds_for_the_plan_and_the_sweeper():
    from gptx.analysis.sequential import MAX_SEEDS
    from hydra_plugins.gptx_sweepers.adaptive import AdaptiveSweeperConf
    assert AdaptiveSweeperConf.max_seeds == MAX_SEEDS == 12


def test_a_pilot_on_fewer_than_2_df_is_refused(tmp_path, capsys):
    for i, (arm, seed, loss) in enumerate([("baseline", 1, 5.0), ("baseline", 2, 5.01), ("grad_clip", 1, 4.99),
                                           ("grad_clip", 2, 5.0)]):  # 4 runs: σ_train on 1 df
        run = tmp_path / "pilot" / f"r{i}"
        run.mkdir(parents=True)
        (run / "result.json").write_text(json.dumps({
            "status": "completed", "arm": arm, "intervention": [arm], "init_seed": seed, "test_loss": loss,
            "final_weights_sha256": f"f{i}", "init_weights_sha256": f"i{seed}", "tokens": 1000}))
    assert plan.main([str(tmp_path / "pilot"), "--sims", "2"]) == 2
    err = capsys.readouterr().err
    assert "fewer than 2" in err and err.count("\n") == 1


def test_the_plan_prints_the_command_of_each_design_it_costed(tmp_path, capsys):
    assert plan.main(["--sims", "4", "--out", str(tmp_path), "--arms", "2"]) == 0
    p = json.loads((tmp_path / "plan.json").read_text())
    paired, _, adaptive = p["designs"]
    seeds = ",".join(map(str, range(1, paired["init_seeds"] + 1)))
    assert paired["command"] == ("python -m gptx.train -m +experiment=gpt2_small_chinchilla "
                                 f"intervention=baseline,fp32,grad_clip init_seed={seeds}")
    assert "hydra/sweeper=adaptive hydra.sweeper.max_seeds=12" in adaptive["command"]
    assert adaptive["command"] in (tmp_path / "plan.md").read_text()


def test_the_report_and_the_plan_give_one_answer_on_one_pilot(tmp_path):
    """Same test, multiplicity and σ: the report's Planning and gptx.plan agree, at σ's estimate and at its
    upper limit."""
    from gptx.analysis.runs import load_runs
    from gptx.analysis.summary import analyze

    _pilot(tmp_path / "pilot", np.random.default_rng(0))
    assert plan.main([str(tmp_path / "pilot"), "--sims", "2"]) == 0
    p = json.loads((tmp_path / "pilot" / "plan.json").read_text())
    report = analyze(load_runs([tmp_path / "pilot"]))["planning"]["paired"]
    assert (report["seeds_point"], report["seeds"]) == (p["designs"][0]["init_seeds"],
                                                        p["conservative"]["paired_init_seeds"]) == (9, 19)


def test_the_seeds_the_report_asks_for_give_the_power_it_promises():
    """Planning checked end to end by simulation: a long pilot (30 seeds, σ well measured) → the report's
    seeds needed for an arm → that design, run by the simulator and judged by the report, finds min_effect
    at least 80% of the time (Holm in the report, Bonferroni in the plan: at least, within 3 SE)."""
    from gptx.analysis.summary import analyze

    rng = np.random.default_rng(11)
    pilot = analyze(simulate.sweep(simulate.paired_fixed(3, 30), rng), min_effect=0.01)
    need = pilot["arms"]["grad_clip"]["seeds_needed"]
    n = need["seeds_point"]
    assert need["seeds"] >= n and 8 <= n <= 16  # 2σ²_train at 29 df: about 11 seeds at α/3
    sims = 150
    power = simulate.calibrate_cells(simulate.paired_fixed(3, n), sims, seed=4, effect=-0.01)["power"]
    assert power >= 0.8 - 3 * math.sqrt(0.8 * 0.2 / (sims * 3))
    short = simulate.calibrate_cells(simulate.paired_fixed(3, n - 3), sims, seed=4, effect=-0.01)["power"]
    assert short < power  # fewer seeds than asked for: less than was promised
