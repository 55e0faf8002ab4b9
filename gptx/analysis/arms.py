"""Arms are configurations: runs that differ in anything but their seeds are different arms.

A run's `intervention` is only a label. Its arm is its config minus the seeds, the repeat index and the
keys that cannot change what is computed (`gptx.config.arm_settings`, recorded in result.json as
`arm_settings`). Two runs with the same label but different arm settings are two arms, named by the keys
where they differ from the study's base config beyond what their interventions set: `lr_high`,
`train.lr=0.0008`, `lr_schedule+train.lr=0.001`. The base config is the sweep's (its study.json,
written by its first launch); without one, a label that holds one configuration keeps its plain name.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

from gptx.files import CONFIG_FILE, STUDY_FILE, sweep_label

BASELINE = "baseline"


def settings_of(result: dict, folder: Path) -> dict[str, Any] | None:
    """A run's arm settings: recorded in result.json, else derived from its saved config; None if neither."""
    from gptx.config import with_added_defaults

    recorded = result.get("arm_settings")
    if isinstance(recorded, dict):
        return with_added_defaults(recorded)  # a record written before a key existed holds its default
    path = Path(folder) / CONFIG_FILE
    try:
        if not path.is_file() or path.stat().st_size > 1 << 20:
            return None
        from gptx.config import arm_settings
        from gptx.saved_config import parse_safe_yaml

        tree = parse_safe_yaml(path.read_text(encoding="utf-8"), path)
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return with_added_defaults(arm_settings(tree)) if isinstance(tree, dict) else None


def _explained(result: dict) -> dict[str, Any]:
    """The keys a run's interventions set, with their values (result.json's record, else gptx's own files)."""
    recorded = result.get("intervention_settings")
    if isinstance(recorded, dict):
        return {k: v for item in recorded.values() if isinstance(item, dict) for k, v in item.items()}
    from gptx.config import ConfigError, intervention_settings

    out: dict[str, Any] = {}
    names = result.get("intervention") or []
    for name in [names] if isinstance(names, str) else names:
        try:
            out.update(intervention_settings(str(name)))
        except (ConfigError, ValueError, OSError):
            continue
    return out


def format_value(value: Any) -> str:
    """A value as a command-line override writes it (null, true, 0.0008, text)."""
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, float) and math.isfinite(value) and value == int(value) and abs(value) < 1e15:
        return repr(value)
    return str(value)


def _same(a: Any, b: Any) -> bool:
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def _key(settings: dict | None) -> str | None:
    return None if settings is None else json.dumps(settings, sort_keys=True)


def read_study_base(paths: list[Path]) -> dict[str, Any] | None:
    """The base config of the sweep analysed, when one folder is given and its first launch recorded it."""
    if len(paths) != 1:
        return None
    try:
        data = json.loads((Path(paths[0]) / STUDY_FILE).read_text())
    except (OSError, ValueError):
        return None
    base = data.get("base_settings") if isinstance(data, dict) else None
    return base if isinstance(base, dict) else None


def name_arms(runs: list, base: dict[str, Any] | None = None) -> list[str]:
    """Set each run's `arm` to its configuration's name; return notes on labels that hold several configs.

    Keys missing from one of two configs (saved by another gptx version) are not counted as differences.
    """
    groups: dict[tuple[str, str | None], list] = defaultdict(list)
    settings: dict[tuple[str, str | None], dict | None] = {}
    for r in runs:
        if not r.result:
            continue
        label = r.label or r.arm
        s = settings_of(r.result, r.folder)
        groups[(label, _key(s))].append(r)
        settings[(label, _key(s))] = s
    by_label: dict[str, list] = defaultdict(list)
    for label, key in groups:
        by_label[label].append(key)
    # runs without settings (old or simulated) join their label's single configuration, if it has one
    for label, keys in by_label.items():
        known = [k for k in keys if k is not None]
        if None in keys and len(known) == 1:
            groups[(label, known[0])] += groups.pop((label, None))
            keys.remove(None)
    reference = base
    base_keys = [k for k in by_label.get(BASELINE, []) if k is not None]
    if reference is None and len(base_keys) == 1:
        reference = settings[(BASELINE, base_keys[0])]
    notes = []
    for label, keys in sorted(by_label.items()):
        split = len([k for k in keys if k is not None]) > 1
        varying = _varying([settings[(label, k)] for k in keys if k is not None]) if split else set()
        names = set()
        for key in keys:
            members = groups.get((label, key), [])
            s = settings[(label, key)]
            if s is None or (reference is None and not split):
                name = label
            else:
                explained = _explained(members[0].result)
                if reference is not None:
                    diff = [k for k in sorted(set(s) & set(reference)) if not _same(s[k], reference[k])
                            and not (k in explained and _same(s[k], explained[k]))]
                else:
                    diff = sorted(k for k in varying if not (k in explained and _same(s[k], explained[k])))
                extra = "+".join(f"{k}={format_value(s[k])}" for k in diff)
                name = (f"{extra}" if label == BASELINE else f"{label}+{extra}") if extra else label
            names.add(name)
            for r in members:
                r.arm = name
        if split:
            why = f" (they differ in {', '.join(sorted(varying))})" if varying else ""
            notes.append(f"runs labelled `{label}` hold {len(names)} configurations{why}: analysed as separate "
                         f"arms {', '.join(f'`{n}`' for n in sorted(names))}")
            if label == BASELINE and reference is None:
                first = sorted(names)[0]
                notes.append(f"no base config is recorded for these runs, so none of them is `{BASELINE}`: "
                             f"name the one to compare with, e.g. --baseline '{first}'")
    return notes


