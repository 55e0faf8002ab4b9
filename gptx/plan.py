"""Plan a seed study before paying for it: the design that finds a stated effect, what it costs, and the study's.

    python -m gptx.plan [PILOT_SWEEP | TABLE] [--min-effect 0.01] [--power 0.8] [--alpha 0.05] [--arms 8]
                        [--sd-init S --sd-train S] [--experiment gpt2_small_chinchilla]
                        [--gpu A100 --gpus 8 --mfu 0.4] [--price 2.0] [--sims 100] [--out DIR]

The noise comes from a pilot sweep (its report's variance components, planned at their point estimates,
with the 95% upper limits shown beside) or from --sd-init/--sd-train (default: the study's). Each design
is planned for the requested power at --min-effect with the family-wise α split over the interventions
(Bonferroni: Holm, which the report uses, only does better). The cost of a run is its token budget
(--experiment, or the pilot's) over a throughput: the pilot runs' measured tokens/s, or FLOPs per token at
--mfu of --gpus GPUs of type --gpu, or by default the study's measured 3 h 24 min on 8×A100. The adaptive
sweeper's expected runs come from simulating it (`gptx.analysis.simulate`), so every figure is the
report's own arithmetic. A pilot can also be a table of runs (as `gptx.analyze TABLE` reads it). Writes
plan.md and plan.json into --out (default: the pilot folder, `<stem>-report/` beside a pilot table, else
./gptx-plan).
"""

import json
import math
import statistics
import sys
from pathlib import Path

from gptx.analysis import simulate, stats
from gptx.analysis import table as tables
from gptx.analysis.runs import UserError, load_runs
from gptx.analysis.sequential import MAX_SEEDS as ADAPTIVE_SEEDS
from gptx.analysis.sequential import Plan
from gptx.analysis.summary import analyze, jsonable
from gptx.errors import ArgumentParser, entry_point
from gptx.files import write_atomic
from gptx.result import Status

STUDY_EXPERIMENT = "gpt2_small_chinchilla"
STUDY_SECONDS, STUDY_GPUS = 3 * 3600 + 24 * 60, 8  # the study's measured run: 3 h 24 min on 8×A100 40 GB
PRICE = 2.0  # US$ per GPU-hour: the study paid "more than US$50" a run of 27.2 GPU-hours
MAX_SEEDS = 200


def fixed_power(n: int, k: int, sd_init: float, sd_train: float, effect: float, alpha: float,
                paired: bool) -> float:
    """Per-arm power of a fixed design with n init seeds an arm (one train seed each), k interventions.

    The report's own test at the report's multiplicity (α/k, Bonferroni: Holm only does better). Paired
    (per_parameter init: every arm at the baseline's init seeds): Δ̂ is the mean of n per-seed differences,
    variance 2σ²_train/n, tested on their own n − 1 df. Unpaired: Welch's test of n per-seed values a side,
    2(σ²_init + σ²_train)/n on 2(n − 1) df (at equal variances).
    """
    var = 2 * (sd_train**2 if paired else sd_init**2 + sd_train**2) / n
    df = n - 1 if paired else 2 * (n - 1)
    if df < 1 or var <= 0:
        return 0.0
    return stats.t_power(df, abs(effect) / math.sqrt(var), alpha / k)


def seeds_for(k: int, sd_init: float, sd_train: float, effect: float, alpha: float, power: float,
              paired: bool) -> int | None:
    """Fewest init seeds an arm for `power` at `effect` (None past MAX_SEEDS)."""
    for n in range(2, MAX_SEEDS + 1):
        if fixed_power(n, k, sd_init, sd_train, effect, alpha, paired) >= power:
            return n
    return None


