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
from gptx.analysis.noise import noise_estimates, nondeterminism_floor
from gptx.analysis.runs import Run, drop_duplicate_copies, group_configs, read_test_losses, seed_key, seeds_key

ALPHA = 0.05
MIN_EFFECT = 0.01  # nats: the smallest effect worth planning for (--min-effect)


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

    Weights are compared with the baseline run at the same init_seed (whole-model hash, else every shared
    parameter's hash); without hashes a run pairs with nothing but its own arm's runs at that seed.
    """
    seed = run.seeds[0]
    if seed is None:
        return ("unseeded", str(run.folder))
    mine, base = run.result.get("init_weights_sha256"), baseline_init.get(seed)
    if not mine:
        return (seed, "own", run.arm)
    if base and mine != base["init_weights_sha256"]:
        pa, pb = run.result.get("init_param_sha256"), base.get("init_param_sha256")
        if isinstance(pa, dict) and isinstance(pb, dict) and set(pa) & set(pb) \
                and all(pa[k] == pb[k] for k in set(pa) & set(pb)):
            return (seed, base["init_weights_sha256"])  # partial pairing: only added/removed parameters differ
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


def _identical(configs: dict, arm: str, baseline: str) -> list | None:
    """The arm's runs when every one ended with the baseline's final weights at the same seeds, else None."""
    mine = {s: rs for (a, s), rs in configs.items() if a == arm}
    base = {s: rs for (a, s), rs in configs.items() if a == baseline}
    if not mine or any(s not in base or s[0] == "unseeded" for s in mine):
        return None
    for s, rs in mine.items():
        hashes = {r.result.get("final_weights_sha256") for r in rs + base[s]}
        if len(hashes) != 1 or None in hashes:
            return None
    return [r for rs in mine.values() for r in rs]


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


def _planning(f: model.Fit, min_effect: float) -> dict:
    """Seeds for 80% power at the stated minimum effect, from an upper 95% limit of σ (not the observed Δ)."""
    out = {"min_effect": min_effect}
    for name, w, paired in (("paired", (0.0, 2.0), True), ("unpaired", (1.0, 1.0), False)):
        df = f.component_df(w)
        sd = math.sqrt(w[0] * f.var_init + w[1] * f.var_train) if df is not None else None
        upper = stats.sd_upper(sd, df) if sd else None
        out[name] = {"sd": sd, "df": df, "sd_upper": upper,
                     "seeds": stats.seeds_needed(min_effect, upper, paired_design=paired) if upper else None}
    return out


def _row(f: model.Fit, arm: str, baseline: str, configs: dict, blocks: dict, seed: int, detail: bool) -> dict:
    """One intervention against the baseline, every number from the model's contrast for this arm."""
    c = np.zeros(len(f.arms))
    c[f.arms.index(arm)] = 1.0
    k = f.contrast(c)
    mine = {b for (a, s), b in blocks.items() if a == arm}
    base = {b for (a, s), b in blocks.items() if a == baseline}
    pairing = "paired" if mine <= base else "unpaired" if not mine & base else "partly paired"
    sd_diff = None
    if k.why is None:
        var = 2 * f.var_train + (0 if pairing == "paired" else 2 * f.var_init)
        sd_diff = math.sqrt(var) if var > 0 else None
    z = stats.z_score(k.estimate, sd_diff) if k.why is None else None
    per_block: dict = defaultdict(lambda: defaultdict(list))  # block -> arm -> config values
    for (a, s), b in blocks.items():
        if a in (arm, baseline):
            per_block[b][a].append(np.mean([r.value for r in configs[(a, s)]]))
    # per shared block: mean arm minus mean baseline, for the cluster bootstrap
    diffs = [float(np.mean(v[arm]) - np.mean(v[baseline])) for b, v in per_block.items() if b in mine & base]
    return {"delta": k.estimate, "delta_se": k.se, "df": k.df, "ci": k.ci, "t": k.statistic, "p": k.p,
            "why_not_testable": k.why, "pairing": pairing, "n_blocks_shared": len(mine & base), "z": z,
            "band": stats.sigma_band(z) if z is not None else "", "sd_difference": sd_diff,
            "min_detectable": stats.min_detectable(k.se, k.df, ALPHA) if k.why is None and detail else None,
            "bootstrap_ci": stats.cluster_bootstrap_ci(diffs, seed) if pairing == "paired" and detail else None}


def _verdict(e: dict) -> tuple[str, bool]:
    """The verdict in the report's vocabulary, and whether it rests on too little to be more than tentative."""
    if e["why_not_testable"]:
        return "not testable", False
    tentative = e["df"] < 3 or e["n"] == 1
    if e["p_holm"] < ALPHA:
        return ("better" if e["delta"] < 0 else "worse"), tentative
    return "no detectable effect", tentative


def _interactions(f: model.Fit, arms: list[str], baseline: str, identical: set) -> list[dict]:
    """Δ_stack − ΣΔ_singles for each stack whose singles ran too, tested in the same model; Holm across stacks.

    A single identical to the baseline has Δ = 0 exactly, so it enters with no term.
    """
    out = []
    for arm in sorted(arms):
        parts = arm.split("+")
        if len(parts) < 2 or baseline in parts or not all(p in f.arms or p in identical for p in parts):
            continue
        c = np.zeros(len(f.arms))
        c[f.arms.index(arm)] = 1.0
        for part in parts:
            if part not in identical:
                c[f.arms.index(part)] -= 1.0
        k = f.contrast(c)
        out.append({"stack": arm, "singles": parts, "estimate": k.estimate, "ci": k.ci, "df": k.df, "p": k.p,
                    "why_not_testable": k.why})
    for i, p in zip(out, stats.holm([i["p"] for i in out]), strict=True):
        i["p_holm"] = p
    return out


def analyze(runs: list[Run], baseline: str = "baseline", metric: str = "test_loss", seed: int = 0,
            min_effect: float = MIN_EFFECT, detail: bool = True) -> dict:
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
    identical = {a: _identical(configs, a, baseline) for a in arms if a != baseline} if baseline in arms else {}
    fitted = [a for a in arms if a != baseline and not identical.get(a)] if baseline in arms else []
    fit_arms = [baseline, *sorted(fitted)] if baseline in arms else []
    blocks = {k: _init_block(rs[0], baseline_init) for k, rs in configs.items() if k[0] in fit_arms}
    keys = sorted(blocks, key=lambda k: (k[0], seeds_key(k[1])))
    f = model.fit([values[k] for k in keys], [k[0] for k in keys], [blocks[k] for k in keys], fit_arms) \
        if fit_arms else None
    for arm in fitted:
        arms[arm].update(_row(f, arm, baseline, configs, blocks, seed, detail))
        arms[arm]["param_identity"] = _param_identity(runs, arm, baseline)
        arms[arm]["test_set"] = _test_set_noise(configs, arm, baseline) if detail else None
    for arm, p in zip(fitted, stats.holm([arms[a]["p"] for a in fitted]), strict=True):
        arms[arm]["p_holm"] = p
        arms[arm]["verdict"], arms[arm]["tentative"] = _verdict(arms[arm])
    for arm, same in identical.items():
        if same:
            arms[arm].update(verdict="identical to the baseline", delta=0.0, why_not_testable=None,
                             identical_why=_why_identical(same), n_identical=len(same))
    planning = _planning(f, min_effect) if f and not f.why and detail else None
    for arm in fitted:
        if planning:
            arms[arm]["seeds_needed"] = planning["paired" if arms[arm]["pairing"] != "unpaired" else "unpaired"]
    warnings = []
    for key in ("model", "data"):  # arms are only comparable on one model and one data set
        found = sorted({str(r.result[key]) for r in runs if r.included and r.result.get(key) is not None})
        if len(found) > 1:
            warnings.append(f"the runs mix {key} values ({', '.join(found)}); analyse each separately")
    design = None
    if f is not None:
        design = {"method": "REML linear mixed model (arm fixed, init block random), Satterthwaite df, Holm",
                  "n_configs": f.n, "n_blocks": f.n_blocks, "arms": f.arms, "why_not_fitted": f.why,
                  "sd_init": math.sqrt(f.var_init) if f.var_init is not None else None,
                  "sd_train": math.sqrt(f.var_train) if f.var_train is not None else None,
                  "df_init": f.component_df((1.0, 0.0)), "df_train": f.component_df((0.0, 1.0))}
    return {"metric": metric, "baseline": baseline, "confidence": stats.CONFIDENCE, "alpha": ALPHA,
            "bootstrap_seed": seed, "n_runs": len(runs), "n_included": sum(r.included for r in runs),
            "warnings": warnings, "order": sorted(arms, key=lambda a: (-arms[a]["mean"], a)), "arms": arms,
            "design": design, "planning": planning,
            "noise": noise_estimates(configs, baseline) if baseline in arms and detail else None,
            "interactions": _interactions(f, fitted, baseline, {a for a, v in identical.items() if v}) if f else [],
            "floor": nondeterminism_floor(configs) if detail else None,
            "excluded": [{"path": str(r.folder), "arm": r.arm, "status": r.status, "reason": r.reason}
                         for r in runs if not r.included]}


