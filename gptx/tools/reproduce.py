"""python -m gptx.reproduce RUN_DIR [--strict-env] [--out DIR] [--show-hydra] [--allow-large] [--allow-config-change]

Re-run a completed run from its saved config (same interventions, seeds, data and model) into a new
folder, RUN_DIR/reproductions/<date>_<time>[_N]/, and say IDENTICAL (final weights hash equal, test
loss equal to 6 decimals) or DIFFERENT (the test-loss difference and each differing tensor's max abs
diff). Exit 0 identical, 1 different, 2 when it cannot run: no completed result.json, an unsafe or
invalid saved config, one that no longer hashes to the run's config_sha256 (truncated or edited), the
original folder as target, or --strict-env with a changed environment.
The saved config is read by gptx.saved_config (nothing in it is imported, run or resolved) and the run
goes through `gptx.run.train` directly, under gptx's own settings: `.hydra/hydra.yaml` is ignored.
"""

from __future__ import annotations

import datetime as dt
import errno
import logging
import shutil
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from gptx import components
from gptx.checkpoint import CheckpointError
from gptx.config import ConfigError, GptxConfig, config_sha256, to_plain_dict
from gptx.errors import ArgumentParser, UsageError, entry_point
from gptx.files import (
    CONFIG_FILE,
    INTERVENTIONS_FILE,
    MODEL_FILE,
    REPRODUCTION_FILE,
    REPRODUCTIONS_DIR,
    RESULT_FILE,
    TRAIN_LOG,
    LogFile,
    create_exclusive_dir,
    disk_full,
    write_atomic,
    write_json,
)
from gptx.folders import mark_run_folder
from gptx.hardware import environment
from gptx.model import MAX_PARAMETERS, check_parameter_cap
from gptx.result import RunResult, Status, load_result
from gptx.saved_config import hydra_yaml_report, load_run_config, recorded_interventions
from gptx.tools.compare import (
    CompareError,
    WeightsComparison,
    compare_tensors,
    describe_losses,
    loss_agreement,
    read_tensors,
    weights_file_sha256,
)

# result.json fields that must match for a bitwise reproduction to be expected.
ENV_FIELDS = ("versions.torch", "versions.cuda", "versions.cudnn", "device", "precision", "versions.gptx",
              "versions.git_commit")
# Compared only when both results record them (older results do not).
OPTIONAL_FIELDS = ("data_sha256",)


class ReproduceError(UsageError, ValueError):
    """The run cannot be reproduced as asked; the message says why and what to do."""


class ReproductionFailed(ReproduceError):
    """The reproduction itself raised: a result that differs from the original's (exit 1, not 2)."""

    exit_status = 1


def completed_result(run_dir: Path) -> RunResult:
    """The original's result.json, which must say the run completed and record its weights and loss."""
    path = run_dir / RESULT_FILE
    try:
        result = load_result(path)
    except FileNotFoundError:
        raise ReproduceError(f"{run_dir} has no {RESULT_FILE}: not a finished gptx run") from None
    except (OSError, ValueError) as err:
        raise ReproduceError(f"{path} is unreadable: {err}") from None
    if not result.completed:
        raise ReproduceError(f"{path} says status {result.status!r}: only a completed run can be reproduced")
    if not isinstance(result.final_weights_sha256, str):
        raise ReproduceError(f"{path} records no final_weights_sha256")
    return result


def check_components(original: RunResult, cfg: GptxConfig) -> None:
    """Refuse before running when a component the config names is not installed, or its source is not the
    source the run recorded (result.json `components`): DIFFERENT CODE, nothing to reproduce."""
    components.used(cfg.model, cfg.train)  # an unregistered name: one line naming what is registered
    recorded = original.get("components")
    changed = components.differences(recorded) if isinstance(recorded, dict) else []
    if changed:
        raise ReproduceError(f"DIFFERENT CODE, not run: {'; '.join(changed)}")


def new_reproduction_dir(run_dir: Path, now: dt.datetime | None = None) -> Path:
    """Create RUN_DIR/reproductions/<date>_<time>[_N]/ exclusively (a same-second rerun gets _1, _2, …)."""
    parent = run_dir / REPRODUCTIONS_DIR
    if parent.is_symlink() or (parent.exists() and not parent.is_dir()):
        raise ReproduceError(f"{parent} is not a plain folder; refusing to write through it")
    stamp = (now or dt.datetime.now()).strftime("%Y-%m-%d_%H-%M-%S")
    try:
        return create_exclusive_dir(parent, stamp, limit=1000)
    except FileExistsError as err:
        raise ReproduceError(str(err)) from None


