"""python -m gptx.compare A B

Are two sets of weights identical? A and B are run folders (their model.safetensors, and the test
loss from result.json when there is one) or `.safetensors` files. Prints IDENTICAL, or DIFFERENT with
each differing tensor's max abs diff and the tensors only one side has. Exit 0 identical, 1 different,
2 usage error. Only safetensors are read, so comparing files from anywhere runs no code.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

from gptx.config import ConfigError, ModelConfig
from gptx.errors import ArgumentParser, UsageError, entry_point
from gptx.files import MODEL_FILE
from gptx.hashing import weights_sha256
from gptx.result import RunResult, read_result, weights_intact
from gptx.weights import (
    RECORDED_SHA_KEY,
    WeightsDamaged,
    WeightsNotFound,
    check_header,
    load_weights,
    tie_aliases,
    weights_path,
)

LOSS_DECIMALS = 6  # as gptx prints test_loss; "equal" for a verdict means equal to these decimals


class CompareError(UsageError, ValueError):
    """A path is not a run folder or a safetensors file that can be read."""


@dataclass
class TensorDiff:
    """One tensor that is not bit-identical on both sides."""

    name: str
    max_abs_diff: float | None
    """None when shapes or dtypes differ (then `note` says how)."""
    note: str = ""

    def describe(self) -> str:
        """One line for a report."""
        if self.max_abs_diff is None:
            return f"{self.name}  {self.note}"
        return f"{self.name}  max abs diff {self.max_abs_diff:.3e}"


@dataclass
class WeightsComparison:
    """Tensor-by-tensor result of comparing two weight files."""

    n_a: int
    n_b: int
    differing: list[TensorDiff] = field(default_factory=list)
    only_a: list[str] = field(default_factory=list)
    only_b: list[str] = field(default_factory=list)

    @property
    def identical(self) -> bool:
        """Same names, and every tensor bit-identical (dtype, shape and bytes)."""
        return not (self.differing or self.only_a or self.only_b)

    def lines(self, a: str = "A", b: str = "B") -> list[str]:
        """The differences, one per line (empty when identical)."""
        out = [f"  {d.describe()}" for d in self.differing]
        out += [f"  only in {a}: {name}" for name in self.only_a]
        out += [f"  only in {b}: {name}" for name in self.only_b]
        return out

    def to_json(self) -> dict[str, Any]:
        """Plain data for reproduction.json."""
        return {"identical": self.identical,
                "differing": [{"name": d.name, "max_abs_diff": d.max_abs_diff, "note": d.note}
                              for d in self.differing],
                "only_a": self.only_a, "only_b": self.only_b}


def compare_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> WeightsComparison:
    """Compare two name -> tensor maps bit for bit; max abs diff for tensors of equal shape."""
    result = WeightsComparison(len(a), len(b), only_a=sorted(set(a) - set(b)), only_b=sorted(set(b) - set(a)))
    for name in sorted(set(a) & set(b)):
        x, y = a[name], b[name]
        if x.dtype != y.dtype or x.shape != y.shape:
            note = f"{x.dtype}{list(x.shape)} vs {y.dtype}{list(y.shape)}"
            result.differing.append(TensorDiff(name, None, note))
        elif not bitwise_equal(x, y):
            result.differing.append(TensorDiff(name, max_abs_diff(x, y)))
    return result


def bitwise_equal(x: torch.Tensor, y: torch.Tensor) -> bool:
    """Same dtype, shape and bytes (so NaN equals the same NaN, and -0.0 differs from 0.0)."""
    if x.dtype != y.dtype or x.shape != y.shape:
        return False
    bytes_x = x.detach().cpu().contiguous().reshape(-1).view(torch.uint8)
    bytes_y = y.detach().cpu().contiguous().reshape(-1).view(torch.uint8)
    return torch.equal(bytes_x, bytes_y)


def max_abs_diff(x: torch.Tensor, y: torch.Tensor) -> float:
    """Largest |x - y| in float64 (nan when either side has a NaN where the other differs)."""
    if x.numel() == 0:
        return 0.0
    return float((x.detach().cpu().double() - y.detach().cpu().double()).abs().max())


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """All tensors of a safetensors file on the CPU, a tied matrix under each of its names."""
    try:
        check_header(path)
        tensors = load_file(str(path))
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata()
    except (OSError, SafetensorError, WeightsNotFound) as err:
        raise CompareError(f"{path}: unreadable safetensors file: {err}") from None
    return {**tensors, **{alias: tensors[kept] for alias, kept in tie_aliases(tensors, metadata).items()}}


def weights_file_sha256(path: Path, model_cfg: ModelConfig) -> str:
    """`final_weights_sha256` as train computes it, of a saved weights file (tied names resolved).

    The file's tensors are loaded into a model of the given config, so the hash counts a tied matrix
    under the name the model gives it, exactly as result.json does.
    """
    from gptx.model import GPTModel

    model = GPTModel(model_cfg)
    try:
        load_weights(model, path)
    except (OSError, SafetensorError, RuntimeError, ValueError) as err:
        first = str(err).splitlines()[0]
        raise CompareError(f"{path} does not fit the run's model config: {first}") from None
    return weights_sha256(model)


def verify_recorded(path: Path) -> None:
    """Raise WeightsDamaged when a gptx weights file no longer holds the weights its run recorded.

    A run folder's file is checked against result.json's `weights_file_sha256` (one streaming pass over
    the file); any other gptx file (or an older run's) is loaded and checked against its recorded
    final_weights_sha256; files gptx did not write (no recorded hash) are compared as they are.
    """
    result = _result_of(path)
    if path.name == MODEL_FILE and isinstance(result.get("weights_file_sha256"), str):
        intact, why = weights_intact(path.parent, result)
        if not intact:
            raise WeightsDamaged(f"{path.parent}: {why}: the file was damaged or changed after the run wrote it")
        return
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
    except (OSError, SafetensorError) as err:
        raise CompareError(f"{path}: unreadable safetensors file: {err}") from None
    if RECORDED_SHA_KEY in metadata or isinstance(result.get("final_weights_sha256"), str):
        from gptx.tools.load import LoadError, load_model

        try:
            load_model(path)
        except (LoadError, ConfigError) as err:  # a config gptx will not build a model of is one line too
            raise CompareError(str(err)) from None


def _result_of(path: Path) -> RunResult:
    """The result.json beside a run folder's model.safetensors (an empty record for any other file)."""
    return (read_result(path.parent) if path.name == MODEL_FILE else None) or RunResult()


def test_loss_of(path: str | Path) -> float | None:
    """The test loss in a run folder's result.json (None for a file, or when there is none)."""
    result = read_result(Path(path))
    value = result.test_loss if result is not None else None
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def loss_agreement(a: float | None, b: float | None) -> dict[str, Any]:
    """Whether two test losses agree to the printed decimals, and whether they are the same float."""
    if a is None or b is None:
        return {"a": a, "b": b, "diff": None, "equal_printed": None, "exactly_equal": None}
    printed_equal = f"{a:.{LOSS_DECIMALS}f}" == f"{b:.{LOSS_DECIMALS}f}"
    return {"a": a, "b": b, "diff": b - a, "equal_printed": printed_equal,
            "exactly_equal": a == b or (math.isnan(a) and math.isnan(b))}


def describe_losses(loss: dict[str, Any], a: str = "A", b: str = "B") -> str:
    """One line: both test losses, their difference, and how equal they are."""
    fmt = f".{LOSS_DECIMALS}f"
    if loss["equal_printed"] is None:
        sides = ((a, loss["a"]), (b, loss["b"]))
        shown = [f"{name} {value:{fmt}}" for name, value in sides if value is not None]
        return f"test_loss: {', '.join(shown) or 'none'} (not comparable)"
    exact = "exactly equal" if loss["exactly_equal"] else f"diff {loss['diff']:+.3e}"
    printed = "equal" if loss["equal_printed"] else "not equal"
    return (f"test_loss: {a} {loss['a']:{fmt}}  {b} {loss['b']:{fmt}}  "
            f"({printed} to {LOSS_DECIMALS} decimals, {exact})")


@entry_point()
def main(argv: list[str] | None = None) -> int:
    """CLI entry: compare, print the report, return the exit status."""
    parser = ArgumentParser(prog="python -m gptx.compare",
                            description="Are two runs' (or safetensors files') weights identical?")
    parser.add_argument("a", help="run folder or .safetensors file")
    parser.add_argument("b", help="run folder or .safetensors file")
    args = parser.parse_args(argv)
    path_a, path_b = weights_path(args.a), weights_path(args.b)
    verify_recorded(path_a)
    verify_recorded(path_b)
    weights = compare_tensors(read_tensors(path_a), read_tensors(path_b))
    loss = loss_agreement(test_loss_of(args.a), test_loss_of(args.b))
    identical = weights.identical and loss["equal_printed"] is not False
    print("IDENTICAL" if identical else "DIFFERENT")
    print(f"A: {path_a} ({weights.n_a} tensors)")
    print(f"B: {path_b} ({weights.n_b} tensors)")
    if weights.identical:
        print(f"weights: all {weights.n_a} tensors bit-identical")
    else:
        print(f"weights: {len(weights.differing)} tensors differ, {len(weights.only_a)} only in A, "
              f"{len(weights.only_b)} only in B")
        print("\n".join(weights.lines()))
    if loss["a"] is not None or loss["b"] is not None:
        print(describe_losses(loss))
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
