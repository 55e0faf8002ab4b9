"""gptx.bench: the command runs end to end on a tiny model and prints a table that parses (no timings asserted)."""

from __future__ import annotations

import json

import pytest

from gptx.tools.bench import main

from conftest import run_gptx


@pytest.mark.slow
def test_bench_smoke_prints_every_variant(tmp_path):
    proc = run_gptx("--model", "gpt2_tiny", "--steps", "2", "--warmup", "1", "--batch-size", "2", "--seq-len", "16",
                    "--device", "cpu", "--threads", "1", "--json", str(tmp_path / "bench.json"),
                    module="gptx.bench", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    assert "model=gpt2_tiny" in lines[0] and "threads=1" in lines[0] and "device=cpu" in lines[0]
    assert "tokens/step=32" in lines[1] and "peak=unknown" in lines[1]
    rows = {line.split()[0]: line.split() for line in lines[3:]}
    variants = ("eager", "eager+deterministic", "eager/full-logits-loss", "eager/foreach-adamw", "eager/as-before")
    assert set(rows) == {*variants, "compiled", "dataloader"}
    for name in (*variants, "dataloader"):
        assert float(rows[name][1]) > 0 and float(rows[name][2].replace(",", "")) > 0
        assert rows[name][3] == "n/a"  # a CPU has no peak, so no MFU is claimed
    assert "--compile" in " ".join(rows["compiled"])
    report = json.loads((tmp_path / "bench.json").read_text())
    assert report["flops_per_token"] == 6 * (2 * 4 * 128 * 128 + 2 * 8 * 128 * 128 + 128 * 50257) + 12 * 2 * 128 * 16
    assert [r["steps"] for r in report["rows"]][:5] == [2, 2, 2, 2, 2]
    assert report["allocator"]["applied"] in (True, False)


@pytest.mark.slow
def test_bench_compares_the_allocator_in_two_processes(tmp_path):
    proc = run_gptx("--model", "gpt2_tiny", "--steps", "1", "--warmup", "1", "--batch-size", "2", "--seq-len", "16",
                    "--device", "cpu", "--threads", "1", "--variants", "eager", "--compare-allocator",
                    "--json", str(tmp_path / "bench.json"), module="gptx.bench", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = {r["variant"]: r for r in json.loads((tmp_path / "bench.json").read_text())["rows"]}
    compared = {f"{v}/allocator-{m}" for v in ("eager", "eager/as-before") for m in ("on", "off")}
    assert {"eager", "dataloader", *compared} == set(rows)
    assert {rows[name]["steps"] for name in compared} == {2}
    assert all(rows[name]["step_seconds"] > 0 for name in compared)


def test_unknown_variant_is_one_line(capsys):
    assert main(["--variants", "eager,turbo"]) == 2
    assert "--variants turbo: unknown; choose from" in capsys.readouterr().err


def test_unknown_model_is_one_line(capsys):
    assert main(["--model", "gpt2_huge"]) == 2
    assert capsys.readouterr().err == (
        "gptx: error: --model gpt2_huge: unknown preset; choose one of gpt2_large, gpt2_medium, gpt2_small, "
        "gpt2_tiny, gpt2_xl\n")
