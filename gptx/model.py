"""The GPT-2 architecture of Raschka's *Build a Large Language Model (from Scratch)*.

Learned positional embeddings, pre-LayerNorm blocks, a GELU (tanh) MLP of width 4d, causal
multi-head attention through PyTorch's scaled_dot_product_attention, dropout on embeddings,
attention weights and residual branches, optional Q/K/V bias and optional weight tying. Module
names follow the book (tok_emb, trf_blocks, att.W_query, ff.layers, out_head), so its checkpoints
and its order of random draws (the `sequential` init scheme) carry over.

The attention, MLP, norm, position encoding and optimizer are components chosen by name
(`model.attention`, `model.mlp`, `model.norm`, `model.position`, `train.optimizer`, gptx.components);
the classes and functions below are gptx's own, the defaults, and plugins add others.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from gptx import components
from gptx.config import ConfigError, InitDistribution, InitScheme, ModelConfig, TrainConfig
from gptx.loss import linear_cross_entropy


class MultiHeadAttention(nn.Module):
    """Causal self-attention with separate Q/K/V parameters (optionally biased), applied as one matmul."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        d = cfg.d_model
        self.n_heads = cfg.n_heads
        self.dropout = cfg.dropout
        self.W_query = nn.Linear(d, d, bias=cfg.qkv_bias)
        self.W_key = nn.Linear(d, d, bias=cfg.qkv_bias)
        self.W_value = nn.Linear(d, d, bias=cfg.qkv_bias)
        self.out_proj = nn.Linear(d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        # One [3d, d] matmul instead of three: the parameters (names, init, checkpoints) stay separate.
        projections = (self.W_query, self.W_key, self.W_value)
        weight = torch.cat([p.weight for p in projections])
        bias = torch.cat([p.bias for p in projections]) if self.W_query.bias is not None else None
        q, k, v = (y.view(b, t, self.n_heads, d // self.n_heads).transpose(1, 2)
                   for y in F.linear(x, weight, bias).split(d, dim=-1))
        dropout = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True)
        return self.out_proj(y.transpose(1, 2).reshape(b, t, d))


class FeedForward(nn.Module):
    """The 4x-wide MLP with GPT-2's tanh-approximated GELU."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        d = cfg.d_model
        self.layers = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(approximate="tanh"), nn.Linear(4 * d, d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class ExactGeluFeedForward(FeedForward):
    """`model.mlp=gelu_exact_mlp`: FeedForward with the exact (erf) GELU, nanoGPT's; same parameters and names."""

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg)
        self.layers[1] = nn.GELU()


def layer_norm(cfg: ModelConfig) -> nn.LayerNorm:
    """GPT-2's LayerNorm over the residual stream (eps 1e-5)."""
    return nn.LayerNorm(cfg.d_model, eps=1e-5)


class LearnedPosition(nn.Embedding):
    """GPT-2's learned absolute positions: one vector per position, added to the token embeddings."""

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg.context_length, cfg.d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + super().forward(torch.arange(x.shape[1], device=x.device))


class NoPosition(nn.Module):
    """No position encoding (NoPE: causal attention alone tells positions apart; rotary plugs in here too)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class TransformerBlock(nn.Module):
    """Pre-norm block: x + drop(att(norm1(x))), then x + drop(ff(norm2(x)))."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.att = components.load("attention", cfg.attention)(cfg)
        self.ff = components.load("mlp", cfg.mlp)(cfg)
        norm = components.load("norm", cfg.norm)
        self.norm1 = norm(cfg)
        self.norm2 = norm(cfg)
        self.drop_shortcut = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_shortcut(self.att(self.norm1(x)))
        return x + self.drop_shortcut(self.ff(self.norm2(x)))


