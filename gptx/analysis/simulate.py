"""Calibration by simulation: the report's own analysis on sweeps drawn from stated variance components.

    python -m gptx.analysis.simulate [--sims 2000] [--sd-init 0.0155] [--sd-train 0.0058] [--seed 0]
                                     [--adaptive | --cases] [--assume-equal-noise]

Each preset design is laid out as `gptx.train` lays it out (arms, init and train seeds, failed runs),
losses are drawn as 3.7 + Δ_arm + u_init-seed + e_run, and `gptx.analysis.summary.analyze` gives its
verdicts. `Case` departs from that model the way real interventions do (STATISTICS.md): one arm's or every
arm's training noise larger, Student-t noise, an arm's own init effect, a data order with an effect.
Under Δ = 0 everywhere, any `better`/`worse` is a false claim: the family-wise false-claim rate must stay
at or below α (plus Monte-Carlo error). With Δ = −0.01 on every arm, the share of arms called `better` is
the power. docs/analysis.md shows the full-size tables.
"""

import argparse
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gptx.analysis.runs import Run, run_from_result
from gptx.analysis.summary import analyze
from gptx.result import Status

SD_INIT, SD_TRAIN = 0.0155, 0.0058  # the study's variance components (STATISTICS.md)
INTERVENTIONS = ("fp32", "grad_clip", "qkv_bias", "lr_schedule", "weight_decay", "no_dropout",
                 "weight_decay_cerebras", "weight_tying")
NOISE_PRESET = ((42, None), (22, None), (67, None), (42, 23), (42, 67), (22, 23), (67, 23))


def _design(name: str) -> tuple[list[tuple], float]:
    """The (arm, init_seed, train_seed) cells of a preset design, and the chance that a run fails."""
    if name == "interventions":  # one run per arm at init 42 + the noise preset's seven baseline runs
        return [("baseline", i, t) for i, t in NOISE_PRESET] + [(a, 42, None) for a in INTERVENTIONS], 0.0
    if name == "interventions_paired":
        return [(a, i, None) for a in ("baseline", *INTERVENTIONS) for i in (22, 42, 67)], 0.0
    if name == "noise_grid":  # 3 init x 3 train baseline grid, and each arm once at init 42
        return [("baseline", i, t) for i in (22, 42, 67) for t in (None, 23, 67)] + \
            [(a, 42, None) for a in INTERVENTIONS], 0.0
    if name == "new_init_seed":  # a one-run arm at an init seed the baseline never ran
        return [("baseline", i, t) for i, t in NOISE_PRESET] + [("grad_clip", 99, None)], 0.0
    if name == "issue_example":  # baseline at init 42 x train null/23/67; one arm at init 67
        return [("baseline", 42, t) for t in (None, 23, 67)] + [("grad_clip", 67, None)], 0.0
    if name == "paired_failures":  # interventions_paired at 5 init seeds, each run failing 1 time in 5
        return [(a, i, None) for a in ("baseline", *INTERVENTIONS[:4]) for i in (1, 2, 3, 4, 5)], 0.2
    raise ValueError(f"unknown design {name!r}; known: {', '.join(DESIGNS)}")


DESIGNS = ("interventions", "interventions_paired", "noise_grid", "new_init_seed", "issue_example",
           "paired_failures")


@dataclass(frozen=True)
class Case:
    """How the noise departs from the report's equal-variance normal model in a simulated sweep.

    `scale`: training-noise SD multiplier, for the arms named (or every arm with "*"); `t_df`: Student-t
    noise with that many df (scaled to the same SD); `own_init`: arms whose initial-weight effect is drawn
    independently of the baseline's although their shared tensors are bit-identical (they add or tie
    parameters); `data_sd`: the SD of a data order's consistent effect, with `new_data` arms run at a
    data seed the baseline never ran.
    """

    name: str = "normal"
    scale: tuple[tuple[str, float], ...] = ()
    t_df: float | None = None
    own_init: tuple[str, ...] = ()
    data_sd: float = 0.0
    new_data: tuple[str, ...] = ()

    def factor(self, arm: str) -> float:
        """The training-noise SD multiplier of an arm."""
        f = dict(self.scale)
        return f.get(arm, f.get("*", 1.0)) if arm != "baseline" else 1.0

    def draw(self, rng: np.random.Generator, sd: float) -> float:
        """One noise draw of SD `sd`: normal, or Student-t scaled to that SD."""
        if self.t_df is None:
            return float(rng.normal(0, sd))
        return float(rng.standard_t(self.t_df) * sd * math.sqrt((self.t_df - 2) / self.t_df))


NORMAL = Case()


def cases(arms: list[str]) -> list[Case]:
    """The departures every preset design is measured under (STATISTICS.md), for a design's arms."""
    first = arms[0]
    own = tuple(a for a in arms if a in ("qkv_bias", "weight_tying")) or (first,)
    return [NORMAL, Case(f"`{first}` 3 × σ_train", scale=((first, 3.0),)),
            Case("every arm 2 × σ_train", scale=(("*", 2.0),)), Case("Student-t (4 df) noise", t_df=4.0),
            Case(f"own init effect: {', '.join(own)}", own_init=own),
            Case(f"`{first}` at a new data seed, data-order SD 0.004", data_sd=0.004, new_data=(first,))]


def _loss(rng, case: Case, arm: str, effect: float, u_base: dict, u_own: dict, data: dict, init, data_seed,
          sd_init: float, sd_train: float) -> float:
    """3.7 + Δ + init effect (the baseline's, or the arm's own) + data-order effect + training noise."""
    if arm in case.own_init:
        u = u_own.setdefault((arm, init), case.draw(rng, sd_init))
    else:
        u = u_base.setdefault(init, case.draw(rng, sd_init))
    d = data.setdefault(data_seed, float(rng.normal(0, case.data_sd))) if case.data_sd else 0.0
    return 3.7 + (effect if arm != "baseline" else 0.0) + u + d + case.draw(rng, sd_train * case.factor(arm))


def sweep(cells: list[tuple], rng: np.random.Generator, effect: float = 0.0, sd_init: float = SD_INIT,
          sd_train: float = SD_TRAIN, p_fail: float = 0.0, hashes: bool = True, case: Case = NORMAL) -> list[Run]:
    """Runs for the given cells: loss = 3.7 + effect (non-baseline arms) + u(init seed) + e(run), as `case`
    departs from that; hashes as gptx writes them (an `own_init` arm adds a parameter, shared ones identical)."""
    u_base: dict = {}
    u_own: dict = {}
    data: dict = {}
    runs = []
    for k, (arm, init, train) in enumerate(cells):
        failed = rng.random() < p_fail
        data_seed = 1 if arm in case.new_data else None
        loss = _loss(rng, case, arm, effect, u_base, u_own, data, init, data_seed, sd_init, sd_train)
        params = {"w": f"w-{init}", **({"extra": f"x-{arm}-{init}"} if arm in case.own_init else {})}
        result = {"status": Status.FAILED if failed else Status.COMPLETED, "arm": arm, "intervention": [arm],
                  "init_seed": init, "train_seed": train, "data_seed": data_seed, "replica": 0,
                  "test_loss": None if failed else loss, "final_weights_sha256": f"final-{k}",
                  "init_weights_sha256": (f"init-{init}" + (f"-{arm}" if arm in case.own_init else ""))
                  if hashes else None, "init_param_sha256": params if hashes else None}
        runs.append(run_from_result(result, Path(f"sim/{k}"), "test_loss"))
    return runs


def random_sweep(rng: np.random.Generator) -> list[Run]:
    """A sweep of random layout: arms, stacks, seeds, repeats, failed and unfinished runs, missing hashes."""
    arms = ["baseline"] * (rng.random() < 0.9) + list(rng.choice(["a", "b", "c", "a+b"], rng.integers(0, 4),
                                                                  replace=False))
    changes_init = {a: rng.random() < 0.3 for a in arms}  # e.g. qkv_bias under the sequential init scheme
    runs = []
    for k in range(int(rng.integers(0, 25))):
        arm = str(rng.choice(arms)) if arms else "baseline"
        init = int(rng.integers(1, 6)) if rng.random() < 0.95 else None
        train = [None, 1, 2][int(rng.integers(0, 3))]
        status = str(rng.choice([Status.COMPLETED] * 8 + [Status.FAILED, Status.RUNNING, Status.DIVERGED]))
        loss = 3.7 + (0.02 * rng.normal() if init is not None else 0) + 0.005 * rng.normal()
        loss = [loss, None, float("nan"), 3.7][int(rng.choice(4, p=[0.85, 0.05, 0.05, 0.05]))]
        result = {"status": status, "arm": arm, "init_seed": init, "train_seed": train,
                  "replica": int(rng.integers(0, 2)), "test_loss": loss,
                  "final_weights_sha256": f"final-{rng.integers(0, 3) if rng.random() < 0.2 else k}",
                  "init_weights_sha256": None if rng.random() < 0.2 else
                  f"init-{init}-{arm if changes_init[arm] else ''}" if arms else f"init-{init}",
                  "config_sha256": f"c{k % 7}", "hostname": "h", "wall_seconds": float(k % 5),
                  "grad_clip_active_steps": int(rng.integers(0, 3)), "steps": 10, "warnings": ["w"]}
        runs.append(run_from_result(result, Path(f"sim/{k}"), "test_loss"))
    return runs


def adaptive_trial(plan, rng: np.random.Generator, effects: dict[str, float], sd_init: float = SD_INIT,
                   sd_train: float = SD_TRAIN, p_fail: float = 0.0, case: Case = NORMAL):
    """One adaptive sweep, wave by wave, as `hydra/sweeper=adaptive` runs it: the sweeper's own `replay`
    decides each next wave; losses are 3.7 + Δ_arm + u(init seed) + e(run), u drawn once per seed, as
    `case` departs from that."""
    from gptx.analysis.sequential import replay  # sequential imports this module's neighbours, not this one

    u_base: dict = {}
    u_own: dict = {}
    data: dict = {}
    runs: list[Run] = []
    cache: dict = {}
    while True:
        rep = replay(runs, plan, cache)
        if rep.next_cells is None:
            return rep
        for arm, init in rep.next_cells:
            failed = rng.random() < p_fail
            data_seed = 1 if arm in case.new_data else None
            loss = _loss(rng, case, arm, effects.get(arm, 0.0), u_base, u_own, data, init, data_seed, sd_init,
                         sd_train)
            params = {"w": f"w-{init}", **({"extra": f"x-{arm}-{init}"} if arm in case.own_init else {})}
            result = {"status": Status.FAILED if failed else Status.COMPLETED, "arm": arm, "intervention": [arm],
                      "init_seed": init, "train_seed": None, "data_seed": data_seed, "replica": 0,
                      "test_loss": None if failed else loss, "final_weights_sha256": f"final-{len(runs)}",
                      "init_weights_sha256": f"init-{init}" + (f"-{arm}" if arm in case.own_init else ""),
                      "init_param_sha256": params, "wall_seconds": 3600.0, "world_size": 1}
            runs.append(run_from_result(result, Path(f"sim/{len(runs)}"), "test_loss"))


def calibrate_adaptive(plan, n_sims: int, seed: int = 0, sd_init: float = SD_INIT, sd_train: float = SD_TRAIN,
                       effect: float = -0.01, case: Case = NORMAL, power: bool = True) -> dict:
    """The adaptive procedure under the null (every Δ = 0) and at `effect` on every arm, n_sims sweeps each:
    family-wise false-claim rate, per-arm power, and the runs it used on average under each."""
    rng = np.random.default_rng(seed)
    false_claims, hits, runs_null, runs_alt = 0, 0, 0, 0
    for _ in range(n_sims):
        rep = adaptive_trial(plan, rng, {}, sd_init, sd_train, case=case)
        false_claims += any(a.status in ("better", "worse") for a in rep.arms.values())
        runs_null += rep.runs_used
        if power:
            rep = adaptive_trial(plan, rng, {a: effect for a in plan.arms}, sd_init, sd_train, case=case)
            hits += sum(a.status == "better" for a in rep.arms.values())
            runs_alt += rep.runs_used
    return {"n_sims": n_sims, "fwer": false_claims / n_sims, "power": hits / (n_sims * len(plan.arms)),
            "runs_null": runs_null / n_sims, "runs_alt": runs_alt / n_sims, "effect": effect,
            "max_runs": (len(plan.arms) + 1) * len(plan.seeds)}


def paired_fixed(n_arms: int, n_seeds: int) -> list[tuple]:
    """The cells of a fixed paired design: the baseline and n_arms interventions at the same n_seeds."""
    return [(a, i, None) for a in ("baseline", *INTERVENTIONS[:n_arms]) for i in range(1, n_seeds + 1)]


def calibrate_cells(cells: list[tuple], n_sims: int, seed: int = 0, sd_init: float = SD_INIT,
                    sd_train: float = SD_TRAIN, effect: float = -0.01, p_fail: float = 0.0, case: Case = NORMAL,
                    power: bool = True, equal_noise: bool = False) -> dict:
    """Family-wise false-claim rate under the null and per-arm power at `effect` of a fixed design."""
    rng = np.random.default_rng(seed)
    false_claims, hits, arms = 0, 0, 0
    for _ in range(n_sims):
        runs = sweep(cells, rng, 0.0, sd_init, sd_train, p_fail, case=case)
        b, w, _ = claims(analyze(runs, detail=False, equal_noise=equal_noise))
        false_claims += (b + w) > 0
        if power:
            runs = sweep(cells, rng, effect, sd_init, sd_train, p_fail, case=case)
            b, _, n = claims(analyze(runs, detail=False, equal_noise=equal_noise))
            hits, arms = hits + b, arms + n
    return {"n_sims": n_sims, "fwer": false_claims / n_sims, "fwer_mc_se": math.sqrt(0.05 * 0.95 / n_sims),
            "power": hits / arms if arms else 0.0, "effect": effect, "runs": len(cells)}


def claims(summary: dict) -> tuple[int, int, int]:
    """(better, worse, arms compared) among the summary's interventions."""
    rows = [e for a, e in summary["arms"].items() if a != summary["baseline"]]
    return (sum(e["verdict"] == "better" for e in rows), sum(e["verdict"] == "worse" for e in rows), len(rows))


def calibrate(design: str, n_sims: int, seed: int = 0, sd_init: float = SD_INIT, sd_train: float = SD_TRAIN,
              effect: float = -0.01, case: Case = NORMAL, power: bool = True, equal_noise: bool = False) -> dict:
    """Family-wise false-claim rate under the null and per-arm power at `effect`, over n_sims sweeps each."""
    cells, p_fail = _design(design)
    return {"design": design, **calibrate_cells(cells, n_sims, seed, sd_init, sd_train, effect, p_fail, case,
                                                power, equal_noise)}


def design_arms(design: str) -> list[str]:
    """The interventions of a preset design, in the order its cells name them."""
    return list(dict.fromkeys(c[0] for c in _design(design)[0] if c[0] != "baseline"))


def robustness_table(n_sims: int, seed: int = 0, equal_noise: bool = False,
                     designs: tuple[str, ...] = DESIGNS) -> list[dict]:
    """Every preset design under every case: family-wise false-claim rate (Δ = 0), and power at Δ = −0.01
    under the normal equal-variance case."""
    rows = []
    for d in designs:
        for case in cases(design_arms(d)):
            r = calibrate(d, n_sims, seed, case=case, power=case is NORMAL, equal_noise=equal_noise)
            rows.append({**r, "case": case.name})
    return rows


