"""python -m gptx.train [-m] [model=gpt2_small] [intervention=[grad_clip,qkv_bias]] [init_seed=22,42,67]

One deterministic GPT-2 training run (or, with -m, a Hydra multirun of them). This is the thin Hydra
entry: it validates the composed config, hands it to `gptx.run.train` (the whole run, free of Hydra)
and turns the outcome into an exit status. Under `torchrun --nproc_per_node=N -m gptx.train …` one
run trains on N processes (see gptx.distributed).
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import CompactHydraException, OverrideParseException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict

from gptx import errors
from gptx.config import CONF_DIR, ConfigError, GptxConfig, from_dictconfig, normalize_overrides, register_schema
from gptx.distributed import several_processes
from gptx.files import CONFIG_FILE, HYDRA_FILE, INTERVENTIONS_FILE, OVERRIDES_FILE, disk_full, write_atomic
from gptx.interventions import SearchPath, requested_names, resolve
from gptx.model import check_parameter_cap
from gptx.naming import register_resolvers
from gptx.result import Status
from gptx.run import USER_ERRORS, record_failure, train
from gptx.trackers import check_available

log = logging.getLogger("gptx.train")


def save_hydra_files(run_dir: Path, cfg: DictConfig, interventions: dict[str, Any]) -> None:
    """Write .hydra/{config,hydra,overrides,interventions}.yaml ourselves, only for runs that actually run.

    Hydra would rewrite them on every launch, touching completed runs that a relaunch skips.
    """
    hydra_cfg = HydraConfig.get()
    write_atomic(run_dir / CONFIG_FILE, OmegaConf.to_yaml(cfg).encode())
    write_atomic(run_dir / HYDRA_FILE, OmegaConf.to_yaml({"hydra": hydra_cfg}).encode())
    write_atomic(run_dir / OVERRIDES_FILE, OmegaConf.to_yaml(list(hydra_cfg.overrides.task)).encode())
    # every file read, the chosen ones and those their defaults lists named
    write_atomic(run_dir / INTERVENTIONS_FILE, OmegaConf.to_yaml(
        {name: {**item.record(), "chosen": name in cfg.intervention} for name, item in interventions.items()}
    ).encode())


def chosen_interventions(cfg: DictConfig) -> dict[str, Any]:
    """The interventions this run applies, read from Hydra's config sources; `cfg.intervention` keeps just them.

    A name that arrived only through another intervention's defaults list is dropped from the mapping, so
    the run's arm is the file that was chosen (lr_schedule_peak_1e-3, not lr_schedule+lr_schedule_peak_1e-3).
    """
    hydra_cfg = HydraConfig.get()
    search = SearchPath()
    chosen = resolve(list(cfg.get("intervention") or {}),
                     requested_names(list(hydra_cfg.overrides.task), hydra_cfg.runtime.choices.get("intervention")),
                     search)
    with open_dict(cfg):
        cfg.intervention = {name: item.description for name, item in chosen.items()}
    return {**search.loaded, **chosen}


def refuse_sweep_preset_without_multirun() -> None:
    """A preset that sweeps (hydra.sweeper.params) run without -m would train one run and stop: refuse it."""
    hydra_cfg = HydraConfig.get()
    params = hydra_cfg.sweeper.get("params") if "sweeper" in hydra_cfg else None
    if hydra_cfg.mode != RunMode.MULTIRUN and params:
        preset = hydra_cfg.runtime.choices.get("experiment")
        what = f"experiment={preset}" if preset else "this config"
        raise ConfigError(f"{what} is a sweep (it varies {', '.join(map(str, params))}): run it with -m, "
                          "e.g. python -m gptx.train -m " + (f"experiment={preset}" if preset else "..."))


register_schema()
register_resolvers()


@hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> dict[str, Any] | float | None:
    """Hydra entry: validate, train, and turn the outcome into an exit status."""
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    multirun = HydraConfig.get().mode == RunMode.MULTIRUN

    interventions: dict[str, Any] = {}

    def save_hydra() -> None:
        save_hydra_files(run_dir, cfg, interventions)

    typed: GptxConfig | None = None
    try:
        refuse_sweep_preset_without_multirun()
        check_available(cfg.logger.name)
        interventions = chosen_interventions(cfg)
        settings = {name: interventions[name].settings for name in cfg.intervention}
        typed = from_dictconfig(cfg, settings)
        check_parameter_cap(typed.model, "this config")  # before the folder, the data or the model is touched
        sweep_dir = Path(HydraConfig.get().sweep.dir) if multirun else None
        # A saved config run as the primary config lacks gptx's hydra settings: Hydra wrote .hydra/ itself.
        hydra_wrote = HydraConfig.get().output_subdir
        result = train(typed, run_dir, before_start=save_hydra, record_errors=multirun,
                       intervention_settings=settings, sweep_dir=sweep_dir,
                       launch_files=(str(hydra_wrote),) if hydra_wrote else ())
    except USER_ERRORS as err:
        status = errors.report(err)
        if not multirun:
            raise SystemExit(status) from None
        # In a sweep, one job's bad value must not stop the others: record it and let Hydra go on.
        if typed is None:  # an invalid config never reached train(), which records the rest
            record_failure(run_dir, err, save_hydra)
        end_the_step_if_one_of_several(err)
        raise
    except Exception as err:
        if disk_full(err):
            errors.report(f"the disk is full ({err}); nothing finished was lost: free space in {run_dir} "
                          f"and rerun the same command: {_what_resumes(run_dir)}")
            if not multirun:
                raise SystemExit(1) from None
        log.error("run failed: %s: %s", type(err).__name__, err)
        if multirun:
            end_the_step_if_one_of_several(err)
        raise
    if result.get("skipped"):
        print(f"gptx: skipped {run_dir}: already completed with the same config")
    elif result["status"] != Status.COMPLETED:
        log.error("run %s: %s", result["status"], result.get("error"))
        if not multirun:
            raise SystemExit(1)
    return optimized_value(result, typed.optimized_metric) if typed.optimized_metric else result


def _what_resumes(run_dir: Path) -> str:
    """What the rerun after a full disk starts from, as it will find the folder (never a checkpoint not written)."""
    from gptx.checkpoint import list_checkpoints

    try:
        checkpoints = list_checkpoints(run_dir)
    except OSError:
        checkpoints = []
    if checkpoints:
        return f"it resumes from the newest checkpoint that verifies ({checkpoints[-1].name} is the newest written)"
    return "no checkpoint was written, so it starts over from step 0"


def end_the_step_if_one_of_several(err: Exception) -> None:
    """In a sweep job of several processes (one DDP run as a multi-task SLURM job), exit non-zero.

    Hydra would file the error and let the process end cleanly, while its peers wait at the rendezvous or
    the next collective until the job's time limit; a non-zero exit lets srun (--kill-on-bad-exit, set
    by gptx's SLURM launcher) end them all now. result.json already says why the run failed.
    """
    if several_processes():
        raise SystemExit(1) from err


def optimized_value(result: dict[str, Any], metric: str) -> float:
    """The number a Hydra sweeper optimises: result[metric] for a completed run, else NaN (a failed trial)."""
    value = result.get(metric)
    ok = result.get("status") == Status.COMPLETED and isinstance(value, (int, float)) and not isinstance(value, bool)
    return float(value) if ok else float("nan")


def cli() -> None:
    """The `gptx-train` / `python -m gptx.train` entry: Hydra's, with `+experiment=` taken as `experiment=`,
    and a config Hydra cannot compose (an unknown option, a bad override, a key the schema lacks) as one
    line and exit status 2 instead of Hydra's report and 1."""
    sys.argv = [sys.argv[0], *normalize_overrides(sys.argv[1:])]
    if os.environ.get("HYDRA_FULL_ERROR") == "1":  # the user asked for Hydra's full traces
        main()
        return
    # Hydra prints its own errors and exits 1 (a failed run's status) unless HYDRA_FULL_ERROR is set, its
    # one way to hand an exception to the caller (facebookresearch/hydra#2923); a run's own failures keep
    # their status and traceback.
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        main()
    except CompactHydraException as err:
        from gptx.sweep import abandon_launches_that_ran_nothing

        abandon_launches_that_ran_nothing()
        errors.exit_with(_composition_message(err))
    finally:
        os.environ.pop("HYDRA_FULL_ERROR", None)


def _composition_message(err: CompactHydraException) -> str:
    """Hydra's message, with the override it could not parse and OmegaConf's explanation that it keeps in the
    cause (e.g. the key not in the schema); less the config search path and OmegaConf's full_key lines."""
    message = str(err).split("Config search path:")[0].strip()
    if isinstance(err, OverrideParseException):
        message = f"cannot parse the override {err.override!r}: {message}"
    cause = err.__cause__
    if cause is not None and str(cause) and str(cause) not in message:
        message += ": " + str(cause).strip().splitlines()[0]
    return message


if __name__ == "__main__":
    cli()
