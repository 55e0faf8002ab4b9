"""The noise report: is each intervention real, or is it in the noise?

    python -m gptx.analyze SWEEP_DIR [PATH ...] [--baseline baseline] [--metric test_loss] [--out DIR]

Finds every `result.json` below the paths (nothing else is needed, so results copied from a cluster
work), lists failed, diverged and incomplete runs while leaving them out of the statistics, and writes
report.md, runs.csv, summary.json, noise.png and curves.png. The maths lives in `gptx.stats`, the
text in `gptx.report`, the figures in `gptx.plots`; docs/analysis.md explains every statistic.
"""

import argparse
import csv
import io
import json
import math
import sys
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

from gptx.analysis import stats
from gptx.files import REPRODUCTIONS_DIR, write_atomic
from gptx.analysis.report import markdown, table

CSV_FIELDS = ("path", "arm", "status", "included", "reason", "init_seed", "train_seed", "data_seed",
              "replica", "test_loss", "val_loss", "train_loss", "steps", "tokens", "wall_seconds",
              "tokens_per_second", "device", "precision", "model", "n_params", "diverged_at_step", "error",
              "hostname", "config_sha256", "init_weights_sha256", "final_weights_sha256")


class UserError(Exception):
    """A problem with the command line or the inputs that the user can fix; printed as one line."""


@dataclass
class Run:
    """One run's result.json, with the metric value when it can enter the statistics."""

    folder: Path
    result: dict
    arm: str
    status: str  # completed, diverged, failed, running, or unknown / unreadable
    value: float | None = None
    reason: str | None = None  # why the run is left out of the statistics
    seeds: tuple = field(default=(None, None, None))  # (init_seed, train_seed, data_seed)

    @property
    def included(self) -> bool:
        return self.reason is None




def arm_name(intervention) -> str:
    """The arm of a list of intervention names: sorted, joined by '+', 'baseline' dropped beside others."""
    names = {str(n) for n in ([intervention] if isinstance(intervention, str) else intervention or [])}
    return "+".join(sorted(names - {"baseline"} if len(names) > 1 else names)) or "baseline"


def find_results(paths: list[Path]) -> list[Path]:
    """Every result.json at or below the given paths; a path without one is a user error."""
    files: list[Path] = []
    for p in map(Path, paths):
        found = [p] if p.is_file() and p.name == "result.json" else sorted(
            f for f in p.rglob("result.json") if not _in_reproductions(f, p))
        if not found:
            raise UserError(f"{p}: no result.json found" + ("" if p.exists() else " (path does not exist)"))
        files += found
    return sorted({f.resolve() for f in files})


def find_unfinished(paths: list[Path]) -> list[Path]:
    """Run folders (holding `.hydra/`) without a result.json: killed before they could write one."""
    return sorted({d.parent.resolve() for p in map(Path, paths) if p.is_dir() for d in p.rglob(".hydra")
                   if d.is_dir() and not (d.parent / "result.json").exists() and not _in_reproductions(d, p)})


def _in_reproductions(path: Path, root: Path) -> bool:
    """Whether `path` lies in a run's reproductions/ folder below `root`: re-runs, not extra seeds."""
    return REPRODUCTIONS_DIR in path.relative_to(root).parts[:-1]


