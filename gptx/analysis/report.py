"""The noise report as text: the terminal table and report.md, rendered from the analysis summary.

Pure functions of the summary dict (the same one written to summary.json), so a saved summary can be
re-rendered without the runs; the numbers are computed in `gptx.analysis.summary` and `.model`.
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


def _verdict_cell(e: dict) -> str:
    """The verdict as printed: tentative ones marked, an untestable one with its reason left to the text."""
    return e["verdict"] + (" (tentative)" if e.get("tentative") else "")


def _delta(e: dict) -> str:
    """Δ as printed: '0 (exactly)' for an arm identical to the baseline, else signed to 6 decimals."""
    return "0 (exactly)" if e["verdict"] == "identical to the baseline" else _f(e["delta"], sign=True)


def _df(x) -> str:
    """Degrees of freedom to one decimal; n/a for None."""
    return "n/a" if x is None else f"{x:.1f}"


def _percent(e: dict, summary: dict) -> str:
    """Δ relative to the baseline's mean, in percent (n/a without both)."""
    base = (summary["arms"].get(summary["baseline"]) or {}).get("mean")
    if e.get("delta") is None or not base or e.get("verdict") == "baseline":
        return "n/a"
    return f"{100 * e['delta'] / base:+.3g}%"


# The order the headline counts verdicts in.
HEADLINE = ("better", "worse", "smaller than the minimum effect", "identical to the baseline",
            "no detectable effect", "not testable")


def headline(summary: dict) -> str:
    """One line of the verdicts: '3 better, 2 worse, 1 no detectable effect (against `baseline`, test_loss)'."""
    verdicts = [e["verdict"] for a, e in summary["arms"].items() if a != summary["baseline"]]
    if not verdicts:
        return f"No arm to compare with `{summary['baseline']}`."
    counts = [(v, verdicts.count(v)) for v in HEADLINE] + \
        [(v, verdicts.count(v)) for v in sorted(set(verdicts) - set(HEADLINE))]
    words = {"smaller than the minimum effect": f"smaller than {_min_effect(summary)}",
             "identical to the baseline": "identical"}
    return (", ".join(f"{n} {words.get(v, v)}" for v, n in counts if n)
            + f" (against `{summary['baseline']}`, {summary['metric']}: lower is better)")


def _min_effect(summary: dict) -> str:
    value = (summary.get("planning") or {}).get("min_effect") or summary.get("min_effect")
    return f"{value:g}" if value else "the minimum effect"


def table(summary: dict) -> str:
    """The terminal table: one line an arm, worst (highest loss) first, best last; Δ in the metric's units
    (nats for a loss) and in percent of the baseline's mean."""
    head = ("arm", "n", "mean", "Δ (nats)", "95% CI of Δ", "Δ %", "df", "Holm p", "verdict")
    rows = [head] + [(a, str(e["n"]), _f(e["mean"]), _delta(e), _ci(e["ci"], sign=True), _percent(e, summary),
                      _df(e["df"]), _p(e["p_holm"]), _verdict_cell(e))
                     for a, e in ((a, summary["arms"][a]) for a in summary["order"])]
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    if summary["excluded"]:
        lines.append(f"({len(summary['excluded'])} run(s) left out of the statistics: listed in report.md)")
    lines += [f"warning: {w}" for w in summary["warnings"]]
    lines.append(f"verdicts: {headline(summary)}")
    for arm, command in (summary.get("next") or {}).items():
        lines.append(f"next for {arm}: {command}")
    noise = summary.get("noise") or {}
    for key in NOISE_KINDS:
        e = noise.get(key)
        if e:
            lines.append(f"noise {key}: {e['n_runs']} runs" + (f", mean {_f(e['mean'])}" if e["mean"] is not None
                                                                else f" in {e['n_groups']} groups")
                         + f", SD (n−1) {_f(e['sd'])} ({e['df']} df)"
                         + (f", SD (n) {_f(e['sd_population'])}" if e["sd_population"] is not None else ""))
    if summary.get("input"):
        lines += [f"input: {a}" for a in summary["input"]["assumptions"]]
    return "\n".join(lines)


def _input_md(info: dict) -> list[str]:
    """Where the runs came from when they came from a table, and what the table left to assumption."""
    out = [f"The runs come from a table, `{info['table']}` ({info['format']}, {info['rows']} rows; columns "
           + ", ".join(f"`{c}`" for c in info["columns"]) + "), read as run folders would be read "
           "(docs/analysis.md, \"A table of runs\"). How it was read, and what the report assumed where it "
           "says nothing:", ""]
    out += [f"- {a}." for a in info["assumptions"]]
    if info.get("comments"):
        out += ["", "The table's comments:", ""] + [f"> {c}" if c else ">" for c in info["comments"]]
    if info.get("notes"):
        out += ["", "Notes on rows:", ""] + [f"- {n}" for n in info["notes"]]
    return out


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
            df_s = g.get(f"df_{k}_satterthwaite")
            why = f"n/a (df {df_s:.2f} < 1)" if df_s is not None and df_s < 1 else "n/a"
            p = _p(g[f"p_{k}"]) if k != "residual" else ""
            rows.append([name, g[f"df_{k}"], f"{g[f'ms_{k}']:.3g}", f"{g[f'var_{k}']:.3g}",
                         _f(g[f"var_{k}"] ** 0.5), f"[{ci[0]:.3g}, {ci[1]:.3g}]" if ci else why, p])
        out += _md_table(["source", "df", "mean square", "σ²", "SD", "95% CI of σ²", "F-test p"], rows)
        p_train = g["p_train"]
        if p_train is not None and p_train >= 0.05:
            out += ["", f"A train seed shows no consistent effect across initial weights (F-test p = "
                    f"{_p(p_train)}), so most training noise lands in the residual."]
        elif p_train is not None:
            out += ["", f"A train seed has a consistent effect across initial weights here (F-test p = "
                    f"{_p(p_train)})."]
        out.append("The CIs of σ²_init and σ²_train are Satterthwaite approximations (df "
                   f"{_f(g['df_init_satterthwaite'], 2)} and {_f(g['df_train_satterthwaite'], 2)}; none is "
                   "shown below 1 df); estimates below zero are reported as 0.")
        if g["share_init"] is not None:
            n = g["n_init"] * g["n_train"]
            out.append(f"Initial weights account for {100 * g['share_init']:.0f}% of the estimated variance "
                       f"(indicative, n = {n} runs)." if n < 30 else
                       f"Initial weights account for {100 * g['share_init']:.0f}% of the estimated variance.")
    sd_i, sd_t = (noise[k]["sd"] if noise[k] else None for k in NOISE_KINDS[:2])
    if (g and (g["share_init"] or 0) > 0.5) or (sd_i and sd_t is not None and sd_i > sd_t):
        out += ["", "Initial-weight noise dominates: run each intervention at the same init seeds as the "
                "baseline, from initial weights the intervention leaves unchanged, and compare per seed "
                "(paired)."]
    return out


