"""Adaptive seed sweeps: waves of init seeds, each arm stopped once it is decided, α spent across the looks.

The procedure (docs/analysis.md, "Adaptive sweeps"), for K interventions compared with the baseline:

- Wave 1 runs every arm at the first `first_wave` init seeds of the plan. Each later wave adds the next
  `wave_size` seeds to the baseline and to every arm still undecided, up to `len(seeds)` seeds an arm.
- After each wave the report's own model (`summary.analyze` on the runs planned so far) gives each arm
  its Δ, unadjusted p and 95% CI. Nothing else is computed here: there is one statistics path.
- **Efficacy**: arm j is called better or worse at look k when p ≤ f(t_k; a) − f(t_{k−1}; a), the α it
  may spend there: t = seeds planned for the arm / seeds at most, f a Lan–DeMets spending function with
  f(1; a) = a (O'Brien–Fleming type by default: almost nothing early, nearly a at the last look), and a
  its share of α: α/m over the m hypotheses not yet rejected (Holm's recycling, see `_efficacy`). The
  levels over the looks sum to at most a, so the family-wise rate of false better/worse claims is ≤ α
  whatever the looks' correlation, the futility stops or the budget do (those only remove chances).
- **Smaller than the minimum effect**, a claim with its own error control: an arm stops so when the
  confidence interval at the α that look may spend (two one-sided tests, α/K an arm spent over the looks
  with the same spending function, K arms) lies inside ±min_effect: the chance of any false "smaller"
  claim over every arm and look is ≤ α. An arm whose plain 95% CI lies inside ±min_effect (but not that
  interval) stops as `stopped for futility (no claim)`: it saves the runs and claims nothing.
- An arm identical to the baseline (every run, any status, with the baseline's final weights and metric
  at the same seeds, at two or more seeds) stops at once.
- Arms still open after the last wave: `no detectable effect`; when max_runs or max_gpu_hours would be
  passed by the next wave the sweep stops there and they stay `undecided (budget)`.

`replay(runs, plan)` is a pure function of the runs on disk and the plan: the sweeper calls it to know
the next wave, `gptx.analyze` to print the same decisions, the simulator to measure the procedure.
"""

import math
from dataclasses import asdict, dataclass, field

from scipy import stats as sps

from gptx.analysis.defaults import ALPHA, DEFAULT_SPENDING, FIRST_WAVE, MAX_SEEDS, MIN_EFFECT, WAVE_SIZE  # noqa: F401 - MAX_SEEDS re-exported
from gptx.analysis.runs import Run
from gptx.analysis.summary import analyze
from gptx.result import FINAL_STATUSES

SPENDING = ("obrien_fleming", "pocock")
OPEN, BUDGET = "open", "undecided (budget)"
SMALLER = "smaller than the minimum effect"
FUTILITY = "stopped for futility (no claim)"



