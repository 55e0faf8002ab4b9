"""The noise report as text: the terminal table and report.md, rendered from `gptx.analyze`'s summary.

Pure functions of the summary dict (the same one written to summary.json), so a saved summary can be
re-rendered without the runs; the numbers themselves are computed in `gptx.analyze` and `gptx.stats`.
"""

# the keys of summary["noise"] holding an estimate, in the order the noise section lists them
NOISE_KINDS = ("init_seed", "train_seed", "init_seed_train_pinned")


def _f(x, nd: int = 6, sign: bool = False) -> str:
    """A number to `nd` decimals (signed on request); n/a for None."""
    return "n/a" if x is None else f"{x:+.{nd}f}" if sign else f"{x:.{nd}f}"


def _ci(ci, nd: int = 6, sign: bool = False) -> str:
    """An interval as [low, high]; n/a when there is none."""
    return "n/a" if not ci else f"[{_f(ci[0], nd, sign)}, {_f(ci[1], nd, sign)}]"


def _p(p) -> str:
    """A p-value to three significant figures; n/a for None."""
    return "n/a" if p is None else f"{p:.3g}"


def table(summary: dict) -> str:
    """The terminal table: one line an arm, worst (highest loss) first, best last."""
    head = ("arm", "n", "mean", "SD", "95% CI of mean", "Δ", "z", "band", "Holm p", "verdict")
    rows = [head] + [(a, str(e["n"]), _f(e["mean"]), _f(e["sd"]), _ci(e["ci"]), _f(e["delta"], sign=True),
                      _f(e["z"], 2, sign=True), e["band"], _p(e["p_holm"]), e["verdict"])
                     for a, e in ((a, summary["arms"][a]) for a in summary["order"])]
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    if summary["excluded"]:
        lines.append(f"({len(summary['excluded'])} run(s) left out of the statistics: listed in report.md)")
    lines += [f"warning: {w}" for w in summary["warnings"]]
    return "\n".join(lines)


def _md_table(head: list[str], rows: list[list]) -> list[str]:
    """A GitHub-flavoured markdown table, with pipes in cells escaped so they cannot split a column."""
    return ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)] + \
        ["| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |" for r in rows]


def _noise_md(noise: dict | None, baseline: str) -> list[str]:
    """The noise section: three estimates in words with their caveats, and the grid's variance table."""
    if not noise:
        return [f"No runs of the baseline arm `{baseline}`: no noise estimate and no deltas."]
    out = []
    for key in NOISE_KINDS:
        e = noise[key]
        if e is None:
            out.append(f"- **{key}**: not estimable (needs ≥ 2 baseline runs that differ only in that seed).")
            continue
        text = (f"- **{key}** ({e['description']}): {e['n_runs']} runs"
                + (f" pooled over {e['n_groups']} groups" if e["n_groups"] > 1 else f", mean {_f(e['mean'])}")
                + f", SD {_f(e['sd'])} ({e['df']} df)"
                + (f", population SD {_f(e['sd_population'])}" if e["sd_population"] is not None else "")
                + f", 95% CI of the SD {_ci(e['sd_ci'])}")
        if e["sd_ci"] and e["sd_ci"][0] > 0 and e["df"] < 10:
            text += (f": the upper end is {e['sd_ci'][1] / e['sd_ci'][0]:.0f}× the lower, so with {e['df']} "
                     "degrees of freedom this SD is barely estimated")
        out.append(text + ".")
    if noise["other_data_seeds"]:
        out.append(f"- Only data_seed {noise['data_seed']} is used; runs at data_seed(s) "
                   f"{noise['other_data_seeds']} are left out of the noise estimates.")
    g = noise["grid"]
    if g:
        out += ["", f"Variance decomposition over the {g['n_init']} init seeds × {g['n_train']} train seeds "
                "grid (two-way random-effects ANOVA, one run a cell; init seeds "
                f"{g['init_seeds']}, train seeds {g['train_seeds']}):", ""]
        rows = []
        sources = (("init seed", "init"), ("train seed", "train"), ("residual (init × train)", "residual"))
        for name, k in sources:
            ci = g[f"var_{k}_ci"]
            p = _p(g[f"p_{k}"]) if k != "residual" else ""
            rows.append([name, g[f"df_{k}"], f"{g[f'ms_{k}']:.3g}", f"{g[f'var_{k}']:.3g}",
                         _f(g[f"var_{k}"] ** 0.5), f"[{ci[0]:.3g}, {ci[1]:.3g}]" if ci else "n/a", p])
        out += _md_table(["source", "df", "mean square", "σ²", "SD", "95% CI of σ²", "F-test p"], rows)
        out += ["", "Training noise is σ²_train + σ²_residual: a train seed has no consistent effect across "
                "initial weights, so most of it lands in the residual. The CIs of σ²_init and σ²_train are "
                f"Satterthwaite approximations (df {_f(g['df_init_satterthwaite'], 2)} and "
                f"{_f(g['df_train_satterthwaite'], 2)}); estimates below zero are reported as 0."]
        if g["share_init"] is not None:
            out.append(f"Initial weights account for {100 * g['share_init']:.0f}% of the estimated variance.")
    sd_i, sd_t = (noise[k]["sd"] if noise[k] else None for k in NOISE_KINDS[:2])
    if (g and (g["share_init"] or 0) > 0.5) or (sd_i and sd_t is not None and sd_i > sd_t):
        out += ["", "Initial-weight noise dominates: run each intervention at the same init seeds as the "
                "baseline, from initial weights the intervention leaves unchanged, and compare per seed "
                "(paired)."]
    return out


