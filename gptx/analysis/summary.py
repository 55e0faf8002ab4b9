"""The noise report as one dict: arms, one design model, a verdict per intervention, noise, floor.

`analyze(runs)` is pure (no files): `gptx.analyze` feeds it the runs it reads, `gptx.analysis.simulate`
the sweeps it generates, so the calibration measured by simulation is that of the report itself. Every
number in an intervention's row comes from one comparison in one model (`gptx.analysis.model`).
"""

import math
from collections import Counter, defaultdict
from dataclasses import asdict

import numpy as np

from gptx.analysis import model, stats
from gptx.analysis.defaults import ALPHA, MIN_EFFECT
from gptx.analysis.noise import noise_estimates, nondeterminism_floor
from gptx.analysis.runs import Run, drop_duplicate_copies, group_configs, read_test_losses, seed_key, seeds_key


def jsonable(x):
    """Tuples to lists, NaN/inf to None, anything else odd to str: summary.json must be strict JSON."""
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    return x if x is None or isinstance(x, (bool, int, str)) else str(x)


def _init_block(run: Run, baseline_init: dict) -> tuple:
    """The init block of a run: same init_seed and the same initial weights for the parameters it shares.

    Weights are compared with the baseline run at the same init_seed (whole-model hash, else the hash of
    every parameter, when both have the same parameter set); without hashes a run pairs with nothing but
    its own arm's runs at that seed. Used by the pooled model (--assume-equal-noise) only.
    """
    seed = run.seeds[0]
    if seed is None:
        return ("unseeded", str(run.folder))
    mine, base = run.result.get("init_weights_sha256"), baseline_init.get(seed)
    if not mine:
        return (seed, "own", run.arm)
    if base and mine != base["init_weights_sha256"]:
        pa, pb = run.result.get("init_param_sha256"), base.get("init_param_sha256")
        if isinstance(pa, dict) and isinstance(pb, dict) and set(pa) == set(pb) \
                and all(pa[k] == pb[k] for k in pa):
            return (seed, base["init_weights_sha256"])  # the same parameters, bit-identical: paired
    # an arm that adds, removes or ties parameters starts from another initial *function* even where every
    # shared tensor is identical: its init effect is not the baseline's, so one run pairs with nothing
    return (seed, mine)


def _param_identity(runs: list[Run], arm: str, baseline: str) -> dict | None:
    """How many shared parameters started bit-identical at the first init_seed both arms ran (per name)."""
    first: dict = {}
    for r in runs:
        if r.included and r.arm in (arm, baseline) and isinstance(r.result.get("init_param_sha256"), dict):
            first.setdefault((r.arm, r.seeds[0]), r.result["init_param_sha256"])
    seeds = sorted({s for a, s in first if a == arm} & {s for a, s in first if a == baseline}, key=seed_key)
    if not seeds:
        return None
    pa, pb = first[(arm, seeds[0])], first[(baseline, seeds[0])]
    shared = set(pa) & set(pb)
    return {"init_seed": seeds[0], "shared": len(shared), "identical": sum(pa[k] == pb[k] for k in shared),
            "only_in_arm": sorted(set(pa) - shared), "only_in_baseline": sorted(set(pb) - shared)}


def _identical(runs: list[Run], arm: str, baseline: str) -> tuple[list[Run] | None, int, int]:
    """(the arm's runs if it changed nothing, seeds that match, seeds it ran).

    Identical means identical: every run of the arm, whatever its status, has a baseline run at the same
    seeds with the same status, the same final weights and the same metric value. A weights hash alone is
    not enough (an evaluation-side change keeps the weights and moves the metric).
    """
    def by_seeds(name):
        out: dict = defaultdict(list)
        for r in runs:
            if r.arm == name and not (r.reason or "").startswith("duplicate copy"):
                out[r.seeds].append(r)
        return out

    mine, base = by_seeds(arm), by_seeds(baseline)
    matched = 0
    for s, rs in mine.items():
        others = base.get(s, [])
        hashes = {r.result.get("final_weights_sha256") for r in rs + others}
        outcome = {(r.status, r.value) for r in rs + others}
        matched += bool(s[0] is not None and others and len(hashes) == 1 and None not in hashes
                        and len(outcome) == 1)
    same = bool(mine) and matched == len(mine)
    return ([r for rs in mine.values() for r in rs] if same else None), matched, len(mine)