@dataclass(frozen=True)
class Plan:
    """What an adaptive sweep will do, fixed before its first run (changing it mid-sweep is refused).

    Its defaults are the adaptive sweeper's and gptx.plan's (both read them from here: one definition).
    """

    arms: tuple[str, ...]  # the interventions, baseline excluded
    seeds: tuple[int, ...]  # init seeds in the order waves use them; len(seeds) = seeds an arm at most
    baseline: str = "baseline"
    first_wave: int = FIRST_WAVE
    wave_size: int = WAVE_SIZE
    alpha: float = ALPHA
    min_effect: float = MIN_EFFECT
    spending: str = DEFAULT_SPENDING
    max_runs: int | None = None
    max_gpu_hours: float | None = None
    metric: str = "test_loss"

    def __post_init__(self):
        problems = []
        if not self.arms:
            problems.append("no intervention arm to compare with the baseline")
        if self.baseline in self.arms:
            problems.append(f"the baseline `{self.baseline}` is listed among the interventions")
        if len(set(self.seeds)) != len(self.seeds):
            problems.append("init seeds repeat")
        if not 2 <= self.first_wave <= len(self.seeds):
            problems.append(f"first_wave must be 2..{len(self.seeds)} (seeds an arm may get), got {self.first_wave}")
        if self.wave_size < 1:
            problems.append(f"wave_size must be at least 1, got {self.wave_size}")
        if not 0 < self.alpha < 1:
            problems.append(f"alpha must be in (0, 1), got {self.alpha}")
        if not self.min_effect > 0:
            problems.append(f"min_effect must be positive, got {self.min_effect}")
        if self.spending not in SPENDING:
            problems.append(f"spending must be one of {', '.join(SPENDING)}, got {self.spending!r}")
        if self.max_runs is not None and self.max_runs < 1:
            problems.append(f"max_runs must be positive, got {self.max_runs}")
        if self.max_gpu_hours is not None and not self.max_gpu_hours > 0:
            problems.append(f"max_gpu_hours must be positive, got {self.max_gpu_hours}")
        if problems:
            raise ValueError("; ".join(problems))

    def waves(self) -> list[int]:
        """Seeds an arm has after each wave: first_wave, then wave_size more each time, up to len(seeds)."""
        n, out = self.first_wave, []
        while True:
            out.append(min(n, len(self.seeds)))
            if n >= len(self.seeds):
                return out
            n += self.wave_size

    def spent(self, t: float, a: float) -> float:
        """α a hypothesis given the share `a` may have spent by information fraction t: f(0) = 0, f(1) = a."""
        t = min(max(t, 0.0), 1.0)
        if t == 0:
            return 0.0
        if self.spending == "pocock":
            return a * math.log(1 + (math.e - 1) * t)
        return float(2 * sps.norm.sf(sps.norm.isf(a / 2) / math.sqrt(t)))  # O'Brien–Fleming type

    def to_json(self) -> dict:
        return {**asdict(self), "arms": list(self.arms), "seeds": list(self.seeds)}

    @classmethod
    def from_json(cls, d: dict) -> "Plan":
        return cls(**{**d, "arms": tuple(d["arms"]), "seeds": tuple(d["seeds"])})


@dataclass
class Arm:
    """One intervention's course through the waves."""

    status: str = OPEN  # open, better, worse, smaller than the minimum effect, stopped for futility (no
    # claim), identical to the baseline, no detectable effect, undecided (budget)
    wave: int | None = None  # the wave (1-based) whose look decided it
    seeds: int = 0  # seeds planned for it so far
    why: str = ""
    looks: list[dict] = field(default_factory=list)  # per look: wave, seeds, delta, ci, p, level


@dataclass
class Replay:
    """Where an adaptive sweep stands: each arm's course, and the runs the next wave still needs."""

    plan: Plan
    arms: dict[str, Arm]
    waves_done: int
    runs_used: int
    gpu_hours: float
    next_cells: list[tuple[str, int]] | None  # (arm, init_seed) still to run; None when the sweep is over
    stopped: str | None  # why the sweep is over

    def to_json(self) -> dict:
        return {"plan": self.plan.to_json(), "waves_done": self.waves_done, "runs_used": self.runs_used,
                "gpu_hours": self.gpu_hours, "stopped": self.stopped,
                "next_cells": [list(c) for c in self.next_cells] if self.next_cells is not None else None,
                "arms": {a: asdict(s) for a, s in self.arms.items()}}


def _gpu_hours(run: Run) -> float:
    """Device-hours a finished run took: wall time times its processes (GPUs, or CPU processes)."""
    wall, world = run.result.get("wall_seconds"), run.result.get("world_size") or 1
    return float(wall) * int(world) / 3600 if isinstance(wall, (int, float)) and math.isfinite(wall) else 0.0


def _finished(runs: list[Run], plan: Plan) -> dict[tuple[str, int], list[Run]]:
    """The runs that ended (completed, diverged or failed) by (arm, init_seed)."""
    out: dict = {}
    for r in runs:
        if r.status in FINAL_STATUSES and r.seeds[0] in plan.seeds:
            out.setdefault((r.arm, r.seeds[0]), []).append(r)
    return out


