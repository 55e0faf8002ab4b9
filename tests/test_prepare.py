"""gptx.prepare: documents in, llm.c shards out, the same bytes whatever the workers or interruptions."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest

from gptx.config import DataConfig, DataFormat
from gptx.data import load_data
from gptx.files import LLMC_MAGIC
from gptx.tokenizer import END_OF_TEXT, gpt2_tokenizer
from gptx.tools.prepare import MANIFEST, Options, PrepareError, Reporter, main, prepare

from conftest import REPO, run_gptx

DOCS = [f"Document {i}: " + " ".join(f"word{j * i % 97}" for j in range(5 + 7 * (i % 5))) for i in range(40)]
DOCS[3] = ""  # an empty document still contributes its <|endoftext|>
DOCS[4] = "Unicode: naïve café — ünïcödé ✓\nsecond line"


def options(**changes) -> Options:
    values = {"name": "demo", "shard_tokens": 120, "val_tokens": 60, "test_tokens": 50, "text_column": "text"}
    return Options(**{**values, **changes})


def quiet() -> Reporter:
    return Reporter(stream=open("/dev/null", "w"))  # noqa: SIM115


def write_inputs(folder: Path) -> list[str]:
    """DOCS spread over a .txt file and two .jsonl files, in the order prepare reads them."""
    folder.mkdir()
    lines = [json.dumps({"text": d, "id": i}) for i, d in enumerate(DOCS[:20])]
    (folder / "a.jsonl").write_text("\n".join(lines) + "\n\n")  # no final newline needed, blank lines skipped
    (folder / "b.txt").write_text("A whole text file is one document.\n\nWith paragraphs.")
    (folder / "c.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in DOCS[20:]))
    (folder / ".cache").mkdir()  # as a hub download leaves: skipped
    (folder / ".cache" / "partial.jsonl").write_text('{"text": "not a document"}\n')
    return [*DOCS[:20], "A whole text file is one document.\n\nWith paragraphs.", *DOCS[20:]]


def read_shard(path: Path) -> np.ndarray:
    header = np.fromfile(path, dtype=np.int32, count=256)
    assert list(header[:3]) == [LLMC_MAGIC, 1, (path.stat().st_size - 1024) // 2]
    return np.fromfile(path, dtype=np.uint16, offset=1024)


def shard_bytes(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.glob("*.bin"))}


def decoded(out: Path) -> str:
    """Every split's shards in the order prepare wrote them (test, val, train), decoded."""
    manifest = json.loads((out / MANIFEST).read_text())
    tokens = np.concatenate([read_shard(out / s["file"]) for s in manifest["shards"]])
    return gpt2_tokenizer().decode(tokens.tolist())


def test_txt_and_jsonl_become_llmc_shards_of_the_documents(tmp_path):
    docs = write_inputs(tmp_path / "in")
    manifest = prepare([tmp_path / "in"], tmp_path / "out", options(), reporter=quiet())
    assert manifest["complete"]
    assert decoded(tmp_path / "out") == "".join(END_OF_TEXT + d for d in docs)
    files = [s["file"] for s in manifest["shards"]]
    assert files[0] == "demo_test_000000.bin" and "demo_val_000000.bin" in files
    assert "demo_train_000000.bin" in files and "demo_train_000001.bin" in files
    by_split = {s: [x for x in manifest["shards"] if x["split"] == s] for s in ("test", "val", "train")}
    # Test then val take whole documents until they hold at least their tokens; shards stay <= 120.
    assert 50 <= manifest["tokens"]["test"] < 50 + 40 and 60 <= manifest["tokens"]["val"] < 60 + 40
    assert all(s["n_tokens"] <= 120 for s in manifest["shards"])
    assert sum(s["n_documents"] for s in manifest["shards"]) == len(docs) == manifest["documents_done"]
    for split, shards in by_split.items():
        assert sum(s["n_tokens"] for s in shards) == manifest["tokens"][split]
        for shard in shards:  # every shard starts at a document boundary
            assert read_shard(tmp_path / "out" / shard["file"])[0] == 50256


def test_parquet_input(tmp_path):
    pa = pytest.importorskip("pyarrow", reason="pyarrow is the optional gptx[parquet] extra")
    import pyarrow.parquet as pq

    (tmp_path / "in").mkdir()
    pq.write_table(pa.table({"id": list(range(25)), "content": DOCS[:25]}), tmp_path / "in" / "x.parquet",
                   row_group_size=7)
    prepare([tmp_path / "in"], tmp_path / "out", options(text_column="content"), reporter=quiet())
    assert decoded(tmp_path / "out") == "".join(END_OF_TEXT + d for d in DOCS[:25])
    with pytest.raises(PrepareError, match="no column 'text'"):
        prepare([tmp_path / "in"], tmp_path / "out2", options(), reporter=quiet())


def test_workers_do_not_change_a_byte(tmp_path, monkeypatch):
    monkeypatch.setattr("gptx.tools.prepare.BATCH_CHARS", 100)  # many batches in flight across the workers
    write_inputs(tmp_path / "in")
    prepare([tmp_path / "in"], tmp_path / "one", options(), workers=1, reporter=quiet())
    prepare([tmp_path / "in"], tmp_path / "two", options(), workers=2, reporter=quiet())
    assert shard_bytes(tmp_path / "one") == shard_bytes(tmp_path / "two")
    assert (tmp_path / "one" / MANIFEST).read_text() == (tmp_path / "two" / MANIFEST).read_text()