def _varying(configs: list[dict]) -> set[str]:
    """Keys present in every config whose values are not all equal."""
    if not configs:
        return set()
    common = set.intersection(*(set(c) for c in configs))
    return {k for k in common if len({json.dumps(c[k], sort_keys=True) for c in configs}) > 1}


def _equal(a: Any, b: Any) -> bool:
    """Values equal as config values (an override's 4 and a saved 4.0 are one value)."""
    return a == b or _same(a, b) or format_value(a) == format_value(b)


def base_view(result: dict, settings: dict[str, Any]) -> dict[str, Any]:
    """A run's arm settings less the keys its interventions set: what it shares with the study's base."""
    explained = _explained(result)
    return {k: v for k, v in settings.items() if not (k in explained and _same(v, explained[k]))}


def existing_base(runs: list, recorded: dict[str, Any] | None) -> dict[str, Any] | None:
    """The base config a sweep folder holds: its study.json's, else what all its runs share beyond their
    interventions (a sweep from before study.json); None for a folder without runs."""
    if recorded is not None:
        return recorded
    views = [base_view(r.result, s) for r in runs if r.result
             for s in [settings_of(r.result, r.folder)] if s is not None]
    if not views:
        return None
    common = set.intersection(*(set(v) for v in views))
    return {k: views[0][k] for k in common if all(_same(v[k], views[0][k]) for v in views)}


def study_conflicts(old: dict[str, Any], new: dict[str, Any], swept: dict[str, list]) -> list[str]:
    """Keys where a new launch's base config differs from the study a folder holds, as `key: old → new`.

    A swept key whose values include the folder's base value only adds arms the user asked for.
    """
    out = []
    for k in sorted(set(old) & set(new)):
        if _equal(old[k], new[k]) or any(_equal(old[k], v) for v in swept.get(k, ())):
            continue
        out.append(f"{k}={format_value(old[k])} there, {format_value(new[k])} in this launch")
    return out


def missing_baseline(base: dict[str, Any], base_interventions: list[str], swept: dict[str, list]) -> list[str]:
    """What the baseline needs that no run of the launch has: `intervention=baseline` when the launch never
    runs it, and each swept key none of whose values is the base config's."""
    out = []
    if "intervention" in swept:
        if not any(str(v).strip("[] ") in (BASELINE, "") for v in swept["intervention"]):
            out.append(f"intervention={BASELINE}")
    elif [n for n in base_interventions if n != BASELINE]:
        out.append(f"intervention={BASELINE}")
    for key, values in swept.items():
        if key in ("intervention", "init_seed", "train_seed", "data_seed", "replica"):
            continue
        if key in base and not any(_equal(base[key], v) for v in values):
            out.append(f"{key}={format_value(base[key])}")
    return out


UNDECIDED = ("no detectable effect", "not testable")


def _overrides(folder: Path) -> dict[str, str] | None:
    """A run's command-line overrides as {key: value} (its `.hydra/overrides.yaml`), None if unreadable."""
    try:
        from gptx.saved_config import parse_safe_yaml

        lines = parse_safe_yaml((Path(folder) / ".hydra" / "overrides.yaml").read_text(encoding="utf-8"), folder)
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    if not isinstance(lines, list):
        return None
    return {str(k).lstrip("+~"): v for k, _, v in (str(line).partition("=") for line in lines)}


def _shell(item: str) -> str:
    return f"'{item}'" if any(c in item for c in "[]()*?$ '\"") else item


def next_commands(summary: dict, runs: list, sweep_dir: Path) -> dict[str, str]:
    """For each undecided arm, the command that adds the init seeds it needs to the sweep (relaunching skips
    completed runs): the arm and the baseline at its seeds and the new ones, with the sweep's other overrides.

    The number of seeds is the report's planning at σ's estimate (three for an arm with one seed); an arm
    whose runs name keys the baseline's do not (a base value gptx cannot read back) gets no command.
    """
    sweep_dir = Path(sweep_dir)
    if not (sweep_dir / STUDY_FILE).is_file():
        return {}
    sweep = sweep_label(sweep_dir)
    base_runs = [r for r in runs if r.arm == summary["baseline"] and r.included]
    base_over = _overrides(base_runs[0].folder) if base_runs else None
    out = {}
    for arm, e in summary["arms"].items():
        if arm == summary["baseline"] or e.get("verdict") not in UNDECIDED or base_over is None:
            continue
        mine = [r for r in runs if r.arm == arm and r.included and r.seeds[0] is not None]
        if not mine:
            continue
        need = e.get("seeds_needed") or {}
        target = max(3, need.get("seeds_point") or 0) if len(mine) < 2 else need.get("seeds_point") or need.get("seeds")
        over = _overrides(mine[0].folder)
        if not target or over is None or target <= len({r.seeds[0] for r in mine}) or target > 200:
            continue
        seeds = sorted({r.seeds[0] for r in mine})
        candidate = 1
        while len(seeds) < target:
            seeds += [candidate] if candidate not in seeds else []
            candidate += 1
        items, ok = [], True
        for key in dict.fromkeys([*base_over, *over]):
            if key in ("init_seed", "sweep"):
                continue
            a, b = base_over.get(key), over.get(key)
            if key == "intervention":
                items.append(f"intervention={a or BASELINE},{b or BASELINE}" if a != b else f"intervention={a}")
            elif a is None or b is None:
                ok = False  # a key only one side set: its other value is not on record here
            else:
                items.append(f"{key}={a}" if a == b else f"{key}={a},{b}")
        if ok:
            out[arm] = " ".join(["python -m gptx.train -m", f"sweep={sweep}", *map(_shell, items),
                                 "init_seed=" + ",".join(map(str, sorted(seeds)))])
    return out
