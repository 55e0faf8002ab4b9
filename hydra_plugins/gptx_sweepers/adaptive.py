"""Hydra sweeper that runs seeds in waves and stops each arm once the noise report can decide it.

`python -m gptx.train -m +experiment=interventions_paired_miniature hydra/sweeper=adaptive`

The sweep's `intervention` values are the arms (the baseline among them) and its `init_seed` values,
if any, the first wave's seeds. Wave 1 runs every arm at those seeds; each later wave adds `wave_size`
seeds, new ones, to the baseline and to the arms still undecided, until every arm is decided, each has
`max_seeds`, or `max_runs` / `max_gpu_hours` would be passed. The decisions are
`gptx.analysis.sequential`'s, the same the report prints (docs/analysis.md, "Adaptive sweeps").

A wave is one call of the configured launcher (basic, local_gpus, SLURM), so every run lives in its own
folder of the one sweep. The sweeper keeps no state of its own: after each wave it reads the runs on
disk and replays the plan, so relaunching the same command resumes where the sweep stopped (the runs
already there are not run again). The plan is written to `adaptive.json` in the sweep folder first, and
a relaunch with another plan is refused: changing it mid-sweep would void the error guarantee.
"""

# No `from __future__ import annotations`: Hydra's plugin scan runs this module outside sys.modules,
# where dataclasses cannot resolve string annotations.
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

from gptx.analysis.defaults import ALPHA, DEFAULT_SPENDING, MAX_SEEDS, MIN_EFFECT, WAVE_SIZE
from gptx.errors import exit_with

log = logging.getLogger(__name__)

ARM_KEY, SEED_KEY = "intervention", "init_seed"


@dataclass
class AdaptiveSweeperConf:
    _target_: str = "hydra_plugins.gptx_sweepers.adaptive.AdaptiveSweeper"
    params: dict[str, str] | None = None
    """The sweep, as Hydra's basic sweeper takes it: intervention (the arms) and optionally init_seed
    (the first wave's seeds); any other key must have one value."""
    baseline: str = "baseline"
    """The arm every intervention is compared with; it must be among the intervention values."""
    max_seeds: int = MAX_SEEDS
    """Init seeds an arm gets at most (the last wave's)."""
    first_wave: int | None = None
    """Seeds of the first wave (null: the init_seed values given, else 3)."""
    wave_size: int = WAVE_SIZE
    """Seeds each later wave adds to the arms still undecided."""
    alpha: float = ALPHA
    """Family-wise rate of false better/worse claims, over every arm and look."""
    min_effect: float = MIN_EFFECT
    """An arm stops as smaller than this once its interval at the α that look may spend (α/arms, over the
    looks) lies within ±min_effect: an error-controlled claim, like better/worse."""
    spending: str = DEFAULT_SPENDING
    """How each arm's α is spent over its looks: obrien_fleming (little early, where an arm's own
    differences have few df; more power) or pocock (evenly; stops clear arms sooner)."""
    max_runs: int | None = None
    """Stop before a wave that would bring the sweep past this many runs."""
    max_gpu_hours: float | None = None
    """Stop before a wave whose runs would pass this many device-hours (measured wall time x processes)."""
    metric: str = "test_loss"
    """result.json number compared (lower is better)."""


ConfigStore.instance().store(group="hydra/sweeper", name="adaptive", node=AdaptiveSweeperConf, provider="gptx")


def _refuse(message: str, hydra_context: HydraContext | None = None) -> None:
    """One line on stderr and exit 2, before anything runs (Hydra would print a traceback for an exception).

    gptx's sweep callback has already locked the sweep folder; it is told to write nothing, so a refused
    launch leaves the folder as it found it (or no folder at all)."""
    for callback in getattr(getattr(hydra_context, "callbacks", None), "callbacks", []):
        if hasattr(callback, "abandon"):
            callback.abandon()
    exit_with(f"adaptive sweeper: {message}")


def next_seeds(given: list[int], n: int) -> tuple[int, ...]:
    """`n` init seeds: the ones given, then the smallest positive integers not among them."""
    seeds, candidate = list(given), 1
    while len(seeds) < n:
        if candidate not in seeds:
            seeds.append(candidate)
        candidate += 1
    return tuple(seeds[:n])