def _intervention_md(a: str, e: dict) -> str:
    """One intervention's verdict, evidence, initial-weight identity, yardstick and power in a paragraph."""
    init = {True: "changes the initial weights (same init_seed, different init_weights_sha256)",
            False: "leaves the initial weights bit-identical",
            None: "may change the initial weights (no shared init_seed with hashes)"}[e["init_changed"]]
    ident = e["param_identity"]
    if ident:
        only = len(ident["only_in_arm"])
        init += (f"; {ident['identical']}/{ident['shared']} shared parameters identical at init_seed "
                 f"{ident['init_seed']}" + ("" if ident["consistent"] else " (other seeds differ)")
                 + (f", {only} parameter(s) only in this arm" if only else ""))
    need = e["seeds_needed"]
    return (f"- `{a}`: **{e['verdict']}**. {e['evidence']}. It {init}. Yardstick: {e['noise']['name']} "
            f"noise, SD {_f(e['noise']['sd'])}, because {e['noise']['why']}. {e['n_pairs']} seed(s) shared "
            f"with the baseline. Seeds for 80% power: {need['unpaired'] or 'n/a'} unpaired "
            f"(SD {_f(need['unpaired_sd'])}), {need['paired'] or 'n/a'} paired (SD {_f(need['paired_sd'])}, "
            f"{need['paired_basis']}).")