class GPTModel(nn.Module):
    """GPT-2: token embeddings + position encoding, n_layers blocks, final norm, linear head."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.pos_emb = components.load("position", cfg.position)(cfg)
        self.drop_emb = nn.Dropout(cfg.dropout)
        self.trf_blocks = nn.Sequential(*[TransformerBlock(cfg) for _ in range(cfg.n_layers)])
        self.final_norm = components.load("norm", cfg.norm)(cfg)
        self.out_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        if cfg.weight_tying:
            self.out_head.weight = self.tok_emb.weight
        if not cfg.bias:
            # Here rather than in each component, so the components' code (and the source hashes runs record
            # for them) stays as it was; the same rule reaches a plugin's Linear layers and LayerNorms.
            for module in self.modules():
                if isinstance(module, (nn.Linear, nn.LayerNorm)):
                    module.bias = None

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None,
                reduction: str = "mean") -> torch.Tensor:
        """Logits [batch, tokens, vocab] for token ids [batch, tokens]; with targets, the loss instead.

        The loss (float32 next-token cross-entropy, `reduction` as in `gptx.loss.linear_cross_entropy`)
        goes through the head a slice of tokens at a time, never holding the whole logits tensor.
        """
        x = self.drop_emb(self.pos_emb(self.tok_emb(idx)))
        hidden = self.final_norm(self.trf_blocks(x))
        if targets is None:
            return self.out_head(hidden)
        return linear_cross_entropy(hidden, self.out_head.weight, targets, reduction)


def estimated_parameters(cfg: ModelConfig) -> int:
    """The model's parameter count from its config alone, to a few per cent (nothing is built)."""
    embeddings = cfg.vocab_size * cfg.d_model * (1 if cfg.weight_tying else 2) + cfg.context_length * cfg.d_model
    return embeddings + cfg.n_layers * 12 * cfg.d_model * cfg.d_model


# The largest model gptx builds from a config unless told otherwise (GPT-2 XL has 1.56 billion parameters):
# a typo such as model.d_model=2000000, or a saved config someone else wrote, is one line, never an allocation.
MAX_PARAMETERS = 2_000_000_000


def check_parameter_cap(cfg: ModelConfig, what: str, allow_large: bool = False) -> None:
    """Refuse (ConfigError, one line) a model of more than MAX_PARAMETERS parameters, from its config alone."""
    n = estimated_parameters(cfg)
    if n > MAX_PARAMETERS and not allow_large:
        raise ConfigError(f"{what} asks for a model of about {n:.3g} parameters (model.d_model={cfg.d_model}, "
                          f"model.n_layers={cfg.n_layers}, model.vocab_size={cfg.vocab_size}), over gptx's cap "
                          f"of {MAX_PARAMETERS:.3g}: choose a smaller model")


def check_fits(cfg: ModelConfig, memory: int | None, bytes_per_parameter: int, what: str) -> None:
    """Refuse (ConfigError, one line) a model whose `bytes_per_parameter` copies cannot fit in `memory` bytes,
    before any is allocated: an allocation failure is a traceback, or the OOM killer."""
    n = estimated_parameters(cfg)
    if memory is not None and n * bytes_per_parameter > memory:
        raise ConfigError(
            f"model.d_model={cfg.d_model}, model.n_layers={cfg.n_layers} make a model of about {n:.3g} parameters, "
            f"which needs about {n * bytes_per_parameter / 2**30:.3g} GiB for {what}; this device has "
            f"{memory / 2**30:.3g} GiB: choose a smaller model")


def build_model(cfg: ModelConfig, init_seed: int) -> GPTModel:
    """Build the model on the CPU with its initial weights, per `cfg.init_scheme`.

    `sequential` draws from the global torch stream in construction order, as the study did (so
    adding a parameter shifts every later one). `per_parameter` builds inside a forked RNG, leaving
    the global stream untouched, then draws each parameter from its own generator seeded by
    (init_seed, name): a parameter's initial values depend on nothing but its name and shape.
    `cfg.init` picks the distributions: PyTorch's defaults, or nanoGPT's (`_init_like_nanogpt`).
    """
    if cfg.init_scheme is InitScheme.sequential:
        return GPTModel(cfg)
    with torch.random.fork_rng(devices=[]):
        model = GPTModel(cfg)
    residual = residual_projections(model)
    for module_name, module in model.named_modules():
        for param_name, param in module.named_parameters(recurse=False):
            name = f"{module_name}.{param_name}" if module_name else param_name
            if module is model.out_head and cfg.weight_tying:
                continue  # the tied head is tok_emb.weight, initialised as the embedding
            gen = parameter_generator(init_seed, name)
            if cfg.init is InitDistribution.nanogpt:
                _init_like_nanogpt(module, param_name, param, gen, module in residual, cfg.n_layers)
            else:
                _init_like_default(module, param_name, param, gen)
    return model


def residual_projections(model: GPTModel) -> set[nn.Module]:
    """The Linear layers that write into the residual stream: the last Linear of each block's `att` and `ff`
    (att.out_proj and ff.layers.2 in gptx's own; a plugin's, such as SwiGLU's `down`, found the same way)."""
    found = set()
    for block in model.trf_blocks:
        for part in (block.att, block.ff):
            linears = [m for m in part.modules() if isinstance(m, nn.Linear)]
            if linears:
                found.add(linears[-1])
    return found