def _token_budget(experiment: str) -> tuple[int, float, str]:
    """(tokens a run, training FLOPs a token, model name) of an experiment preset, from its composed config."""
    import torch
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf import OmegaConf

    from gptx.config import CONF_DIR, register_schema
    from gptx.model import GPTModel, flops_per_token

    register_schema()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose(config_name="config", overrides=[f"experiment={experiment}"])
    except HydraException as e:
        known = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))
        raise UserError(f"unknown --experiment {experiment!r}; known: {', '.join(known)}") from e
    model_cfg = OmegaConf.to_object(cfg.model)  # the typed ModelConfig; the data paths are not needed here
    with torch.device("meta"):
        model = GPTModel(model_cfg)
    return int(cfg.train.tokens), flops_per_token(model, model_cfg.context_length), model_cfg.name


def _pilot(path: Path, baseline: str) -> dict:
    """Variance components (with df and upper limits), arms and measured speed of a pilot sweep or table."""
    runs = tables.read_table(path)[0] if tables.is_table(path) else load_runs([path])
    summary = analyze(runs, baseline, detail=True)
    design = summary["design"]
    if not design or design["why_not_fitted"] or design["sd_train"] is None:
        why = design["why_not_fitted"] if design else f"no runs of the baseline arm `{baseline}`"
        raise UserError(f"the pilot sweep {path} gives no noise estimate: {why}")
    done = [r.result for r in runs if r.status == Status.COMPLETED]
    speed = [r["tokens_per_second"] for r in done if isinstance(r.get("tokens_per_second"), (int, float))]
    tokens = [r["tokens"] for r in done if isinstance(r.get("tokens"), (int, float))]
    world = [int(r.get("world_size") or 1) for r in done]
    if design["df_train"] is None or design["df_train"] < 2:
        df = "no" if design["df_train"] is None else f"{design['df_train']:.1f}"
        raise UserError(f"the pilot sweep {path} measures σ_train on {df} df (fewer than 2): its upper limit is "
                        "unbounded or near it, too uncertain to plan from; run the pilot at more init seeds, or "
                        "state the noise with --sd-init/--sd-train")
    upper = {name: stats.sd_upper(design[f"sd_{name}"], design[f"df_{name}"]) for name in ("init", "train")}
    return {"sd_init": design["sd_init"] or 0.0, "sd_train": design["sd_train"], "df_init": design["df_init"],
            "df_train": design["df_train"], "sd_init_upper": upper["init"], "sd_train_upper": upper["train"],
            "arms": len([a for a in summary["arms"] if a != baseline]), "n_runs": len(done),
            "arm_names": [a for a in summary["arms"] if a != baseline and "+" not in a],
            "tokens_per_second": statistics.median(speed) if speed else None,
            "tokens": statistics.median(tokens) if tokens else None,
            "gpus": statistics.median(world) if world else 1, "model": done[0].get("model") if done else None}


def _throughput(args, pilot: dict | None, flops: float | None) -> tuple[float, int, str]:
    """(tokens/s of one run, GPUs or processes it uses, where the figure comes from)."""
    if args.gpu:
        from gptx.hardware import PEAKS

        peak = next((p[0] for name, variant, p in PEAKS if name.lower() in args.gpu.lower()
                     and (variant is None or variant.lower() in args.gpu.lower())), None)
        if peak is None:
            raise UserError(f"no peak FLOP/s known for --gpu {args.gpu!r}; known: "
                            f"{', '.join(dict.fromkeys(n for n, _, _ in PEAKS))}")
        return args.mfu * peak * args.gpus / flops, args.gpus, \
            f"{args.gpus}× {args.gpu} at {args.mfu:.0%} MFU (16-bit peak {peak / 1e12:.0f} TFLOP/s)"
    if pilot and pilot["tokens_per_second"] and not args.experiment:
        return pilot["tokens_per_second"], int(pilot["gpus"]), \
            f"the pilot runs' median measured speed ({int(pilot['gpus'])} process(es) a run)"
    return args.study_tokens / STUDY_SECONDS, STUDY_GPUS, "the study's measured speed (3 h 24 min a run on 8×A100)"