def markdown(summary: dict) -> str:
    """report.md: the tables, noise with its caveats, the floor, interactions, exclusions, the method."""
    arms, m, base, order = summary["arms"], summary["metric"], summary["baseline"], summary["order"]
    out = [f"# Noise report: {m}", "", f"{summary['n_runs']} result files, {summary['n_included']} in the "
           f"statistics, {len(summary['excluded'])} left out (listed below). Baseline arm: `{base}`. "
           f"Lower {m} is better; arms run from worst to best. n counts distinct seed configurations "
           "(repeats averaged).", ""]
    out += [f"**Warning**: {w}." for w in summary["warnings"]] + ([""] if summary["warnings"] else [])
    out += ["## Arms", ""]
    out += _md_table(["arm", "n", "mean", "SD (n−1)", "SD (n)", "SE", "95% CI of mean", "95% CI of SD"],
                     [[f"`{a}`", e["n"], _f(e["mean"]), _f(e["sd"]), _f(e["sd_population"]), _f(e["se"]),
                       _ci(e["ci"]), _ci(e["sd_ci"])] for a, e in ((a, arms[a]) for a in order)])
    few = [a for a in order if arms[a]["sd_ci"] and arms[a]["n"] <= 10]
    if few:
        ranges = "; ".join(f"`{a}` (n = {arms[a]['n']}) could have a true SD anywhere from "
                           f"{_f(arms[a]['sd_ci'][0])} to {_f(arms[a]['sd_ci'][1])}" for a in few)
        out += ["", f"With few seeds an SD is barely estimated; the chi-square 95% CIs say how little: "
                f"{ranges}."]
    if any(arms[a]["n"] == 1 for a in order):
        out += ["", "An arm with one run has no SD (n/a)."]
    compared = [a for a in order if arms[a].get("noise")]
    out += ["", "## Interventions vs baseline", ""]
    if compared:
        out += _md_table(["arm", "Δ", "z", "band", "test", "p", "Holm p", "95% CI of Δ (test)",
                          "bootstrap CI of Δ", "verdict"],
                         [[f"`{a}`", _f(e["delta"], sign=True), _f(e["z"], 2, sign=True), e["band"],
                           e["test"] or "none", _p(e["p"]), _p(e["p_holm"]), _ci(e["test_ci"], sign=True),
                           _ci(e["bootstrap_ci"], sign=True), f"**{e['verdict']}**"]
                          for a, e in ((a, arms[a]) for a in compared)])
        out += [""] + [_intervention_md(a, arms[a]) for a in compared]
    else:
        out.append(f"Nothing to compare (needs runs of `{base}` and of at least one other arm).")
    out += ["", "## Noise (baseline arm)", ""] + _noise_md(summary["noise"], base)
    fl = summary["floor"]
    out += ["", "## Nondeterminism floor", ""]
    if fl["n_groups"] == 0:
        out.append("No configuration was repeated (same arm and seeds, another replica): not measured.")
    else:
        unknown = fl["n_groups"] - fl["n_bitwise_identical"] - fl["n_differing"]
        out.append(f"{fl['n_groups']} configuration(s) were repeated: {fl['n_bitwise_identical']} bitwise "
                   f"identical (same final_weights_sha256), {fl['n_differing']} different, {unknown} without "
                   f"hashes. Spread between repeats: SD {_f(fl['sd'])} ({fl['df']} df), 95% CI "
                   f"{_ci(fl['sd_ci'])}: a third noise component beside initial-weight and training noise."
                   + (" Every repeat was bitwise identical: the floor is zero." if fl["n_bitwise_identical"]
                      == fl["n_groups"] else ""))
    if summary["interactions"]:
        out += ["", "## Interactions", "", "Interaction = Δ_stack − ΣΔ_singles (0 when the effects add up); "
                "paired by seed when every arm shares ≥ 3 seeds, else Welch–Satterthwaite; Holm across "
                "stacks.", ""]
        out += _md_table(["stack", "interaction", "95% CI", "test", "df", "p", "Holm p"],
                         [[f"`{i['stack']}`", _f(i["estimate"], sign=True), _ci(i["ci"], sign=True),
                           i["name"], _f(i["df"], 1), _p(i["p"]), _p(i["p_holm"])]
                          for i in summary["interactions"]])
    out += ["", "## Left out of the statistics", ""]
    out += _md_table(["run", "arm", "status", "reason"], [[f"`{x['path']}`", f"`{x['arm']}`", x["status"],
                                                           x["reason"]] for x in summary["excluded"]]) \
        if summary["excluded"] else ["None."]
    out += ["", "## Method", "",
            "Sample SD (n − 1) and population SD (n); neither is √Σ(x − x̄)², a figure sometimes "
            "quoted as an SD. 95% t CI of the mean, chi-square CI of the SD. z = Δ / the noise SD of one "
            "run, read in bands of 1σ/2σ/3σ. The verdict's test is the paired t-test when ≥ 3 seeds are "
            "shared with the baseline, else Welch's t-test, else (one run in an arm) a pooled t-test that "
            "assumes equal noise; p-values are Holm-corrected across interventions. Bootstrap: percentile, "
            f"9999 resamples, seed {summary['bootstrap_seed']}. Seeds for 80% power at α = 0.05 from the "
            "noncentral t. Details: docs/analysis.md.", ""]
    return "\n".join(out)
