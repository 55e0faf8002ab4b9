"""GPT-2's byte-pair encoding from the copy bundled with the package, so no run needs the network."""

from __future__ import annotations

import functools
from pathlib import Path

import tiktoken
from tiktoken.load import load_tiktoken_bpe

ASSETS = Path(__file__).resolve().parent / "assets"
BPE_RANKS_PATH = ASSETS / "r50k_base.tiktoken"
BPE_RANKS_SHA256 = "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930"
END_OF_TEXT = "<|endoftext|>"
END_OF_TEXT_ID = 50256
# tiktoken's gpt2 / r50k_base pre-tokenization pattern.
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""


@functools.cache
def gpt2_tokenizer() -> tiktoken.Encoding:
    """GPT-2's tokenizer (50257 tokens), checked against the bundled ranks' sha256."""
    ranks = load_tiktoken_bpe(str(BPE_RANKS_PATH), expected_hash=BPE_RANKS_SHA256)
    return tiktoken.Encoding(
        name="gpt2-bundled",
        pat_str=GPT2_PATTERN,
        mergeable_ranks=ranks,
        special_tokens={END_OF_TEXT: END_OF_TEXT_ID},
    )