def check_out_dir(out: Path, run_dir: Path) -> None:
    """Refuse an --out that is the original folder, contains it, or is inside it (outside reproductions/)."""
    original, target = run_dir.resolve(), out.resolve()
    if target == original:
        raise ReproduceError(f"refusing to reproduce into the original folder {run_dir}")
    if target in original.parents:
        raise ReproduceError(f"refusing to reproduce into {out}: it contains the original folder {run_dir}")
    if original in target.parents and (original / REPRODUCTIONS_DIR) not in target.parents:
        raise ReproduceError(f"refusing to write {out} inside the original folder; "
                             f"use a folder outside it or under {run_dir / REPRODUCTIONS_DIR}")
    if out.exists() or out.is_symlink():
        raise ReproduceError(f"{out} already exists; a reproduction goes into a new folder")


def create_out_dir(out: Path, run_dir: Path) -> Path:
    """Create the new folder --out names (checked again, then created exclusively)."""
    check_out_dir(out, run_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        out.mkdir()
    except FileExistsError:
        raise ReproduceError(f"{out} already exists; a reproduction goes into a new folder") from None
    return out


def current_environment(cfg: GptxConfig) -> dict[str, Any]:
    """The environment fields train() will record for this config on this machine."""
    from gptx.hardware import resolve_device
    from gptx.precision import resolve_precision

    device = resolve_device(cfg.train.device)
    return {**environment(device), "precision": resolve_precision(cfg.train, device).label}


def environment_differences(original: RunResult | dict[str, Any], current: dict[str, Any]) -> list[dict[str, Any]]:
    """The ENV_FIELDS whose values differ between two result-like dicts."""
    diffs = []
    for dotted in ENV_FIELDS + OPTIONAL_FIELDS:
        was, now = _get(original, dotted), _get(current, dotted)
        if was != now and (dotted in ENV_FIELDS or None not in (was, now)):
            diffs.append({"field": dotted, "original": was, "now": now})
    return diffs


def reproduce(run_dir: Path, out: Path | None = None, strict_env: bool = False,
              show_hydra: bool = False, allow_large: bool = False,
              allow_config_change: bool = False) -> dict[str, Any]:
    """Re-run `run_dir` into a new folder and return the report (also written as reproduction.json)."""
    warnings: list[str] = []

    def warn(message: str) -> None:
        warnings.append(message)
        print(f"warning: {message}", file=sys.stderr)

    if out is not None:
        check_out_dir(out, run_dir)
    original = completed_result(run_dir)
    notes: list[str] = []  # said once the config is known to be the run's: a truncated one misses dozens of keys
    cfg = load_run_config(run_dir, notes.append)
    check_components(original, cfg)
    cfg_matches = config_sha256(to_plain_dict(cfg)) == original.get("config_sha256")
    if not cfg_matches and not allow_config_change:
        missing = sum(" has no " in note for note in notes)
        raise ReproduceError(f"{run_dir / CONFIG_FILE}: the saved config does not match its recorded hash "
                             f"(config_sha256 in {RESULT_FILE}): truncated or edited"
                             + (f" ({missing} keys missing)" if missing else "")
                             + "; restore it, or pass --allow-config-change to run it as it now reads")
    for note in notes:
        warn(note)
    try:
        check_parameter_cap(cfg.model, "the saved config", allow_large)
    except ConfigError as err:
        raise ReproduceError(f"{err}, or pass --allow-large if that is intended") from None
    hydra_lines = hydra_yaml_report(run_dir)
    if show_hydra:
        for line in hydra_lines:
            print(f"note: ignored: {line}", file=sys.stderr)
    if not cfg_matches:
        warn(f"{run_dir / CONFIG_FILE} does not hash to the config_sha256 in {RESULT_FILE}: the saved config "
             "was edited since the run, or this gptx version fills in other defaults (--allow-config-change)")
    env_diffs = environment_differences(original, current_environment(cfg))
    for d in env_diffs:
        warn(f"{d['field']} differs: original {d['original']!r}, now {d['now']!r}")
    if str(_get(original, "versions.git_commit") or "").endswith("-dirty"):
        warn("the original ran from a modified checkout (git_commit ends in -dirty): "
             "code changes cannot be ruled out")
    if strict_env and (env_diffs or not cfg_matches):
        changed = [d["field"] for d in env_diffs] + ([] if cfg_matches else ["config_sha256"])
        raise ReproduceError(f"{', '.join(changed)} differ from the original's; --strict-env refuses "
                             "to reproduce")
    made_parent = out is None and not (run_dir / REPRODUCTIONS_DIR).exists()
    target = None
    try:
        target = create_out_dir(out, run_dir) if out is not None else new_reproduction_dir(run_dir)
        print(f"gptx.reproduce: {run_dir} -> {target}", file=sys.stderr)
        mark_run_folder(target)  # made just now, exclusively: gptx's own run folder
        write_atomic(target / CONFIG_FILE, OmegaConf.to_yaml(to_plain_dict(cfg)).encode())
        recorded = recorded_interventions(run_dir)
        if recorded is not None:  # the intervention files travel with the run, not with the user's folder
            write_atomic(target / INTERVENTIONS_FILE, (run_dir / INTERVENTIONS_FILE).read_bytes())
    except OSError as err:  # a read-only or full disk: one line, and nothing of this reproduction stays
        _remove_new(target, run_dir, made_parent)
        raise ReproduceError(_cannot_write(err, target or out or run_dir / REPRODUCTIONS_DIR)) from None
    report: dict[str, Any] = {
        "original": str(run_dir.resolve()), "reproduction": str(target.resolve()), "verdict": None,
        "strict_env": strict_env, "config_sha256_matches": cfg_matches,
        "environment_differences": env_diffs, "hydra_yaml_ignored": hydra_lines,
    }
    try:
        result = _train_logged(cfg, target, {name: recorded[name] for name in cfg.intervention}
                               if recorded is not None else None)
    except (ConfigError, CheckpointError):
        # Refused before training (say, its data.path is gone): no stub folder stays behind.
        _remove_new(target, run_dir, made_parent)
        raise
    except Exception as err:
        if disk_full(err) or isinstance(err, OSError) and err.errno == errno.EROFS:
            _remove_new(target, run_dir, made_parent)  # a half-written reproduction only takes space
            raise ReproduceError(_cannot_write(err, target)) from None
        report.update(verdict="DIFFERENT", error=f"{type(err).__name__}: {err}",
                      traceback=traceback.format_exc(), warnings=warnings)
        write_json(target / REPRODUCTION_FILE, report)
        raise ReproductionFailed(f"the reproduction failed: {type(err).__name__}: {err} "
                                 f"(traceback in {target / REPRODUCTION_FILE})") from None
    # Fingerprints such as data_sha256 exist only once the run has loaded its data.
    for d in environment_differences(original, result):
        if d["field"] in OPTIONAL_FIELDS:
            warn(f"{d['field']} differs: original {d['original']!r}, now {d['now']!r}")
            env_diffs.append(d)
    verdict, tensors = _verdict(run_dir, target, original, result, cfg, warn)
    report.update(verdict)
    print("\n".join(verdict_lines(report, tensors)))
    report["warnings"] = warnings
    write_json(target / REPRODUCTION_FILE, report)
    return report


def _verdict(run_dir: Path, target: Path, original: RunResult, result: dict[str, Any],
             cfg: GptxConfig, warn: Callable[[str], None]) -> tuple[dict[str, Any], WeightsComparison | None]:
    """The verdict fields of the report, and the tensor comparison when the weights differ.

    IDENTICAL only when the reproduction's weights equal both result.json's hash and the saved file.
    """
    recorded, reproduced = original.final_weights_sha256, result.get("final_weights_sha256")
    original_file = run_dir / MODEL_FILE
    file_sha, file_checked = None, False
    if not original_file.is_file():
        warn(f"{original_file} is missing: comparing against the hash in {RESULT_FILE} only")
        file_checked = True
    else:
        try:
            file_sha = weights_file_sha256(original_file, cfg.model)
            file_checked = True
        except CompareError as err:
            warn(f"{err}; it cannot be checked against {RESULT_FILE}")
    altered = file_sha is not None and file_sha != recorded
    if altered:
        warn(f"{original_file} was altered since the run: its weights hash {_short(file_sha)} is not the "
             f"final_weights_sha256 {_short(recorded)} in {RESULT_FILE}; comparing against the file")
    weights_same = reproduced == recorded and file_checked and not altered
    tensors = None
    if not weights_same and original_file.is_file() and (target / MODEL_FILE).is_file():
        try:
            tensors = compare_tensors(read_tensors(original_file), read_tensors(target / MODEL_FILE))
        except CompareError as err:
            warn(str(err))
    loss = loss_agreement(_float(original.get("test_loss")), _float(result.get("test_loss")))
    identical = result.get("status") == Status.COMPLETED and weights_same and loss["equal_printed"] is True
    return {"verdict": "IDENTICAL" if identical else "DIFFERENT", "status": result.get("status"),
            "error": result.get("error"),
            "init_weights_identical": original.get("init_weights_sha256") == result.get("init_weights_sha256"),
            "weights": {"recorded": recorded, "original_file": file_sha, "original_file_altered": altered,
                        "reproduction": reproduced, "identical": weights_same,
                        "tensors": tensors.to_json() if tensors is not None else None},
            "test_loss": loss}, tensors


def verdict_lines(report: dict[str, Any], tensors: WeightsComparison | None) -> list[str]:
    """The verdict as printed: IDENTICAL or DIFFERENT, then weights, test loss and differing tensors."""
    w = report["weights"]
    lines = [report["verdict"]]
    if report["status"] != Status.COMPLETED:
        lines.append(f"  the reproduction ended {report['status']!r}: {report['error']}")
    lines.append(f"  weights: original {_short(w['recorded'])} (result.json)"
                 + (f", {_short(w['original_file'])} (its {MODEL_FILE})" if w["original_file_altered"] else "")
                 + f", reproduction {_short(w['reproduction'])}" + (" - bit-identical" if w["identical"] else ""))
    if w["reproduction"] != w["recorded"]:
        lines.append("  initial weights identical: the runs parted during training" if report["init_weights_identical"]
                     else "  initial weights differ: the runs parted at model construction or init")
    if w["original_file_altered"] and w["reproduction"] == w["recorded"]:
        lines.append(f"  the reproduction matches the hash recorded in {RESULT_FILE}; the saved file does not")
    lines.append(f"  {describe_losses(report['test_loss'], 'original', 'reproduction')}")
    if tensors is not None:
        lines += tensors.lines("original", "reproduction") or ["  every tensor bit-identical"]
    return lines


def _train_logged(cfg: GptxConfig, target: Path,
                  intervention_settings: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """train() with its log on stderr and in target/train.log, as a Hydra run would have it."""
    from gptx.run import train

    logger = logging.getLogger("gptx")
    fmt = logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    handlers = [logging.StreamHandler(sys.stderr), LogFile(target / TRAIN_LOG)]
    level = logger.level
    for handler in handlers:
        handler.setFormatter(fmt)
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        return train(cfg, target, intervention_settings=intervention_settings)
    finally:
        logger.setLevel(level)
        for handler in handlers:
            logger.removeHandler(handler)
            handler.close()


def _remove_new(target: Path | None, run_dir: Path, made_parent: bool) -> None:
    """Remove a reproduction's folder made by this command (and the reproductions/ folder it made)."""
    if target is not None:
        shutil.rmtree(target, ignore_errors=True)
    if made_parent:
        try:
            (run_dir / REPRODUCTIONS_DIR).rmdir()
        except OSError:
            pass  # never made, or not empty


def _cannot_write(err: BaseException, where: Path) -> str:
    """The one line for a reproduction that a full or read-only disk stopped."""
    if disk_full(err):
        return f"the disk is full ({err}): no reproduction was kept in {where}; free space and rerun"
    place = getattr(err, "filename", None) or where
    why = getattr(err, "strerror", None) or err
    return f"cannot write in {place} ({why}): nothing was changed; pass --out with a folder gptx can write in"


def _get(tree: RunResult | dict[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(tree, (dict, RunResult)):
            return None
        tree = tree.get(part)  # type: ignore[assignment]
    return tree


def _float(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _short(sha: str | None) -> str:
    return f"{sha[:12]}…" if sha else "none"


@entry_point()
def main(argv: list[str] | None = None) -> int:
    """CLI entry: reproduce, print the verdict, return the exit status."""
    parser = ArgumentParser(prog="python -m gptx.reproduce",
                            description="Re-run a completed gptx run; is the result identical?")
    parser.add_argument("run_dir", type=Path, help="the completed run's folder")
    parser.add_argument("--strict-env", action="store_true",
                        help="refuse (exit 2) when torch, CUDA, device, precision, gptx, commit or "
                        "config differ")
    parser.add_argument("--out", type=Path, help="a new folder for the reproduction "
                        "(default RUN_DIR/reproductions/<date>_<time>)")
    parser.add_argument("--allow-large", action="store_true",
                        help=f"reproduce a model of more than {MAX_PARAMETERS:.3g} parameters")
    parser.add_argument("--allow-config-change", action="store_true",
                        help="reproduce a saved config that no longer hashes to the run's config_sha256 "
                        "(edited, or filled in with a newer gptx's defaults); refused by default")
    parser.add_argument("--show-hydra", action="store_true",
                        help="list what the saved .hydra/hydra.yaml would run (it is always ignored)")
    args = parser.parse_args(argv)
    if not args.run_dir.is_dir():
        raise ReproduceError(f"{args.run_dir} is not a folder")
    report = reproduce(args.run_dir, args.out, args.strict_env, args.show_hydra, args.allow_large,
                       args.allow_config_change)
    return 0 if report["verdict"] == "IDENTICAL" else 1


if __name__ == "__main__":
    sys.exit(main())
