"""What a run folder's result.json says: the run's states, the record's fields, and the only reader (torch-free).

result.json is the interface between the rooms of the house: gptx.run writes it (and only it); the launchers,
the sweep callback, the analysis, compare, reproduce and bench read it — all through `load_result` /
`read_result` here, as a `RunResult`. Its fields are declared once, below, in the order they are written;
`to_json` and `from_json` stand side by side, and files written before a field existed are patched in
`from_json` (every field a file lacks reads as None), so no reader carries its own compatibility code.
The one "already done?" rule, `completed_with`, is here too (the run and the launchers both ask it), and
the one walker of a sweep, `find_run_dirs`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from gptx.files import HYDRA_DIR, MODEL_FILE, RESULT_FILE, file_sha256, read_json_object, safetensors_complete


class Status(str, Enum):
    """A run's state: `status` in result.json (written by gptx.run only), and `incomplete` in runs.csv for a
    run that never wrote a final one. A str, so it compares with, and is written as, its value."""

    RUNNING = "running"  # started; a run killed hard keeps this
    COMPLETED = "completed"
    DIVERGED = "diverged"  # a non-finite loss: a finished experiment, its metric unusable
    FAILED = "failed"  # raised: the error is recorded
    INTERRUPTED = "interrupted"  # stopped by a signal after a checkpoint; a relaunch resumes it
    INCOMPLETE = "incomplete"  # runs.csv only: no final result.json (running, interrupted or unreadable)

    __str__ = str.__str__  # f-strings and csv give the value on every Python, as StrEnum does
    __format__ = str.__format__


FINAL_STATUSES = (Status.COMPLETED, Status.DIVERGED, Status.FAILED)  # a run that will not change any more
OK_STATUSES = (Status.COMPLETED, Status.DIVERGED)  # finished experiments: a sweep with only these exits 0


@dataclass
class RunResult:
    """result.json, field by field. Every field is written (null while unknown: a run that failed before its
    model was built has no n_params); the types are what gptx writes, and a reader checks what it relies on
    (a hand-edited or half-copied file can hold anything)."""

    # What the run is: written when it starts.
    status: str | None = None
    intervention: list[str] | None = None  # the applied interventions' names, in the order given
    arm: str | None = None  # their name as one arm: sorted, joined by '+'
    init_seed: int | None = None
    train_seed: int | None = None
    data_seed: int | None = None
    replica: int | None = None
    model: str | None = None
    data: str | None = None
    config_sha256: str | None = None  # gptx.config.config_sha256 of the saved config: what "the same run" means
    world_size: int | None = None
    arm_settings: dict[str, Any] | None = None  # the config keys that make this arm (seeds aside)
    intervention_settings: dict[str, Any] | None = None  # what each intervention's own file sets
    components: dict[str, Any] | None = None  # who provides each component, its version and source sha256
    # Where and how it ran: once the data and the model are built.
    versions: dict[str, Any] | None = None
    hostname: str | None = None
    device: str | None = None
    platform: str | None = None
    precision: str | None = None
    warnings: list[str] | None = None
    data_sha256: str | None = None
    n_params: int | None = None
    init_weights_sha256: str | None = None
    planned_steps: int | None = None
    numerics_version: int | None = None
    allocator: dict[str, Any] | None = None
    sdpa_backend: str | None = None
    # What training gave: at the end of the loop.
    steps: int | None = None
    tokens: int | None = None
    train_loss: float | None = None
    val_loss: float | None = None
    grad_clip_active_steps: int | None = None
    grad_norm_max: float | None = None
    wall_seconds: float | None = None
    error: str | None = None
    diverged_at_step: int | None = None
    init_param_sha256: dict[str, str] | None = None
    # The final outputs.
    test_loss: float | None = None
    test_tokens: int | None = None
    tokens_per_second: float | None = None
    flops_per_token: float | None = None
    peak_flops: float | None = None
    mfu: float | None = None
    final_weights_sha256: str | None = None
    weights_file_sha256: str | None = None
    traceback: str | None = None  # a failure that was not the user's to fix
    # Keys this version does not declare (a newer gptx's, or added by hand): kept, and written back after.
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The JSON object written as result.json: every declared field in order, then the extra keys."""
        return {**{f.name: getattr(self, f.name) for f in _FIELDS}, **self.extra}

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> RunResult:
        """A record from a result.json object, old files patched: a single intervention written as a string
        becomes a list, and a file without `arm` gets the name its interventions give."""
        known = {k: v for k, v in obj.items() if k in _NAMES}
        record = cls(**known, extra={k: v for k, v in obj.items() if k not in _NAMES})
        if isinstance(record.intervention, str):
            record.intervention = [record.intervention]
        if not record.arm and record.intervention:
            record.arm = arm_name(record.intervention)
        return record

    def update(self, values: dict[str, Any] | None = None, **more: Any) -> None:
        """Set fields by name; a name the record does not declare is a mistake in gptx, not a new field."""
        for name, value in {**(values or {}), **more}.items():
            if name not in _NAMES:
                raise AttributeError(f"result.json declares no field {name!r} (gptx.result.RunResult)")
            setattr(self, name, value)

    def get(self, name: str, default: Any = None) -> Any:
        """A field by name (a metric chosen at run time, a column of runs.csv): `default` when the field is
        unknown (null) or not declared and not among the extra keys."""
        value = getattr(self, name) if name in _NAMES else self.extra.get(name)
        return default if value is None else value

    def __bool__(self) -> bool:
        """False for a record nothing was read into (a run folder without a readable result.json), as for
        an empty result.json object."""
        return self.extra != {} or any(getattr(self, f.name) is not None for f in _FIELDS)

    def __getitem__(self, name: str) -> Any:
        """A field by name, as a result.json object would give it (KeyError for a name it would not hold)."""
        if name in _NAMES:
            return getattr(self, name)
        return self.extra[name]

    def copy(self) -> RunResult:
        """An independent copy (the record's containers are not shared)."""
        return RunResult.from_json(self.to_json())

    @property
    def completed(self) -> bool:
        """Whether the run completed (its outputs are all in place)."""
        return self.status == Status.COMPLETED


