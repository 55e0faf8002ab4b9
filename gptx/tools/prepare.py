"""python -m gptx.prepare DATA_DIR_OR_FILES... --out OUT [--name fineweb] [--workers 8]

Tokenize `.txt`, `.jsonl` and `.parquet` files (FineWeb ships parquet with a `text` column) into
llm.c-format uint16 shards that `data=tokens data.path=OUT` (or `data=fineweb`) reads as they are.

Documents are taken in input order (files sorted, rows in order): a `.txt` file is one document, a
`.jsonl` line or a parquet row is one document. Each is prefixed by `<|endoftext|>` (GPT-2's and
llm.c's convention). The first documents go to the fixed test split until it holds `--test-tokens`
tokens, the next to validation until `--val-tokens`, the rest to training; shards close at document
boundaries. Split and shard assignment depend only on the inputs and these options, never on
`--workers`, so any number of processes writes byte-identical files.

Resumable: each finished shard is written atomically and recorded (sha256, tokens, position in the
input) in OUT/prepare.json; a rerun checks the finished shards and continues after the last one,
and a rerun of a finished dataset only checks it.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import importlib.metadata
import json
import multiprocessing
import os
import re
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

import gptx
from gptx.errors import ArgumentParser, UsageError, entry_point
from gptx.files import LLMC_HEADER_INTS, LLMC_MAGIC, LLMC_VERSION, write_atomic
from gptx.tokenizer import BPE_RANKS_SHA256, END_OF_TEXT_ID, gpt2_tokenizer

MANIFEST = "prepare.json"
MANIFEST_FORMAT = 1
SUFFIXES = (".txt", ".jsonl", ".parquet")
SPLITS = ("test", "val", "train")
BATCH_CHARS = 1 << 20  # text handed to a worker at a time: large enough to amortise the pickling


class PrepareError(UsageError, ValueError):
    """The inputs or options cannot be prepared; the message says which and what to do."""


@dataclass(frozen=True)
class Options:
    """What decides the bytes of the output (the number of workers does not)."""

    name: str
    shard_tokens: int
    val_tokens: int
    test_tokens: int
    text_column: str
    tokenizer_sha256: str = BPE_RANKS_SHA256


def find_inputs(paths: list[Path]) -> list[Path]:
    """The input files: files as given, directories searched recursively, each directory sorted."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            # Hidden folders (.cache/ of a hub download, .git/) hold no documents.
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in SUFFIXES
                           and not any(part.startswith(".") for part in p.relative_to(path).parts))
            if not found:
                raise PrepareError(f"{path} holds no {', '.join(SUFFIXES)} files")
            files += found
        elif path.is_file():
            if path.suffix not in SUFFIXES:
                raise PrepareError(f"{path}: unsupported input; use {', '.join(SUFFIXES)} files")
            files.append(path)
        else:
            raise PrepareError(f"input {path} does not exist")
    return [p.resolve() for p in files]


def count_documents(path: Path) -> int:
    """Documents in one input file, without decoding them (to skip finished files on resume)."""
    if path.suffix == ".txt":
        return 1
    if path.suffix == ".jsonl":
        with path.open("rb") as f:
            return sum(1 for line in f if line.strip())
    return _parquet(path).metadata.num_rows


def read_documents(path: Path, text_column: str, skip: int = 0) -> Iterator[tuple[str, float]]:
    """(document text, fraction of the file read) for each document after the first `skip`."""
    if path.suffix == ".txt":
        if skip == 0:
            yield path.read_text(encoding="utf-8"), 1.0
        return
    if path.suffix == ".jsonl":
        size = max(path.stat().st_size, 1)
        with path.open("rb") as f:
            index = 0
            for line_no, line in enumerate(f, 1):
                if not line.strip():
                    continue
                index += 1
                if index <= skip:
                    continue
                try:
                    text = json.loads(line)[text_column]
                except (ValueError, KeyError, TypeError):
                    raise PrepareError(f"{path}:{line_no}: not a JSON object with a string "
                                       f"{text_column!r} field (set --text-column)") from None
                yield _checked_text(text, path, f"line {line_no}", text_column), f.tell() / size
        return
    parquet = _parquet(path)
    if text_column not in parquet.schema_arrow.names:
        raise PrepareError(f"{path} has no column {text_column!r} (columns: "
                           f"{', '.join(parquet.schema_arrow.names)}); set --text-column")
    total, row = max(parquet.metadata.num_rows, 1), 0
    for group in range(parquet.num_row_groups):
        group_rows = parquet.metadata.row_group(group).num_rows
        if row + group_rows <= skip:
            row += group_rows
            continue
        for batch in parquet.iter_batches(batch_size=1024, row_groups=[group], columns=[text_column]):
            for text in batch.column(0).to_pylist():
                row += 1
                if row > skip:
                    yield _checked_text(text, path, f"row {row - 1}", text_column), row / total


