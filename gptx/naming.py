"""Run and sweep folder names, and the Hydra callback that gives each launch a folder of its own.

gptx/conf/config.yaml names folders with pure resolvers, so composing or printing a config creates
nothing:

    hydra.run.dir:      outputs/${now:%Y-%m-%d}/${now:%H-%M-%S}
    hydra.sweep.dir:    multirun_outputs/${gptx_sweep_name:${sweep},${now:%Y-%m-%d}/${now:%H-%M-%S}}
    hydra.sweep.subdir: ${gptx_run_subdir:${hydra.job.override_dirname}}

`ExclusiveFolders` (a Hydra callback) then reserves a folder named by the clock as the launch starts,
suffixed `_1`, `_2`, … when that second's is taken, so two launches in one second never share one;
a sweep's reserved name is pinned as a Hydra override, so the launcher, the callbacks and every job
(in this process or on a cluster node) use the same folder. A named sweep (`sweep=NAME`) is not
reserved: running the same command again is how a sweep is finished.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from gptx.files import SWEEP_ROOT, create_exclusive_dir

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}")
_DATED_RE = re.compile(r"\d{4}-\d{2}-\d{2}/\d{2}-\d{2}-\d{2}(_\d+)?")
# Longest run-folder name kept as is; file systems stop at 255 bytes.
_MAX_SUBDIR_BYTES = 200
# Hydra joins `key=value` items with ","; a "," inside a value (a list) is not followed by `key=`.
_OVERRIDE_ITEM_RE = re.compile(r",(?=[A-Za-z0-9_.+/~-]+=)")
_LEADING_KEYS = {key: rank for rank, key in enumerate(
    ("intervention", "init_seed", "train_seed", "data_seed", "replica"))}
_CLOCK = "${now:"  # a folder whose configured name contains this is named by the launch's start time


def sweep_name(name: Any = None, dated: Any = None, root: str | os.PathLike = SWEEP_ROOT) -> str:
    """Check a user's sweep name and return it, relative to `root`; with no name, the `dated` default.

    A dated name (`YYYY-MM-DD/HH-MM-SS[_N]`) is accepted too, to finish a sweep that was not named.
    """
    if name is None:
        return str(dated)
    name = str(name)
    is_dated = _DATED_RE.fullmatch(name) is not None
    if not is_dated and (_NAME_RE.fullmatch(name) is None or _DATE_RE.fullmatch(name)):
        raise ValueError(
            f"sweep={name!r} is not a valid sweep name: use 1-100 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit (or YYYY-MM-DD/HH-MM-SS to finish a dated sweep)"
        )
    real_root = os.path.realpath(root)
    if os.path.commonpath([real_root, os.path.realpath(os.path.join(root, name))]) != real_root:
        raise ValueError(f"sweep={name!r} leads outside {root}/ (through a symlink); pick another name")
    return name


def run_subdir(override_dirname: Any) -> str:
    """Turn Hydra's `override_dirname` into one safe folder name (no `/`, not empty, not too long).

    The study's keys come first (intervention, then the seeds), so they stay readable when a long
    name is cut: `intervention=grad_clip,init_seed=22,model.d_model=32,…`.
    """
    name = "" if override_dirname is None else str(override_dirname)
    if not name:
        return "default"  # a sweep with only excluded keys: one run, named like the config it ran
    items = _OVERRIDE_ITEM_RE.split(name)
    name = ",".join(sorted(items, key=lambda item: _LEADING_KEYS.get(item.split("=", 1)[0], len(_LEADING_KEYS))))
    # Escaping `%` first keeps the mapping one-to-one, so two runs never share a folder.
    name = name.replace("%", "%25").replace("/", "%2F").replace("\0", "%00")
    if len(name.encode()) > _MAX_SUBDIR_BYTES:
        digest = hashlib.sha256(name.encode()).hexdigest()[:16]
        head = name.encode()[: _MAX_SUBDIR_BYTES - 20].decode(errors="ignore")
        name = f"{head}~{digest}"
    return name


def under_root(root: Any, folder: str) -> str:
    """`folder` (outputs, multirun_outputs) inside `output_root`; relative to the working folder when null."""
    return folder if root is None else os.path.join(os.path.expanduser(str(root)), folder)


def register_resolvers() -> None:
    """Register `gptx_sweep_name`, `gptx_run_subdir` and `gptx_under` with OmegaConf (safe to call twice)."""
    OmegaConf.register_new_resolver("gptx_under", under_root, replace=True)
    OmegaConf.register_new_resolver("gptx_sweep_name", sweep_name, replace=True)
    OmegaConf.register_new_resolver("gptx_run_subdir", run_subdir, replace=True)


def reserve(path: Path) -> Path:
    """Create `path`, or `path_1`, `path_2`, … when it is taken, and return the one created."""
    return create_exclusive_dir(path.parent, path.name)


def _named_by_clock(node: DictConfig, key: str) -> bool:
    """Whether the configured (unresolved) folder name contains the launch time."""
    return _CLOCK in str(OmegaConf.to_container(node, resolve=False)[key])


class ExclusiveFolders(Callback):
    """Hydra callback: a folder named by the clock becomes this launch's own before anything runs in it."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Reserve the single run's folder.

        Not under torchrun: every process must name the same folder, so the plain time is kept and rank
        0's choice wins (pass hydra.run.dir to be sure).
        """
        if int(os.environ.get("WORLD_SIZE", "1")) > 1 or not _named_by_clock(config.hydra.run, "dir"):
            return
        reserved = reserve(Path(config.hydra.run.dir))
        with read_write(config.hydra.run):
            config.hydra.run.dir = str(reserved)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Refuse jobs that would share a folder; reserve an unnamed sweep's dated folder and pin it for every job."""
        check_basic_launch(config)
        if config.get("sweep") is not None or not _named_by_clock(config.hydra.sweep, "dir"):
            return
        reserved = str(reserve(Path(config.hydra.sweep.dir)))
        with read_write(config.hydra), open_dict(config.hydra):
            config.hydra.sweep.dir = reserved
            # Each job's config is composed again from the overrides; this one names the reserved folder.
            config.hydra.overrides.hydra.append(f"hydra.sweep.dir={_quoted(reserved)}")