def adaptive_table(n_sims: int, seed: int = 0, sd_init: float = SD_INIT, sd_train: float = SD_TRAIN,
                   effect: float = -0.01, n_arms: int = len(INTERVENTIONS), max_seeds: int | None = None) -> list[dict]:
    """The adaptive sweeper beside fixed paired designs: for each spending function, its family-wise false
    claims, power and expected runs; then the fixed design given the same expected runs (whole seeds,
    rounded up), and the fixed designs of 3 (the paired preset) and max_seeds init seeds."""
    from gptx.analysis.sequential import MAX_SEEDS, Plan

    max_seeds = max_seeds or MAX_SEEDS
    arms = INTERVENTIONS[:n_arms]
    rows, fixed_seeds = [], {3, max_seeds}
    for spending in ("pocock", "obrien_fleming"):
        plan = Plan(arms=arms, seeds=tuple(range(1, max_seeds + 1)), first_wave=3, wave_size=3,
                    min_effect=abs(effect), spending=spending)
        r = calibrate_adaptive(plan, n_sims, seed, sd_init, sd_train, effect)
        rows.append({"design": f"adaptive, {spending}, 3 + 3 a wave, ≤ {max_seeds} seeds", **r})
        fixed_seeds.add(math.ceil(r["runs_alt"] / (n_arms + 1)))
    for n in sorted(fixed_seeds):
        r = calibrate_cells(paired_fixed(n_arms, n), n_sims, seed, sd_init, sd_train, effect)
        rows.append({"design": f"fixed, paired, {n} seeds", **r, "runs_null": r["runs"], "runs_alt": r["runs"]})
    return rows


def main(argv: list[str] | None = None) -> None:
    """Print the calibration table for every preset design."""
    parser = argparse.ArgumentParser(prog="python -m gptx.analysis.simulate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sims", type=int, default=2000, help="sweeps simulated per design and hypothesis")
    parser.add_argument("--sd-init", type=float, default=SD_INIT, help="initial-weight noise SD")
    parser.add_argument("--sd-train", type=float, default=SD_TRAIN, help="training noise SD")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--adaptive", action="store_true",
                        help="the adaptive sweeper against fixed paired designs (8 arms, Δ = −0.01) instead")
    parser.add_argument("--cases", action="store_true",
                        help="every preset design under every departure from the model (per-arm σ, t(4) noise, "
                             "own init effects, a new data seed) instead")
    parser.add_argument("--assume-equal-noise", action="store_true",
                        help="measure the pooled-noise verdicts (gptx.analyze --assume-equal-noise)")
    args = parser.parse_args(argv)
    if args.cases:
        print(f"family-wise false-claim rate under each case (Δ = 0), power at Δ = −0.01 under the normal one; "
              f"{args.sims} sweeps a cell, Monte-Carlo SE near 0.05: {math.sqrt(0.05 * 0.95 / args.sims):.4f}\n")
        print("| design | case | family-wise false-claim rate | power (normal, per arm) |")
        print("| --- | --- | --- | --- |")
        for r in robustness_table(args.sims, args.seed, args.assume_equal_noise):
            power = f"{r['power']:.3f}" if r["case"] == NORMAL.name else ""
            print(f"| {r['design']} | {r['case']} | {r['fwer']:.3f} | {power} |", flush=True)
        return
    if args.adaptive:
        print(f"σ_init {args.sd_init}, σ_train {args.sd_train}, α = 0.05, 8 interventions, Δ = −0.01 on every arm "
              f"for power, {args.sims} simulated sweeps a row and hypothesis\n")
        print("| design | family-wise false-claim rate | power (per arm) | runs, no effect | runs, Δ on every arm |")
        print("| --- | --- | --- | --- | --- |")
        for r in adaptive_table(args.sims, args.seed, args.sd_init, args.sd_train):
            print(f"| {r['design']} | {r['fwer']:.3f} | {r['power']:.3f} | {r['runs_null']:.1f} | "
                  f"{r['runs_alt']:.1f} |", flush=True)
        return
    print(f"σ_init {args.sd_init}, σ_train {args.sd_train}, α = 0.05, Monte-Carlo SE of a rate near 0.05: "
          f"{math.sqrt(0.05 * 0.95 / args.sims):.4f}\n")
    print("| design | sims | family-wise false-claim rate | power at Δ = −0.01 (per arm) |")
    print("| --- | --- | --- | --- |")
    for d in DESIGNS:
        r = calibrate(d, args.sims, args.seed, args.sd_init, args.sd_train, equal_noise=args.assume_equal_noise)
        print(f"| {d} | {r['n_sims']} | {r['fwer']:.4f} | {r['power']:.3f} |", flush=True)


if __name__ == "__main__":
    main()