def _parquet(path: Path) -> Any:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise PrepareError(f"reading {path.name} needs pyarrow: pip install 'gptx[parquet]'") from None
    return pq.ParquetFile(path)


def _checked_text(text: Any, path: Path, where: str, column: str) -> str:
    if not isinstance(text, str):
        raise PrepareError(f"{path} {where}: {column!r} is {type(text).__name__}, not text")
    return text


def tokenize_documents(texts: list[str]) -> list[np.ndarray]:
    """Each document's GPT-2 tokens, prefixed by <|endoftext|>, as uint16 (runs in the workers)."""
    tok = gpt2_tokenizer()
    return [np.asarray([END_OF_TEXT_ID, *tok.encode_ordinary(t)], dtype=np.uint16) for t in texts]


def ordered_map(fn: Callable, batches: Iterator, workers: int) -> Iterator:
    """fn over batches in order, in `workers` processes, with a bounded number of batches in flight.

    Pool.imap would do the ordering, but before Python 3.14 it reads its whole input ahead of the
    workers (cpython gh-84291), which for FineWeb means the whole dataset in RAM.
    """
    if workers == 1:
        yield from map(fn, batches)
        return
    # spawn, not fork: the caller may hold threads (torch's, a test runner's) that fork would copy mid-lock.
    # Workers ignore Ctrl-C so that only the main process reports it (and the pool is terminated).
    context = multiprocessing.get_context("spawn")
    with context.Pool(workers, initializer=signal.signal, initargs=(signal.SIGINT, signal.SIG_IGN)) as pool:
        pending: collections.deque = collections.deque()
        for batch in batches:
            pending.append(pool.apply_async(fn, (batch,)))
            if len(pending) >= 2 * workers:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()


class ShardWriter:
    """Assigns documents to splits and writes shards, recording each in the manifest."""

    def __init__(self, out: Path, options: Options, manifest: dict[str, Any], report: Callable[[str], None]):
        self.out, self.options, self.manifest, self.report = out, options, manifest, report
        self.assigned = {split: sum(s["n_tokens"] for s in manifest["shards"] if s["split"] == split)
                         for split in SPLITS}
        self.next_document = manifest["documents_done"]
        self.buffer: list[np.ndarray] = []
        self.buffer_split: str | None = None
        self.buffer_tokens = 0
        self.written = 0

    def split_of_next_document(self) -> str:
        """Test until it holds test_tokens, then validation until val_tokens, then training."""
        if self.assigned["test"] < self.options.test_tokens:
            return "test"
        if self.assigned["val"] < self.options.val_tokens:
            return "val"
        return "train"

    def add(self, tokens: np.ndarray) -> None:
        """Append one document, first closing the open shard if the document would not belong in it."""
        split = self.split_of_next_document()
        if self.buffer and (split != self.buffer_split
                            or self.buffer_tokens + len(tokens) > self.options.shard_tokens):
            self.flush()
        self.buffer.append(tokens)
        self.buffer_split = split
        self.buffer_tokens += len(tokens)
        self.assigned[split] += len(tokens)

    def flush(self) -> None:
        """Write the open shard (if any) and record it with the input position after it."""
        if not self.buffer:
            return
        split = self.buffer_split
        index = sum(1 for s in self.manifest["shards"] if s["split"] == split)
        name = f"{self.options.name}_{split}_{index:06d}.bin"
        tokens = np.concatenate(self.buffer)
        if len(tokens) >= 2**31:
            raise PrepareError(f"{name} would hold {len(tokens)} tokens, more than an llm.c shard can; "
                               "split the largest input document")
        sha = write_shard(self.out / name, tokens)
        self.next_document += len(self.buffer)
        self.manifest["shards"].append({"file": name, "split": split, "n_tokens": int(len(tokens)),
                                        "n_documents": len(self.buffer), "sha256": sha})
        self.manifest["documents_done"] = self.next_document
        write_manifest(self.out, self.manifest)
        self.buffer, self.buffer_split, self.buffer_tokens = [], None, 0
        self.written += 1
        self.report(f"wrote {name}: {len(tokens):,} tokens")


def write_shard(path: Path, tokens: np.ndarray) -> str:
    """Atomically write an llm.c token file (256-int32 header, then uint16); returns its sha256."""
    header = np.zeros(LLMC_HEADER_INTS, dtype=np.int32)
    header[:3] = [LLMC_MAGIC, LLMC_VERSION, len(tokens)]
    body = np.ascontiguousarray(tokens, dtype="<u2")
    sha = hashlib.sha256(header.tobytes())
    sha.update(memoryview(body).cast("B"))
    write_atomic(path, [header.tobytes(), memoryview(body).cast("B")])
    return sha.hexdigest()


