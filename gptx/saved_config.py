"""Read the config of a run folder someone else wrote, without running anything it names.

A saved `.hydra/config.yaml` is data from an untrusted source: Hydra would instantiate `_target_`s,
call `hydra.callbacks`, export `hydra.job.env_set`, paste `hydra.launcher.setup` into sbatch scripts
and resolve `${oc.env:SECRET}`. Here the YAML is parsed with a safe loader (no tags, no aliases, no
duplicate keys), every key must be one of gptx's schema fields, no value may interpolate, and only
then is the typed config built and validated. `.hydra/hydra.yaml` is never used, only described on
request; pickles in the folder are never opened.
"""

from __future__ import annotations

import dataclasses
import re
import sys
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from gptx.config import (
    CONF_DIR,
    RETIRED_KEYS,
    ConfigError,
    GptxConfig,
    check_interventions_applied,
    intervention_settings,
    to_plain_dict,
)
from gptx.files import CONFIG_FILE, HYDRA_FILE, INTERVENTIONS_FILE, MODEL_FILE, check_safetensors_header

MAX_YAML_BYTES = 1 << 20
# Files that can run code when loaded: never opened, only reported.
PICKLE_SUFFIXES = (".pt", ".pth", ".pkl", ".pickle", ".ckpt")
FORBIDDEN_KEYS = {
    "_target_": "names code to instantiate",
    "hydra": "is Hydra's own section (callbacks, launcher setup, env_set can run code)",
    "defaults": "would compose other config files",
}
INTERVENTION_NAME = re.compile(r"[A-Za-z0-9_]+")

Warn = Callable[[str], None]


def print_warning(message: str) -> None:
    """Default warning sink: one `warning:` line on stderr."""
    print(f"warning: {message}", file=sys.stderr)


def load_run_config(run_dir: str | Path, warn: Warn = print_warning) -> GptxConfig:
    """The validated config of the run in `run_dir`; ConfigError (one line) when it is not safe or valid.

    Reads `.hydra/config.yaml`, or the `gptx_config` metadata of `model.safetensors` when the folder
    has no config.yaml. Nothing in the folder is imported, executed, resolved or unpickled.
    """
    run_dir = Path(run_dir)
    for path in pickle_files(run_dir):
        warn(f"{path} may hold a pickle; gptx never opens it (weights come only from safetensors)")
    source, text = _saved_config_text(run_dir)
    return config_from_text(text, source, warn, recorded_interventions(run_dir))


def recorded_interventions(run_dir: str | Path) -> dict[str, dict[str, Any]] | None:
    """What each intervention of the run set, as its folder recorded it (`.hydra/interventions.yaml`).

    None when the folder has no record (a run of an older gptx: gptx's own intervention files are used).
    The record is data, checked for shape; it is only ever compared with the saved config.
    """
    path = Path(run_dir) / INTERVENTIONS_FILE
    if not path.is_file():
        return None
    tree = parse_safe_yaml(_read_text(path), path)
    if not isinstance(tree, dict):
        raise ConfigError(f"{path}: expected a mapping of intervention names")
    out = {}
    for name, item in tree.items():
        settings = item.get("settings") if isinstance(item, dict) else None
        if not isinstance(name, str) or not INTERVENTION_NAME.fullmatch(name) or not isinstance(settings, dict):
            raise ConfigError(f"{path}: entry {name!r} is not an intervention record")
        for key, value in settings.items():
            _check_leaf(f"{name}.settings.{key}", value, str(path))
        out[name] = settings
    return out


def config_from_text(text: str, source: str | Path, warn: Warn = print_warning,
                     interventions: dict[str, dict[str, Any]] | None = None) -> GptxConfig:
    """A saved config (YAML text) as plain data: schema keys only, no tags, interpolations or targets.

    `interventions` (from the run folder's record) lists the interventions it may name beside gptx's own,
    with what each sets.
    """
    if len(text) > MAX_YAML_BYTES:  # a weights file's metadata, capped as .hydra/config.yaml is
        raise ConfigError(f"{source} is larger than {MAX_YAML_BYTES} bytes: not a gptx config")
    tree = parse_safe_yaml(text, source)
    if not isinstance(tree, dict):
        raise ConfigError(f"{source}: expected a mapping of config keys, got {type(tree).__name__}")
    for dotted, why in RETIRED_KEYS.items():
        if _pop_dotted(tree, dotted):
            warn(f"{source} has {dotted}, no longer a config key ({why}); ignored")
    missing: list[str] = []
    _check_tree(tree, GptxConfig, "", missing, source, set(interventions or ()))
    for key in missing:
        warn(f"{source} has no {key}; using the current default (saved by an older gptx?)")
    try:
        merged = OmegaConf.merge(OmegaConf.structured(GptxConfig), OmegaConf.create(tree))
        typed: GptxConfig = OmegaConf.to_object(merged)  # type: ignore[assignment]
    except OmegaConfBaseException as err:
        where = f"{err.full_key}: " if getattr(err, "full_key", None) else ""
        raise ConfigError(f"{source}: {where}{_first_line(err)}") from None
    except ConfigError as err:
        raise ConfigError(f"{source}: {err}") from None
    plain = to_plain_dict(typed)
    check_interventions_applied(plain, {name: (interventions or {}).get(name) or intervention_settings(name)
                                        for name in plain.get("intervention", {})})
    return typed


def pickle_files(run_dir: Path) -> list[Path]:
    """Files in the folder (recursively) whose suffix says pickle; listed, never opened."""
    return sorted(p for p in run_dir.rglob("*") if p.suffix.lower() in PICKLE_SUFFIXES and not p.is_dir())


def parse_safe_yaml(text: str, source: str | Path) -> Any:
    """Plain data from YAML: no tags (so no `!!python/...`), no aliases, no duplicate keys."""
    try:
        return yaml.load(text, Loader=_StrictSafeLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as err:
        raise ConfigError(f"{source}: not plain YAML data: {_first_line(err)}") from None
    except RecursionError:  # a config is a few levels deep; thousands are an attack or damage
        raise ConfigError(f"{source}: nested too deeply to be a gptx config") from None


def hydra_yaml_report(run_dir: str | Path) -> list[str]:
    """What `.hydra/hydra.yaml` would have Hydra run (callbacks, launcher, env_set), as text to show.

    Only described, never used: a reproduction runs under gptx's own settings.
    """
    path = Path(run_dir) / HYDRA_FILE
    if not path.is_file():
        return [f"{path}: absent"]
    try:
        tree = parse_safe_yaml(_read_text(path), path)
    except ConfigError as err:
        return [str(err)]
    hydra = tree.get("hydra") if isinstance(tree, dict) else None
    if not isinstance(hydra, dict):
        return [f"{path}: no hydra mapping"]
    lines = []
    callbacks = hydra.get("callbacks") or {}
    for name, spec in (callbacks.items() if isinstance(callbacks, dict) else []):
        target = spec.get("_target_") if isinstance(spec, dict) else spec
        lines.append(f"callback {name}: {target}")
    job = hydra.get("job") if isinstance(hydra.get("job"), dict) else {}
    env_set = job.get("env_set") or {}
    if env_set:
        # Keys only: values may be secrets.
        lines.append(f"env_set: {', '.join(map(str, env_set))}")
    launcher = hydra.get("launcher") if isinstance(hydra.get("launcher"), dict) else {}
    if launcher.get("_target_"):
        lines.append(f"launcher: {launcher['_target_']}")
    if launcher.get("setup"):
        setup = launcher["setup"]
        lines.append(f"launcher setup: {len(setup) if isinstance(setup, list) else 1} shell line(s)")
    return [f"{path}: {line}" for line in lines] or [f"{path}: no callbacks, env_set or launcher setup"]


class _StrictSafeLoader(yaml.SafeLoader):
    """SafeLoader that also refuses aliases (exponential expansion) and duplicate keys (ambiguity)."""

    def compose_node(self, parent, index):  # type: ignore[no-untyped-def]
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(None, None, "aliases (*name) are not allowed", event.start_mark)
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):  # type: ignore[no-untyped-def]
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, typing.Hashable) and key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}",
                                                        key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _saved_config_text(run_dir: Path) -> tuple[str, str]:
    config = run_dir / CONFIG_FILE
    if config.is_file():
        return str(config), _read_text(config)
    weights = run_dir / MODEL_FILE
    if weights.is_file():
        from safetensors import SafetensorError, safe_open

        try:
            check_safetensors_header(weights)
        except (OSError, ValueError) as err:
            raise ConfigError(_first_line(err)) from None
        try:
            with safe_open(str(weights), framework="pt") as f:
                metadata = f.metadata() or {}
        except (OSError, SafetensorError) as err:
            raise ConfigError(f"{weights}: unreadable safetensors header: {_first_line(err)}") from None
        if "gptx_config" in metadata:
            return f"{weights} (gptx_config metadata)", metadata["gptx_config"]
    raise ConfigError(f"{run_dir} has no {CONFIG_FILE} (nor a {MODEL_FILE} with gptx_config metadata)")


