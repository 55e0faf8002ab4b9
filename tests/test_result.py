"""The run folder's record: one declaration of result.json's fields, its reader, and the "already done?" rule."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gptx.files import RESULT_FILE, write_json
from gptx.result import RunResult, Status, arm_name, completed_with, load_result, read_result

REPO = Path(__file__).resolve().parents[1]


def test_arm_name():
    assert arm_name(["qkv_bias", "grad_clip"]) == "grad_clip+qkv_bias"
    assert arm_name(["baseline"]) == arm_name([]) == "baseline"
    assert arm_name(["baseline", "grad_clip"]) == "grad_clip"
    assert arm_name("grad_clip") == "grad_clip"


def test_a_record_round_trips_with_every_field_and_the_keys_it_does_not_know():
    obj = {"status": "completed", "intervention": ["grad_clip"], "arm": "grad_clip", "init_seed": 42,
           "test_loss": 3.5, "from_a_newer_gptx": {"x": 1}}
    record = RunResult.from_json(obj)
    assert record.test_loss == 3.5 and record.completed and record.extra == {"from_a_newer_gptx": {"x": 1}}
    out = record.to_json()
    assert list(out)[:3] == ["status", "intervention", "arm"] and list(out)[-1] == "from_a_newer_gptx"
    assert out["val_loss"] is None  # every declared field is written, null while unknown
    assert RunResult.from_json(out) == record
    assert record["from_a_newer_gptx"] == {"x": 1} and record["test_loss"] == 3.5
    with pytest.raises(KeyError):
        record["nothing_like_it"]


def test_old_files_are_patched_in_the_reader():
    record = RunResult.from_json({"status": "completed", "intervention": "qkv_bias"})
    assert record.intervention == ["qkv_bias"] and record.arm == "qkv_bias"
    assert RunResult.from_json({"status": "failed", "error": "bad"}).arm is None  # no interventions: no name


def test_update_refuses_a_field_result_json_does_not_declare():
    record = RunResult()
    record.update({"steps": 5}, test_loss=1.0)
    assert (record.steps, record.test_loss) == (5, 1.0)
    with pytest.raises(AttributeError, match="declares no field 'test_los'"):
        record.update(test_los=1.0)


def test_get_gives_the_default_for_unknown_and_null_fields():
    record = RunResult(warnings=None, extra={"note": "x"})
    assert record.get("warnings", []) == [] and record.get("note") == "x" and record.get("absent", 7) == 7


@pytest.mark.parametrize("content", [b"", b"[1, 2]", b"{", b"\xff\xfe", b"[" * 100_000])
def test_the_reader_says_none_for_anything_gptx_did_not_write(tmp_path, content):
    (tmp_path / RESULT_FILE).write_bytes(content)
    assert read_result(tmp_path) is None
    with pytest.raises(ValueError):
        load_result(tmp_path)
    assert read_result(tmp_path / "absent") is None


def test_completed_with_is_completed_same_config_and_intact_weights(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"weights")
    import hashlib

    record = RunResult(status=Status.COMPLETED, config_sha256="abc",
                       weights_file_sha256=hashlib.sha256(b"weights").hexdigest())
    write_json(tmp_path / RESULT_FILE, record.to_json())
    same = lambda r: r.config_sha256 == "abc"  # noqa: E731
    assert completed_with(tmp_path, read_result(tmp_path), same) == (True, "")
    assert completed_with(tmp_path, read_result(tmp_path), lambda r: False) == (False, "")
    assert completed_with(tmp_path, None, same) == (False, "")
    (tmp_path / "model.safetensors").write_bytes(b"damaged")
    done, why = completed_with(tmp_path, read_result(tmp_path), same)
    assert not done and "does not match the weights_file_sha256" in why
    record.status = Status.RUNNING
    assert completed_with(tmp_path, record, same) == (False, "")


READS = re.compile(r"read_json|json\.load|open\(|read_text|read_bytes")


def test_result_json_has_one_reader():
    """Every room reads result.json through gptx.result: no other module opens it itself."""
    offenders = []
    for path in [*(REPO / "gptx").rglob("*.py"), *(REPO / "hydra_plugins").rglob("*.py")]:
        if path.name == "result.py" and path.parent.name == "gptx":
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if ("RESULT_FILE" in line or "result.json" in line) and READS.search(line):
                offenders.append(f"{path.relative_to(REPO)}:{n}: {line.strip()}")
    assert offenders == []


def test_no_status_word_outside_its_owner():
    """A run's states are Status members: no module spells one as a string of its own."""
    import ast

    words = {status.value for status in Status}
    found = []
    for path in [*(REPO / "gptx").rglob("*.py"), *(REPO / "hydra_plugins").rglob("*.py")]:
        if path == REPO / "gptx" / "result.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value in words:
                found.append(f"{path.relative_to(REPO)}:{node.lineno}: {node.value!r}")
    assert found == []