def write_manifest(out: Path, manifest: dict[str, Any]) -> None:
    """Atomically replace OUT/prepare.json."""
    write_atomic(out / MANIFEST, [(json.dumps(manifest, indent=2) + "\n").encode()])


def file_sha256(path: Path) -> str:
    """sha256 of a file, read in 16 MiB blocks."""
    sha = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 24):
            sha.update(block)
    return sha.hexdigest()


def describe_inputs(files: list[Path]) -> list[dict[str, Any]]:
    """Path, size and modification time of each input: a changed input cannot be resumed."""
    return [{"path": str(p), "size": p.stat().st_size, "mtime_ns": p.stat().st_mtime_ns} for p in files]


def open_manifest(out: Path, options: Options, files: list[Path]) -> dict[str, Any]:
    """The manifest to continue from: a new one, or the existing one after checking it and its shards."""
    inputs = describe_inputs(files)
    path = out / MANIFEST
    ours = re.compile(rf"{re.escape(options.name)}_({'|'.join(SPLITS)})_\d{{6}}\.bin")
    for pattern in (f".{options.name}_*.tmp", f".{MANIFEST}.*.tmp"):
        for tmp in out.glob(pattern):
            tmp.unlink()  # left by an interrupted atomic write
    if not path.exists():
        others = sorted(p.name for p in out.glob("*.bin"))
        if others:
            raise PrepareError(f"--out {out} already holds token files ({others[0]}, ...) but no {MANIFEST}; "
                               "use an empty directory (gptx reads every *train*.bin there)")
        manifest = {"format": MANIFEST_FORMAT, "options": asdict(options), "inputs": inputs, "shards": [],
                    "documents_done": 0, "complete": False,
                    "versions": {"gptx": gptx.__version__, "tiktoken": importlib.metadata.version("tiktoken")}}
        write_manifest(out, manifest)
        return manifest
    manifest = json.loads(path.read_text())
    if manifest.get("format") != MANIFEST_FORMAT:
        raise PrepareError(f"{path} has format {manifest.get('format')}, expected {MANIFEST_FORMAT}; "
                           "prepare into a new --out")
    for key, value in asdict(options).items():
        if manifest["options"].get(key) != value:
            raise PrepareError(f"{out} was prepared with {key}={manifest['options'].get(key)!r}, not "
                               f"{value!r}: pass the same options to resume, or choose another --out")
    if manifest["inputs"] != inputs:
        raise PrepareError(f"the inputs differ from those recorded in {path} (files, sizes or modification "
                           "times): pass the same inputs to resume, or choose another --out")
    for shard in manifest["shards"]:
        shard_path = out / shard["file"]
        if not shard_path.is_file() or file_sha256(shard_path) != shard["sha256"]:
            raise PrepareError(f"{shard_path} is missing or does not match its sha256 in {path}; "
                               "delete --out and prepare again")
    finished = {s["file"] for s in manifest["shards"]}
    for stray in out.iterdir():
        if ours.fullmatch(stray.name) and stray.name not in finished:
            stray.unlink()  # written just before an interruption, before the manifest recorded it
    return manifest


def document_stream(files: list[Path], text_column: str, start: int,
                    on_progress: Callable[[float], None]) -> Iterator[list[str]]:
    """Batches of document texts from document number `start` on, in input order."""
    sizes = [max(p.stat().st_size, 1) for p in files]
    total = sum(sizes)
    done_bytes, batch, batch_chars, skip = 0, [], 0, start
    for path, size in zip(files, sizes, strict=True):
        if skip:
            n = count_documents(path)
            if n <= skip:
                skip -= n
                done_bytes += size
                continue
        for text, fraction in read_documents(path, text_column, skip):
            batch.append(text)
            batch_chars += len(text)
            if batch_chars >= BATCH_CHARS:
                on_progress((done_bytes + fraction * size) / total)
                yield batch
                batch, batch_chars = [], 0
        skip = 0
        done_bytes += size
    if batch:
        yield batch
    on_progress(1.0)