class AdaptiveSweeper(Sweeper):
    def __init__(self, params: dict[str, str] | None = None, baseline: str = "baseline",
                 max_seeds: int = MAX_SEEDS, first_wave: int | None = None, wave_size: int = WAVE_SIZE,
                 alpha: float = ALPHA, min_effect: float = MIN_EFFECT, spending: str = DEFAULT_SPENDING,
                 max_runs: int | None = None, max_gpu_hours: float | None = None, metric: str = "test_loss") -> None:
        self.params = dict(params or {})
        self.settings = {"baseline": baseline, "first_wave": first_wave, "wave_size": wave_size, "alpha": alpha,
                         "min_effect": min_effect, "spending": spending, "max_runs": max_runs,
                         "max_gpu_hours": max_gpu_hours, "metric": metric}
        self.max_seeds = max_seeds
        self.config: DictConfig | None = None
        self.launcher = None
        self.hydra_context: HydraContext | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        from hydra.core.plugins import Plugins

        self.hydra_context, self.config = hydra_context, config
        self.launcher = Plugins.instance().instantiate_launcher(hydra_context=hydra_context,
                                                                task_function=task_function, config=config)

    def plan(self, arguments: list[str]):
        """The plan from the sweep's parameters and command line, the fixed overrides, and each arm's value."""
        from gptx.analysis.sequential import Plan
        from gptx.result import arm_name

        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader if self.hydra_context else None)
        overrides = parser.parse_overrides([f"{k}={v}" for k, v in self.params.items()] + list(arguments))
        fixed, arm_values, seeds = [], {}, []
        by_key = {o.get_key_element(): o for o in overrides}  # a command-line value replaces the preset's
        for key, o in by_key.items():
            if key == ARM_KEY:
                values = list(o.sweep_iterator()) if o.is_sweep_override() else [o.value()]
                strings = list(o.sweep_string_iterator()) if o.is_sweep_override() else [o.get_value_element_as_str()]
                arm_values = {arm_name(v): s for v, s in zip(values, strings, strict=True)}
            elif key == SEED_KEY:
                values = list(o.sweep_iterator()) if o.is_sweep_override() else [o.value()]
                if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
                    _refuse(f"init_seed values must be integers, got {o.input_line}", self.hydra_context)
                seeds = list(dict.fromkeys(values))
            elif o.is_sweep_override():
                _refuse(f"it sweeps only intervention and init_seed; {key} has several values "
                        f"({o.input_line}): run one adaptive sweep per value", self.hydra_context)
            else:
                fixed.append(o.input_line)
        baseline = self.settings["baseline"]
        if baseline not in arm_values:
            _refuse(f"the baseline arm `{baseline}` is not among the intervention values "
                    f"({', '.join(arm_values) or 'none given'}); add it, or set hydra.sweeper.baseline",
                    self.hydra_context)
        if len(seeds) > self.max_seeds:
            _refuse(f"{len(seeds)} init seeds given for the first wave, more than max_seeds={self.max_seeds}",
                    self.hydra_context)
        first = self.settings["first_wave"] or (len(seeds) if seeds else 3)
        try:
            plan = Plan(arms=tuple(a for a in arm_values if a != baseline), seeds=next_seeds(seeds, self.max_seeds),
                        **{**self.settings, "first_wave": first})
        except ValueError as e:
            _refuse(str(e), self.hydra_context)
        return plan, fixed, arm_values

    def sweep(self, arguments: list[str]) -> Any:
        from gptx.analysis.runs import load_runs
        from gptx.analysis.sequential import Plan, replay
        from gptx.files import ADAPTIVE_FILE, write_atomic

        plan, fixed, arm_values = self.plan(arguments)
        sweep_dir = Path(self.config.hydra.sweep.dir)
        state_file = sweep_dir / ADAPTIVE_FILE
        if state_file.exists():
            try:
                saved = Plan.from_json(json.loads(state_file.read_text())["plan"])
            except (OSError, ValueError, KeyError, TypeError) as e:
                _refuse(f"cannot read {state_file}: {e}", self.hydra_context)
            if saved != plan:
                changed = sorted(k for k, v in plan.to_json().items() if saved.to_json().get(k) != v)
                _refuse(f"{sweep_dir} is an adaptive sweep with another plan (differs in {', '.join(changed)}); "
                        "changing the plan mid-sweep voids its error guarantee: use a new sweep name",
                        self.hydra_context)

        def save(rep) -> None:
            write_atomic(state_file, (json.dumps(rep.to_json(), indent=2) + "\n").encode())

        returns, launched, job_idx = [], set(), 0
        while True:
            rep = replay(load_runs([sweep_dir], plan.metric, require=False), plan)
            save(rep)
            if rep.next_cells is None:
                break
            again = set(rep.next_cells) & launched
            if again:
                log.error("adaptive sweep: %d run(s) of wave %d did not end (%s); relaunch the same command to "
                          "retry them", len(again), rep.waves_done + 1,
                          ", ".join(f"{a} init_seed={s}" for a, s in sorted(again)[:4]))
                break
            wave = rep.waves_done + 1
            open_arms = sorted({a for a, _ in rep.next_cells} - {plan.baseline})
            log.info("adaptive sweep: wave %d: %d run(s), arms %s", wave, len(rep.next_cells), ", ".join(open_arms))
            batch = [[*fixed, f"{ARM_KEY}={arm_values[a]}", f"{SEED_KEY}={s}"] for a, s in rep.next_cells]
            returns.append(self.launcher.launch(batch, initial_job_idx=job_idx))
            job_idx += len(batch)
            launched |= set(rep.next_cells)
        log.info("adaptive sweep: %s after %d wave(s), %d run(s)", rep.stopped or "stopped", rep.waves_done,
                 rep.runs_used)
        for name, arm in rep.arms.items():
            log.info("  %s: %s%s (%d seeds)%s", name, arm.status, f" at wave {arm.wave}" if arm.wave else "",
                     arm.seeds, f": {arm.why}" if arm.why else "")
        return returns