def test_interrupted_then_resumed_equals_uninterrupted(tmp_path, monkeypatch):
    monkeypatch.setattr("gptx.tools.prepare.BATCH_CHARS", 100)
    write_inputs(tmp_path / "in")
    full = prepare([tmp_path / "in"], tmp_path / "full", options(), reporter=quiet())
    out = tmp_path / "resumed"
    first = prepare([tmp_path / "in"], out, options(), max_shards=2, reporter=quiet())
    assert not first["complete"] and len(first["shards"]) == 2
    (out / "demo_train_000000.bin").write_bytes(b"half-written before the manifest recorded it")
    second = prepare([tmp_path / "in"], out, options(), max_shards=1, workers=2, reporter=quiet())
    assert len(second["shards"]) == 3
    done = prepare([tmp_path / "in"], out, options(), reporter=quiet())
    assert done == full
    assert shard_bytes(out) == shard_bytes(tmp_path / "full")
    # A finished dataset is checked, not rewritten.
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    assert prepare([tmp_path / "in"], out, options(), reporter=quiet()) == full
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == mtimes


def test_resume_refuses_other_options_inputs_or_damaged_shards(tmp_path):
    write_inputs(tmp_path / "in")
    out = tmp_path / "out"
    prepare([tmp_path / "in"], out, options(), max_shards=2, reporter=quiet())
    with pytest.raises(PrepareError, match="shard_tokens=120"):
        prepare([tmp_path / "in"], out, options(shard_tokens=100), reporter=quiet())
    with pytest.raises(PrepareError, match="inputs differ"):
        prepare([tmp_path / "in" / "a.jsonl"], out, options(), reporter=quiet())
    shard = out / "demo_test_000000.bin"
    shard.write_bytes(shard.read_bytes()[:-2] + b"\x00\x00")
    with pytest.raises(PrepareError, match="does not match its sha256"):
        prepare([tmp_path / "in"], out, options(), reporter=quiet())


def test_user_errors_are_one_line(tmp_path, capsys):
    write_inputs(tmp_path / "in")
    for argv, message in [
        ([str(tmp_path / "nope"), "--out", str(tmp_path / "o")], "does not exist"),
        ([str(tmp_path / "in"), "--out", str(tmp_path / "o"), "--name", "my-val"], "without 'train'"),
        ([str(tmp_path / "in"), "--out", str(tmp_path / "o"), "--test-tokens", "100000"], "too few"),
    ]:
        assert main(argv) == 2
        last = capsys.readouterr().err.splitlines()[-1]  # after any shards it managed to write
        assert last.startswith("gptx: error: ") and message in last
    (tmp_path / "bad.jsonl").write_text('{"body": "x"}\n')
    with pytest.raises(PrepareError, match=r"bad.jsonl:1: .*--text-column"):
        prepare([tmp_path / "bad.jsonl"], tmp_path / "o2", options(), reporter=quiet())


def test_gptx_reads_the_prepared_directory(tmp_path):
    write_inputs(tmp_path / "in")
    out = tmp_path / "out"
    manifest = prepare([tmp_path / "in"], out, options(), reporter=quiet())
    data = load_data(DataConfig(name="fineweb", format=DataFormat.tokens, path=str(out)), 16, 50257)
    assert data.test.n_tokens == manifest["tokens"]["test"]
    assert data.val.n_tokens == manifest["tokens"]["val"]
    assert data.train.n_tokens == manifest["tokens"]["train"]
    x, y = data.train.sequences(np.array([0]))
    first = read_shard(out / "demo_train_000000.bin")
    assert x[0].tolist() == first[:16].tolist() and y[0].tolist() == first[1:17].tolist()
    assert isinstance(data.train.shards[0], np.memmap)


@pytest.mark.slow
def test_command_line_then_train_on_it(tmp_path):
    (tmp_path / "in").mkdir()
    text = (REPO / "gptx" / "assets" / "tinyshakespeare.txt").read_text()
    paragraphs = [p for p in text.split("\n\n") if p.strip()][:600]
    (tmp_path / "in" / "docs.jsonl").write_text("".join(json.dumps({"text": p}) + "\n" for p in paragraphs))
    out = tmp_path / "tokens"
    proc = run_gptx(str(tmp_path / "in"), "--out", str(out), "--shard-tokens", "8000", "--val-tokens", "2000",
                    "--test-tokens", "2000", "--workers", "2", module="gptx.prepare", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "done:" in proc.stderr and (out / "fineweb_train_000001.bin").is_file()
    proc = run_gptx("data=fineweb", f"data.path={out}", "model.d_model=32", "model.n_heads=2",
                    "model.n_layers=1", "model.context_length=32", "train.batch_size=4", "train.max_steps=2",
                    "train.eval_batches=1", "train.sample_tokens=2", "data.test_sequences=4",
                    "hydra.run.dir=run", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["status"] == "completed" and result["data"] == "fineweb"


def test_progress_is_a_bar_on_a_terminal_and_lines_elsewhere():
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    bar, plain = Reporter(Terminal()), Reporter(io.StringIO())
    for reporter in (bar, plain):
        reporter.last_draw = -1.0
        reporter.progress(0.5)
        reporter.line("wrote x.bin")
    assert bar.stream.getvalue().startswith("\r[###############               ]  50.0%")
    assert plain.stream.getvalue() == "wrote x.bin  (input 50.0% read)\n"