def load_run(path: Path, metric: str) -> Run:
    """Read one result.json; unreadable files and unusable metrics become an excluded run with a reason."""
    try:
        result = json.loads(path.read_text())
        if not isinstance(result, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as e:  # a half-copied file must not stop the report
        return Run(path.parent, {}, "?", "unreadable", reason=f"unreadable result.json: {e}")
    arm = str(result["arm"]) if result.get("arm") else arm_name(result.get("intervention") or ["baseline"])
    status = str(result.get("status") or "unknown")
    seeds = (result.get("init_seed"), result.get("train_seed"), result.get("data_seed"))
    run = Run(path.parent, result, arm, status, seeds=seeds)
    value = result.get(metric)
    if status != "completed":
        step = result.get("diverged_at_step")
        run.reason = {"running": "incomplete: status still 'running' (killed, or not finished)",
                      "diverged": "diverged" + (f" at step {step}" if step is not None else ""),
                      "unknown": "result.json has no status"}.get(status, status)
        run.reason += f": {str(result['error']).splitlines()[0]}" if result.get("error") else ""
    elif not isinstance(value, (int, float)) or isinstance(value, bool):
        run.reason = f"no {metric}"
    elif not math.isfinite(value):
        run.status, run.reason = "diverged", f"{metric} is {value}"
    else:
        run.value = float(value)
    return run


def _key(v):
    """Sort key for seeds that may be None, ints or strings."""
    return (v is None, isinstance(v, str), 0 if v is None else v)


def _seeds_key(s: tuple) -> tuple:
    return tuple(map(_key, s))


def _configs(runs: list[Run]) -> dict:
    """Included runs grouped as repeats of one config: {(arm, seeds): [runs]}; unseeded runs stay alone."""
    groups: dict = defaultdict(list)
    for r in runs:
        if r.included:
            groups[(r.arm, r.seeds if r.seeds[0] is not None else ("unseeded", str(r.folder)))].append(r)
    return groups


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
    inits, trains = sorted({i for i, _ in cells}, key=_key), sorted({t for _, t in cells}, key=_key)
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
    out = {"data_seed": data_seed, "other_data_seeds": sorted(set(data_seeds) - {data_seed}, key=_key),
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


def _init_identity(runs: list[Run], arm: str, baseline: str) -> tuple[bool | None, dict | None]:
    """Whether the arm changed the initial weights (same init_seed, other hash); which parameters match."""
    first: dict = {}
    for r in runs:  # one result per (arm, init_seed), preferring one with per-parameter hashes
        key = (r.arm, r.seeds[0])
        if r.arm not in (arm, baseline) or key[1] is None:
            continue
        has_params = bool(r.result.get("init_param_sha256"))
        if key not in first or (has_params and not first[key].get("init_param_sha256")):
            first[key] = r.result
    seeds = sorted({s for a, s in first if a == arm} & {s for a, s in first if a == baseline}, key=_key)
    hashes = [(first[(arm, s)].get("init_weights_sha256"), first[(baseline, s)].get("init_weights_sha256"))
              for s in seeds]
    hashes = [(x, y) for x, y in hashes if x and y]
    changed = any(x != y for x, y in hashes) if hashes else None
    per_seed = []
    for s in seeds:
        pa, pb = first[(arm, s)].get("init_param_sha256"), first[(baseline, s)].get("init_param_sha256")
        if isinstance(pa, dict) and isinstance(pb, dict):
            shared = set(pa) & set(pb)
            per_seed.append({"init_seed": s, "shared": len(shared),
                             "identical": sum(pa[k] == pb[k] for k in shared),
                             "only_in_arm": sorted(set(pa) - shared),
                             "only_in_baseline": sorted(set(pb) - shared)})
    if not per_seed:
        return changed, None
    consistent = len({(p["shared"], p["identical"]) for p in per_seed}) == 1
    return changed, {**per_seed[0], "n_seeds": len(per_seed), "consistent": consistent, "per_seed": per_seed}


def _yardstick(noise: dict, same_weights: bool, init_changed: bool | None, base_sd: float | None) -> dict:
    """The noise SD a delta is read against: training noise when both arms ran the same seeds from the same
    initial weights, else total noise."""
    order = ["train_seed", "init_seed", "init_seed_train_pinned"] if same_weights \
        else ["init_seed", "init_seed_train_pinned"]
    why = ("both arms ran the same seeds from bit-identical initial weights, so their means differ only by "
           "training noise") if same_weights else {
        True: "the intervention changes the initial weights, so initial-weight noise counts too",
        False: "the arms ran different seed sets, so their means differ by initial-weight noise too",
        None: "no shared init_seed with weight hashes shows the initial weights unchanged"}[init_changed]
    for name in order:
        if noise[name] and noise[name]["sd"] is not None:
            fallback = "" if name == order[0] else f"; {order[0]} noise not measured, so {name} noise"
            return {"name": name, "sd": noise[name]["sd"], "why": why + fallback}
    return {"name": "baseline arm", "sd": base_sd, "why": why + "; no noise runs, so the baseline arm's SD"}


def compare(arm: str, values: dict, base_values: dict, runs: list[Run], baseline: str, noise: dict,
            seed: int = 0) -> dict:
    """Everything said about one intervention against the baseline; `values` map seeds to the arm's losses."""
    a, b = list(values.values()), list(base_values.values())
    base = stats.describe(b)
    delta = sum(a) / len(a) - base.mean
    init_changed, identity = _init_identity(runs, arm, baseline)
    common = sorted((s for s in values if s in base_values and s[0] != "unseeded"), key=_seeds_key)
    diffs = [values[s] - base_values[s] for s in common]
    # arm means differ by training noise alone only when both arms ran the same seeds from the same weights
    ys = _yardstick(noise, init_changed is False and set(values) == set(base_values), init_changed, base.sd)
    z = stats.z_score(delta, ys["sd"])
    train = noise["train_seed"]
    paired_delta = sum(diffs) / len(diffs) if diffs else None
    paired_z = stats.z_score(paired_delta, train["sd"]) if diffs and init_changed is False and train else None
    welch = stats.welch(a, b) if len(a) >= 2 and len(b) >= 2 else None
    pair = stats.one_sample(diffs, "paired") if len(diffs) >= 2 else None
    candidates = [t for t in (pair if len(diffs) >= 3 else None, welch) if t]
    if not candidates and len(a) + len(b) >= 3:  # one run in an arm: borrow the other arm's spread
        candidates = [stats.student(a, b)]
    # the first test that has something to test against (paired differences can all be equal)
    test = next((t for t in candidates if t.p is not None), candidates[0] if candidates else None)
    total = noise["init_seed"] or noise["init_seed_train_pinned"]
    sd_unpaired = total["sd"] if total else base.sd
    if pair and pair.ci is not None:
        sd_paired, basis = stats.describe(diffs).sd, "observed paired differences"
    elif init_changed is False and train and train["sd"]:
        sd_paired, basis = math.sqrt(2) * train["sd"], "√2 × training-noise SD"
    elif sd_unpaired:
        sd_paired, basis = math.sqrt(2) * sd_unpaired, "√2 × total noise SD: pairing cancels nothing known"
    else:
        sd_paired, basis = None, "no noise estimate"
    return {"delta": delta, "noise": ys, "z": z, "band": stats.sigma_band(z), "paired_delta": paired_delta,
            "paired_z": paired_z, "n_pairs": len(common), "welch": welch and asdict(welch),
            "paired": pair and asdict(pair), "bootstrap_ci": stats.bootstrap_delta_ci(a, b, seed=seed),
            "test": test and test.name, "test_estimate": test and test.estimate, "test_ci": test and test.ci,
            "test_df": test and test.df, "p": test and test.p, "init_changed": init_changed,
            "param_identity": identity,
            "seeds_needed": {"unpaired": stats.seeds_needed(delta, sd_unpaired), "unpaired_sd": sd_unpaired,
                             "paired": stats.seeds_needed(delta, sd_paired, paired_design=True),
                             "paired_sd": sd_paired, "paired_basis": basis}}


def _verdict(c: dict) -> tuple[str, str]:
    """Plain-words verdict and the evidence behind it (lower loss is better)."""
    if c["z"] is not None:
        z = f"z = {c['z']:+.2f} ({c['band']} of {c['noise']['name']} noise)"
    else:
        z = f"z undefined ({c['noise']['name']} noise SD is {'0' if c['noise']['sd'] == 0 else 'unknown'})"
    evidence = f"Δ = {c['delta']:+.6f}, {z}"
    if c["paired_delta"] is not None:
        pz = f", {c['paired_z']:+.2f}σ of training noise" if c["paired_z"] is not None else ""
        evidence += f"; per-seed Δ at {c['n_pairs']} shared seed(s) {c['paired_delta']:+.6f}{pz}"
    if c["p"] is None:
        why = "too few runs for a test" if c["test"] is None else "no spread in the runs to test against"
        return "cannot tell", f"{evidence}; {why}"
    ci = f", 95% CI [{c['test_ci'][0]:+.6f}, {c['test_ci'][1]:+.6f}]" if c["test_ci"] else ""
    evidence += f"; {c['test']} t-test p = {c['p']:.3g}, Holm p = {c['p_holm']:.3g}{ci}"
    if c["p_holm"] >= 0.05:
        return "not distinguishable from noise", evidence
    return ("better" if c["test_estimate"] < 0 else "worse"), evidence


def interactions(arms_values: dict, baseline: str) -> list[dict]:
    """Δ_stack − ΣΔ_singles for each stack whose singles and baseline ran; paired when all share ≥ 3 seeds."""
    out = []
    for arm in sorted(arms_values):
        parts = arm.split("+")
        # the reference must be the arm with none of the stack's interventions
        if len(parts) < 2 or baseline in parts or baseline not in arms_values \
                or not all(p in arms_values for p in parts):
            continue
        names, coefs = [arm, *parts, baseline], [1.0] + [-1.0] * len(parts) + [len(parts) - 1.0]
        common = set.intersection(*(set(arms_values[n]) for n in names))
        common = sorted((s for s in common if s[0] != "unseeded"), key=_seeds_key)
        if len(common) >= 3:
            t = stats.paired_contrast([[arms_values[n][s] for n in names] for s in common], coefs)
        else:
            t = stats.contrast([list(arms_values[n].values()) for n in names], coefs)
        out.append({"stack": arm, "singles": parts, "n_seeds_shared": len(common), **asdict(t)})
    for i, p in zip(out, stats.holm([i["p"] for i in out]), strict=True):
        i["p_holm"] = p
    return out


def nondeterminism_floor(configs: dict) -> dict:
    """Repeats of one config (replicas): bitwise identical final weights or not, and their loss spread."""
    groups = []
    for (arm, seeds), runs in sorted(configs.items(), key=lambda kv: (kv[0][0], _seeds_key(kv[0][1]))):
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


def analyze(runs: list[Run], baseline: str = "baseline", metric: str = "test_loss", seed: int = 0) -> dict:
    """The whole noise report as a dict: arms, noise, comparisons, interactions, floor, exclusions."""
    configs = _configs(runs)
    arms_values: dict = defaultdict(dict)  # arm -> {seeds: mean over repeats}
    for (arm, seeds), rs in configs.items():
        arms_values[arm][seeds] = sum(r.value for r in rs) / len(rs)
    n_runs = Counter(r.arm for r in runs if r.included)
    arms = {arm: {"n": len(v), "n_runs": n_runs[arm], **asdict(stats.describe(list(v.values()))),
                  "verdict": "baseline" if arm == baseline else "no baseline", "evidence": "", "delta": None,
                  "z": None, "band": "", "p": None, "p_holm": None} for arm, v in arms_values.items()}
    noise = noise_estimates(configs, baseline) if baseline in arms else None
    others = [a for a in arms if a != baseline] if noise else []
    for arm in others:
        arms[arm].update(compare(arm, arms_values[arm], arms_values[baseline], runs, baseline, noise, seed))
    for arm, p in zip(others, stats.holm([arms[a]["p"] for a in others]), strict=True):
        arms[arm]["p_holm"] = p
        arms[arm]["verdict"], arms[arm]["evidence"] = _verdict(arms[arm])
    warnings = []
    for key in ("model", "data"):  # arms are only comparable on one model and one data set
        found = sorted({str(r.result[key]) for r in runs if r.included and r.result.get(key) is not None})
        if len(found) > 1:
            warnings.append(f"the runs mix {key} values ({', '.join(found)}); analyse each separately")
    return {"metric": metric, "baseline": baseline, "confidence": stats.CONFIDENCE, "bootstrap_seed": seed,
            "n_runs": len(runs), "n_included": sum(r.included for r in runs), "warnings": warnings,
            "order": sorted(arms, key=lambda a: (-arms[a]["mean"], a)), "arms": arms, "noise": noise,
            "interactions": interactions(arms_values, baseline), "floor": nondeterminism_floor(configs),
            "excluded": [{"path": str(r.folder), "arm": r.arm, "status": r.status, "reason": r.reason}
                         for r in runs if not r.included]}


def _jsonable(x):
    """Tuples to lists, NaN/inf to None, anything else odd to str: summary.json must be strict JSON."""
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    return x if x is None or isinstance(x, (bool, int, str)) else str(x)


def read_curve(folder: Path) -> list[dict]:
    """The logged steps of a run from metrics.jsonl, skipping a torn last line; [] when absent."""
    try:
        lines = (folder / "metrics.jsonl").read_text().splitlines()
    except OSError:
        return []
    rows = []
    for line in lines:
        try:
            rows.append(json.loads(line))
        except ValueError:  # a killed run can leave half a line
            continue
    return [r for r in rows if isinstance(r, dict)]


def write_runs_csv(runs: list[Run], path: Path) -> None:
    """One row a run, included or not, with its seeds, losses, cost and hashes."""
    buffer = io.StringIO(newline="")
    w = csv.DictWriter(buffer, fieldnames=CSV_FIELDS)
    w.writeheader()
    for r in runs:
        w.writerow({**{k: r.result.get(k) for k in CSV_FIELDS}, "path": str(r.folder), "arm": r.arm,
                    "status": r.status, "included": r.included, "reason": r.reason or ""})
    write_atomic(path, buffer.getvalue().encode())


def write_report(paths: list[Path], out_dir: Path, baseline: str = "baseline", metric: str = "test_loss",
                 seed: int = 0) -> dict:
    """Analyse every result.json below `paths` and write report.md, runs.csv, summary.json, noise.png and
    curves.png into `out_dir`; return the summary."""
    from gptx.analysis import plots  # matplotlib is imported only when files are written

    runs = [load_run(f, metric) for f in find_results([Path(p) for p in paths])]
    runs += [Run(d, {}, "?", "running", reason="incomplete: no result.json (killed before writing one)")
             for d in find_unfinished([Path(p) for p in paths])]
    if not any(isinstance(r.result.get(metric), (int, float)) for r in runs):
        raise UserError(f"no run has a numeric '{metric}' (--metric); try test_loss, val_loss or train_loss")
    summary = _jsonable(analyze(runs, baseline, metric, seed))
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "summary.json").write_text(json.dumps(summary, indent=2, allow_nan=False) + "\n")
    except OSError as e:
        raise UserError(f"cannot write the report into {out_dir} (--out): {e.strerror or e}") from e
    write_runs_csv(runs, out_dir / "runs.csv")
    (out_dir / "report.md").write_text(markdown(summary))
    values = {a: [r.value for r in runs if r.arm == a and r.included] for a in summary["arms"]}
    plots.plot_noise(summary, values, out_dir / "noise.png")
    plots.plot_curves([(r.arm, read_curve(r.folder)) for r in runs], summary["order"], out_dir / "curves.png")
    return summary


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, like every other user error, instead of usage + error
        self.exit(2, f"gptx.analyze: error: {message} (see --help)\n")


def main(argv: list[str] | None = None) -> int:
    """Command line: analyse, print the table, write the report files; user errors print one line, exit 2."""
    parser = _Parser(prog="python -m gptx.analyze", description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", type=Path, help="sweep or run folders holding result.json")
    parser.add_argument("--baseline", default="baseline", help="arm the interventions are compared with")
    parser.add_argument("--metric", default="test_loss", help="result.json field to analyse (lower: better)")
    parser.add_argument("--out", type=Path, help="output folder (default: the PATH, when only one is given)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    args = parser.parse_args(argv)
    try:
        if args.out is None and len(args.paths) > 1:
            raise UserError("several PATHs given: say where the report goes with --out DIR")
        out = args.out or (args.paths[0] if args.paths[0].is_dir() else args.paths[0].parent)
        summary = write_report(args.paths, out, args.baseline, args.metric, args.seed)
    except UserError as e:
        print(f"gptx.analyze: error: {e}", file=sys.stderr)
        return 2
    print(table(summary))
    print(f"\nreport written to {out / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