def _why_identical(runs: list[Run]) -> str:
    """What the runs' own records say about why an intervention changed nothing."""
    why = []
    active = [(r.result["grad_clip_active_steps"], r.result.get("steps")) for r in runs
              if isinstance(r.result.get("grad_clip_active_steps"), int)]
    if active:
        clipped, steps = sum(a for a, _ in active), sum(s or 0 for _, s in active)
        norms = [r.result["grad_norm_max"] for r in runs if isinstance(r.result.get("grad_norm_max"), (int, float))]
        why.append(f"gradient clipping was active on {clipped} of {steps} steps"
                   + (f" (largest pre-clip norm {max(norms):.3g})" if norms else ""))
    warnings = sorted({str(w) for r in runs for w in (r.result.get("warnings") or [])})
    why += warnings
    return "; ".join(why)


def _test_set_noise(configs: dict, arm: str, baseline: str) -> dict | None:
    """How much of one paired difference's variance the finite test set explains (per-sequence losses)."""
    ratios, ses = [], []
    for (a, s), rs in configs.items():
        if a != arm or (baseline, s) not in configs:
            continue
        x, y = read_test_losses(rs[0].folder), read_test_losses(configs[(baseline, s)][0].folder)
        if x is None or y is None or len(x) != len(y) or len(x) < 2:
            continue
        d = x - y
        ses.append(float(d.std(ddof=1) / math.sqrt(len(d))))
        ratios.append(len(d))
    if not ses:
        return None
    return {"n_seeds": len(ses), "n_sequences": ratios[0], "se": float(np.sqrt(np.mean(np.square(ses))))}


def _plan_one(sd: float | None, df: float | None, min_effect: float, paired: bool, alpha: float) -> dict:
    """Seeds for 80% power at the report's own test and multiplicity, at σ's estimate and its upper limit."""
    upper = stats.sd_upper(sd, df) if sd else None
    return {"sd": sd, "df": df, "sd_upper": upper, "alpha": alpha,
            "seeds": stats.seeds_needed(min_effect, upper, paired_design=paired, alpha=alpha) if upper else None,
            "seeds_point": stats.seeds_needed(min_effect, sd, paired_design=paired, alpha=alpha) if sd else None}


def _planning(f: model.Fit, min_effect: float, n_arms: int) -> dict:
    """Seeds for 80% power at the stated minimum effect (not the observed Δ), as `gptx.plan` plans them:
    the verdict's test (paired differences on n − 1 df, or Welch) at α/arms, from σ and its upper 95% limit.
    """
    out = {"min_effect": min_effect, "alpha": ALPHA / max(n_arms, 1)}
    for name, w, paired in (("paired", (0.0, 2.0), True), ("unpaired", (1.0, 1.0), False)):
        df = f.component_df(w)
        sd = math.sqrt(w[0] * f.var_init + w[1] * f.var_train) if df is not None else None
        out[name] = _plan_one(sd, df, min_effect, paired, out["alpha"])
    return out


def _own_blocks(configs: dict, arm: str) -> dict:
    """An arm's configuration values by (init_seed, data_seed), the unit its own comparison pairs on."""
    out: dict = defaultdict(list)
    for (a, s), rs in configs.items():
        if a == arm:
            out[(s[0], s[2]) if s[0] != "unseeded" else s].append(float(np.mean([r.value for r in rs])))
    return out


