"""Which folders are gptx's, and the locks held while a process works in one (torch-free).

A run folder is gptx's when it holds gptx's marker (`.gptx`, written as a run first writes there), or —
for folders made before the marker existed — both a `.hydra/config.yaml` and a `result.json` object
carrying a `config_sha256`. Any other folder that is not empty (Hydra's `train.log`, a launcher's
`console.log` and gptx's own lock file aside) belongs to someone else and is refused before anything is
written, so `hydra.run.dir=.` in a project never touches the project. A run folder inside a sweep folder
is refused unless it is that sweep's (a single run would hide the sweep's runs from its table).

Every lock fails closed: held by another process, a lock file gptx may not open (EACCES), a read-only
disk, a file system without `flock` — each is one line and nothing runs.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from filelock import Timeout, UnixFileLock

from gptx.errors import UsageError
from gptx.files import (
    CHECKPOINT_DIR,
    CONFIG_FILE,
    CONSOLE_LOG,
    LOCK_FILE,
    RUN_LOCK_FILE,
    RUN_MARKER,
    TRAIN_LOG,
)
from gptx.result import read_result

# What a launch itself may have put in a folder before gptx looks at it: Hydra's log, a launcher's
# console log, gptx's lock file. A folder holding nothing else is as good as empty.
_LAUNCH_FILES = {TRAIN_LOG, CONSOLE_LOG, RUN_LOCK_FILE}
_MARKER_TEXT = b"gptx run folder: written, resumed and cleaned by gptx only\n"


class FolderRefused(UsageError, ValueError):
    """A folder gptx will not work in (not its own, another sweep's, or its lock cannot be taken)."""


def is_gptx_run(path: Path) -> bool:
    """Whether `path` is a folder gptx made for a run (its marker, or an older run's signature)."""
    try:
        if (path / RUN_MARKER).is_file():
            return True
        if not (path / CONFIG_FILE).is_file():
            return False
    except OSError:
        return False
    result = read_result(path)
    return result is not None and isinstance(result.config_sha256, str)


def check_run_folder(run_dir: Path, sweep_dir: Path | None = None, launch_files: tuple[str, ...] = ()) -> None:
    """Refuse (FolderRefused) a run folder that is not gptx's, or that lies in a sweep other than `sweep_dir`.

    `launch_files` names what this launch itself already wrote there besides the usual (Hydra's own
    `.hydra/`, when a saved config without gptx's Hydra settings is run).
    """
    if os.path.lexists(run_dir):
        try:
            is_dir = stat.S_ISDIR(os.stat(run_dir).st_mode)
        except OSError as err:  # a symlink loop, a dangling link, a folder gptx may not enter
            raise FolderRefused(f"{run_dir} cannot be opened ({err.strerror}); pick another hydra.run.dir") from None
        if not is_dir:
            raise FolderRefused(f"{run_dir} is not a folder; pick another hydra.run.dir")
    real = Path(os.path.realpath(run_dir))
    if real.is_dir() and not is_gptx_run(real):
        try:
            foreign = sorted(name for name in os.listdir(real) if name not in _LAUNCH_FILES | set(launch_files))
        except OSError as err:
            raise FolderRefused(f"cannot read {run_dir} ({err.strerror}); pick another hydra.run.dir") from None
        if foreign:
            shown = ", ".join(foreign[:3]) + (", …" if len(foreign) > 3 else "")
            raise FolderRefused(
                f"{run_dir} is not a gptx run folder (it holds {shown} and no {RUN_MARKER} marker); gptx only "
                "writes in folders it made: pick a new or empty hydra.run.dir")
    checkpoints = real / CHECKPOINT_DIR
    if os.path.lexists(checkpoints) and (checkpoints.is_symlink() or not checkpoints.is_dir()):
        raise FolderRefused(f"{run_dir / CHECKPOINT_DIR} is not a plain folder, so gptx cannot keep its checkpoints "
                            "there; move it away or pick another hydra.run.dir")
    sweep = _enclosing_sweep(real)
    if sweep is not None and (sweep_dir is None or sweep != Path(os.path.realpath(sweep_dir))):
        raise FolderRefused(
            f"{run_dir} is inside the sweep folder {sweep}: its runs belong to that sweep (finish it with its own "
            "command, `-m sweep=…`); pick a hydra.run.dir outside it")


def check_writable(run_dir: Path) -> None:
    """Refuse a run folder (or, when it does not exist yet, the folder it would be made in) that this process
    cannot write in: a read-only disk or mount, or no permission — before Hydra opens its log there."""
    folder = Path(os.path.abspath(run_dir))
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not os.access(folder, os.W_OK | os.X_OK):
        why = "a read-only file system" if _read_only(folder) else "no permission to write"
        raise FolderRefused(f"cannot write in {folder} ({why}); pick a hydra.run.dir gptx can write in")


def _read_only(folder: Path) -> bool:
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def _enclosing_sweep(real: Path) -> Path | None:
    """The sweep folder `real` lies in (or is); a gptx run folder on the way up ends the search (reproductions)."""
    for folder in (real, *real.parents):
        if (folder / LOCK_FILE).exists():
            return folder
        if folder != real and is_gptx_run(folder):
            return None
    return None


def mark_run_folder(run_dir: Path) -> None:
    """Write gptx's marker into a run folder it is about to write in (once; later calls change nothing)."""
    marker = run_dir / RUN_MARKER
    if marker.is_file():
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(marker, "wb") as f:
        f.write(_MARKER_TEXT)


def take_lock(lock_file: Path, holder: str, advice: str) -> UnixFileLock:
    """Take an exclusive flock on `lock_file` now, or raise FolderRefused; never run unlocked.

    `holder` names what holds it ("run folder X", "sweep folder Y"); `advice` says what to do instead.
    """
    lock = UnixFileLock(lock_file, timeout=0, fallback_to_soft=False, preserve_lock_file=True)
    try:
        lock.acquire()
    except Timeout:
        raise FolderRefused(f"{holder} is in use by another gptx process (it holds {lock_file}); {advice}") from None
    except OSError as err:
        why = err.strerror or str(err)
        raise FolderRefused(f"cannot lock {holder} ({lock_file}: {why}); gptx does not run without its lock: "
                            f"fix the folder's permissions or file system, or {advice}") from None
    return lock


def lock_run_folder(run_dir: Path) -> UnixFileLock:
    """Hold the run folder's lock (created as the folder is, when needed) for as long as a process works in it."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise FolderRefused(f"cannot create the run folder {run_dir} ({err.strerror}); pick another "
                            "hydra.run.dir") from None
    return take_lock(run_dir / RUN_LOCK_FILE, f"run folder {run_dir}",
                     "wait for it to end or pick another hydra.run.dir")