def _intervention_md(a: str, e: dict, base: str) -> str:
    """One intervention's verdict, its comparison, initial-weight identity, test-set noise and power."""
    if e["verdict"] == "identical to the baseline":
        why = f" The runs' records: {e['identical_why']}." if e.get("identical_why") else ""
        k = (e.get("identical_seeds") or (0, 0))[0]
        tentative = (" Tentative: identical at 1 of 1 seed; one seed cannot show that the change never acts."
                     if k == 1 else "")
        return (f"- `{a}`: **{_verdict_cell(e)}**: this intervention changed nothing in this set-up "
                f"(all {e['n_identical']} run(s), at {k} seed(s), ended with the baseline's status, final "
                f"weights (final_weights_sha256) and metric at the same seeds); Δ = 0 exactly, nothing to "
                f"test.{why}{tentative}")
    if e["why_not_testable"] and e.get("pairing") is None:
        return f"- `{a}`: **not testable**: {e['why_not_testable']}."
    if e.get("method") == "pooled":
        pairing = {"paired": "paired: every run shares its init block (seed and initial weights) with baseline runs",
                   "unpaired": "unpaired: no run shares an init block with the baseline, so initial-weight noise "
                               "is part of the difference",
                   "partly paired": "partly paired: some runs share an init block with the baseline"}[e["pairing"]]
    else:
        pairing = {"paired": "paired: the baseline ran every init seed (and data seed) it ran",
                   "unpaired": "unpaired: it shares no init seed with the baseline",
                   "partly paired": "partly paired: it shares some init seeds with the baseline"}[e["pairing"]]
    text = f"- `{a}`: **{_verdict_cell(e)}**. "
    if e["why_not_testable"]:
        text += f"Not testable: {e['why_not_testable']}. Δ = {_f(e['delta'], sign=True)} (not tested). "
    else:
        text += (f"Δ = {_f(e['delta'], sign=True)}, 95% CI {_ci(e['ci'], sign=True)}, t = {e['t']:+.2f}, "
                 f"df = {e['df']:.1f}, p = {_p(e['p'])}, Holm p = {_p(e['p_holm'])} (n = {e['n']} run(s)). ")
        if e["z"] is not None:
            text += (f"z = {e['z']:+.2f} ({e['band']}) in units of the SD of one arm-minus-baseline "
                     f"difference in this comparison, {_f(e['sd_difference'])}. ")
        if e.get("assumption"):
            text += f"Judged on the assumption that {e['assumption']}. "
        if e["verdict"] == "no detectable effect" and e["min_detectable"] is not None:
            text += (f"This comparison could have detected |Δ| ≥ {_f(e['min_detectable'])} with 80% power "
                     "at the verdict's own multiplicity (α = 0.05 over the arms, Bonferroni); smaller effects "
                     "are not excluded. ")
        if e["tentative"]:
            text += "Tentative: it rests on " + ("one run" if e["n"] == 1 else f"{e['df']:.1f} df") + ". "
    text += f"It is {pairing} ({e['n_blocks_shared']} shared seed(s))."
    k_n = e.get("identical_seeds")
    if k_n and k_n[0] < k_n[1]:
        text += (f" Identical to the baseline (status, final weights, metric) at {k_n[0]} of {k_n[1]} seeds "
                 "only: not identical.")
    ident = e.get("param_identity")
    if ident:
        only = len(ident["only_in_arm"])
        text += (f" {ident['identical']}/{ident['shared']} shared parameters started identical at init_seed "
                 f"{ident['init_seed']}" + (f", {only} parameter(s) only in this arm" if only else "") + ".")
    if e.get("bootstrap_ci"):
        text += f" Cluster bootstrap CI (init seeds resampled): {_ci(e['bootstrap_ci'], sign=True)}."
    ev = e.get("pairing_evidence")
    if ev:
        ci = f" [{ev['r_ci'][0]:+.2f}, {ev['r_ci'][1]:+.2f}]" if ev.get("r_ci") else ""
        text += (f" Pairing, as measured: its per-seed values follow the baseline's with r = {ev['r']:+.2f}{ci} "
                 f"over {ev['n']} seeds; the differences' variance is {100 * ev['variance_ratio']:.0f}% of "
                 "the unpaired one.")
    ts = e.get("test_set")
    if ts and e.get("sd_difference"):
        share = (ts["se"] / e["sd_difference"]) ** 2
        text += (f" Test-set sampling noise: the per-sequence SE of one seed's difference is {_f(ts['se'])} "
                 f"({ts['n_sequences']} sequences, {ts['n_seeds']} seed(s)), {100 * share:.0f}% of that "
                 "difference's variance.")
    need = e.get("seeds_needed")
    undecided = e["verdict"] in ("no detectable effect", "not testable")  # seeds-needed informs only these
    if need and need.get("seeds") and undecided:
        unit = "pairs" if e["pairing"] != "unpaired" else "seeds an arm"
        point = f"{need['seeds_point']} at σ's estimate, " if need.get("seeds_point") else ""
        text += (f" To detect the minimum effect with 80% power at α = {need['alpha']:.3g} (the verdict's test "
                 f"and multiplicity): {point}{need['seeds']} at its upper 95% limit ({unit}).")
    return text