def _own_noise(configs: dict, arm: str, baseline: str) -> tuple[stats.TTest | None, str, str | None]:
    """The arm against the baseline on a variance its own runs inform: (test, method, why not testable).

    At two or more init seeds both ran (same data seed): the per-seed differences and their own variance,
    on n − 1 df (valid whatever each arm's noise, and whether or not its initial weights share the
    baseline's effect). Else, at two or more init seeds each: the per-seed means, Welch's SE on Hsu's
    min(n) − 1 df. With one
    run (or one init seed) the arm's noise is not measured at all: no verdict on its own noise.
    """
    mine, base = _own_blocks(configs, arm), _own_blocks(configs, baseline)
    new_data = {b[1] for b in mine if b[0] != "unseeded"} - {b[1] for b in base if b[0] != "unseeded"}
    if new_data:
        return None, "data seed", (
            f"it ran at data seed(s) {', '.join(map(str, sorted(new_data, key=seed_key)))} the baseline never ran: "
            "the data order has an effect of its own, which these runs cannot tell from the intervention's "
            "(run the baseline at the same data seeds)")
    shared = sorted(set(mine) & set(base), key=lambda b: tuple(map(seed_key, b)))
    if len(shared) >= 2:
        return stats.paired_test([np.mean(mine[b]) - np.mean(base[b]) for b in shared]), "paired", None
    if len(mine) >= 2 and len(base) >= 2:
        return stats.welch_test([np.mean(v) for v in mine.values()], [np.mean(v) for v in base.values()]), \
            "welch", None
    return None, "one run", (
        "its noise is measured by no run of its own (one init seed): judged against the baseline's noise it "
        "would rest on the assumption that its noise equals the baseline's (--assume-equal-noise); run it at "
        "two or more of the baseline's init seeds")


ASSUMPTIONS = {
    "paired": "its differences from the baseline at shared init seeds are independent draws (their own variance)",
    "welch": "its init seeds and the baseline's are independent draws (each side its own variance, "
             "min(n) − 1 df)",
    "pooled": "every arm's training noise equals the baseline's, and initial-weight effects are shared where "
              "the shared parameters' hashes match (--assume-equal-noise)",
}


def _row(f: model.Fit, arm: str, baseline: str, configs: dict, blocks: dict, seed: int, detail: bool,
         equal_noise: bool, n_arms: int) -> dict:
    """One intervention against the baseline: its own-noise comparison, or the pooled model's contrast."""
    test, method, why = _own_noise(configs, arm, baseline)
    mine = {b for (a, s), b in blocks.items() if a == arm}
    base = {b for (a, s), b in blocks.items() if a == baseline}
    own_mine, own_base = _own_blocks(configs, arm), _own_blocks(configs, baseline)
    shared = set(own_mine) & set(own_base)
    diffs = [float(np.mean(own_mine[b]) - np.mean(own_base[b])) for b in shared]
    if not equal_noise or method == "data seed":
        pairing = "paired" if shared and set(own_mine) <= shared else "partly paired" if shared else "unpaired"
        sd_diff = None
        if test is not None:
            sd_diff = test.se * math.sqrt(len(diffs)) if method == "paired" else \
                math.sqrt(np.var([np.mean(v) for v in own_mine.values()], ddof=1)
                          + np.var([np.mean(v) for v in own_base.values()], ddof=1))
            sd_diff = sd_diff or None
            if test.p is None:
                why = "no spread in the runs to test against"
        if test is not None:
            k = model.Contrast(**vars(test), why=why)
        else:  # the design model's estimate is shown, untested
            pooled = f.contrast(_unit(f, arm))  # one run not testable even assuming equal noise: say that
            k = model.Contrast(pooled.estimate, None, None, None, None, None,
                               why if method == "data seed" else pooled.why or why)
        assumption, n_shared = ASSUMPTIONS.get(method), len(shared)
    else:
        k = f.contrast(_unit(f, arm))
        method, assumption = "pooled", ASSUMPTIONS["pooled"]
        pairing = "paired" if mine <= base else "unpaired" if not mine & base else "partly paired"
        sd_diff, n_shared = None, len(mine & base)
        if k.why is None:
            var = 2 * f.var_train + (0 if pairing == "paired" else 2 * f.var_init)
            sd_diff = math.sqrt(var) if var > 0 else None
    z = stats.z_score(k.estimate, sd_diff) if k.why is None else None
    alpha = ALPHA / max(n_arms, 1)  # the verdict's own multiplicity (Holm's first step, Bonferroni)
    return {"delta": k.estimate, "delta_se": k.se, "df": k.df, "ci": k.ci, "t": k.t, "p": k.p,
            "why_not_testable": k.why, "pairing": pairing, "n_blocks_shared": n_shared, "z": z,
            "method": method, "assumption": assumption,
            "band": stats.sigma_band(z) if z is not None else "", "sd_difference": sd_diff,
            "min_detectable": stats.min_detectable(k.se, k.df, alpha) if k.why is None and detail else None,
            "bootstrap_ci": stats.cluster_bootstrap_ci(diffs, seed) if pairing == "paired" and detail else None,
            "pairing_evidence": _pairing_evidence(own_mine, own_base, shared) if detail else None}


