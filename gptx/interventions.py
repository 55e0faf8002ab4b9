"""Interventions: YAML files in any `intervention/` folder on Hydra's config search path.

An intervention is a file `intervention/NAME.yaml` in gptx's own `conf/`, in `$GPTX_CONFIG_DIR`, in a
`--config-dir` or in a `hydra.searchpath` folder. It names itself under `intervention:` and sets config
keys; it may build on other interventions through its defaults list (`defaults: [lr_schedule]`, then
`train.lr: 0.001`), which is how a built-in one is tried at another value. What each chosen file sets is
read here from the same sources Hydra composed it from, checked against the composed config (a later
override must not undo it), and recorded in the run folder (`.hydra/interventions.yaml`: each file's
text, source and settings), so a reproduction does not need the user's folder to still exist.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import yaml
from omegaconf import OmegaConf

from gptx.config import CONF_DIR, ConfigError, flatten

GROUP = "intervention"
BASELINE = "baseline"
HOW_TO_DEFINE = ("define a new intervention instead: a file intervention/NAME.yaml in $GPTX_CONFIG_DIR "
                 "(default ~/.config/gptx) with `defaults: [{base}]` and the key you change (README: "
                 "'Test your own change')")


@dataclass
class Intervention:
    """One intervention file as composed: what it sets (its defaults included) and where it came from."""

    name: str
    description: str
    settings: dict[str, Any]  # dotted key -> value, its defaults' settings merged under its own
    source: str  # where Hydra found it (file:///…, pkg://…)
    text: str  # the file's YAML
    includes: list[str] = field(default_factory=list)  # interventions named in its defaults list

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()

    def record(self) -> dict[str, Any]:
        """What the run folder keeps of it."""
        return {**asdict(self), "sha256": self.sha256}


def _split(raw: dict[str, Any], name: str, where: str) -> tuple[list[str], str | None, dict[str, Any]]:
    """A file's defaults (intervention names), its own description, and its settings (dotted)."""
    raw = dict(raw)
    defaults = raw.pop("defaults", None) or []
    includes = []
    for entry in defaults if isinstance(defaults, list) else [defaults]:
        if entry == "_self_":
            continue
        if not isinstance(entry, str) or "/" in entry or "=" in entry or ":" in entry:
            raise ConfigError(f"{where}: an intervention's defaults list may only name other interventions "
                              f"(e.g. `defaults: [lr_schedule]`), not {entry!r}")
        includes.append(entry)
    names = raw.pop(GROUP, None)
    description = names.get(name) if isinstance(names, dict) else None
    return includes, description, flatten(raw)


def _file_text(source: Any, path: str, config: Any) -> str:
    """The file's own text when it is a file (or a record of one); else its YAML as loaded (a packaged config)."""
    if isinstance(source, RecordSource):
        return source.text(path)
    base = str(getattr(source, "path", ""))
    if getattr(source, "scheme", lambda: "")() == "file":
        try:
            return (Path(base) / f"{path}.yaml").read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            pass
    return OmegaConf.to_yaml(config)


class SearchPath:
    """Intervention files as Hydra's config sources hold them (the first source that has one wins)."""

    def __init__(self, sources: list[Any] | None = None) -> None:
        if sources is None:
            from hydra.core.global_hydra import GlobalHydra

            found = list(GlobalHydra.instance().config_loader().get_sources())
            # after Hydra's own: the record a run folder keeps (`--config-path RUN_DIR/.hydra` reruns a run
            # whose intervention files are elsewhere or gone), then gptx's own files
            records = [RecordSource(Path(s.path) / "interventions.yaml") for s in found
                       if getattr(s, "scheme", lambda: "")() == "file"]
            sources = found + [r for r in records if r.records] + [FolderSource(CONF_DIR)]
        self.sources = sources
        self._cache: dict[str, Intervention] = {}

    @property
    def loaded(self) -> dict[str, Intervention]:
        """Every intervention file read so far (chosen ones and those their defaults lists named)."""
        return dict(self._cache)

    def load(self, name: str, _seen: tuple[str, ...] = ()) -> Intervention:
        """The intervention NAME with what its defaults set merged under its own settings."""
        if name in self._cache:
            return self._cache[name]
        if name in _seen:
            raise ConfigError(f"intervention {name!r} includes itself through its defaults list")
        path = f"{GROUP}/{name}"
        source = next((s for s in self.sources if s.is_config(path)), None)
        if source is None:
            raise ConfigError(f"unknown intervention {name!r}: no {path}.yaml on the config search path "
                              f"(gptx's conf/, $GPTX_CONFIG_DIR, --config-dir, hydra.searchpath)")
        loaded = source.load_config(path)
        where = f"{source.path}/{path}.yaml"
        raw = OmegaConf.to_container(loaded.config, resolve=False)
        includes, description, own = _split(raw if isinstance(raw, dict) else {}, name, where)
        if description is None:
            raise ConfigError(f"{where} does not name itself: add `intervention: {{{name}: \"what it changes\"}}` "
                              "(the name is how runs and reports call the arm)")
        settings: dict[str, Any] = {}
        for included in includes:
            settings.update(self.load(included, (*_seen, name)).settings)
        settings.update(own)
        if not settings and name != BASELINE:
            raise ConfigError(f"{where} sets nothing: an intervention must change at least one config key")
        found = Intervention(name, str(description), settings, str(source.path),
                             _file_text(source, path, loaded.config), includes)
        self._cache[name] = found
        return found


class FolderSource:
    """A folder of configs read like one of Hydra's file sources (gptx's conf/ when no Hydra app runs)."""

    def __init__(self, folder: Path = CONF_DIR) -> None:
        self.path = str(folder)

    def scheme(self) -> str:
        return "file"

    def is_config(self, path: str) -> bool:
        return (Path(self.path) / f"{path}.yaml").is_file()

    def load_config(self, path: str) -> Any:
        return SimpleNamespace(config=OmegaConf.load(Path(self.path) / f"{path}.yaml"))


class RecordSource:
    """The intervention files a run folder recorded (`.hydra/interventions.yaml`), read like a config source."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        try:
            tree = yaml.safe_load(Path(path).read_text(encoding="utf-8")) if Path(path).is_file() else None
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            tree = None
        self.records = {str(k): v["text"] for k, v in (tree or {}).items()
                        if isinstance(tree, dict) and isinstance(v, dict) and isinstance(v.get("text"), str)}

    def is_config(self, path: str) -> bool:
        group, _, name = path.partition("/")
        return group == GROUP and name in self.records

    def text(self, path: str) -> str:
        return self.records[path.partition("/")[2]]

    def load_config(self, path: str) -> Any:
        return SimpleNamespace(config=OmegaConf.create(yaml.safe_load(self.text(path)) or {}))


def resolve(names: list[str], requested: list[str], search: SearchPath) -> dict[str, Intervention]:
    """The interventions a run applies, from the names the composed `intervention` mapping holds.

    `requested` are the names asked for by choice or override (each must name itself); a name that only
    arrived through another's defaults list (lr_schedule under lr_schedule_peak_1e-3) is not an arm of
    its own and is dropped. Errors are one line naming the file.
    """
    for name in requested:
        search.load(name)
    loaded = {name: search.load(name) for name in names}
    included = {inc for item in loaded.values() for inc in _all_includes(item, search)}
    chosen = {name: item for name, item in loaded.items() if name not in included}
    if len(chosen) > 1:
        chosen.pop(BASELINE, None)
    return chosen


def _all_includes(item: Intervention, search: SearchPath) -> set[str]:
    out: set[str] = set()
    for name in item.includes:
        out |= {name} | _all_includes(search.load(name), search)
    return out


def check_applied(effective: dict[str, Any], interventions: dict[str, dict[str, Any]]) -> None:
    """Fail when a chosen intervention's values were overridden later in composition.

    A choice that silently changes nothing (a preset or the command line setting train.lr after
    lr_schedule set it) is the worst bug a noise study can have, so it is an error, not a warning.
    """
    for name, settings in interventions.items():
        for key, wanted in settings.items():
            if effective.get(key) != wanted:
                raise ConfigError(
                    f"intervention {name!r} sets {key}={wanted!r} but the composed config has "
                    f"{key}={effective.get(key)!r}: a later preset or command-line override undoes it; to try "
                    f"{name} with {key}={effective.get(key)!r}, " + HOW_TO_DEFINE.format(base=name))


def requested_names(task_overrides: list[str], choice: Any) -> list[str]:
    """Intervention names asked for on the command line (`intervention=a`, `intervention=[a,b]`) or chosen."""
    names = [str(choice)] if isinstance(choice, str) else []
    for line in task_overrides:
        key, sep, value = str(line).partition("=")
        if sep and key.lstrip("+~") == GROUP:
            names += [v.strip() for v in value.strip("[]").split(",") if v.strip()]
    return list(dict.fromkeys(names))
