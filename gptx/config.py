"""The typed configuration schema: every key a user can set, validated once at the entry point.

YAML files under `gptx/conf/` carry values; these dataclasses say which keys exist, their types and
their meaning (the docstring under each field is the user's reference). A typo such as `trian.lr=…`
fails when Hydra composes the config, and nonsense values fail in `__post_init__` before any training.
"""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import inspect
import json
import logging
import math
import sys
import textwrap
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf, open_dict

from gptx.errors import UsageError

CONF_DIR = Path(__file__).resolve().parent / "conf"

# Keys that say where or how a run is filed or saved, not what it computes: left out of
# `config_sha256`, so changing them never orphans a checkpoint or a completed run, and out of a run's arm
# (docs/analysis.md, "Inputs"). The one list of them.
NON_SEMANTIC_KEYS = ("sweep", "overwrite", "train.checkpoint_every", "train.checkpoint_minutes", "logger",
                     "optimized_metric", "output_root")


# Keys an older gptx saved that are no longer in the schema: dropped with a warning, so old folders still load
# (by gptx.reproduce, and by `--config-path RUN_DIR/.hydra`).
RETIRED_KEYS = {"train.fail_at_step": "the NaN fault hook moved to the environment (GPTX_FAULT=nan@STEP)"}


# The longest train.sample_tokens: sample.txt is a smoke test of one forward pass a token (GPT-2's context, twice).
MAX_SAMPLE_TOKENS = 2048
# result.json numbers a Hydra sweeper may optimise through `optimized_metric`.
OPTIMIZABLE_METRICS = ("test_loss", "val_loss", "train_loss", "tokens_per_second", "wall_seconds")


def normalize_overrides(overrides: list[str]) -> list[str]:
    """`+experiment=NAME` as `experiment=NAME`: the preset group has a null default, so Hydra wants no `+`,
    while the `+` form is what older commands and docs use. Both work."""
    return [o[1:] if o.startswith("+experiment=") else o for o in overrides]


class ConfigError(UsageError, ValueError):
    """A setting has a value gptx cannot run with; the message names the setting."""


class InitScheme(str, Enum):
    per_parameter = "per_parameter"
    sequential = "sequential"


class InitDistribution(str, Enum):
    pytorch = "pytorch"
    nanogpt = "nanogpt"


class DataOrder(str, Enum):
    permutation = "permutation"
    random_offsets = "random_offsets"


class DataFormat(str, Enum):
    text = "text"
    tokens = "tokens"


class Tokenizer(str, Enum):
    gpt2 = "gpt2"
    char = "char"


class SplitOrder(str, Enum):
    train_val_test = "train_val_test"
    train_test_val = "train_test_val"


class AmpDtype(str, Enum):
    bf16 = "bf16"
    fp16 = "fp16"


class LoggerKind(str, Enum):
    none = "none"
    tensorboard = "tensorboard"
    wandb = "wandb"
    mlflow = "mlflow"