def _quoted(value: str) -> str:
    """`value` as a Hydra override value: bare when it is a plain path, else single-quoted."""
    if re.fullmatch(r"[A-Za-z0-9_./-]+", value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


BASIC_LAUNCHER = "hydra._internal.core_plugins.basic_launcher.BasicLauncher"
BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"


def check_basic_launch(config: DictConfig) -> None:
    """On Hydra's own basic launcher and sweeper, refuse a sweep in which two jobs would share a run folder
    (gptx's launchers check this themselves), before any job runs or any folder is made.

    Each job's folder is named from its overrides as Hydra names it (override_dirname, then
    hydra.sweep.subdir); a subdir naming anything else (say ${hydra.job.num}) is distinct per job anyway.
    """
    hydra_cfg = config.hydra
    if hydra_cfg.launcher.get("_target_") != BASIC_LAUNCHER or hydra_cfg.sweeper.get("_target_") != BASIC_SWEEPER:
        return
    from hydra._internal.config_loader_impl import get_overrides_dirname
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    jobs = [job for batch in BasicSweeper.split_arguments(parser.parse_overrides(list(hydra_cfg.overrides.task)),
                                                          None) for job in batch]
    naming = hydra_cfg.job.config.override_dirname
    subdir = str(OmegaConf.to_container(hydra_cfg.sweep, resolve=False)["subdir"])
    if subdir != "${gptx_run_subdir:${hydra.job.override_dirname}}":
        return
    seen: dict[str, int] = {}
    for idx, job in enumerate(jobs):
        name = run_subdir(get_overrides_dirname(parser.parse_overrides(job), list(naming.exclude_keys),
                                                naming.item_sep, naming.kv_sep))
        if name in seen:  # Hydra turns a callback's exception into a warning: only an exit stops the launch
            print(f"gptx: error: jobs #{seen[name]} and #{idx} would share the run folder {name}: they differ only "
                  "in keys left out of the folder name (hydra.job.config.override_dirname.exclude_keys)",
                  file=sys.stderr)
            raise SystemExit(2)
        seen[name] = idx