class Reporter:
    """A redrawn progress line on a terminal; otherwise a plain line per shard."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty()
        self.start = time.perf_counter()
        self.fraction, self.tokens, self.last_draw = 0.0, 0, 0.0

    def progress(self, fraction: float) -> None:
        """Record how far through the input bytes reading has got."""
        self.fraction = fraction
        now = time.perf_counter()
        if self.live and now - self.last_draw > 0.2:
            self.last_draw = now
            elapsed = now - self.start
            bar = "#" * int(30 * fraction)
            self.stream.write(f"\r[{bar:<30}] {100 * fraction:5.1f}%  {self.tokens:,} tokens  "
                              f"{self.tokens / max(elapsed, 1e-9):,.0f} tok/s ")
            self.stream.flush()

    def line(self, message: str) -> None:
        """A message on its own line (with the reading position when not on a terminal)."""
        if self.live:
            self.stream.write("\r\033[K" + message + "\n")
        else:
            self.stream.write(f"{message}  (input {100 * self.fraction:.1f}% read)\n")
        self.stream.flush()


def prepare(inputs: list[Path], out: Path, options: Options, workers: int = 1, max_shards: int | None = None,
            reporter: Reporter | None = None) -> dict[str, Any]:
    """Tokenize inputs into shards under `out` (resuming if it was interrupted); returns the manifest."""
    _check_options(options, workers)
    files = find_inputs(inputs)
    out.mkdir(parents=True, exist_ok=True)
    manifest = open_manifest(out, options, files)
    reporter = reporter or Reporter()
    if manifest["complete"]:
        reporter.line(f"{out} is already complete ({len(manifest['shards'])} shards checked)")
        return manifest
    if manifest["shards"]:
        reporter.line(f"resuming after {len(manifest['shards'])} shards "
                      f"({manifest['documents_done']:,} documents)")
    writer = ShardWriter(out, options, manifest, reporter.line)
    stream = document_stream(files, options.text_column, manifest["documents_done"], reporter.progress)
    batches = ordered_map(tokenize_documents, stream, workers)
    try:
        for batch in batches:
            for tokens in batch:
                writer.add(tokens)
                reporter.tokens += len(tokens)
                if max_shards is not None and writer.written >= max_shards:
                    reporter.line(f"stopped after {writer.written} shards (--max-shards): rerun to continue")
                    return manifest
        writer.flush()
    finally:
        batches.close()  # stops the pool early when --max-shards ends the run
    totals = {split: writer.assigned[split] for split in SPLITS}
    for split, n in totals.items():
        if n == 0:
            raise PrepareError(f"the inputs hold {sum(totals.values()):,} tokens: too few to fill test "
                               f"({options.test_tokens:,}) and val ({options.val_tokens:,}) and leave any "
                               f"for {split}; lower --test-tokens / --val-tokens or add data")
    manifest.update(complete=True, tokens=totals)
    write_manifest(out, manifest)
    elapsed = time.perf_counter() - reporter.start
    reporter.line(f"done: {', '.join(f'{s} {n:,}' for s, n in totals.items())} tokens in "
                  f"{len(manifest['shards'])} shards under {out} ({reporter.tokens / elapsed:,.0f} tokens/s)")
    return manifest


def _check_options(options: Options, workers: int) -> None:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9.-]*", options.name) or re.search(
            "train|val|test", options.name):
        raise PrepareError(f"--name {options.name!r}: use letters, digits, '.' and '-', without 'train', "
                           "'val' or 'test' (gptx tells splits apart by those words in file names)")
    for flag, value in (("--shard-tokens", options.shard_tokens), ("--val-tokens", options.val_tokens),
                        ("--test-tokens", options.test_tokens), ("--workers", workers)):
        if value <= 0:
            raise PrepareError(f"{flag}={value} must be > 0")


def default_workers() -> int:
    """The CPUs this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    p = ArgumentParser(prog="python -m gptx.prepare", description=__doc__.split("\n\n")[1],
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("inputs", nargs="+", type=Path, help=".txt/.jsonl/.parquet files or directories of them")
    p.add_argument("--out", type=Path, required=True, help="output directory (data.path for training)")
    p.add_argument("--name", default="fineweb", help="shard file prefix: NAME_{train,val,test}_000000.bin")
    p.add_argument("--shard-tokens", type=int, default=100_000_000, help="most tokens per shard")
    p.add_argument("--val-tokens", type=int, default=10_000_000, help="validation tokens (at least)")
    p.add_argument("--test-tokens", type=int, default=10_000_000, help="fixed test-set tokens (at least)")
    p.add_argument("--workers", type=int, default=default_workers(), help="tokenizer processes")
    p.add_argument("--text-column", default="text", help="the document field of .jsonl/.parquet inputs")
    p.add_argument("--max-shards", type=int, default=None, help="stop after writing this many shards")
    return p.parse_args(argv)


@entry_point()
def main(argv: list[str] | None = None) -> None:
    """Entry point: one line on stderr and exit status 2 for a user error."""
    args = parse_args(argv)
    options = Options(args.name, args.shard_tokens, args.val_tokens, args.test_tokens, args.text_column)
    try:
        prepare(args.inputs, args.out, options, args.workers, args.max_shards)
    except KeyboardInterrupt:
        print("\ngptx.prepare: interrupted; run the same command again to resume", file=sys.stderr)
        raise SystemExit(130) from None


if __name__ == "__main__":
    main()