def _look(plan: Plan, arm: Arm, e: dict, wave: int, n: int, previous_n: int) -> None:
    """Record one arm's look: its row of the report's summary at this wave."""
    arm.seeds = n
    arm.looks.append({"wave": wave, "seeds": n, "t": n / len(plan.seeds), "t_before": previous_n / len(plan.seeds),
                      "delta": e.get("delta"), "ci": e.get("ci"), "p": e.get("p"), "verdict": e["verdict"],
                      "se": e.get("delta_se"), "df": e.get("df"), "tentative": e.get("tentative", False),
                      "why_not_testable": e.get("why_not_testable")})


def _efficacy(plan: Plan, arms: dict[str, Arm], wave: int) -> None:
    """Call arms better/worse whose p crossed their boundary at any look so far, recycling α Holm's way.

    Each open hypothesis gets α/m (m = hypotheses not yet rejected) and spends it over its looks with
    the spending function. When one is rejected the others' share grows, and their past looks are read
    again against the larger boundaries: the graphical group-sequential procedure of Maurer & Bretz
    (2013) with Bonferroni boundaries, a closed test, so the family-wise error stays ≤ α.
    """
    while True:
        m = sum(a.status not in ("better", "worse") for a in arms.values())
        if m == 0:
            return
        share = plan.alpha / m
        crossed = {}
        for name, arm in arms.items():
            if arm.status != OPEN:
                continue
            for look in arm.looks:
                level = plan.spent(look["t"], share) - plan.spent(look["t_before"], share)
                if look["p"] is not None and look["p"] <= level:
                    crossed[name] = (look, level)
                    break
        if not crossed:
            return
        for name, (look, level) in crossed.items():
            arm = arms[name]
            arm.status, arm.wave = ("better" if look["delta"] < 0 else "worse"), wave
            arm.why = (f"p = {look['p']:.3g} at {look['seeds']} seeds ≤ {level:.3g}, the α that look may spend"
                       f" (α/{m} shared over the looks)")


def _smaller_interval(plan: Plan, look: dict) -> tuple[float, float, float] | None:
    """The look's confidence interval at the α a "smaller" claim may spend there: (low, high, level).

    Two one-sided tests of |Δ| ≥ min_effect, each at level ℓ = f(t_k; α/K) − f(t_{k−1}; α/K) (K arms in
    the plan): the (1 − 2ℓ) interval inside ±min_effect. The levels over an arm's looks add up to α/K and
    over the arms to α, so the chance of any false "smaller" claim (its |Δ| is min_effect or more) is ≤ α.
    """
    if look["se"] is None or look["df"] is None or look["p"] is None:
        return None
    share = plan.alpha / len(plan.arms)
    level = plan.spent(look["t"], share) - plan.spent(look["t_before"], share)
    if level <= 0:
        return None
    half = float(sps.t.isf(level, look["df"])) * look["se"]
    return look["delta"] - half, look["delta"] + half, level


def _stop_or_go_on(plan: Plan, arm: Arm, wave: int, last: bool) -> None:
    """After efficacy: stop an arm that is identical to the baseline, too small to matter, or out of seeds."""
    look = arm.looks[-1]
    small = _smaller_interval(plan, look)
    if look["verdict"] == "identical to the baseline" and not look["tentative"]:
        # the report's rule, no weaker: every run, any status, matches the baseline's weights and metric
        arm.status, arm.wave = look["verdict"], wave
        arm.why = (f"same status, final weights and {plan.metric} as the baseline at all {look['seeds']} seeds")
    elif small is not None and -plan.min_effect < small[0] and small[1] < plan.min_effect:
        arm.status, arm.wave = SMALLER, wave
        arm.why = (f"{100 * (1 - 2 * small[2]):.4g}% CI [{small[0]:+.4f}, {small[1]:+.4f}] inside "
                   f"±{plan.min_effect:g}: each side tested at {small[2]:.3g}, the α that look may spend "
                   f"(α/{len(plan.arms)} an arm over the looks)")
    elif look["ci"] is not None and -plan.min_effect < look["ci"][0] and look["ci"][1] < plan.min_effect:
        # non-binding futility: what the arm could still show is unlikely to reach the planned effect, but
        # one 95% CI among many looks and arms is no error-controlled claim, so none is made
        arm.status, arm.wave = FUTILITY, wave
        arm.why = (f"95% CI [{look['ci'][0]:+.4f}, {look['ci'][1]:+.4f}] inside ±{plan.min_effect:g}: stopped "
                   "to save runs; this claims nothing about the effect")
    elif last:
        arm.status, arm.wave = "no detectable effect", wave
        arm.why = (f"all {look['seeds']} seeds run; p = {look['p']:.3g} never crossed its boundary"
                   if look["p"] is not None else f"all {look['seeds']} seeds run; "
                   f"{look['why_not_testable'] or look['verdict']}")


def replay(runs: list[Run], plan: Plan, cache: dict | None = None) -> Replay:
    """Replay the waves on the runs that exist: each arm's decisions, and the cells the next wave needs.

    `cache` (wave -> looks) lets a caller that only ever adds runs (the simulator) skip re-analysing waves
    whose runs are all in; the result is the same with or without it.
    """
    done = _finished(runs, plan)
    arms = {a: Arm() for a in plan.arms}
    waves = plan.waves()
    planned: set = set()  # (arm, seed) cells of the waves replayed so far
    used = hours = 0.0
    previous_n = 0
    for k, n in enumerate(waves, start=1):
        active = [a for a in plan.arms if arms[a].status == OPEN]
        cells = [(a, s) for a in (plan.baseline, *active) for s in plan.seeds[previous_n:n]]
        missing = [c for c in cells if c not in done]
        if missing:
            spent_runs = sum(len(done[c]) for c in planned if c in done)
            per_run = hours / spent_runs if spent_runs else 0.0
            over = None
            if plan.max_runs is not None and len(planned) + len(cells) > plan.max_runs:
                over = f"max_runs {plan.max_runs}: wave {k} would bring the sweep to {len(planned) + len(cells)} runs"
            elif plan.max_gpu_hours is not None and hours + per_run * len(missing) > plan.max_gpu_hours:
                over = (f"max_gpu_hours {plan.max_gpu_hours:g}: {hours:.3g} spent, wave {k} would add about "
                        f"{per_run * len(missing):.3g}")
            if over:
                for a in active:
                    arms[a].status, arms[a].why = BUDGET, f"budget spent before wave {k} ({over})"
                return Replay(plan, arms, k - 1, int(used), hours, None, f"budget: {over}")
            return Replay(plan, arms, k - 1, int(used), hours, missing, None)
        planned |= set(cells)
        new = [r for c in cells for r in done[c]]
        used += len(new)
        hours += sum(_gpu_hours(r) for r in new)
        key = (k, tuple(sorted((c, tuple(r.value for r in done[c])) for c in planned)))
        if cache is not None and key in cache:
            summary_arms = cache[key]
        else:
            subset = [r for c in planned for r in done[c]]
            summary_arms = analyze(subset, plan.baseline, plan.metric, detail=False)["arms"]
            if cache is not None:
                cache[key] = summary_arms
        for a in active:
            e = summary_arms.get(a) or {"verdict": "not testable", "why_not_testable": "no finished run"}
            _look(plan, arms[a], e, k, n, previous_n)
        _efficacy(plan, arms, k)
        for a in active:
            if arms[a].status == OPEN:
                _stop_or_go_on(plan, arms[a], k, k == len(waves))
        previous_n = n
        if all(arms[a].status != OPEN for a in plan.arms):
            return Replay(plan, arms, k, int(used), hours, None,
                          "every arm decided" if k < len(waves) else f"all {n} seeds run")
    return Replay(plan, arms, len(waves), int(used), hours, None, f"all {len(plan.seeds)} seeds run")


def with_sequential_verdicts(summary: dict, rep: Replay) -> dict:
    """The report's summary with the adaptive procedure's verdicts: after looks at the data along the way,
    the fixed-design Holm test no longer holds its α, so the arms' verdicts are the sequential ones (the
    fixed-design p-values stay, marked nominal) and `adaptive` says which arms stopped when, and why."""
    arms = dict(summary["arms"])
    for name, arm in rep.arms.items():
        if name in arms:
            status = "undecided (sweep not finished)" if arm.status == OPEN else arm.status
            arms[name] = {**arms[name], "verdict_fixed_design": arms[name]["verdict"], "verdict": status,
                          "tentative": False}
    return {**summary, "arms": arms, "adaptive": rep.to_json()}