def _pairing_evidence(mine: dict, base: dict, shared: set) -> dict | None:
    """How far an arm's per-seed values follow the baseline's at shared seeds (≥ 3): Pearson's r with its
    Fisher-z 95% CI (≥ 4 seeds), and the variance of the differences over the unpaired variance
    s²_arm + s²_baseline (1: pairing removes nothing; near 0: the arm shares the baseline's seed effect).
    Evidence for pairing, never an input to the verdict: the paired test holds either way."""
    keys = sorted(shared, key=lambda b: tuple(map(seed_key, b)))
    if len(keys) < 3:
        return None
    a = np.array([np.mean(mine[b]) for b in keys])
    b = np.array([np.mean(base[b]) for b in keys])
    unpaired = a.var(ddof=1) + b.var(ddof=1)
    if a.std() == 0 or b.std() == 0 or unpaired == 0:
        return None
    r = float(np.corrcoef(a, b)[0, 1])
    ci = None
    if len(keys) >= 4 and abs(r) < 1:
        half = 1.959963984540054 / math.sqrt(len(keys) - 3)
        ci = (math.tanh(math.atanh(r) - half), math.tanh(math.atanh(r) + half))
    return {"n": len(keys), "r": r, "r_ci": ci, "variance_ratio": float((a - b).var(ddof=1) / unpaired)}


def _unit(f: model.Fit, arm: str) -> np.ndarray:
    c = np.zeros(len(f.arms))
    c[f.arms.index(arm)] = 1.0
    return c


def _verdict(e: dict) -> tuple[str, bool]:
    """The verdict in the report's vocabulary, and whether it rests on too little to be more than tentative."""
    if e["why_not_testable"]:
        return "not testable", False
    tentative = e["df"] < 3 or e["n"] == 1
    if e["p_holm"] < ALPHA:
        return ("better" if e["delta"] < 0 else "worse"), tentative
    return "no detectable effect", tentative


