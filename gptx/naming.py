"""Run and sweep folder names, and the Hydra callback that gives each launch a folder of its own.

gptx/conf/config.yaml names folders with resolvers that create nothing, so composing or printing a
config creates nothing:

    hydra.run.dir:      ${gptx_under:${output_root},outputs}/${now:%Y-%m-%d}/${now:%H-%M-%S}
    hydra.sweep.dir:    ${gptx_under:${output_root},multirun_outputs}/${gptx_sweep_name:${sweep},
                            ${now:%Y-%m-%d}/${now:%H-%M-%S},${gptx_under:${output_root},multirun_outputs}}
    hydra.sweep.subdir: ${gptx_sweep_subdir:${hydra.sweep.dir},${hydra.overrides.task},
                                            ${hydra.job.config.override_dirname},[]}

`ExclusiveFolders` (a Hydra callback) then reserves a folder named by the clock as the launch starts,
suffixed `_1`, `_2`, … when that second's is taken, so two launches in one second never share one;
a sweep's reserved name is pinned as a Hydra override, so the launcher, the callbacks and every job
(in this process or on a cluster node) use the same folder. A named sweep (`sweep=NAME`) is not
reserved: running the same command again is how a sweep is finished.

A run's folder in a sweep is named by the overrides that vary across the sweep (`sweep_subdir`): the
same callback fills in the last argument above, the overrides the multirun gives every job, in the
same way (a pinned override), so the information travels inside every job's config to whichever
process names the folder (see `pin_shared_overrides`).
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.errors import HydraException
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from gptx.errors import exit_with
from gptx.files import OVERRIDES_FILE, SWEEP_ROOT, create_exclusive_dir

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
# hydra.sweep.subdir as gptx sets it: the last argument lists the `key=value` overrides left out (filled in as a
# sweep starts).
_SWEEP_SUBDIR = ("${{gptx_sweep_subdir:${{hydra.sweep.dir}},${{hydra.overrides.task}},"
                 "${{hydra.job.config.override_dirname}},[{items}]}}")
# Characters kept as they are in those items; the rest is %-escaped, so an item is a plain quoted string to
# both Hydra's override parser and OmegaConf's (no quote, backslash, `$` or brace).
_ITEM_SAFE = "._-+:/@~[],="
# The setting before run folders were named by the keys that vary; still understood.
LEGACY_SUBDIR = "${gptx_run_subdir:${hydra.job.override_dirname}}"


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


def sweep_subdir_setting(shared: Iterable[str] = ()) -> str:
    """The `hydra.sweep.subdir` value that leaves the overrides `shared` out of run folder names."""
    return _SWEEP_SUBDIR.format(items=",".join(f'"{item}"' for item in shared))


SWEEP_SUBDIR = sweep_subdir_setting()  # gptx/conf/config.yaml's: nothing left out until a sweep starts


def shared_overrides(hydra_cfg: DictConfig) -> list[str]:
    """The overrides a multirun gives every job, as `key=value` items (see `_item`): the keys whose value,
    on the command line or in `hydra.sweeper.params`, is one plain value.

    As Hydra's sweepers merge them, the command line comes after the params and a later value of a key
    replaces an earlier one (`train.max_steps=4 … train.max_steps=2` is one value, 2). A sweep value (a
    comma list, range(), choice(), glob(), interval()) makes a key vary, and so does a params entry that
    is not one plain value (a search space as a mapping, or a syntax Hydra cannot parse). The items
    hold the value as well as the key, so a job that a sweeper gives another value (as the adaptive
    sweeper gives later waves new `init_seed`s) has it in its folder name; keys a sweeper sets that the
    command did not set at all are never left out. Keys in `override_dirname.exclude_keys` are not
    listed: they are left out anyway.
    """
    params = OmegaConf.select(hydra_cfg, "sweeper.params")
    entries = list(params.items()) if isinstance(params, DictConfig) else []
    occurrences = [(_key(key), None) if OmegaConf.is_config(value) else _occurrence(f"{key}={value}")
                   for key, value in entries]
    occurrences += [_occurrence(str(line)) for line in hydra_cfg.overrides.task]
    excluded = set(hydra_cfg.job.config.override_dirname.exclude_keys)
    return sorted(item for key, item in dict(occurrences).items() if item is not None and key not in excluded)


def _occurrence(line: str) -> tuple[str, str | None]:
    """The key an override line sets and its `key=value` item; None for a sweep or a line Hydra cannot parse."""
    try:
        override = _parse(line)
    except HydraException:
        return _key(line.split("=", 1)[0]), None
    return override.key_or_group, _item(override)


def _key(key: str) -> str:
    """The key an override sets, from its left-hand side (`+key`, `~key`, `key@package`)."""
    return key.lstrip("+~").split("@", 1)[0]


def _item(override: Override) -> str | None:
    """`key=value` for a plain override, its value as Hydra writes it in a job's overrides (so `1e-3` and
    `0.001` are one value), %-escaped outside `_ITEM_SAFE`; None for a sweep."""
    if override.is_sweep_override():
        return None
    key, value = override.key_or_group, override.get_value_element_as_str()
    return f"{quote(key, safe=_ITEM_SAFE)}={quote(value, safe=_ITEM_SAFE)}"


def sweep_subdir(sweep_dir: Any, overrides: Any, naming: Any, shared: Any = ()) -> str:
    """A job's run folder in a sweep: its overrides except those in `shared`, readable and unique.

    `overrides` is the job's `hydra.overrides.task`; `naming` is `hydra.job.config.override_dirname`
    (its `exclude_keys` are left out too); `shared` lists the overrides the multirun gives every job
    (`shared_overrides`: `key=value` items). Names follow `run_subdir` (study keys first, `/`
    escaped, a long name cut and hashed). When nothing varies, every override names the folder, as a
    single run's overrides would. The sweep folder can already hold runs of earlier launches, named by
    other rules, so:

    - a job whose overrides already have a run folder in the sweep (its `.hydra/overrides.yaml` names
      the same overrides, excluded keys aside) goes back to it: relaunching a sweep finishes it, even
      one whose folders were named by all their overrides, or by another launch's varying keys;
    - a job whose short name holds another job's run (an earlier launch gave other keys one value) is
      named by all its overrides instead, so two jobs of one sweep folder never share a run folder.

    Only reads: composing or printing a config creates nothing.
    """
    parsed = [_parse(str(line)) for line in overrides]
    full_dirname = _dirname(parsed, naming)
    full = run_subdir(full_dirname)
    short_dirname = _dirname(_left_in(parsed, shared), naming)
    short = run_subdir(short_dirname) if short_dirname else full
    existing = _runs_by_overrides(str(sweep_dir), naming).get(full_dirname)
    if existing is not None:
        return existing
    held_by = _saved_dirname(Path(str(sweep_dir), short), naming)
    return full if held_by not in (None, full_dirname) else short


def _left_in(overrides: list[Override], shared: Iterable[str]) -> list[Override]:
    """The overrides whose `key=value` is not among `shared`."""
    leave_out = set(shared)
    return [override for override in overrides if _item(override) not in leave_out]


@functools.lru_cache(maxsize=4096)
def _parse(line: str) -> Override:
    """One command-line override, parsed by Hydra (cached: a sweep's jobs repeat the same lines)."""
    return OverridesParser.create().parse_overrides([line])[0]


def _dirname(overrides: list[Override], naming: Any) -> str:
    """Hydra's override_dirname of `overrides`, leaving out `exclude_keys`: the sorted input lines joined by
    item_sep, `=` replaced by kv_sep (as Hydra 1.3's config loader builds it; tests/test_naming.py checks
    this against Hydra's own on every run, so a change in Hydra fails loudly)."""
    excluded = set(naming.exclude_keys)
    lines = sorted(str(o.input_line) for o in overrides if o.key_or_group not in excluded)
    return re.sub("=", str(naming.kv_sep), str(naming.item_sep).join(lines))


def expand_sweep(overrides: list[Override]) -> list[list[str]]:
    """The jobs of a basic sweep: every combination of the discrete sweep values, a later value of a key
    replacing an earlier one (as Hydra's BasicSweeper splits its arguments; checked against it in the tests)."""
    choices: dict[str, list[str]] = {}
    for override in overrides:
        key = override.get_key_element()
        if override.is_sweep_override():
            if not override.is_discrete_sweep():
                raise HydraException(f"BasicSweeper does not support sweep type : {override.value_type.name}")
            choices[key] = [f"{key}={value}" for value in override.sweep_string_iterator()]
        else:
            choices[key] = [f"{key}={override.get_value_element_as_str()}"]
    return [list(job) for job in itertools.product(*choices.values())]


def _saved_dirname(run_dir: Path, naming: Any) -> str | None:
    """The override_dirname of the run a folder holds (from its `.hydra/overrides.yaml`), else None."""
    try:
        saved = yaml.safe_load((run_dir / OVERRIDES_FILE).read_text())
        return _dirname([_parse(str(line)) for line in saved], naming)
    except (OSError, yaml.YAMLError, TypeError, HydraException):
        return None


_scanned: dict[str, tuple[tuple[Any, ...], dict[str, str]]] = {}  # sweep folder -> (its state, runs by dirname)


def _runs_by_overrides(sweep_dir: str, naming: Any) -> dict[str, str]:
    """`{override_dirname: folder name}` for every run folder in a sweep.

    Read again only when the sweep folder changed (its mtime), so planning a thousand jobs reads each
    run's overrides once, not a thousand times.
    """
    try:
        stamp = (os.stat(sweep_dir).st_mtime_ns, tuple(naming.exclude_keys), naming.item_sep, naming.kv_sep)
        names = sorted(entry.name for entry in os.scandir(sweep_dir) if entry.is_dir() and entry.name[0] != ".")
    except OSError:
        return {}
    key = os.path.realpath(sweep_dir)
    if key not in _scanned or _scanned[key][0] != stamp:
        runs: dict[str, str] = {}
        for name in names:
            dirname = _saved_dirname(Path(sweep_dir, name), naming)
            if dirname is not None:
                runs.setdefault(dirname, name)
        _scanned[key] = (stamp, runs)
    return _scanned[key][1]


def under_root(root: Any, folder: str) -> str:
    """`folder` (outputs, multirun_outputs) inside `output_root`; relative to the working folder when null."""
    return folder if root is None else os.path.join(os.path.expanduser(str(root)), folder)


def register_resolvers() -> None:
    """Register gptx's folder-name resolvers with OmegaConf (safe to call twice)."""
    OmegaConf.register_new_resolver("gptx_under", under_root, replace=True)
    OmegaConf.register_new_resolver("gptx_sweep_name", sweep_name, replace=True)
    OmegaConf.register_new_resolver("gptx_sweep_subdir", sweep_subdir, replace=True)
    OmegaConf.register_new_resolver("gptx_run_subdir", run_subdir, replace=True)  # saved configs still name it


def reserve(path: Path) -> Path:
    """Create `path`, or `path_1`, `path_2`, … when it is taken, and return the one created."""
    return create_exclusive_dir(path.parent, path.name)


def _named_by_clock(node: DictConfig, key: str) -> bool:
    """Whether the configured (unresolved) folder name contains the launch time."""
    return _CLOCK in _setting(node, key)


def _setting(node: DictConfig, key: str) -> str:
    """A folder setting as configured, interpolations unresolved."""
    return str(OmegaConf.to_container(node, resolve=False)[key])


class ExclusiveFolders(Callback):
    """Hydra callback: a folder named by the clock becomes this launch's own before anything runs in it,
    and a sweep's run folders are named by the keys that vary across it."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Refuse a run folder that is not gptx's before Hydra writes its log there; reserve a clock-named one.

        Not under torchrun: every process must name the same folder, so the plain time is kept and rank
        0's choice wins (pass hydra.run.dir to be sure).
        """
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            return
        from gptx.folders import FolderRefused, check_run_folder, check_writable

        run_dir, by_clock = Path(config.hydra.run.dir), _named_by_clock(config.hydra.run, "dir")
        try:
            if not by_clock:  # a clock-named folder is new: reserved below, exclusively
                check_run_folder(run_dir)
            check_writable(run_dir)
        except FolderRefused as err:  # Hydra turns a callback's exception into a warning: exit instead
            exit_with(err)
        if by_clock:
            reserved = reserve(run_dir)
            with read_write(config.hydra.run):
                config.hydra.run.dir = str(reserved)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Name run folders by the varying keys; refuse jobs that would share a folder; reserve an unnamed
        sweep's dated folder. Both names are pinned for every job."""
        pin_shared_overrides(config)
        check_basic_launch(config)
        if config.get("sweep") is not None or not _named_by_clock(config.hydra.sweep, "dir"):
            return
        reserved = str(reserve(Path(config.hydra.sweep.dir)))
        _pin(config, "dir", reserved)


def pin_shared_overrides(config: DictConfig) -> None:
    """Leave the overrides every job of this multirun shares out of its run folder names, in every job.

    Hydra composes each job's config again, from the multirun's `hydra.overrides.hydra` plus the job's
    own overrides, in whichever process runs it: this one (basic launcher), a child process (local_gpus)
    or a cluster node (SLURM, where submitit sends the multirun config along). An override appended to
    `hydra.overrides.hydra` therefore reaches every job's config, whatever the launcher, where a Python
    global would not; and written into `hydra.sweep.subdir` itself, what it leaves out is in each
    run's `.hydra/hydra.yaml` next to the name it gave. A `hydra.sweep.subdir` of the user's own is
    left as it is.
    """
    if _setting(config.hydra.sweep, "subdir") != SWEEP_SUBDIR:
        return
    items = shared_overrides(config.hydra)
    if items:
        _pin(config, "subdir", sweep_subdir_setting(items))


def _pin(config: DictConfig, key: str, value: str) -> None:
    """Set `hydra.sweep.<key>` here and, as an override, in the config of every job."""
    with read_write(config.hydra), open_dict(config.hydra):
        config.hydra.sweep[key] = value
        config.hydra.overrides.hydra.append(f"hydra.sweep.{key}={_quoted(value)}")


def _quoted(value: str) -> str:
    """`value` as a Hydra override value: bare when it is a plain path, else single-quoted."""
    if re.fullmatch(r"[A-Za-z0-9_./-]+", value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


# Hydra's own launcher and sweeper, by the `_target_` its configs give them (names only, never imported;
# tests/test_naming.py fails if a Hydra release renames them).
BASIC_LAUNCHER = "hydra._internal.core_plugins.basic_launcher.BasicLauncher"
BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"


def check_basic_launch(config: DictConfig) -> None:
    """On Hydra's own basic launcher and sweeper, refuse a sweep in which two jobs would share a run folder
    (gptx's launchers check this themselves), before any job runs or any folder is made.

    Each job's folder is named as gptx's hydra.sweep.subdir names it, before any folder of an earlier
    launch is taken into account (that only ever gives a job its own folder); a subdir naming anything
    else (say ${hydra.job.num}) is distinct per job anyway.
    """
    hydra_cfg = config.hydra
    if hydra_cfg.launcher.get("_target_") != BASIC_LAUNCHER or hydra_cfg.sweeper.get("_target_") != BASIC_SWEEPER:
        return
    subdir, shared = _setting(hydra_cfg.sweep, "subdir"), shared_overrides(hydra_cfg)
    if subdir in (SWEEP_SUBDIR, LEGACY_SUBDIR):
        leave_out = []
    elif subdir == sweep_subdir_setting(shared):
        leave_out = shared
    else:
        return
    params = hydra_cfg.sweeper.get("params") or {}
    lines = [f"{key}={value}" for key, value in params.items()] + list(hydra_cfg.overrides.task)
    try:  # as BasicSweeper.sweep splits them: the preset's params first, then the command line
        jobs = expand_sweep([_parse(line) for line in lines])
    except HydraException:
        return  # Hydra reports a bad sweep itself, in its own words
    naming = hydra_cfg.job.config.override_dirname
    seen: dict[str, int] = {}
    for idx, job in enumerate(jobs):
        parsed = [_parse(line) for line in job]
        name = run_subdir(_dirname(_left_in(parsed, leave_out), naming) or _dirname(parsed, naming))
        if name in seen:  # Hydra turns a callback's exception into a warning: only an exit stops the launch
            exit_with(f"jobs #{seen[name]} and #{idx} would share the run folder {name}: they differ only "
                      "in keys left out of the folder name (hydra.job.config.override_dirname.exclude_keys)")
        seen[name] = idx
