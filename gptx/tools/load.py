"""Load a model for the command-line tools: a run folder, a gptx .safetensors, or GPT-2 in the HF layout.

    load_model("multirun_outputs/interventions/intervention=grad_clip")  # a run folder
    load_model("best.safetensors")                                      # gptx weights, config in metadata
    load_model("gpt2/model.safetensors")                                # OpenAI's GPT-2 (Hugging Face layout)

Which layout a file holds is read from its tensor names, never guessed from its name. A gptx model's
architecture comes from its saved config, read as plain data: a run folder's through
`gptx.saved_config.load_run_config`, a lone file's `gptx_config` metadata under the same rules (safe YAML,
schema keys only, no interpolation), so nothing a file names is ever imported, run or resolved.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from gptx.config import GptxConfig
from gptx.errors import UsageError
from gptx.hardware import device_memory
from gptx.model import GPTModel, check_fits, check_parameter_cap
from gptx.saved_config import config_from_text, load_run_config
from gptx.tools.hf import HF_PREFIX, load_hf_model
from gptx.weights import check_loaded, load_weights, tie_aliases, weights_path

GPTX_METADATA_KEY = "gptx_config"


class LoadError(UsageError, ValueError):
    """A path that holds no loadable model; the message says what is wrong with it."""


@dataclass
class LoadedModel:
    """A model ready for evaluation (CPU, eval mode) and where it came from."""

    model: GPTModel
    layout: str
    """gptx or hf."""
    weights: Path
    config: GptxConfig | None
    """The training config of gptx weights (model, data, train); None for HF weights."""


def load_model(path: str | Path) -> LoadedModel:
    """Load the model a run folder, gptx .safetensors or HF GPT-2 file holds."""
    weights = weights_path(path)
    names, metadata = _read_header(weights)
    if "tok_emb.weight" in names:
        config = load_run_config(Path(path)) if Path(path).is_dir() else config_from_metadata(weights, metadata)
        check_parameter_cap(config.model, f"the config saved with {weights}")
        check_fits(config.model, device_memory(torch.device("cpu")), 4, "its float32 weights")  # loaded on the CPU
        model = GPTModel(config.model)
        try:
            load_weights(model, weights)
        except (RuntimeError, ValueError) as err:
            raise LoadError(f"{weights}: the weights do not fit the saved config's model ({err})") from None
        check_loaded(model, weights, metadata)  # a flipped bit is one line, never a silent export or sample
        return LoadedModel(model.eval(), "gptx", weights, config)
    if "wte.weight" in names or HF_PREFIX + "wte.weight" in names:
        return LoadedModel(load_hf_model(weights), "hf", weights, None)
    raise LoadError(f"{weights}: neither gptx weights (tok_emb.weight) nor GPT-2 in the Hugging Face "
                    "layout (wte.weight)")


def config_from_metadata(weights: Path, metadata: dict[str, str]) -> GptxConfig:
    """The config saved in a gptx weights file's metadata, read as plain data and validated."""
    text = metadata.get(GPTX_METADATA_KEY)
    if text is None:
        raise LoadError(f"{weights} holds gptx weights but no {GPTX_METADATA_KEY} metadata to say their "
                        "architecture")
    return config_from_text(text, f"{weights} ({GPTX_METADATA_KEY} metadata)")


def _read_header(weights: Path) -> tuple[set[str], dict[str, str]]:
    """Every tensor name a weights file answers to (tied aliases included) and its metadata."""
    try:
        with safe_open(str(weights), framework="pt") as f:
            names, metadata = set(f.keys()), f.metadata() or {}
    except (OSError, SafetensorError) as err:
        raise LoadError(f"{weights}: not a readable safetensors file ({err})") from None
    return names | set(tie_aliases(names, metadata)), metadata
