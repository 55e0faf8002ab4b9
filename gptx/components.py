"""Components: the named places where a code change plugs in, and who provides each name.

An extension point (KINDS) is a config key holding a name: `model.mlp=swiglu`. gptx's own implementations
are listed in BUILTIN; an installed package adds more through the Python entry-point group
`gptx.components`, one entry per component, named `KIND.NAME` (`mlp.swiglu = "gptx_swiglu:SwiGLU"`). A
config holds names only, so a saved config can never name a module to import: only what is installed and
registered can run. Each run records, for every component it used, the distribution that provides it,
its version and the sha256 of its source (`provenance`), and `gptx.reproduce` refuses when the installed
source differs.

What each kind is called with (docs/architecture.md, "Extension points"):
- mlp, attention, norm: `cls(cfg: ModelConfig) -> nn.Module` mapping [batch, tokens, d_model] to the same.
- position: `cls(cfg: ModelConfig) -> nn.Module` taking the token embeddings, returning the block input.
- optimizer: `fn(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer`.
- lr_schedule: `fn(step: int, n_steps: int, cfg: TrainConfig) -> float`, a pure function of the step.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import inspect
from importlib.metadata import entry_points, version
from typing import Any

from gptx.config import ConfigError

GROUP = "gptx.components"

# Extension point -> the config key that selects it.
KINDS = {"mlp": "model.mlp", "attention": "model.attention", "norm": "model.norm",
         "position": "model.position", "optimizer": "train.optimizer", "lr_schedule": "train.lr_schedule"}

# gptx's own components: kind -> name -> "module:attribute" (imported when selected, like an entry point).
BUILTIN = {
    "mlp": {"gelu_mlp": "gptx.model:FeedForward", "gelu_exact_mlp": "gptx.model:ExactGeluFeedForward"},
    "attention": {"multi_head": "gptx.model:MultiHeadAttention"},
    "norm": {"layer_norm": "gptx.model:layer_norm"},
    "position": {"learned": "gptx.model:LearnedPosition", "none": "gptx.model:NoPosition"},
    "optimizer": {"adamw": "gptx.model:adamw", "adamw_2d_decay": "gptx.model:adamw_2d_decay"},
    "lr_schedule": {"constant": "gptx.schedule:constant", "cosine": "gptx.schedule:cosine"},
}


@functools.cache
def _installed() -> tuple[Any, ...]:
    """The group's entry points, read once a process (the schedule is looked up every step)."""
    return tuple(entry_points(group=GROUP))


def _plugins(kind: str) -> dict[str, list[Any]]:
    """Entry points registered for `kind`: name -> every entry point claiming it (two is a conflict)."""
    found: dict[str, list[Any]] = {}
    for ep in _installed():
        ep_kind, _, name = ep.name.partition(".")
        if ep_kind == kind and name:
            found.setdefault(name, []).append(ep)
    return found


def registered(kind: str) -> list[str]:
    """Every name `kind` can be set to here: gptx's own, then the installed plugins'."""
    return list(BUILTIN[kind]) + sorted(n for n in _plugins(kind) if n not in BUILTIN[kind])


def _provider(ep: Any) -> str:
    dist = getattr(ep, "dist", None)
    return dist.name if dist is not None else ep.value


def _entry(kind: str, name: str) -> tuple[str, Any]:
    """(distribution name, entry point or "module:attribute") for a registered name; ConfigError otherwise."""
    if kind not in KINDS:
        raise ConfigError(f"no extension point {kind!r}: gptx has {', '.join(KINDS)}")
    claims = _plugins(kind).get(name, [])
    if name in BUILTIN[kind]:
        if claims:
            raise ConfigError(f"{KINDS[kind]}={name} is gptx's own, but {', '.join(map(_provider, claims))} "
                              f"registers it too (entry point {kind}.{name}): uninstall or rename the plugin's")
        return "gptx", BUILTIN[kind][name]
    if len(claims) > 1:
        raise ConfigError(f"{KINDS[kind]}={name} is registered by several packages "
                          f"({', '.join(map(_provider, claims))}): uninstall all but one")
    if not claims:
        raise ConfigError(f"{KINDS[kind]}={name} is not a registered {kind}: this installation has "
                          f"{', '.join(registered(kind))} (a plugin registers more through the entry-point "
                          f"group {GROUP}, README 'Plug in your own code')")
    return _provider(claims[0]), claims[0]


def load(kind: str, name: str) -> Any:
    """The class or function registered as `name` for `kind` (a plugin's module is imported now)."""
    _, target = _entry(kind, name)
    if isinstance(target, str):
        module, _, attribute = target.partition(":")
        return getattr(importlib.import_module(module), attribute)
    try:
        return target.load()
    except Exception as err:  # a broken plugin is the plugin's error, named as such
        raise ConfigError(f"{KINDS[kind]}={name}: the entry point {target.value} of {_provider(target)} "
                          f"failed to load: {type(err).__name__}: {err}") from None


def source_sha256(obj: Any) -> str:
    """sha256 of a component's own source text (the class or function, as inspect.getsource reads it)."""
    return hashlib.sha256(inspect.getsource(obj).encode()).hexdigest()


def provenance(kind: str, name: str) -> dict[str, Any]:
    """Who provides a component and which code it is: distribution, version, object, sha256 of its source."""
    distribution, _ = _entry(kind, name)
    obj = load(kind, name)
    try:
        dist_version = version(distribution)
    except Exception:  # gptx run from a source tree that is not installed
        dist_version = None
    return {"distribution": distribution, "version": dist_version,
            "object": f"{obj.__module__}:{obj.__qualname__}", "source_sha256": source_sha256(obj)}


def selected(model_cfg: Any, train_cfg: Any) -> dict[str, str]:
    """The component name each extension point is set to: {"mlp": "gelu_mlp", …}."""
    sections = {"model": model_cfg, "train": train_cfg}
    return {kind: str(getattr(sections[key.split(".")[0]], key.split(".")[1])) for kind, key in KINDS.items()}


def used(model_cfg: Any, train_cfg: Any) -> dict[str, dict[str, Any]]:
    """Provenance of every component a run uses, keyed `KIND.NAME` (what result.json records)."""
    return {f"{kind}.{name}": {"key": KINDS[kind], **provenance(kind, name)}
            for kind, name in selected(model_cfg, train_cfg).items()}


def differences(recorded: dict[str, Any]) -> list[str]:
    """Why the installed code is not the code a run recorded: one phrase per component that changed."""
    out = []
    for label, was in sorted(recorded.items()):
        kind, _, name = label.partition(".")
        if not isinstance(was, dict):
            continue
        try:
            now = provenance(kind, name)
        except ConfigError as err:
            out.append(str(err))
            continue
        if now["source_sha256"] != was.get("source_sha256"):
            out.append(f"{label} from {now['distribution']} {now['version']}: source sha256 "
                       f"{now['source_sha256'][:12]}… is not the run's {str(was.get('source_sha256'))[:12]}… "
                       f"({was.get('distribution')} {was.get('version')})")
    return out
