"""python -m gptx.export RUN_DIR OUT_DIR [--overwrite]

Write a run's weights in the Hugging Face GPT-2 layout: OUT_DIR/model.safetensors and OUT_DIR/config.json,
what transformers' `GPT2LMHeadModel.from_pretrained(OUT_DIR)` reads (transformers is not needed here).
GPT-2's tokenizer files (vocab.json, merges.txt) are written beside them, made from the bundled ranks, so
`AutoTokenizer.from_pretrained(OUT_DIR)` works offline. RUN_DIR may also be a gptx
.safetensors file. gptx's tools read the export back too (`python -m gptx.evaluate OUT_DIR`).

HF GPT-2 always has Q/K/V biases: a run without them exports zero biases, which computes exactly the
same. An untied output head is written as lm_head.weight with tie_word_embeddings=false.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

from safetensors import SafetensorError

from gptx.errors import ArgumentParser, GptxError, entry_point
from gptx.files import RESULT_FILE, dir_mode, disk_full, file_mode
from gptx.tokenizer import END_OF_TEXT_ID
from gptx.tools.hf import HF_CONFIG_FILE, HF_WEIGHTS_FILE, save_hf
from gptx.tools.hf_tokenizer import save_gpt2_tokenizer
from gptx.tools.load import LoadError, load_model

GPT2_VOCAB_SIZE = END_OF_TEXT_ID + 1


def export(source: str | Path, out_dir: str | Path, overwrite: bool = False) -> list[str]:
    """Export the model at `source` to out_dir in the HF GPT-2 layout; returns notes for the user."""
    out_dir = Path(out_dir)
    existing = [out_dir / name for name in (HF_WEIGHTS_FILE, HF_CONFIG_FILE) if (out_dir / name).exists()]
    if existing and not overwrite:
        raise LoadError(f"{existing[0]} exists; pass --overwrite to replace it")
    if (out_dir / RESULT_FILE).exists():
        raise LoadError(f"{out_dir} is a run folder; export into a folder of its own")
    loaded = load_model(source)
    if out_dir.resolve() == loaded.weights.parent.resolve():
        raise LoadError(f"{out_dir} holds the weights being exported; export into another folder")
    # Everything is written into a temporary folder beside out_dir first: a full disk or a crash leaves
    # out_dir as it was (and no temporary folder), and every file that lands there is whole.
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.tmp-"))
    try:
        tmp.chmod(dir_mode())
        notes = save_hf(loaded.model, tmp)
        if loaded.model.cfg.vocab_size == GPT2_VOCAB_SIZE:
            save_gpt2_tokenizer(tmp)
            notes.append("wrote GPT-2's tokenizer files (vocab.json, merges.txt): AutoTokenizer loads them offline")
        else:
            notes.append(f"no tokenizer files: a {loaded.model.cfg.vocab_size}-token vocabulary is not GPT-2's")
        for path in tmp.iterdir():
            with open(path, "rb") as f:
                os.fchmod(f.fileno(), file_mode())  # safetensors creates its files 0600
                os.fsync(f.fileno())
        if not out_dir.exists():
            os.replace(tmp, out_dir)
        else:  # --overwrite: the weights go last, so a config.json never describes weights not yet there
            for path in sorted(tmp.iterdir(), key=lambda p: p.name == HF_WEIGHTS_FILE):
                os.replace(path, out_dir / path.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return notes


@entry_point()
def main(argv: list[str] | None = None) -> int:
    """Command-line entry: export, then say what was written."""
    parser = ArgumentParser(prog="python -m gptx.export", description=__doc__.split("\n\n")[1],
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", help="run folder (or gptx .safetensors) to export")
    parser.add_argument("out_dir", help="folder for model.safetensors and config.json")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier export in OUT_DIR")
    args = parser.parse_args(argv)
    try:
        notes = export(args.run_dir, args.out_dir, args.overwrite)
    except (OSError, SafetensorError) as err:  # a full or read-only disk: nothing in OUT_DIR was changed
        if not (isinstance(err, OSError) or disk_full(err)):
            raise
        what = "the disk is full" if disk_full(err) else f"cannot write there ({err.strerror or err})"
        raise GptxError(f"{what}: nothing in {args.out_dir} was changed; free space or pick another folder") from None
    for note in notes:
        print(f"note: {note}")
    print(f"wrote {Path(args.out_dir) / HF_WEIGHTS_FILE} and {HF_CONFIG_FILE} (Hugging Face GPT-2 layout)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