_FIELDS = tuple(f for f in dataclasses.fields(RunResult) if f.name != "extra")
_NAMES = frozenset(f.name for f in _FIELDS)


def arm_name(intervention: list[str] | str | None) -> str:
    """The arm of a list of intervention names: sorted, joined by '+', 'baseline' dropped beside others."""
    names = {str(n) for n in ([intervention] if isinstance(intervention, str) else intervention or [])}
    return "+".join(sorted(names - {"baseline"} if len(names) > 1 else names)) or "baseline"


def load_result(path: Path) -> RunResult:
    """The result.json at `path` (a run folder, or the file itself): OSError when it cannot be read, and
    ValueError (one line) when it is not a JSON object gptx could have written. The only reader."""
    path = Path(path)
    return RunResult.from_json(read_json_object(path if path.name == RESULT_FILE else path / RESULT_FILE))


def read_result(run_dir: Path) -> RunResult | None:
    """The run's result.json, or None when there is none or it is not a readable JSON object."""
    try:
        return load_result(run_dir)
    except (OSError, ValueError):
        return None


def weights_intact(run_dir: Path, result: RunResult) -> tuple[bool, str]:
    """Whether a completed run's model.safetensors still is what it wrote, and if not, why not.

    Against `weights_file_sha256` in result.json (a streaming hash of the whole file); runs from before that
    field are checked for completeness only (safetensors_complete).
    """
    path = run_dir / MODEL_FILE
    if not path.is_file():
        return False, f"{MODEL_FILE} is missing"
    recorded = result.weights_file_sha256
    if isinstance(recorded, str):
        try:
            if file_sha256(path) == recorded:
                return True, ""
        except OSError as err:
            return False, f"{MODEL_FILE} cannot be read ({err.strerror})"
        return False, f"{MODEL_FILE} does not match the weights_file_sha256 in {RESULT_FILE}"
    if safetensors_complete(path):
        return True, ""
    return False, f"{MODEL_FILE} is truncated or its header is damaged"


def completed_with(run_dir: Path, record: RunResult | None, same_config: Callable[[RunResult], bool]
                   ) -> tuple[bool, str]:
    """Whether the run in `run_dir` is done for this config: completed, `same_config` (the semantic
    config_sha256, so keys that change no number may differ) and its weights still the ones it recorded.
    The rule the run (before it trains) and the launchers (before they submit) both apply; `why` says
    what fails when the run completed with this config but its weights did not survive."""
    if record is None or not record.completed or not same_config(record):
        return False, ""
    return weights_intact(run_dir, record)


def find_run_dirs(path: str | os.PathLike) -> list[Path]:
    """Every run folder at or below `path` — one holding `.hydra/` (a launched run, finished or not) or a
    result.json (results copied without their configs) — sorted. A run folder's own subfolders (its
    reproductions are re-runs, not more seeds) and hidden folders (launcher state) are not searched."""
    runs = []
    for parent, dirs, files in os.walk(path):
        if HYDRA_DIR in dirs or RESULT_FILE in files:
            runs.append(Path(parent))
            dirs.clear()
        else:
            dirs[:] = [d for d in dirs if not d.startswith(".")]
    return sorted(runs)