def make_plan(args) -> dict:
    """Everything plan.md and plan.json say, as one dict."""
    pilot = _pilot(args.pilot, args.baseline) if args.pilot else None
    if pilot and (args.sd_init is not None or args.sd_train is not None):
        raise UserError("give either a PILOT_SWEEP or --sd-init/--sd-train, not both")
    sd_init = pilot["sd_init"] if pilot else (simulate.SD_INIT if args.sd_init is None else args.sd_init)
    sd_train = pilot["sd_train"] if pilot else (simulate.SD_TRAIN if args.sd_train is None else args.sd_train)
    if not (sd_init >= 0 and sd_train > 0):
        raise UserError(f"the noise SDs must be σ_init ≥ 0 and σ_train > 0, got {sd_init} and {sd_train}")
    k = args.arms or (pilot["arms"] if pilot and pilot["arms"] else len(simulate.INTERVENTIONS))
    experiment = args.experiment or (None if pilot and pilot["tokens"] else STUDY_EXPERIMENT)
    tokens, flops, model = _token_budget(experiment) if experiment else (pilot["tokens"], None, pilot["model"])
    if args.gpu and flops is None:
        tokens, flops, model = _token_budget(STUDY_EXPERIMENT) if not tokens else (tokens, None, model)
        if flops is None:
            raise UserError("--gpu needs the model's FLOPs per token: name its preset with --experiment")
    args.study_tokens = tokens
    speed, gpus, speed_source = _throughput(args, pilot, flops)
    gpu_hours = tokens / speed * gpus / 3600

    def cost(runs: float) -> dict:
        return {"runs": runs, "gpu_hours": runs * gpu_hours, "usd": runs * gpu_hours * args.price}

    effect, designs = args.min_effect, []
    for paired in (True, False):
        n = seeds_for(k, sd_init, sd_train, effect, args.alpha, args.power, paired)
        designs.append({"design": "fixed, paired (per_parameter init)" if paired else "fixed, unpaired",
                        "init_seeds": n, "train_seeds": 1,
                        "power": fixed_power(n, k, sd_init, sd_train, effect, args.alpha, paired) if n else None,
                        **cost((k + 1) * n if n else math.inf)})
    arms = (pilot or {}).get("arm_names") or (list(simulate.INTERVENTIONS[:k]) if k <= len(simulate.INTERVENTIONS)
                                              else [f"arm{i}" for i in range(k)])
    for d in designs:
        if d["init_seeds"]:
            d["command"] = _command(experiment, args.baseline, arms, ",".join(map(str, range(1, d["init_seeds"] + 1))))
    # the adaptive sweeper at its defaults (max_seeds = sequential.MAX_SEEDS, 3 + 3 a wave, O'Brien-Fleming)
    adaptive = Plan(arms=tuple(arms), seeds=tuple(range(1, ADAPTIVE_SEEDS + 1)), first_wave=3, wave_size=3,
                    alpha=args.alpha, min_effect=effect, spending="obrien_fleming")
    sim = simulate.calibrate_adaptive(adaptive, args.sims, args.seed, sd_init, sd_train, -effect)
    designs.append({"design": "adaptive (hydra/sweeper=adaptive)", "init_seeds": f"3 + 3 a wave, ≤ {ADAPTIVE_SEEDS}",
                    "train_seeds": 1, "power": sim["power"], "runs_if_no_effect": sim["runs_null"],
                    "fwer": sim["fwer"], "sims": args.sims, **cost(sim["runs_alt"]),
                    "command": _command(experiment, args.baseline, arms, "1,2,3") + " hydra/sweeper=adaptive "
                    f"hydra.sweeper.max_seeds={ADAPTIVE_SEEDS} hydra.sweeper.wave_size=3 "
                    "hydra.sweeper.spending=obrien_fleming "
                    f"hydra.sweeper.alpha={args.alpha:g} hydra.sweeper.min_effect={effect:g}"
                    + (f" hydra.sweeper.baseline={args.baseline}" if args.baseline != "baseline" else "")})
    study = None
    if k == len(simulate.INTERVENTIONS):
        cells, _ = simulate._design("interventions")
        sim = simulate.calibrate_cells(cells, args.sims, args.seed, sd_init, sd_train, -effect)
        study = {"design": "the study's: one run per arm at init 42, 7 baseline noise runs", "init_seeds": 1,
                 "train_seeds": 1, "power": sim["power"], "sims": args.sims, **cost(len(cells))}
    return {"min_effect": effect, "power_target": args.power, "alpha": args.alpha, "interventions": k,
            "noise": {"sd_init": sd_init, "sd_train": sd_train,
                      "source": f"the pilot sweep {args.pilot}, {pilot['n_runs']} runs" if pilot else
                      ("stated" if args.sd_init is not None or args.sd_train is not None else "the study's"),
                      **({f: pilot[f] for f in ("df_init", "df_train", "sd_init_upper", "sd_train_upper")}
                         if pilot else {})},
            "run": {"tokens": tokens, "model": model, "experiment": experiment, "tokens_per_second": speed,
                    "gpus": gpus, "speed_source": speed_source, "gpu_hours": gpu_hours,
                    "usd": gpu_hours * args.price, "price_per_gpu_hour": args.price},
            "designs": designs, "study": study,
            "conservative": _conservative(pilot, k, effect, args) if pilot else None}


