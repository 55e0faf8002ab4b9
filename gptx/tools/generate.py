"""python -m gptx.generate RUN_OR_MODEL [--prompt "Every effort moves you"] [--max-new-tokens 30]

Continue a prompt with a trained model (a run folder, a gptx .safetensors, or HF GPT-2 weights). Greedy
by default, which reproduces a run's sample.txt; --temperature and/or --top-k sample instead, from
--seed (the same seed gives the same text on the same device).

    python -m gptx.generate multirun_outputs/best/default --max-new-tokens 50
    python -m gptx.generate gpt2/model.safetensors --temperature 1.0 --top-k 25 --seed 123
"""

from __future__ import annotations

import argparse
import sys

import torch

from gptx.config import ConfigError, DeviceKind
from gptx.errors import ArgumentParser, entry_point
from gptx.hardware import resolve_device
from gptx.model import GPTModel
from gptx.scoring import SMOKE_PROMPT, greedy_sample
from gptx.seeding import seed_everything
from gptx.tokenizer import TextTokenizer, tokenizer_for
from gptx.tools.load import load_model


@torch.no_grad()
def sample_tokens(model: GPTModel, idx: torch.Tensor, max_new_tokens: int, temperature: float,
                  top_k: int | None) -> torch.Tensor:
    """Append max_new_tokens tokens drawn from softmax(logits / temperature), kept to the top_k most likely."""
    for _ in range(max_new_tokens):
        logits = model(idx[:, -model.cfg.context_length :])[:, -1, :].float()
        if top_k is not None:
            kth = torch.topk(logits, min(top_k, logits.shape[-1])).values[:, -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        probs = torch.softmax(logits / temperature, dim=-1)
        idx = torch.cat([idx, torch.multinomial(probs, num_samples=1)], dim=1)
    return idx


def generate(model: GPTModel, prompt: str, max_new_tokens: int, device: torch.device, tok: TextTokenizer,
             temperature: float | None = None, top_k: int | None = None, seed: int = 0) -> str:
    """The prompt and its continuation (in `tok`'s tokens): greedy unless a temperature or top-k asks for sampling."""
    if not prompt:
        raise ConfigError("--prompt is empty: give at least one token to continue")
    if max_new_tokens < 0:
        raise ConfigError(f"--max-new-tokens {max_new_tokens} must be >= 0")
    if top_k is not None and top_k < 1:
        raise ConfigError(f"--top-k {top_k} must be >= 1")
    if temperature is not None and temperature < 0:
        raise ConfigError(f"--temperature {temperature} must be >= 0 (0 = greedy)")
    model = model.to(device).eval()
    if temperature == 0 or (temperature is None and top_k is None):
        return greedy_sample(model, device, max_new_tokens, tok, prompt)
    seed_everything(seed)
    idx = torch.tensor([tok.encode(prompt)], device=device)
    out = sample_tokens(model, idx, max_new_tokens, 1.0 if temperature is None else temperature, top_k)
    return tok.decode(out[0].tolist())


@entry_point()
def main(argv: list[str] | None = None) -> int:
    """Command-line entry: print the prompt and its continuation."""
    parser = ArgumentParser(prog="python -m gptx.generate", description=__doc__.split("\n\n")[1],
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="run folder, gptx .safetensors, or HF GPT-2 model.safetensors (or its folder)")
    parser.add_argument("--prompt", default=SMOKE_PROMPT, help=f"text to continue (default: {SMOKE_PROMPT!r})")
    parser.add_argument("--max-new-tokens", type=int, default=30, help="tokens to generate (default: 30)")
    parser.add_argument("--temperature", type=float, help="sample at this temperature (0 = greedy; "
                                                          "default 1.0 when only --top-k is given)")
    parser.add_argument("--top-k", type=int, help="sample among the k most likely tokens only")
    parser.add_argument("--seed", type=int, default=0, help="seed for sampling (default: 0)")
    parser.add_argument("--device", choices=[k.value for k in DeviceKind], default="auto")
    args = parser.parse_args(argv)
    loaded = load_model(args.model)
    device = resolve_device(DeviceKind(args.device))
    tok = tokenizer_for(loaded.config.data if loaded.config is not None else None)
    text = generate(loaded.model, args.prompt, args.max_new_tokens, device, tok, args.temperature, args.top_k,
                    args.seed)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