def _design_md(summary: dict) -> list[str]:
    """The model every comparison comes from: method, variance components with their df, planning."""
    d = summary["design"]
    if not d:
        return [f"No runs of the baseline arm `{summary['baseline']}`: no comparisons."]
    out = [f"Method: {d['method']}. {d['n_configs']} seed configurations in {d['n_blocks']} init block(s) "
           "(runs that started from the same initial weights at the same init_seed)."]
    if d["why_not_fitted"]:
        return out + [f"Nothing could be tested: {d['why_not_fitted']}."]
    for name, sd, df in (("initial-weight noise σ_init", d["sd_init"], d["df_init"]),
                         ("training noise σ_train", d["sd_train"], d["df_train"])):
        if df is None:
            out.append(f"- {name}: {_f(sd)}, not separately estimable from these runs.")
        else:
            flag = " (fewer than 3 df: barely estimated)" if df < 3 else ""
            out.append(f"- {name}: {_f(sd)} (REML, Satterthwaite df {df:.1f}{flag}).")
    pl = summary["planning"]
    if pl:
        out += ["", f"Planning for a minimum effect of {pl['min_effect']} (--min-effect), 80% power, the "
                f"verdict's test at its multiplicity (α = 0.05 over the arms: {pl['alpha']:.3g} each), from σ's "
                "estimate and its upper 95% confidence limit (not from any observed Δ); `python -m gptx.plan` "
                "plans the same way:"]
        for name, what, sd in (("paired", "pairs (same init seeds, initial weights unchanged)", "one difference"),
                               ("unpaired", "seeds an arm (unpaired)", "one run")):
            e = pl[name]
            if e["seeds"]:
                out.append(f"- {e['seeds']} {what} at σ of {sd} ≤ {_f(e['sd_upper'])} (its upper limit); "
                           f"{e['seeds_point'] or 'n/a'} at its estimate {_f(e['sd'])} ({e['df']:.1f} df).")
            else:
                out.append(f"- {name}: not planned (σ not estimable with ≥ 1 df from these runs).")
    return out


def _adaptive_md(a: dict) -> list[str]:
    """Which arms stopped at which wave and why, and the plan whose error guarantee the verdicts carry."""
    plan = a["plan"]
    out = [f"An adaptive sweep (`hydra/sweeper=adaptive`): {a['waves_done']} wave(s), {a['runs_used']} run(s), "
           f"{a['gpu_hours']:.3g} device-hours; {a['stopped'] or 'not finished: relaunch the same command'}. "
           f"The verdicts above are the sequential procedure's: family-wise α = {plan['alpha']:g} over every arm "
           f"and look ({plan['spending'].replace('_', '–')} α-spending, Holm's recycling; docs/analysis.md). "
           "The p and Holm p columns are the fixed-design test on all runs, nominal once the data were looked "
           f"at along the way. Plan: waves of {plan['first_wave']}, then {plan['wave_size']} more init seeds, "
           f"up to {len(plan['seeds'])} an arm; an arm stops when its 95% CI lies within "
           f"±{plan['min_effect']:g}.", ""]
    rows = []
    for name, arm in a["arms"].items():
        last = arm["looks"][-1] if arm["looks"] else {}
        rows.append([f"`{name}`", arm["status"], arm["wave"] or "n/a", arm["seeds"],
                     _f(last.get("delta"), sign=True), _ci(last.get("ci"), sign=True), arm["why"] or ""])
    return out + _md_table(["arm", "verdict", "stopped at wave", "seeds", "Δ at its last look", "95% CI",
                            "why"], rows)