def _command(experiment: str | None, baseline: str, arms: list[str], seeds: str) -> str:
    """The command that runs a design: every arm and the baseline at the given init seeds."""
    return (f"python -m gptx.train -m{f' +experiment={experiment}' if experiment else ''} "
            f"intervention={','.join([baseline, *arms])} init_seed={seeds}")


def _conservative(pilot: dict, k: int, effect: float, args) -> dict | None:
    """Seeds of the paired design when σ is at its 95% upper limit: what a pilot's few df can hide."""
    if pilot["sd_train_upper"] is None:
        return None
    n = seeds_for(k, pilot["sd_init_upper"] or pilot["sd_init"], pilot["sd_train_upper"], effect, args.alpha,
                  args.power, True)
    return {"sd_train_upper": pilot["sd_train_upper"], "paired_init_seeds": n}


def _money(x: float) -> str:
    return "n/a" if not math.isfinite(x) else f"${x:,.0f}"


def markdown(p: dict) -> str:
    """plan.md: the noise used, one row a design (power, runs, GPU-hours, money), the study's beside."""
    noise, run = p["noise"], p["run"]
    out = ["# Seed-study plan", "",
           f"Find Δ = {p['min_effect']:g} with {p['power_target']:.0%} power, family-wise α = {p['alpha']:g} over "
           f"{p['interventions']} interventions. Noise ({noise['source']}): σ_init = {noise['sd_init']:.4g}, "
           f"σ_train = {noise['sd_train']:.4g}.", ""]
    if p["conservative"]:
        c = p["conservative"]
        out += [f"The pilot's σ_train has {noise['df_train']:.1f} df: at its 95% upper limit "
                f"({c['sd_train_upper']:.4g}) the paired design needs {c['paired_init_seeds']} init seeds an arm.", ""]
    model = run["model"] or "model not recorded"
    out += [f"A run: {run['tokens']:,} tokens ({model}), {run['tokens_per_second']:,.0f} tokens/s from "
            f"{run['speed_source']}: {run['gpu_hours']:.3g} GPU-hours, {_money(run['usd'])} at "
            f"${run['price_per_gpu_hour']:g} a GPU-hour.", "",
            "| design | init seeds an arm | train seeds | runs | power at Δ | GPU-hours | cost |",
            "| --- | --- | --- | --- | --- | --- | --- |"]
    for d in [*p["designs"], *([p["study"]] if p["study"] else [])]:
        runs = "n/a" if not math.isfinite(d["runs"]) else (f"{d['runs']:.1f} expected" if isinstance(d["runs"], float)
                                                           else str(d["runs"]))
        power = "n/a" if d["power"] is None else f"{d['power']:.2f}" + (" (simulated)" if "sims" in d else "")
        out.append(f"| {d['design']} | {d['init_seeds'] or f'> {MAX_SEEDS}'} | {d['train_seeds']} | {runs} | {power} | "
                   f"{d['gpu_hours']:,.0f} | {_money(d['usd'])} |")
    out += ["", "The commands that run these designs:", "", "```"]
    out += [f"# {d['design']}\n{d['command']}" for d in p["designs"] if d.get("command")]
    out += ["```"]
    adaptive = next((d for d in p["designs"] if "runs_if_no_effect" in d), None)
    out += ["", "One train seed an init seed: in the paired design σ_init cancels, so a second train seed buys "
            "what a second init seed buys, with fewer df; unpaired, a new init seed also averages σ_init."]
    if adaptive:
        out.append(f"The adaptive sweeper's runs are its average over {adaptive['sims']} simulated sweeps with every "
                   f"intervention at Δ; with no effect anywhere it stops after {adaptive['runs_if_no_effect']:.1f} "
                   f"runs on average (false claims in {adaptive['fwer']:.1%} of sweeps).")
    return "\n".join(out) + "\n"