def _interactions(f: model.Fit, configs: dict, arms: list[str], baseline: str, identical: set,
                  equal_noise: bool) -> list[dict]:
    """Δ_stack − ΣΔ_singles for each stack whose singles ran too; Holm across stacks.

    Per block (init seed, data seed) the interaction is stack − Σ singles + (k − 1) · baseline over the k
    singles that changed something (an identical single has Δ = 0 exactly: no term). Like an arm, it is
    judged on its own noise: at ≥ 2 blocks where every term ran, those per-block values on n − 1 df; else,
    with ≥ 2 blocks a term, the terms' means each on its own variance (min(n) − 1 df). Under
    --assume-equal-noise it is the design model's contrast (Satterthwaite df).
    """
    out = []
    for arm in sorted(arms):
        parts = arm.split("+")
        if len(parts) < 2 or baseline in parts or not all(p in f.arms or p in identical for p in parts):
            continue
        changed = [p for p in parts if p not in identical]
        terms = {arm: 1.0, **{p: -1.0 for p in changed}}
        terms[baseline] = terms.get(baseline, 0.0) + len(changed) - 1.0
        terms = {a: c for a, c in terms.items() if c != 0}
        c = np.zeros(len(f.arms))  # the model's β are Δs against the baseline: no baseline term
        for a, coef in terms.items():
            if a != baseline:
                c[f.arms.index(a)] += coef
        pooled = f.contrast(c)
        test, method, why = (pooled, "pooled", pooled.why) if equal_noise else _own_interaction(configs, terms)
        if test is not None and test.p is None and why is None:
            why = "no spread in the runs to test against"
        out.append({"stack": arm, "singles": parts, "method": method,
                    "estimate": test.estimate if test else pooled.estimate,  # untested: the model's estimate
                    "ci": test.ci if test else None, "df": test.df if test else None,
                    "p": test.p if test else None, "why_not_testable": why})
    for i, p in zip(out, stats.holm([i["p"] for i in out]), strict=True):
        i["p_holm"] = p
    return out


def _own_interaction(configs: dict, terms: dict) -> tuple[stats.TTest | None, str, str | None]:
    """An interaction contrast on its own noise: (test, method, why not testable)."""
    blocks = {a: _own_blocks(configs, a) for a in terms}
    shared = set.intersection(*(set(b) for b in blocks.values()))
    shared = sorted(shared, key=lambda b: tuple(map(seed_key, b)))
    if len(shared) >= 2:
        per_block = [sum(c * np.mean(blocks[a][b]) for a, c in terms.items()) for b in shared]
        return stats.paired_test(per_block), "paired", None
    if all(len(b) >= 2 for b in blocks.values()):
        groups = [[np.mean(v) for v in blocks[a].values()] for a in terms]
        return stats.groups_contrast_test(groups, list(terms.values())), "welch", None
    return None, "one run", ("a term of it ran at one init seed only: its noise is measured by no runs of its "
                             "own (--assume-equal-noise tests it on the design model's noise)")


