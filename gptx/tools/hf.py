"""GPT-2 in the Hugging Face layout (OpenAI's released weights, transformers' GPT2LMHeadModel) <-> gptx.

The two models compute the same function; only the storage differs:

| gptx | Hugging Face | storage |
| --- | --- | --- |
| tok_emb, pos_emb | wte, wpe | same |
| trf_blocks.N.norm1 / norm2 | h.N.ln_1 / ln_2 | same |
| att.W_query, W_key, W_value | h.N.attn.c_attn, fused in that order | Conv1D: weight [d, 3d], bias [3d] |
| att.out_proj | h.N.attn.c_proj | Conv1D |
| ff.layers.0 / ff.layers.2 | h.N.mlp.c_fc / c_proj | Conv1D |
| final_norm | ln_f | same |
| out_head | lm_head (absent when tied to wte) | same |

A Conv1D computes x @ W + b with W stored [in, out], the transpose of nn.Linear's [out, in]. HF GPT-2
always has Q/K/V biases: a gptx model without them exports zero biases, which computes exactly the
same, and a file whose Q/K/V biases are all zero loads back without them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from gptx.config import ModelConfig
from gptx.errors import UsageError
from gptx.model import GPTModel

HF_WEIGHTS_FILE = "model.safetensors"
HF_CONFIG_FILE = "config.json"
HF_PREFIX = "transformer."  # what GPT2LMHeadModel.save_pretrained puts before the body's names
# Per-layer causal-mask buffers that older checkpoints (OpenAI's among them) carry: not weights.
BUFFER_SUFFIXES = (".attn.bias", ".attn.masked_bias")
GPT2_HEAD_DIM = 64  # every OpenAI GPT-2 size; used to count heads when no config.json says n_head
LAYER_NORM_EPS = 1e-5
TANH_GELUS = ("gelu_new", "gelu_pytorch_tanh")  # HF's names for the tanh-approximated GELU

# gptx name -> HF name outside the blocks.
TOP_LEVEL = {"tok_emb.weight": "wte.weight", "pos_emb.weight": "wpe.weight",
             "final_norm.weight": "ln_f.weight", "final_norm.bias": "ln_f.bias"}
# gptx name -> HF name inside block N, and whether HF stores it as a Conv1D weight (transposed).
BLOCK = {
    "norm1.weight": ("ln_1.weight", False), "norm1.bias": ("ln_1.bias", False),
    "att.out_proj.weight": ("attn.c_proj.weight", True), "att.out_proj.bias": ("attn.c_proj.bias", False),
    "norm2.weight": ("ln_2.weight", False), "norm2.bias": ("ln_2.bias", False),
    "ff.layers.0.weight": ("mlp.c_fc.weight", True), "ff.layers.0.bias": ("mlp.c_fc.bias", False),
    "ff.layers.2.weight": ("mlp.c_proj.weight", True), "ff.layers.2.bias": ("mlp.c_proj.bias", False),
}
QKV = ("W_query", "W_key", "W_value")


class HFLayoutError(UsageError, ValueError):
    """Weights that do not fit the other layout; the message names the tensor or setting."""


# --- gptx -> Hugging Face -------------------------------------------------------------------------


def check_exportable(model: GPTModel) -> None:
    """Refuse a model HF's GPT-2 cannot compute exactly (the architecture, not the weights)."""
    for name, module in model.named_modules():
        if isinstance(module, nn.LayerNorm) and (module.eps != LAYER_NORM_EPS or not module.elementwise_affine):
            raise HFLayoutError(f"{name}: HF GPT-2 needs LayerNorm(eps={LAYER_NORM_EPS}) with weight and bias")
        if isinstance(module, nn.GELU) and module.approximate != "tanh":
            raise HFLayoutError(f"{name}: HF GPT-2's activation is the tanh GELU (gelu_new), not exact GELU")
    if model.out_head.bias is not None:
        raise HFLayoutError("out_head has a bias; HF GPT-2's lm_head has none")


def to_hf_state_dict(model: GPTModel) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The model's weights under GPT2LMHeadModel's names, and notes on what had to be filled in.

    Missing Q/K/V biases (model.qkv_bias=false) become zeros: the same function, in HF's layout.
    """
    check_exportable(model)
    cfg = model.cfg
    gptx = {name: t.detach().float() for name, t in model.state_dict().items()}
    used: set[str] = set()

    def take(name: str, shape: tuple[int, ...] | None = None) -> torch.Tensor:
        if name not in gptx:
            if shape is None:
                raise HFLayoutError(f"the model has no {name}, which HF GPT-2 needs")
            return torch.zeros(shape, device=gptx["tok_emb.weight"].device)
        used.add(name)
        return gptx[name]

    d = cfg.d_model
    hf = {HF_PREFIX + hf_name: take(name) for name, hf_name in TOP_LEVEL.items()}
    for n in range(cfg.n_layers):
        block, out = f"trf_blocks.{n}.", f"{HF_PREFIX}h.{n}."
        for name, (hf_name, conv1d) in BLOCK.items():
            tensor = take(block + name)
            hf[out + hf_name] = tensor.t() if conv1d else tensor
        weights = [take(f"{block}att.{p}.weight") for p in QKV]
        biases = [take(f"{block}att.{p}.bias", (d,)) for p in QKV]
        hf[out + "attn.c_attn.weight"] = torch.cat(weights, dim=0).t()
        hf[out + "attn.c_attn.bias"] = torch.cat(biases)
    if cfg.weight_tying:
        used.add("out_head.weight")  # the same tensor as tok_emb.weight: HF ties lm_head to wte itself
    else:
        hf["lm_head.weight"] = take("out_head.weight")
    unmapped = sorted(set(gptx) - used)
    if unmapped:
        raise HFLayoutError(f"no place in HF GPT-2 for {', '.join(unmapped)}")
    notes = []
    if not cfg.qkv_bias:
        notes.append("model.qkv_bias=false: wrote zero Q/K/V biases (HF GPT-2 always has them); "
                     "the exported model computes exactly the same")
    if not cfg.weight_tying:
        notes.append("untied output head: wrote lm_head.weight and tie_word_embeddings=false")
    return {name: t.contiguous() for name, t in hf.items()}, notes


def hf_config(cfg: ModelConfig) -> dict[str, Any]:
    """The config.json of a GPT2LMHeadModel with gptx's architecture."""
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": cfg.vocab_size,
        "n_positions": cfg.context_length,
        "n_ctx": cfg.context_length,
        "n_embd": cfg.d_model,
        "n_layer": cfg.n_layers,
        "n_head": cfg.n_heads,
        "n_inner": None,
        "activation_function": "gelu_new",
        "resid_pdrop": cfg.dropout,
        "embd_pdrop": cfg.dropout,
        "attn_pdrop": cfg.dropout,
        "layer_norm_epsilon": LAYER_NORM_EPS,
        "initializer_range": 0.02,
        "scale_attn_weights": True,
        "scale_attn_by_inverse_layer_idx": False,
        "reorder_and_upcast_attn": False,
        "tie_word_embeddings": cfg.weight_tying,
        "bos_token_id": 50256,
        "eos_token_id": 50256,
        "use_cache": True,
        "torch_dtype": "float32",
    }


def save_hf(model: GPTModel, out_dir: Path) -> list[str]:
    """Write out_dir/model.safetensors and config.json in the HF GPT-2 layout; returns the notes."""
    tensors, notes = to_hf_state_dict(model)
    out_dir.mkdir(parents=True, exist_ok=True)
    tensors = {name: t.cpu() for name, t in tensors.items()}
    save_file(tensors, str(out_dir / HF_WEIGHTS_FILE), metadata={"format": "pt"})
    (out_dir / HF_CONFIG_FILE).write_text(json.dumps(hf_config(model.cfg), indent=2) + "\n")
    return notes


# --- Hugging Face -> gptx -------------------------------------------------------------------------