@entry_point()
def main(argv: list[str] | None = None) -> int:
    """Command line: plan, print plan.md and write it with plan.json; a user error is one line, exit 2."""
    parser = ArgumentParser(prog="python -m gptx.plan", description=__doc__.split("\n\n")[0])
    parser.add_argument("pilot", nargs="?", type=Path,
                        help="a pilot sweep folder, or a table of runs, whose noise to plan from")
    parser.add_argument("--min-effect", type=float, default=0.01, help="smallest Δ worth finding (default 0.01)")
    parser.add_argument("--power", type=float, default=0.8, help="power wanted at --min-effect (default 0.8)")
    parser.add_argument("--alpha", type=float, default=0.05, help="family-wise α (default 0.05)")
    parser.add_argument("--arms", type=int, help="interventions compared with the baseline (default: pilot's, else 8)")
    parser.add_argument("--baseline", default="baseline", help="the pilot's baseline arm")
    parser.add_argument("--sd-init", type=float, help="initial-weight noise SD (default: the study's 0.0155)")
    parser.add_argument("--sd-train", type=float, help="training noise SD (default: the study's 0.0058)")
    parser.add_argument("--experiment", help=f"preset whose token budget a run has (default {STUDY_EXPERIMENT}, "
                        "or the pilot's runs)")
    parser.add_argument("--gpu", help="GPU type for the speed from FLOPs (A100, H100, H200)")
    parser.add_argument("--gpus", type=int, default=8, help="GPUs a run (with --gpu; default 8)")
    parser.add_argument("--mfu", type=float, default=0.4, help="model FLOPs utilisation (with --gpu; default 0.4)")
    parser.add_argument("--price", type=float, default=PRICE, help=f"US$ a GPU-hour (default {PRICE})")
    parser.add_argument("--sims", type=int, default=100, help="simulated sweeps for the simulated powers (default 100)")
    parser.add_argument("--seed", type=int, default=0, help="simulation seed")
    parser.add_argument("--out", type=Path, help="folder for plan.md and plan.json")
    args = parser.parse_args(argv)
    for name, ok in (("--min-effect", args.min_effect > 0), ("--power", 0 < args.power < 1),
                     ("--alpha", 0 < args.alpha < 1), ("--gpus", args.gpus >= 1), ("--mfu", 0 < args.mfu <= 1),
                     ("--price", args.price >= 0), ("--sims", args.sims >= 1),
                     ("--arms", args.arms is None or args.arms >= 1)):
        if not ok:
            raise UserError(f"{name} is out of range ({getattr(args, name[2:].replace('-', '_'))})")
    if args.pilot is not None and not args.pilot.exists():
        raise UserError(f"{args.pilot} does not exist")
    p = make_plan(args)
    out = args.out or (Path("gptx-plan") if not args.pilot else
                       tables.report_dir(args.pilot) if tables.is_table(args.pilot) else args.pilot)
    text = markdown(p)
    try:
        write_atomic(out / "plan.json", (json.dumps(jsonable(p), indent=2) + "\n").encode())
        write_atomic(out / "plan.md", text.encode())
    except OSError as e:
        raise UserError(f"cannot write the plan into {out} (--out): {e.strerror or e}") from e
    print(text, end="")
    print(f"\nplan written to {out / 'plan.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