def analyze(runs: list[Run], baseline: str = "baseline", metric: str = "test_loss", seed: int = 0,
            min_effect: float = MIN_EFFECT, detail: bool = True, equal_noise: bool = False) -> dict:
    """The whole noise report as a dict: arms, the design model, verdicts, noise, floor, exclusions.

    detail=False computes only what the verdicts need (the simulator's many sweeps): no descriptive noise,
    floor, test-set noise, bootstrap, detectable effects or planning.
    """
    runs = drop_duplicate_copies(runs)
    configs = group_configs(runs)
    values = {k: float(np.mean([r.value for r in rs])) for k, rs in configs.items()}  # repeats averaged
    arms_values: dict = defaultdict(dict)
    for (arm, seeds), v in values.items():
        arms_values[arm][seeds] = v
    n_runs = Counter(r.arm for r in runs if r.included)
    arms = {arm: {"n": len(v), "n_runs": n_runs[arm],
                  **{("mean_ci" if k == "ci" else k): x for k, x in asdict(stats.describe(list(v.values()))).items()},
                  "verdict": "baseline" if arm == baseline else "not testable", "tentative": False,
                  "why_not_testable": None if arm == baseline else f"no runs of the baseline arm `{baseline}`",
                  "delta": None, "ci": None, "z": None, "p": None, "p_holm": None, "df": None}
            for arm, v in arms_values.items()}
    baseline_init = {}
    for r in runs:
        if r.included and r.arm == baseline and r.result.get("init_weights_sha256"):
            baseline_init.setdefault(r.seeds[0], r.result)
    same = {a: _identical(runs, a, baseline) for a in arms if a != baseline} if baseline in arms else {}
    identical = {a: v[0] for a, v in same.items()}
    fitted = [a for a in arms if a != baseline and not identical.get(a)] if baseline in arms else []
    fit_arms = [baseline, *sorted(fitted)] if baseline in arms else []
    blocks = {k: _init_block(rs[0], baseline_init) for k, rs in configs.items() if k[0] in fit_arms}
    keys = sorted(blocks, key=lambda k: (k[0], seeds_key(k[1])))
    f = model.fit([values[k] for k in keys], [k[0] for k in keys], [blocks[k] for k in keys], fit_arms) \
        if fit_arms else None
    for arm in fitted:
        arms[arm].update(_row(f, arm, baseline, configs, blocks, seed, detail, equal_noise, len(fitted)))
        arms[arm]["identical_seeds"] = same[arm][1:] if same[arm][1] else None  # (k, n): identical at k of n
        arms[arm]["param_identity"] = _param_identity(runs, arm, baseline)
        arms[arm]["test_set"] = _test_set_noise(configs, arm, baseline) if detail else None
    for arm, p in zip(fitted, stats.holm([arms[a]["p"] for a in fitted]), strict=True):
        arms[arm]["p_holm"] = p
        arms[arm]["verdict"], arms[arm]["tentative"] = _verdict(arms[arm])
    for arm, rs in identical.items():
        if rs:
            k = len({r.seeds for r in rs})
            arms[arm].update(verdict="identical to the baseline", delta=0.0, why_not_testable=None,
                             identical_why=_why_identical(rs), n_identical=len(rs), identical_seeds=(k, k),
                             tentative=k == 1)
    planning = _planning(f, min_effect, len(fitted)) if f and not f.why and detail else None
    for arm in fitted:
        e = arms[arm]
        if detail and e.get("method") == "paired" and e["sd_difference"] and e["df"]:
            # from the arm's own differences: the noise its verdict is judged against
            e["seeds_needed"] = _plan_one(e["sd_difference"], e["df"], min_effect, True, ALPHA / len(fitted))
        elif planning:
            e["seeds_needed"] = planning["paired" if e["pairing"] != "unpaired" else "unpaired"]
    warnings = [f"`{a}` {arms[a]['why_not_testable']}" for a in fitted if arms[a].get("method") == "data seed"]
    for key in ("model", "data"):  # arms are only comparable on one model and one data set
        found = sorted({str(r.result[key]) for r in runs if r.included and r.result.get(key) is not None})
        if len(found) > 1:
            warnings.append(f"the runs mix {key} values ({', '.join(found)}); analyse each separately")
    design = None
    if f is not None:
        design = {"method": ("REML linear mixed model (arm fixed, init block random), Satterthwaite df, Holm: "
                             "every arm's noise assumed equal to the baseline's" if equal_noise else
                             "each arm against its own noise: per-seed differences (own df) or per-seed means (Welch's "
                             "SE, min(n) − 1 df), Holm; "
                             "the REML model below describes the noise"),
                  "equal_noise": equal_noise,
                  "n_configs": f.n, "n_blocks": f.n_blocks, "arms": f.arms, "why_not_fitted": f.why,
                  "sd_init": math.sqrt(f.var_init) if f.var_init is not None else None,
                  "sd_train": math.sqrt(f.var_train) if f.var_train is not None else None,
                  "df_init": f.component_df((1.0, 0.0)), "df_train": f.component_df((0.0, 1.0))}
    return {"metric": metric, "baseline": baseline, "confidence": stats.CONFIDENCE, "alpha": ALPHA,
            "min_effect": min_effect,
            "bootstrap_seed": seed, "n_runs": len(runs), "n_included": sum(r.included for r in runs),
            "warnings": warnings, "order": sorted(arms, key=lambda a: (-arms[a]["mean"], a)), "arms": arms,
            "design": design, "planning": planning,
            "noise": noise_estimates(configs, baseline) if baseline in arms and detail else None,
            "interactions": _interactions(f, configs, fitted, baseline, {a for a, v in identical.items() if v},
                                          equal_noise) if f else [],
            "floor": nondeterminism_floor(configs) if detail else None,
            "excluded": [{"path": str(r.folder), "arm": r.arm, "status": r.status, "reason": r.reason}
                         for r in runs if not r.included]}


