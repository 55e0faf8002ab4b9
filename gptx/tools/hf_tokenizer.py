"""GPT-2's tokenizer in the Hugging Face files (vocab.json, merges.txt), made from the bundled BPE ranks.

An export then loads with `AutoTokenizer.from_pretrained(out_dir)` offline, no download of OpenAI's
`gpt2` files needed. The two formats hold the same BPE: tiktoken stores each token's bytes and rank;
Hugging Face stores the tokens as printable strings (GPT-2's byte-to-unicode map) and the merges in rank
order. A token's merge is recovered by running BPE on its bytes with only the merges ranked before it,
which leaves exactly the two parts it was made from.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

from gptx.files import write_atomic
from gptx.tokenizer import END_OF_TEXT, END_OF_TEXT_ID, gpt2_tokenizer

VOCAB_FILE, MERGES_FILE, TOKENIZER_CONFIG_FILE = "vocab.json", "merges.txt", "tokenizer_config.json"


def byte_to_unicode() -> dict[int, str]:
    """GPT-2's map of the 256 byte values to printable characters: printable Latin-1 bytes stand for
    themselves, the other 68 take the code points from 256 upwards, in byte order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    mapping, extra = {b: chr(b) for b in printable}, 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping


def _parts_before(ranks: dict[bytes, int], token: bytes, rank: int) -> list[bytes]:
    """BPE of `token`'s bytes using only merges ranked below `rank`."""
    parts = [bytes([b]) for b in token]
    while len(parts) > 1:
        found = [(ranks[a + b], i) for i, (a, b) in enumerate(zip(parts, parts[1:])) if ranks.get(a + b, rank) < rank]
        if not found:
            break
        _, i = min(found)
        parts[i : i + 2] = [parts[i] + parts[i + 1]]
    return parts


@functools.cache
def gpt2_hf_files() -> dict[str, str]:
    """vocab.json, merges.txt and tokenizer_config.json for GPT-2's tokenizer, as text (a few seconds, once)."""
    ranks = gpt2_tokenizer()._mergeable_ranks
    to_text = byte_to_unicode()

    def text(token: bytes) -> str:
        return "".join(to_text[b] for b in token)

    vocab = {text(token): rank for token, rank in ranks.items()}
    vocab[END_OF_TEXT] = END_OF_TEXT_ID
    merges = []
    for token, rank in sorted(ranks.items(), key=lambda item: item[1]):
        if len(token) > 1:
            left, right = _parts_before(ranks, token, rank)
            merges.append(f"{text(left)} {text(right)}")
    config = {"tokenizer_class": "GPT2Tokenizer", "model_max_length": 1024, "bos_token": END_OF_TEXT,
              "eos_token": END_OF_TEXT, "unk_token": END_OF_TEXT, "add_prefix_space": False}
    return {VOCAB_FILE: json.dumps(vocab, ensure_ascii=False),
            MERGES_FILE: "#version: 0.2\n" + "\n".join(merges) + "\n",
            TOKENIZER_CONFIG_FILE: json.dumps(config, indent=2) + "\n"}


def save_gpt2_tokenizer(out_dir: Path) -> None:
    """Write GPT-2's tokenizer files into out_dir (each atomically)."""
    for name, content in gpt2_hf_files().items():
        write_atomic(Path(out_dir) / name, content.encode())