def markdown(summary: dict) -> str:
    """report.md: arms, verdicts, the model, noise with its caveats, floor, interactions, exclusions."""
    arms, m, base, order = summary["arms"], summary["metric"], summary["baseline"], summary["order"]
    source = "table rows" if summary.get("input") else "result files"
    out = [f"# Noise report: {m}", "", f"{summary['n_runs']} {source}, {summary['n_included']} in the "
           f"statistics, {len(summary['excluded'])} left out (listed below). Baseline arm: `{base}`. "
           f"Lower {m} is better; arms run from worst to best. n counts distinct seed configurations "
           "(repeats averaged).", ""]
    out[2:2] = [f"**Verdicts: {headline(summary)}.**", ""]
    if summary.get("next"):
        out += ["To decide the undecided arms, run the seeds each needs (relaunching skips completed runs):", ""]
        out += [f"- `{arm}`: `{command}`" for arm, command in summary["next"].items()] + [""]
    out += [f"**Warning**: {w}." for w in summary["warnings"]] + ([""] if summary["warnings"] else [])
    if summary.get("input"):
        out += ["## Input", ""] + _input_md(summary["input"]) + [""]
    out += ["## Arms", ""]
    out += _md_table(["arm", "n", "mean", "SD (n−1)", "SD (n)", "SE", "95% CI of mean", "95% CI of SD"],
                     [[f"`{a}`", e["n"], _f(e["mean"]), _f(e["sd"]), _f(e["sd_population"]), _f(e["se"]),
                       _ci(e["mean_ci"]), _ci(e["sd_ci"])] for a, e in ((a, arms[a]) for a in order)])
    if any(arms[a]["n"] == 1 for a in order):
        out += ["", "An arm with one run has no SD (n/a)."]
    compared = [a for a in order if a != base]
    out += ["", "## Interventions vs baseline", ""]
    if compared:
        out += ["Every number in a row comes from one comparison: the arm's own per-seed differences with the "
                "baseline (or the per-seed means, each side its own variance), each arm against its own noise; "
                "under --assume-equal-noise the "
                "design model's contrast (see Design model). Δ is the estimate tested, inside its CI; n and df "
                "beside it; an arm with one run gets its Δ, untested. "
                "(tentative) marks a verdict resting on one run or fewer than 3 df.", ""]
        out += _md_table(["arm", "n", "pairing", "Δ", "95% CI of Δ", "df", "p", "Holm p", "z", "verdict"],
                         [[f"`{a}`", e["n"], e.get("pairing") or "n/a", _delta(e),
                           _ci(e["ci"], sign=True), _df(e["df"]), _p(e["p"]), _p(e["p_holm"]),
                           _f(e["z"], 2, sign=True), f"**{_verdict_cell(e)}**"]
                          for a, e in ((a, arms[a]) for a in compared)])
        out += [""] + [_intervention_md(a, arms[a], base) for a in compared]
    else:
        out.append(f"Nothing to compare (needs runs of `{base}` and of at least one other arm).")
    if summary.get("adaptive"):
        out += ["", "## Adaptive sweep", ""] + _adaptive_md(summary["adaptive"])
    out += ["", "## Design model", ""] + _design_md(summary)
    out += ["", "## Noise (baseline arm, descriptive)", ""] + _noise_md(summary["noise"], base)
    fl = summary["floor"]
    out += ["", "## Nondeterminism floor", ""]
    if not fl or fl["n_groups"] == 0:
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
        out += ["", "## Interactions", "", "Interaction = Δ_stack − ΣΔ_singles (0 when the effects add up), "
                "judged like an arm on its own noise (per-seed stack − Σ singles + (k − 1) · baseline; `pooled`: "
                "the design model's contrast under --assume-equal-noise); Holm across stacks.", ""]
        out += _md_table(["stack", "interaction", "95% CI", "df", "p", "Holm p", "method"],
                         [[f"`{i['stack']}`", _f(i["estimate"], sign=True), _ci(i["ci"], sign=True),
                           _df(i["df"]), _p(i["p"]), _p(i["p_holm"]),
                           i.get("method", "") + (f" (not testable: {i['why_not_testable']})"
                                                  if i.get("why_not_testable") else "")]
                          for i in summary["interactions"]])
    out += ["", "## Left out of the statistics", ""]
    out += _md_table(["run", "arm", "status", "reason"], [[f"`{x['path']}`", f"`{x['arm']}`", x["status"],
                                                           x["reason"]] for x in summary["excluded"]]) \
        if summary["excluded"] else ["None."]
    pooled = (summary.get("design") or {}).get("equal_noise")
    comparison = (
        "Each intervention is judged against the pooled noise of the design model (--assume-equal-noise): "
        "its arm effect against the baseline, with a t test on Satterthwaite degrees of freedom, on the "
        "assumption that every arm's training noise equals the baseline's. " if pooled else
        "Each intervention is judged against its own noise: at two or more init seeds it shares with the "
        "baseline (same data seed), the per-seed differences and their own variance (t on n − 1 df); else "
        "the per-seed means with each side's own variance (Welch's SE, min(n) − 1 df); one run gets no "
        "verdict (its noise is unmeasured). ")
    out += ["", "## Method", "",
            "All included runs (repeats averaged per seed configuration) are fitted by one linear mixed model: "
            "loss = arm (fixed) + init block (random: runs with the same init_seed and the same initial "
            "weights for the same parameters) + training noise, by REML; it describes the noise and plans. "
            + comparison +
            "p-values are Holm-corrected across interventions (α = 0.05). An arm at a data seed the baseline "
            "never ran, or whose runs differ from the baseline's by a variance source the runs cannot estimate, "
            "is not testable. Verdicts: better, worse, no detectable effect (with the smallest effect "
            "detectable at 80% power at the same multiplicity), not testable, identical to the baseline "
            "(every run: same status, final weights and metric at the same seeds). Details and the "
            "calibration by simulation: docs/analysis.md.", ""]
    return "\n".join(out)
