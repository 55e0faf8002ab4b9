"""Text to token ids and back: GPT-2's byte-pair encoding (from the copy bundled with the package, so no
run needs the network) or one token per character of a run's saved vocabulary (`data.tokenizer=char`).
"""

from __future__ import annotations

import functools
from pathlib import Path

import tiktoken
from tiktoken.load import load_tiktoken_bpe

from gptx.config import ConfigError, DataConfig, Tokenizer

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


class CharTokenizer:
    """One token per character: id i is the i-th character of the vocabulary."""

    def __init__(self, vocab: str):
        self.vocab = vocab
        self._ids = {char: i for i, char in enumerate(vocab)}

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`; ConfigError naming the characters the vocabulary lacks."""
        try:
            return [self._ids[char] for char in text]
        except KeyError:
            missing = "".join(sorted(set(text) - set(self._ids)))
            raise ConfigError(f"characters {missing!r} are not in the {len(self.vocab)}-character vocabulary "
                              f"{self.vocab!r}") from None

    encode_ordinary = encode  # the name data loading calls on GPT-2's encoding

    def decode(self, ids: list[int]) -> str:
        """The characters of these ids."""
        return "".join(self.vocab[i] for i in ids)


TextTokenizer = tiktoken.Encoding | CharTokenizer  # both have encode, encode_ordinary and decode


def tokenizer_for(data: DataConfig | None) -> TextTokenizer:
    """The tokenizer a run's data config names (None, for weights without a gptx config: GPT-2's)."""
    if data is not None and data.tokenizer is Tokenizer.char:
        return CharTokenizer(data.vocab)  # type: ignore[arg-type]
    return gpt2_tokenizer()