def normalize_hf_names(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop the `transformer.` prefix and the causal-mask buffers, keeping every weight."""
    out = {}
    for name, tensor in tensors.items():
        name = name.removeprefix(HF_PREFIX)
        if name.startswith("h.") and name.endswith(BUFFER_SUFFIXES):
            continue
        out[name] = tensor
    return out


def model_config_from_hf(tensors: dict[str, torch.Tensor], config: dict[str, Any] | None) -> ModelConfig:
    """The gptx architecture of HF GPT-2 weights (names normalized), helped by its config.json if any."""
    config = config or {}
    if config.get("model_type", "gpt2") != "gpt2":
        raise HFLayoutError(f"config.json says model_type={config['model_type']!r}; only gpt2 maps onto gptx")
    if config.get("activation_function", "gelu_new") not in TANH_GELUS:
        raise HFLayoutError(f"config.json activation_function={config['activation_function']!r}: gptx "
                            "computes the tanh GELU (gelu_new) only")
    if float(config.get("layer_norm_epsilon", LAYER_NORM_EPS)) != LAYER_NORM_EPS:
        raise HFLayoutError(f"config.json layer_norm_epsilon={config['layer_norm_epsilon']}: gptx uses "
                            f"{LAYER_NORM_EPS}")
    for flag in ("scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn"):
        if config.get(flag):
            raise HFLayoutError(f"config.json {flag}=true: gptx's attention does not do that")
    for name in ("wte.weight", "wpe.weight"):
        if name not in tensors:
            raise HFLayoutError(f"no {name}: not GPT-2 weights in the Hugging Face layout")
    vocab_size, d_model = tensors["wte.weight"].shape
    n_layers = sum(1 for name in tensors if name.startswith("h.") and name.endswith(".ln_1.weight"))
    n_heads = config.get("n_head")
    if n_heads is None:
        if d_model % GPT2_HEAD_DIM:
            raise HFLayoutError(f"no config.json next to the weights to give n_head, and d_model={d_model} "
                                f"is not a multiple of GPT-2's head size {GPT2_HEAD_DIM}")
        n_heads = d_model // GPT2_HEAD_DIM
    for key, value in (("n_embd", d_model), ("vocab_size", vocab_size), ("n_layer", n_layers)):
        if key in config and config[key] != value:
            raise HFLayoutError(f"config.json says {key}={config[key]} but the weights have {value}")
    qkv_bias = any(bool(tensors[f"h.{n}.attn.c_attn.bias"].any()) for n in range(n_layers)
                   if f"h.{n}.attn.c_attn.bias" in tensors)
    if "tie_word_embeddings" in config:
        tied = bool(config["tie_word_embeddings"])
    else:  # transformers ties by default; a separate, different lm_head in the file says otherwise
        tied = "lm_head.weight" not in tensors or torch.equal(tensors["lm_head.weight"], tensors["wte.weight"])
    if not tied and "lm_head.weight" not in tensors:
        raise HFLayoutError("config.json says tie_word_embeddings=false but the file has no lm_head.weight")
    return ModelConfig(name="hf_gpt2", vocab_size=vocab_size, context_length=tensors["wpe.weight"].shape[0],
                       d_model=d_model, n_heads=int(n_heads), n_layers=n_layers,
                       dropout=float(config.get("resid_pdrop", 0.1)), qkv_bias=qkv_bias, weight_tying=tied)


def from_hf_state_dict(tensors: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """gptx's state dict from HF GPT-2 weights (names normalized) for the architecture `cfg`."""
    remaining = {name: t.float() for name, t in tensors.items()}

    def take(hf_name: str) -> torch.Tensor:
        if hf_name not in remaining:
            raise HFLayoutError(f"the file has no {hf_name}, which a {cfg.n_layers}-layer GPT-2 needs")
        return remaining.pop(hf_name)

    d = cfg.d_model
    gptx = {name: take(hf_name) for name, hf_name in TOP_LEVEL.items()}
    for n in range(cfg.n_layers):
        block, hf_block = f"trf_blocks.{n}.", f"h.{n}."
        for name, (hf_name, conv1d) in BLOCK.items():
            tensor = take(hf_block + hf_name)
            gptx[block + name] = tensor.t() if conv1d else tensor
        fused, fused_bias = take(hf_block + "attn.c_attn.weight"), take(hf_block + "attn.c_attn.bias")
        if fused.shape != (d, 3 * d):
            raise HFLayoutError(f"{hf_block}attn.c_attn.weight has shape {tuple(fused.shape)}, expected "
                                f"({d}, {3 * d}) (Conv1D, [in, out])")
        if not cfg.qkv_bias and fused_bias.any():
            raise HFLayoutError(f"{hf_block}attn.c_attn.bias is not zero but model.qkv_bias=false")
        for part, weight, bias in zip(QKV, fused.t().split(d, dim=0), fused_bias.split(d), strict=True):
            gptx[f"{block}att.{part}.weight"] = weight
            if cfg.qkv_bias:
                gptx[f"{block}att.{part}.bias"] = bias
    head = remaining.pop("lm_head.weight", None)
    gptx["out_head.weight"] = gptx["tok_emb.weight"] if cfg.weight_tying else head  # type: ignore[assignment]
    if remaining:
        raise HFLayoutError(f"tensors gptx's GPT-2 has no place for: {', '.join(sorted(remaining))}")
    return {name: t.contiguous() for name, t in gptx.items()}


def read_hf_config(weights: Path) -> dict[str, Any] | None:
    """The config.json beside the weights, if there is one."""
    path = weights.parent / HF_CONFIG_FILE
    if not path.is_file():
        return None
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise HFLayoutError(f"{path}: not readable JSON ({err})") from None
    if not isinstance(config, dict):
        raise HFLayoutError(f"{path}: expected a JSON object")
    return config


def load_hf_model(weights: Path) -> GPTModel:
    """A gptx model (on the CPU, eval mode) holding HF GPT-2 weights from a model.safetensors file."""
    tensors = normalize_hf_names(load_file(str(weights)))
    cfg = model_config_from_hf(tensors, read_hf_config(weights))
    state = from_hf_state_dict(tensors, cfg)
    model = GPTModel(cfg)
    model.load_state_dict(state, strict=True)
    return model.eval()
