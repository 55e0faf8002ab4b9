"""Comparing weights: bit-identical or not, which tensors differ and by how much, tied files included."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from gptx.config import ModelConfig
from gptx.hashing import weights_sha256
from gptx.model import build_model
from gptx.tools.compare import bitwise_equal, compare_tensors, loss_agreement, main, weights_file_sha256
from gptx.weights import save_weights

from conftest import run_gptx

SMALL = dict(vocab_size=64, context_length=8, d_model=8, n_heads=2, n_layers=1)


def saved_model(path: Path, tied: bool = False, seed: int = 1) -> Path:
    model = build_model(ModelConfig(**SMALL, weight_tying=tied), seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_weights(model, path, {"gptx_config": "x: 1"})
    return path


def altered(src: Path, dst: Path, name: str, delta: float) -> Path:
    tensors = load_file(str(src))
    tensors[name] = tensors[name] + delta
    with safe_open(str(src), framework="pt") as f:
        metadata = f.metadata()
    save_file(tensors, str(dst), metadata=metadata)
    return dst


def run_folder(path: Path, weights: Path, test_loss: float) -> Path:
    path.mkdir(parents=True)
    shutil.copy(weights, path / "model.safetensors")
    (path / "result.json").write_text(json.dumps({"status": "completed", "test_loss": test_loss}))
    return path


def compare(capsys, a: Path, b: Path) -> tuple[int, str]:
    code = main([str(a), str(b)])
    return code, capsys.readouterr().out


def test_identical_files(tmp_path, capsys):
    a = saved_model(tmp_path / "a.safetensors")
    b = tmp_path / "b.safetensors"
    shutil.copy(a, b)
    code, out = compare(capsys, a, b)
    assert code == 0
    assert out.startswith("IDENTICAL\n") and "all 18 tensors bit-identical" in out


def test_differing_files_name_the_tensor_and_its_max_abs_diff(tmp_path, capsys):
    a = saved_model(tmp_path / "a.safetensors")
    b = altered(a, tmp_path / "b.safetensors", "trf_blocks.0.norm1.bias", 0.25)
    code, out = compare(capsys, a, b)
    assert code == 1
    assert out.startswith("DIFFERENT\n")
    assert "1 tensors differ, 0 only in A, 0 only in B" in out
    assert "  trf_blocks.0.norm1.bias  max abs diff 2.500e-01\n" in out


def test_tensors_only_on_one_side_and_shape_changes_are_listed(tmp_path, capsys):
    a = saved_model(tmp_path / "a.safetensors")
    tensors = load_file(str(a))
    tensors["extra"] = torch.zeros(2)
    tensors["pos_emb.weight"] = tensors["pos_emb.weight"][:4]
    del tensors["final_norm.bias"]
    save_file(tensors, str(tmp_path / "b.safetensors"))
    code, out = compare(capsys, a, tmp_path / "b.safetensors")
    assert code == 1
    assert "  only in A: final_norm.bias" in out and "  only in B: extra" in out
    assert "  pos_emb.weight  torch.float32[8, 8] vs torch.float32[4, 8]" in out


def test_a_run_folder_against_its_own_weights_file(tmp_path, capsys):
    weights = saved_model(tmp_path / "w.safetensors")
    run = run_folder(tmp_path / "run", weights, 3.25)
    code, out = compare(capsys, run, run / "model.safetensors")
    assert code == 0
    assert "test_loss: A 3.250000 (not comparable)" in out


def test_run_folders_with_equal_weights_but_another_test_loss_differ(tmp_path, capsys):
    weights = saved_model(tmp_path / "w.safetensors")
    a = run_folder(tmp_path / "a", weights, 3.25)
    b = run_folder(tmp_path / "b", weights, 3.2500015)
    code, out = compare(capsys, a, b)
    assert code == 1
    assert "all 18 tensors bit-identical" in out
    assert "test_loss: A 3.250000  B 3.250002  (not equal to 6 decimals, diff +1.500e-06)" in out


def test_tied_weights_are_stored_once_and_compare(tmp_path, capsys):
    a = saved_model(tmp_path / "a.safetensors", tied=True)
    names = set(load_file(str(a)))
    assert len(names) == 17 and not {"tok_emb.weight", "out_head.weight"} <= names
    tied_name = ({"tok_emb.weight", "out_head.weight"} & names).pop()
    b = altered(a, tmp_path / "b.safetensors", tied_name, -1e-2)
    assert compare(capsys, a, a)[0] == 0
    code, out = compare(capsys, a, b)
    assert code == 1 and f"  {tied_name}  max abs diff 1.000e-02" in out


@pytest.mark.parametrize("tied", [False, True])
def test_weights_file_hash_matches_the_hash_train_records(tmp_path, tied):
    cfg = ModelConfig(**SMALL, weight_tying=tied)
    model = build_model(cfg, 3)
    save_weights(model, tmp_path / "w.safetensors", {})
    assert weights_file_sha256(tmp_path / "w.safetensors", cfg) == weights_sha256(model)


def test_usage_errors_exit_2_without_loading_other_formats(tmp_path, capsys):
    a = saved_model(tmp_path / "a.safetensors")
    (tmp_path / "ckpt.pt").write_bytes(b"\x80\x04not really a pickle")
    (tmp_path / "broken.safetensors").write_bytes(b"\x00" * 16)
    (tmp_path / "empty_run").mkdir()
    for other, message in [(tmp_path / "missing.safetensors", "no such file or folder"),
                           (tmp_path / "ckpt.pt", "is not a .safetensors file"),
                           (tmp_path / "broken.safetensors", "unreadable safetensors file"),
                           (tmp_path / "empty_run", "has no model.safetensors")]:
        assert main([str(a), str(other)]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1
    with pytest.raises(SystemExit) as exit_:
        main([str(a)])
    assert exit_.value.code == 2


def test_bitwise_equality_is_stricter_than_numeric_equality():
    nan = torch.tensor([float("nan")])
    assert bitwise_equal(nan, nan.clone()) and not torch.equal(nan, nan)
    assert not bitwise_equal(torch.tensor([0.0]), torch.tensor([-0.0]))
    diff = compare_tensors({"x": torch.tensor([1.0, 2.0])}, {"x": torch.tensor([1.0, 2.5])})
    assert [(d.name, d.max_abs_diff) for d in diff.differing] == [("x", 0.5)]


def test_loss_agreement_separates_printed_and_exact_equality():
    close = loss_agreement(3.0000001, 3.0000002)
    assert close["equal_printed"] is True and close["exactly_equal"] is False
    assert loss_agreement(2.5, 2.5)["exactly_equal"] is True
    assert loss_agreement(None, 2.5)["equal_printed"] is None


def test_command_line(tmp_path):
    a = saved_model(tmp_path / "a.safetensors")
    b = altered(a, tmp_path / "b.safetensors", "final_norm.weight", 1.0)
    proc = run_gptx(str(a), str(b), module="gptx.compare", cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    assert "final_norm.weight  max abs diff 1.000e+00" in proc.stdout
