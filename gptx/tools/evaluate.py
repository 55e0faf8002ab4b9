"""python -m gptx.evaluate MODEL [--data-path PATH] [--seq-len N] [--test-sequences N] [--batch-size N]

Test loss and perplexity of a model: a run folder, a gptx .safetensors, or GPT-2 in the Hugging Face
layout (OpenAI's GPT-2 small scored 3.500 on the study's FineWeb test set). The test set is the run's
own (its saved data config, test-sequence count and sequence length) unless flags say otherwise; HF
weights get the bundled Tiny Shakespeare unless --data-path names data. --data-path takes a text file
(split by position like the bundled corpus) or a directory of token files (its test split).

    python -m gptx.evaluate multirun_outputs/interventions/intervention=grad_clip
    python -m gptx.evaluate gpt2/model.safetensors --data-path /data/fineweb10B --test-sequences 19200
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from pathlib import Path
from typing import Any

from gptx.config import ConfigError, DataConfig, DataFormat, DeviceKind, TrainConfig
from gptx.data import load_data
from gptx.errors import ArgumentParser, entry_point
from gptx.hardware import resolve_device
from gptx.precision import resolve_precision
from gptx.scoring import split_loss
from gptx.seeding import configure_determinism
from gptx.tools.load import LoadedModel, load_model

DEFAULT_BATCH_SIZE = 8


@dataclasses.dataclass(frozen=True)
class EvalData:
    """Which data, how cut, and how much of it a model is scored on."""

    data: DataConfig
    seq_len: int
    n_sequences: int | None
    """First N test sequences (None = all)."""


def eval_data_for(loaded: LoadedModel, data_path: str | None = None, seq_len: int | None = None,
                  test_sequences: int | None = None) -> EvalData:
    """The run's own test set (or the bundled corpus for HF weights), changed by whatever flags are given."""
    cfg = loaded.config
    data = cfg.data if cfg is not None else DataConfig()
    if data_path is not None:
        path = Path(data_path)
        if path.is_dir():
            data = dataclasses.replace(data, name=path.name, format=DataFormat.tokens, path=str(path))
        elif path.is_file():
            data = dataclasses.replace(data, name=path.stem, format=DataFormat.text, path=str(path))
        else:
            raise ConfigError(f"--data-path {path}: no such file (text) or folder (token files)")
    if seq_len is None:
        seq_len = (cfg.train.seq_len if cfg is not None else None) or loaded.model.cfg.context_length
    if not 0 < seq_len <= loaded.model.cfg.context_length:
        raise ConfigError(f"--seq-len {seq_len} must be in [1, {loaded.model.cfg.context_length}] "
                          "(the model's context length)")
    if test_sequences is not None and test_sequences <= 0:
        raise ConfigError(f"--test-sequences {test_sequences} must be > 0")
    return EvalData(data, seq_len, test_sequences if test_sequences is not None else data.test_sequences)


def evaluate(loaded: LoadedModel, test: EvalData, batch_size: int | None = None, device: str = "auto",
             amp: bool = True) -> dict[str, Any]:
    """Mean next-token loss on the test set's first sequences, with the run's precision settings."""
    train_cfg = loaded.config.train if loaded.config is not None else TrainConfig()
    if batch_size is None:
        batch_size = train_cfg.micro_batch if loaded.config is not None else DEFAULT_BATCH_SIZE
    if batch_size <= 0:
        raise ConfigError(f"--batch-size {batch_size} must be > 0")
    configure_determinism(train_cfg.deterministic)  # as the run computed its own test loss
    torch_device = resolve_device(DeviceKind(device))
    precision = resolve_precision(dataclasses.replace(train_cfg, amp=train_cfg.amp and amp), torch_device)
    split = load_data(test.data, test.seq_len, loaded.model.cfg.vocab_size).test
    n = split.n_sequences if test.n_sequences is None else min(test.n_sequences, split.n_sequences)
    model = loaded.model.to(torch_device)
    loss = split_loss(model, split, n, batch_size, torch_device, precision)
    return {"model": str(loaded.weights), "layout": loaded.layout, "data": test.data.name,
            "data_path": test.data.path, "test_loss": loss, "perplexity": math.exp(loss),
            "test_sequences": n, "seq_len": test.seq_len, "test_tokens": n * test.seq_len,
            "batch_size": batch_size, "device": str(torch_device), "precision": precision.label}


@entry_point()
def main(argv: list[str] | None = None) -> int:
    """Command-line entry: print the test loss and perplexity (or all of it as JSON)."""
    parser = ArgumentParser(prog="python -m gptx.evaluate", description=__doc__.split("\n\n")[1],
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="run folder, gptx .safetensors, or HF GPT-2 model.safetensors (or its folder)")
    parser.add_argument("--data-path", help="text file or token-file folder (default: the run's data)")
    parser.add_argument("--seq-len", type=int, help="tokens a test sequence (default: the run's, else the context)")
    parser.add_argument("--test-sequences", type=int, help="score the first N test sequences (default: the run's)")
    parser.add_argument("--batch-size", type=int, help=f"sequences a forward pass (default: the run's micro-batch, "
                                                       f"else {DEFAULT_BATCH_SIZE})")
    parser.add_argument("--device", choices=[k.value for k in DeviceKind], default="auto")
    parser.add_argument("--no-amp", action="store_true", help="no autocast on CUDA (float32 throughout)")
    parser.add_argument("--json", action="store_true", help="print every figure as one JSON object")
    args = parser.parse_args(argv)
    loaded = load_model(args.model)
    test = eval_data_for(loaded, args.data_path, args.seq_len, args.test_sequences)
    result = evaluate(loaded, test, args.batch_size, args.device, amp=not args.no_amp)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"test_loss {result['test_loss']:.6f}  perplexity {result['perplexity']:.4f}  "
              f"({result['test_sequences']} sequences x {result['seq_len']} tokens of {result['data']}, "
              f"{result['layout']} weights, {result['device']} {result['precision']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