def parameter_generator(init_seed: int, name: str) -> torch.Generator:
    """A CPU generator seeded by a stable hash of (init_seed, parameter name)."""
    digest = hashlib.sha256(f"{init_seed}:{name}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)


@torch.no_grad()
def _init_like_default(module: nn.Module, param_name: str, param: torch.Tensor, gen: torch.Generator) -> None:
    """The distribution PyTorch's own reset_parameters uses for this module, from `gen`.

    A plugin's own module (not one of the classes below) says how its parameters start by defining
    `init_parameter(param_name, param, generator)`, drawing only from `generator`.
    """
    if hasattr(module, "init_parameter"):
        module.init_parameter(param_name, param, gen)
    elif isinstance(module, nn.Linear):
        # kaiming_uniform_(a=sqrt(5)) on the weight and the bias rule both give U(-1/sqrt(fan_in), ..).
        bound = 1.0 / math.sqrt(module.in_features)
        nn.init.uniform_(param, -bound, bound, generator=gen)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(param, 0.0, 1.0, generator=gen)
    elif isinstance(module, (nn.LayerNorm, nn.RMSNorm)):
        nn.init.ones_(param) if param_name == "weight" else nn.init.zeros_(param)
    else:
        raise TypeError(f"no initialisation rule for {type(module).__name__}.{param_name}: give "
                        f"{type(module).__name__} an init_parameter(param_name, param, generator) method")


@torch.no_grad()
def _init_like_nanogpt(module: nn.Module, param_name: str, param: torch.Tensor, gen: torch.Generator,
                       residual: bool, n_layers: int) -> None:
    """nanoGPT's `_init_weights` (GPT-2's), from `gen`: Linear and Embedding weights N(0, 0.02), residual
    projections N(0, 0.02/sqrt(2 n_layers)), Linear biases 0; norms and plugins' modules as under pytorch."""
    if isinstance(module, nn.Linear) and param_name == "bias":
        nn.init.zeros_(param)
    elif isinstance(module, (nn.Linear, nn.Embedding)) and not hasattr(module, "init_parameter"):
        std = 0.02 / math.sqrt(2 * n_layers) if residual else 0.02
        nn.init.normal_(param, 0.0, std, generator=gen)
    else:
        _init_like_default(module, param_name, param, gen)


def adamw(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """gptx's optimizer (`train.optimizer=adamw`): AdamW with train.lr, beta1, beta2 and weight_decay."""
    return configure_optimizer(model, cfg.lr, (cfg.beta1, cfg.beta2), cfg.weight_decay)


def adamw_2d_decay(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """nanoGPT's optimizer (`train.optimizer=adamw_2d_decay`): fused AdamW, train.weight_decay on tensors of two
    or more dimensions (matrices, embeddings), none on biases and norm gains."""
    params = list(model.parameters())
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=cfg.lr, betas=(cfg.beta1, cfg.beta2),
                             fused=True)


def configure_optimizer(model: nn.Module, lr: float, betas: tuple[float, float], weight_decay: float,
                        fused: bool = True) -> torch.optim.AdamW:
    """AdamW over every parameter (the study decayed all of them), PyTorch's fused kernel where it has one.

    The fused kernel (CPU and CUDA, float32/bf16/fp16 parameters) updates every tensor in one pass:
    measured 13-16 ms a step on a 2-core CPU against 47-76 ms for the multi-tensor (`foreach`) path.
    """
    return torch.optim.AdamW(model.parameters(), lr=lr, betas=betas, weight_decay=weight_decay,
                             fused=fused, foreach=None if fused else True)


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters, a tied matrix counted once."""
    return sum(p.numel() for p in model.parameters())


def matmul_parameters(model: GPTModel) -> int:
    """Parameters of the Linear weight matrices (blocks and head): the N in 6N FLOPs per token."""
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear))


def flops_per_token(model: GPTModel, seq_len: int) -> float:
    """Training FLOPs per token: 6 * N_matmul + 12 * layers * d_model * seq_len (attention)."""
    cfg = model.cfg
    return 6.0 * matmul_parameters(model) + 12.0 * cfg.n_layers * cfg.d_model * seq_len


@torch.no_grad()
def generate_greedy(model: GPTModel, idx: torch.Tensor, max_new_tokens: int,
                    stop: Callable[[], bool] | None = None) -> torch.Tensor:
    """Append max_new_tokens argmax tokens to idx [1, t], cropping to the context length; fewer once `stop()`
    says so (it is asked before each token)."""
    for _ in range(max_new_tokens):
        if stop is not None and stop():
            break
        logits = model(idx[:, -model.cfg.context_length :])[:, -1, :]
        idx = torch.cat([idx, logits.argmax(dim=-1, keepdim=True)], dim=1)
    return idx