def _read_text(path: Path) -> str:
    if path.stat().st_size > MAX_YAML_BYTES:
        raise ConfigError(f"{path} is larger than {MAX_YAML_BYTES} bytes: not a gptx config")
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: unreadable: {err}") from None


def _pop_dotted(tree: dict, dotted: str) -> bool:
    """Remove a dotted key from nested mappings; whether it was there."""
    *parents, leaf = dotted.split(".")
    for key in parents:
        tree = tree.get(key)
        if not isinstance(tree, dict):
            return False
    if leaf not in tree:
        return False
    del tree[leaf]
    return True


def _check_tree(tree: dict, schema: type, prefix: str, missing: list[str], source: str,
                recorded: set[str] = frozenset()) -> None:  # type: ignore[assignment]
    """Every key a schema field, every section a mapping, every leaf a plain value without `${`."""
    hints = typing.get_type_hints(schema)
    fields = {f.name for f in dataclasses.fields(schema)}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if key in FORBIDDEN_KEYS:
            raise ConfigError(f"{source}: key {path!r} is not allowed: it {FORBIDDEN_KEYS[key]}")
        if not isinstance(key, str) or key not in fields:
            raise ConfigError(f"{source}: unknown key {path!r} (not in gptx's config schema)")
        if dataclasses.is_dataclass(hints[key]):
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: {path} must be a mapping, got {_describe(value)}")
            _check_tree(value, hints[key], f"{path}.", missing, source, recorded)
        elif key == "intervention" and not prefix:
            _check_interventions(value, source, recorded)
        else:
            _check_leaf(path, value, source)
    missing.extend(f"{prefix}{name}" for name in sorted(fields - set(tree)))


def _check_interventions(value: Any, source: str, recorded: set[str]) -> None:
    if not isinstance(value, dict):
        raise ConfigError(f"{source}: intervention must be a mapping of name to description")
    known = {p.stem for p in (CONF_DIR / "intervention").glob("*.yaml")} | recorded
    for name, description in value.items():
        if not isinstance(name, str) or not INTERVENTION_NAME.fullmatch(name) or name not in known:
            raise ConfigError(f"{source}: unknown intervention {name!r}; known: {', '.join(sorted(known))}")
        _check_leaf(f"intervention.{name}", description, source)


def _check_leaf(path: str, value: Any, source: str) -> None:
    if isinstance(value, str):
        if "${" in value:
            # The value itself may name a secret's variable; say where, not what.
            raise ConfigError(f"{source}: {path} holds an interpolation ('${{...}}'); saved configs must be "
                              "plain values")
        return
    if value is None or isinstance(value, (bool, int, float)):
        return
    raise ConfigError(f"{source}: {path} must be a plain value, got {_describe(value)}")


def _describe(value: Any) -> str:
    return type(value).__name__


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
