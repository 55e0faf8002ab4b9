"""The baseline's noise, described: three seed estimates, the init x train grid ANOVA, the nondeterminism floor.

Descriptive figures for the report's noise section; the verdicts come from `gptx.analysis.model`.
"""

from collections import Counter, defaultdict
from dataclasses import asdict

from gptx.analysis import stats
from gptx.analysis.runs import seed_key, seeds_key


def _noise_entry(description: str, groups: dict) -> dict | None:
    """A noise estimate from groups of runs that differ only in the varied seed (pooled over groups)."""
    groups = {k: v for k, v in groups.items() if len(v) >= 2}
    if not groups:
        return None
    if len(groups) == 1:
        d = stats.describe(next(iter(groups.values())))
        sd, pop, df, mean = d.sd, d.sd_population, d.n - 1, d.mean
    else:
        (sd, df), pop, mean = stats.pooled_sd(list(groups.values())), None, None
    return {"description": description, "n_runs": sum(map(len, groups.values())), "n_groups": len(groups),
            "mean": mean, "sd": sd, "sd_population": pop, "df": df, "sd_ci": stats.sd_interval(sd, df),
            "groups": {str(k): v for k, v in groups.items()}}


def _complete_grid(cells: dict) -> tuple[list, list]:
    """A large complete init x train sub-grid, found greedily by dropping the emptiest row or column."""
    inits, trains = sorted({i for i, _ in cells}, key=seed_key), sorted({t for _, t in cells}, key=seed_key)
    while inits and trains:
        miss_r = {i: sum((i, t) not in cells for t in trains) / len(trains) for i in inits}
        miss_c = {t: sum((i, t) not in cells for i in inits) / len(inits) for t in trains}
        worst_r, worst_c = max(inits, key=miss_r.get), max(trains, key=miss_c.get)
        if miss_r[worst_r] == 0:
            break
        if miss_r[worst_r] >= miss_c[worst_c]:
            inits.remove(worst_r)
        else:
            trains.remove(worst_c)
    return inits, trains


def noise_estimates(configs: dict, baseline: str) -> dict:
    """Baseline noise three ways (init seed; train seed; init seed, train pinned) and the grid ANOVA."""
    base = {s: (sum(r.value for r in v) / len(v), v) for (a, s), v in configs.items()
            if a == baseline and s[0] != "unseeded"}
    data_seeds = Counter(s[2] for s in base)
    data_seed = data_seeds.most_common(1)[0][0] if base else None
    # only the varied seed may differ within an estimate, so one data seed (the most used) is analysed
    base = {s[:2]: v for s, v in base.items() if s[2] == data_seed}
    by_init, by_train = defaultdict(list), defaultdict(list)
    for s, (v, runs) in base.items():
        weights = next((r.result["init_weights_sha256"] for r in runs if r.result.get("init_weights_sha256")),
                       f"init_seed={s[0]}")
        by_init[weights].append(v)
        if s[1] is not None:
            by_train[f"train_seed={s[1]}"].append(v)
    unpinned = {"train_seed=None": [v for s, (v, _) in base.items() if s[1] is None]}
    out = {"data_seed": data_seed, "other_data_seeds": sorted(set(data_seeds) - {data_seed}, key=seed_key),
           "init_seed": _noise_entry("varying init_seed, train_seed unpinned: all noise sources", unpinned),
           "train_seed": _noise_entry("varying train_seed from the same initial weights: training noise",
                                      by_init),
           "init_seed_train_pinned": _noise_entry("varying init_seed with train_seed pinned", by_train),
           "grid": None}
    cells = {s: v for s, (v, _) in base.items()}
    inits, trains = _complete_grid(cells)
    if len(inits) >= 2 and len(trains) >= 2:
        a = stats.two_way_anova([[cells[(i, t)] for t in trains] for i in inits])
        total = a.var_init + a.var_train + a.var_residual
        out["grid"] = {"init_seeds": inits, "train_seeds": trains, **asdict(a),
                       "share_init": a.var_init / total if total else None}
    return out


def nondeterminism_floor(configs: dict) -> dict:
    """Repeats of one config (replicas): bitwise identical final weights or not, and their loss spread."""
    groups = []
    for (arm, seeds), runs in sorted(configs.items(), key=lambda kv: (kv[0][0], seeds_key(kv[0][1]))):
        if len(runs) < 2 or seeds[0] == "unseeded":
            continue
        hashes = [r.result.get("final_weights_sha256") for r in runs]
        values = [r.value for r in runs]
        groups.append({"arm": arm, "init_seed": seeds[0], "train_seed": seeds[1], "data_seed": seeds[2],
                       "n": len(runs), "replicas": [r.result.get("replica") for r in runs],
                       "bitwise_identical": len(set(hashes)) == 1 if all(hashes) else None,
                       "sd": stats.describe(values).sd, "range": max(values) - min(values)})
    sd, df = stats.pooled_sd([[r.value for r in rs] for (_, s), rs in configs.items() if s[0] != "unseeded"])
    return {"n_groups": len(groups),
            "n_bitwise_identical": sum(g["bitwise_identical"] is True for g in groups),
            "n_differing": sum(g["bitwise_identical"] is False for g in groups), "sd": sd, "df": df,
            "sd_ci": stats.sd_interval(sd, df) if sd is not None else None, "groups": groups}