class DeviceKind(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


@dataclass
class ModelConfig:
    name: str = "gpt2_tiny"
    """Preset name, recorded in results."""
    vocab_size: int = 50257
    """Vocabulary size (GPT-2's BPE has 50257 tokens)."""
    context_length: int = 128
    """Longest sequence the model can read (size of the learned positional embedding)."""
    d_model: int = 128
    """Width of the residual stream (Raschka's `emb_dim`)."""
    n_heads: int = 4
    """Attention heads per layer; must divide d_model."""
    n_layers: int = 2
    """Number of transformer blocks."""
    dropout: float = 0.1
    """Dropout on embeddings, attention weights and residual branches."""
    qkv_bias: bool = False
    """Bias on the query/key/value projections."""
    weight_tying: bool = False
    """Share the output head's matrix with the token embedding."""
    init_scheme: InitScheme = InitScheme.per_parameter
    """per_parameter: each parameter drawn from its own stream seeded by (init_seed, name), so
    interventions leave shared parameters identical; sequential: one stream in construction order
    (the study's behaviour)."""
    init: InitDistribution = InitDistribution.pytorch
    """The distributions initial weights are drawn from. pytorch: each module's own reset_parameters (the
    study's); nanogpt: every Linear and Embedding weight N(0, 0.02), the residual projections (the last Linear
    of each block's attention and MLP) N(0, 0.02/sqrt(2 n_layers)), biases 0 (needs init_scheme=per_parameter)."""
    bias: bool = True
    """Biases on the Linear layers and LayerNorms (false: none anywhere, as nanoGPT's bias=False)."""
    mlp: str = "gelu_mlp"
    """The MLP of each block, a registered component: gelu_mlp (4x wide, tanh GELU), gelu_exact_mlp (the same
    with the exact erf GELU, as nanoGPT), or a plugin's."""
    attention: str = "multi_head"
    """The attention of each block, a registered component: multi_head (causal, Q/K/V separate), or a
    plugin's."""
    norm: str = "layer_norm"
    """The norm before attention, before the MLP and before the head, a registered component: layer_norm,
    or a plugin's."""
    position: str = "learned"
    """The position encoding applied to the token embeddings, a registered component: learned (GPT-2's
    absolute embedding), none (NoPE, or positions handled inside a plugin's attention), or a plugin's."""

    def __post_init__(self) -> None:
        _positive("model.vocab_size", self.vocab_size)
        _positive("model.context_length", self.context_length)
        _positive("model.d_model", self.d_model)
        _positive("model.n_heads", self.n_heads)
        _positive("model.n_layers", self.n_layers)
        if self.d_model % self.n_heads:
            raise ConfigError(
                f"model.d_model={self.d_model} must be divisible by model.n_heads={self.n_heads}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"model.dropout={self.dropout} must be in [0, 1)")
        if not self.bias and self.qkv_bias:
            raise ConfigError("model.bias=false removes every bias, model.qkv_bias=true asks for some: choose one")
        if self.init is InitDistribution.nanogpt and self.init_scheme is not InitScheme.per_parameter:
            raise ConfigError("model.init=nanogpt needs model.init_scheme=per_parameter")


@dataclass
class DataConfig:
    name: str = "shakespeare"
    """Preset name, recorded in results."""
    format: DataFormat = DataFormat.text
    """text: one UTF-8 file tokenized at start-up and split by position; tokens: a directory of
    pre-tokenized uint16 files (nanoGPT's raw .bin or llm.c's headered .bin)."""
    path: str | None = None
    """text: the file (null = the bundled Tiny Shakespeare); tokens: the directory holding
    `*train*.bin`, `*val*.bin` and optionally `*test*.bin`."""
    tokenizer: Tokenizer = Tokenizer.gpt2
    """How text maps to token ids (to read a text corpus and to encode prompts and decode samples):
    gpt2: GPT-2's byte-pair encoding (50257 tokens); char: one token per character of data.vocab."""
    vocab: str | None = None
    """tokenizer=char: the characters, id i being the i-th (shakespeare_char: the corpus's 65 distinct
    characters, sorted). Saved with the run's config, so its samples and evaluations decode with it."""
    split_order: SplitOrder = SplitOrder.train_val_test
    """text format: the order of the three splits along the corpus. train_val_test: validation is the
    val_fraction after the training part, test the test_fraction at the end. train_test_val: validation
    is every token from int(n * (1 - val_fraction)) to the end (nanoGPT's cut), test the
    int(n * test_fraction) tokens just before it."""
    val_fraction: float = 0.05
    """text format: share of tokens used for validation (where: data.split_order)."""
    test_fraction: float = 0.05
    """text format: share of tokens kept as the fixed test set (where: data.split_order)."""
    test_sequences: int | None = None
    """Use only the first N test sequences (null = every full sequence of the test split)."""
    order: DataOrder = DataOrder.permutation
    """How training batches are drawn. permutation: the training split cut into non-overlapping sequences,
    shuffled each epoch by data_seed (corpus order without one); random_offsets: windows at uniformly random
    token offsets, with replacement, drawn from (data_seed, step) (nanoGPT's get_batch; needs a data_seed)."""

    def __post_init__(self) -> None:
        for key in ("val_fraction", "test_fraction"):
            value = getattr(self, key)
            if not 0.0 < value < 0.5:
                raise ConfigError(f"data.{key}={value} must be in (0, 0.5)")
        if self.test_sequences is not None:
            _positive("data.test_sequences", self.test_sequences)
        if self.format is DataFormat.tokens and not self.path:
            raise ConfigError("data.path must name a directory of token files when data.format=tokens")
        if self.tokenizer is Tokenizer.char:
            if not self.vocab:
                raise ConfigError("data.tokenizer=char needs data.vocab: the characters, in id order")
            if len(set(self.vocab)) != len(self.vocab):
                raise ConfigError(f"data.vocab repeats a character: {self.vocab!r}")
        elif self.vocab is not None:
            raise ConfigError("data.vocab is only read with data.tokenizer=char: leave it null")


@dataclass
class TrainConfig:
    batch_size: int = 8
    """Sequences per optimizer step, across all micro-batches (and, later, all GPUs)."""
    micro_batch_size: int | None = None
    """Sequences per forward/backward pass (null = each process's whole share of batch_size at once);
    gradients accumulate to batch_size."""
    seq_len: int | None = None
    """Tokens per training sequence (null = model.context_length)."""
    tokens: int | None = 307_200
    """Training budget in tokens; steps = ceil(tokens / (batch_size * seq_len))."""
    max_steps: int | None = None
    """Cap on optimizer steps, whatever the token budget (how users and tests shorten a run)."""
    lr: float = 0.0004
    """Learning rate (the peak when a schedule is used)."""
    lr_schedule: str = "constant"
    """The learning rate over the steps, a registered component: constant, cosine (linear warm-up then
    cosine decay), or a plugin's."""
    warmup_fraction: float = 0.05
    """cosine: share of steps spent warming up."""
    warmup_start_factor: float = 1e-5
    """cosine: warm-up starts at lr * this factor."""
    min_lr_factor: float = 0.1
    """cosine: the last step's lr is lr * this factor."""
    optimizer: str = "adamw"
    """The optimizer, a registered component: adamw (PyTorch's fused AdamW over every parameter),
    adamw_2d_decay (the same, weight decay on matrices and embeddings only, as nanoGPT), or a plugin's (it reads
    the train.* keys it needs)."""
    weight_decay: float = 0.1
    """AdamW weight decay, applied to every parameter (as in the study; adamw_2d_decay: 2-D tensors only)."""
    beta1: float = 0.9
    """AdamW beta1."""
    beta2: float = 0.999
    """AdamW beta2."""
    grad_clip: float | None = None
    """Clip the global gradient norm at this value (null = no clipping)."""
    amp: bool = True
    """Autocast on CUDA (CPU runs always compute in float32: CPUs here lack fast bf16)."""
    amp_dtype: AmpDtype = AmpDtype.bf16
    """Autocast dtype; fp16 adds a GradScaler."""
    tf32: bool = True
    """Allow TF32 matmuls on CUDA."""
    device: DeviceKind = DeviceKind.auto
    """auto: CUDA when available, else CPU."""
    deterministic: bool = True
    """Deterministic kernels and cuBLAS workspace, cuDNN benchmark off: same config, same bits."""
    compile: bool = False
    """torch.compile the model (faster on GPUs after a compile of tens of seconds; other kernels, so
    other bits than eager)."""
    eval_every: int = 100
    """Evaluate validation loss every N steps (and at the last step)."""
    eval_batches: int = 8
    """Validation micro-batches per evaluation (always the same first ones)."""
    log_every: int = 25
    """Write a metrics line every N steps."""
    checkpoint_every: int | None = None
    """Also write a resumable checkpoint every N steps (null = by wall time only)."""
    checkpoint_minutes: float | None = 30.0
    """Write a resumable checkpoint at the first step boundary after this many minutes since the last one,
    and one before the final evaluation, so a killed run loses at most this much (null, with
    checkpoint_every null too: only on a stop signal). Checkpoints never change a run's numbers."""
    sample_tokens: int = 30
    """Greedy tokens generated after "Every effort moves you" into sample.txt (0 to MAX_SAMPLE_TOKENS, 2048;
    a stop signal ends the sample between two tokens)."""

    def __post_init__(self) -> None:
        _positive("train.batch_size", self.batch_size)
        if self.micro_batch_size is not None:
            _positive("train.micro_batch_size", self.micro_batch_size)
            if self.batch_size % self.micro_batch_size:
                raise ConfigError(
                    f"train.micro_batch_size={self.micro_batch_size} must divide "
                    f"train.batch_size={self.batch_size}"
                )
        if self.seq_len is not None:
            _positive("train.seq_len", self.seq_len)
        if self.tokens is None and self.max_steps is None:
            raise ConfigError("set train.tokens or train.max_steps: the run needs a length")
        if self.tokens is not None:
            _positive("train.tokens", self.tokens)
        if self.max_steps is not None:
            _positive("train.max_steps", self.max_steps)
        _positive("train.lr", self.lr)
        if not self.weight_decay >= 0:
            raise ConfigError(f"train.weight_decay={self.weight_decay} must be >= 0")
        if self.grad_clip is not None:
            _positive("train.grad_clip", self.grad_clip)
        for key in ("beta1", "beta2"):
            if not 0.0 <= getattr(self, key) < 1.0:
                raise ConfigError(f"train.{key}={getattr(self, key)} must be in [0, 1)")
        if not 0.0 <= self.warmup_fraction < 1.0:
            raise ConfigError(f"train.warmup_fraction={self.warmup_fraction} must be in [0, 1)")
        for key in ("eval_every", "eval_batches", "log_every"):
            _positive(f"train.{key}", getattr(self, key))
        if self.checkpoint_every is not None:
            _positive("train.checkpoint_every", self.checkpoint_every)
        if self.checkpoint_minutes is not None:
            _positive("train.checkpoint_minutes", self.checkpoint_minutes)
        if not 0 <= self.sample_tokens <= MAX_SAMPLE_TOKENS:
            raise ConfigError(f"train.sample_tokens={self.sample_tokens} must be in [0, {MAX_SAMPLE_TOKENS}]: the "
                              "sample is a smoke test, one forward pass a token (python -m gptx.generate writes more)")

    @property
    def micro_batch(self) -> int:
        """Sequences per forward pass."""
        return self.micro_batch_size or self.batch_size


@dataclass
class LoggerConfig:
    name: LoggerKind = LoggerKind.none
    """Experiment tracker mirroring metrics.jsonl and the final result: none, tensorboard, wandb, mlflow."""
    dir: str | None = None
    """Where it writes (null: RUN_DIR/tensorboard, RUN_DIR/wandb, sqlite RUN_DIR/mlflow.db); MLflow also
    takes a tracking URI (sqlite:///..., http://...)."""
    project: str = "gptx"
    """W&B project, or MLflow experiment name."""
    mode: str = "offline"
    """W&B mode: offline (nothing leaves the machine; `wandb sync` uploads later) or online."""

    def __post_init__(self) -> None:
        if self.mode not in ("offline", "online"):
            raise ConfigError(f"logger.mode={self.mode} must be offline or online")


@dataclass
class GptxConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    intervention: dict[str, str] = field(default_factory=dict)
    """Filled by the `intervention` config group: name -> what it changes. Not set by hand."""
    init_seed: int = 42
    """Seeds Python, NumPy and torch (CPU and every CUDA device) right before the model is built."""
    train_seed: int | None = None
    """Re-seeds every RNG right after the model is built (null = keep the stream going)."""
    data_seed: int | None = None
    """Shuffles the order of training sequences (null = corpus order)."""
    replica: int = 0
    """Repeat index: runs that differ only here measure the nondeterminism floor."""
    sweep: str | None = None
    """Sweep name: files multiruns under multirun_outputs/NAME (null = date/time)."""
    overwrite: bool = False
    """Allow replacing a completed run in the same folder."""
    output_root: str | None = None
    """Folder holding outputs/ and multirun_outputs/ (null: the folder the command runs in); set it once in
    local/default.yaml to file every run of this machine in one place."""
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    """Experiment tracker (config group `logger`); never part of config_sha256."""
    optimized_metric: str | None = None
    """A result.json number (test_loss, val_loss, train_loss, tokens_per_second, wall_seconds) returned to
    Hydra, so sweepers such as optuna can optimise it; NaN for a run that did not complete."""

    def __post_init__(self) -> None:
        _check_finite(self)
        seq_len = self.train.seq_len or self.model.context_length
        if seq_len > self.model.context_length:
            raise ConfigError(
                f"train.seq_len={seq_len} is longer than the model's context "
                f"(model.context_length={self.model.context_length})"
            )
        if self.data.tokenizer is Tokenizer.char and self.model.vocab_size != len(self.data.vocab):
            raise ConfigError(
                f"model.vocab_size={self.model.vocab_size} but data.vocab has {len(self.data.vocab)} "
                f"characters: set model.vocab_size={len(self.data.vocab)}"
            )
        if self.data.order is DataOrder.random_offsets and self.data_seed is None:
            raise ConfigError("data.order=random_offsets draws its windows from data_seed: set data_seed")
        for key in ("init_seed", "train_seed", "data_seed"):
            value = getattr(self, key)
            if value is not None and not 0 <= value < 2**63:
                raise ConfigError(f"{key}={value} must be in [0, 2**63)")
        if self.optimized_metric is not None and self.optimized_metric not in OPTIMIZABLE_METRICS:
            raise ConfigError(f"optimized_metric={self.optimized_metric}: choose one of "
                              f"{', '.join(OPTIMIZABLE_METRICS)}")

    @property
    def intervention_names(self) -> list[str]:
        """Interventions applied, in the order given; ['baseline'] when none is."""
        names = [name for name in self.intervention if name != "baseline"]
        return names or ["baseline"]

    @property
    def arm(self) -> str:
        """The analysis arm: sorted intervention names joined by '+' (order of stacking is irrelevant)."""
        return "+".join(sorted(self.intervention_names))


def _positive(key: str, value: float) -> None:
    if value is None or not value > 0:  # NaN compares false: refused here too
        raise ConfigError(f"{key}={value} must be > 0")
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{key}={value} must be a finite number")


def _check_finite(node: Any, prefix: str = "") -> None:
    """Every float in the config finite: NaN passes every comparison check, and inf trains into NaN."""
    for f in dataclasses.fields(node):
        value = getattr(node, f.name)
        if dataclasses.is_dataclass(value):
            _check_finite(value, f"{prefix}{f.name}.")
        elif isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{prefix}{f.name}={value} must be a finite number")


def register_schema() -> None:
    """Register the schema so `config.yaml` can start its defaults list with `gptx_schema`, and the
    `gptx_fields_help` resolver that puts every field's docstring into `--help`."""
    ConfigStore.instance().store(name="gptx_schema", node=GptxConfig)
    OmegaConf.register_new_resolver("gptx_fields_help", lambda: fields_help(), replace=True)
    OmegaConf.register_new_resolver("gptx_runners_help", lambda: runners_help(), replace=True)


def field_docs(cls: type = GptxConfig, prefix: str = "") -> dict[str, tuple[Any, str]]:
    """{"train.lr": (default, docstring)} for every leaf field, read from the docstring under each field."""
    tree = ast.parse(inspect.getsource(sys.modules[__name__]))
    docs = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            body = node.body
            for field_node, doc in zip(body, body[1:]):
                if isinstance(field_node, ast.AnnAssign) and isinstance(field_node.target, ast.Name) \
                        and isinstance(doc, ast.Expr) and isinstance(doc.value, ast.Constant):
                    docs[(node.name, field_node.target.id)] = " ".join(str(doc.value.value).split())
    out: dict[str, tuple[Any, str]] = {}

    def walk(klass: type, path: str) -> None:
        for f in dataclasses.fields(klass):
            default = f.default_factory() if f.default is dataclasses.MISSING else f.default
            if dataclasses.is_dataclass(default):
                walk(type(default), f"{path}{f.name}.")
            else:
                out[f"{path}{f.name}"] = (default.value if isinstance(default, Enum) else default,
                                          docs.get((klass.__name__, f.name), ""))

    walk(cls, prefix)
    return out


def fields_help() -> str:
    """Every key a user can set, its default and its docstring: the body of `python -m gptx.train --help`."""
    lines = []
    for key, (default, doc) in field_docs().items():
        if key == "intervention":
            continue  # filled by the config group, listed above
        shown = json.dumps(default) if default is None or isinstance(default, (bool, dict, list)) else default
        lines.append(f"  {key} = {shown}")
        lines += [f"      {line}" for line in textwrap.wrap(doc, 96)] if doc else []
    return "\n".join(lines)


def runners_help() -> str:
    """The launchers and sweepers a user can choose (`--help`), as Hydra finds them; schemas left out."""
    from hydra.core.global_hydra import GlobalHydra

    lines = []
    for group in ("hydra/launcher", "hydra/sweeper"):
        if GlobalHydra.instance().is_initialized():
            options = GlobalHydra.instance().config_loader().get_group_options(group)
        else:  # resolved outside a Hydra app (a tool resolving the whole config): gptx's own files, and Hydra's
            options = ["basic", *(p.stem for p in (CONF_DIR / group).glob("*.yaml"))]
        lines.append(f"{group}: {', '.join(sorted(o for o in set(options) if not o.endswith('_schema')))}")
    return "\n".join(lines)


def to_plain_dict(cfg: DictConfig | GptxConfig) -> dict[str, Any]:
    """The config as JSON-ready plain data (enums as strings), the form hashed and saved."""
    if not isinstance(cfg, DictConfig):
        cfg = OmegaConf.structured(cfg)
    return OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)  # type: ignore[return-value]


# Keys that came after runs were made (the components of gptx.components, then nanoGPT's recipe): hashed only
# when set off their default, so a run made before them keeps its config_sha256 (its folder is skipped, its
# checkpoints resume).
ADDED_KEY_DEFAULTS = {"model.mlp": "gelu_mlp", "model.attention": "multi_head", "model.norm": "layer_norm",
                      "model.position": "learned", "train.optimizer": "adamw", "model.init": "pytorch",
                      "model.bias": True, "data.order": "permutation"}


def config_sha256(plain: dict[str, Any]) -> str:
    """Hash of everything that determines a run's numbers (keys in NON_SEMANTIC_KEYS left out, component
    keys added since runs were made at their default too)."""
    flat = flatten(plain)
    at_default = tuple(k for k, v in ADDED_KEY_DEFAULTS.items() if flat.get(k) == v)
    semantic = _without(plain, NON_SEMANTIC_KEYS + at_default)
    return hashlib.sha256(json.dumps(semantic, sort_keys=True).encode()).hexdigest()


def _without(tree: dict[str, Any], dotted_keys: tuple[str, ...]) -> dict[str, Any]:
    """A copy of `tree` without the given dotted keys."""
    out = dict(tree)
    for dotted in dotted_keys:
        head, _, rest = dotted.partition(".")
        if rest and isinstance(out.get(head), dict):
            out[head] = _without(out[head], (rest,))
        elif not rest:
            out.pop(head, None)
    return out


def from_dictconfig(cfg: DictConfig, interventions: dict[str, dict[str, Any]] | None = None) -> GptxConfig:
    """Convert the composed config into validated dataclasses and check the interventions took effect.

    A key outside the schema (Hydra's `+train.foo=1` adds one past struct mode) is refused: a run must never
    save a config that its own reproduction would refuse.
    """
    for dotted, why in RETIRED_KEYS.items():
        parent, _, leaf = dotted.rpartition(".")
        node = OmegaConf.select(cfg, parent) if parent else cfg
        if isinstance(node, DictConfig) and leaf in node:
            with open_dict(node):
                node.pop(leaf)
            logging.getLogger("gptx.train").warning("%s is no longer a config key (%s); ignored", dotted, why)
    unknown = unknown_keys(OmegaConf.to_container(cfg, resolve=False))  # type: ignore[arg-type]
    if unknown:
        raise ConfigError(f"unknown key {', '.join(unknown)}: not in gptx's config schema "
                          "(python -m gptx.train --help lists every key)")
    schema = OmegaConf.structured(GptxConfig)
    merged = OmegaConf.merge(schema, cfg)
    typed: GptxConfig = OmegaConf.to_object(merged)  # type: ignore[assignment]
    check_interventions_applied(to_plain_dict(merged), interventions)
    return typed


def unknown_keys(tree: dict[str, Any], cls: type = GptxConfig, prefix: str = "") -> list[str]:
    """Dotted keys of `tree` that are no field of the schema (the free-form `intervention` mapping aside)."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = []
    for key, value in tree.items():
        f = fields.get(key)
        if f is None:
            unknown.append(f"{prefix}{key}")
            continue
        nested = f.default_factory() if f.default is dataclasses.MISSING else f.default  # type: ignore[misc]
        if dataclasses.is_dataclass(nested) and isinstance(value, dict):
            unknown += unknown_keys(value, type(nested), f"{prefix}{key}.")
    return unknown


def intervention_settings(name: str) -> dict[str, Any]:
    """The dotted keys and values one of gptx's own interventions sets (its defaults list included)."""
    from gptx.interventions import FolderSource, SearchPath  # gptx.interventions builds on this module

    return SearchPath([FolderSource(CONF_DIR)]).load(name).settings


def check_interventions_applied(plain: dict[str, Any], settings: dict[str, dict[str, Any]] | None = None) -> None:
    """Fail when a chosen intervention's values were overridden later in composition.

    `settings` maps each intervention to what it sets, as read from the config search path (gptx.train) or
    from the run folder's record (a reproduction); without it, gptx's own intervention files are read.
    """
    from gptx.interventions import check_applied

    if settings is None:
        settings = {name: intervention_settings(name) for name in plain.get("intervention", {})}
    check_applied(flatten(plain), settings)


# Keys that are not part of what an arm is: its seeds and repeat index (the noise the report measures),
# and the `intervention` mapping, which only labels the arm (what its interventions set is in the keys).
ARM_EXCLUDED_KEYS = ("init_seed", "train_seed", "data_seed", "replica", "intervention")


def arm_settings(plain: dict[str, Any]) -> dict[str, Any]:
    """What makes a run's arm: every semantic key (dotted) but the seeds, the repeat index and the label.

    Two runs with equal arm settings differ only by noise; any other difference makes them two arms.
    """
    return flatten(_without(plain, NON_SEMANTIC_KEYS + ARM_EXCLUDED_KEYS))


def with_added_defaults(flat: dict[str, Any]) -> dict[str, Any]:
    """Dotted settings with every key gptx added later (ADDED_KEY_DEFAULTS) that they lack set to its
    default: a run saved before a key existed and one saved after, at its default, are one configuration (as
    for config_sha256), so the analysis never splits one arm in two by gptx's version, while another value
    of the key is still another arm."""
    return {**ADDED_KEY_DEFAULTS, **flat}


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"train": {"lr": 1}} -> {"train.lr": 1}: dotted keys, as overrides and trackers name them."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat
