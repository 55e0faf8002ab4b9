"""nanoGPT's character-level CPU recipe against gptx's parity preset, several seeds each, as one table.

Runs nanoGPT from its own checkout (`--nanogpt`, untouched: seeds come from a config file its configurator
executes, docs/peer-check.md), scores each final checkpoint on the whole validation split the way gptx
scores its own (every full window of 64 + 1 characters, stride 64), runs gptx's
`+experiment=nanogpt_shakespeare_char_cpu_parity` at the same seeds, and writes `parity.csv`: one row a run,
arm `nanogpt` (the baseline) or `gptx_parity`, ready for `python -m gptx.analyze parity.csv --metric
val_loss --min-effect 0.01`. Each side's initial weights are its own (distinct `init_weights_sha256`
labels), so the two are compared unpaired, against seed noise of both kinds.

    python benchmarks/peer_parity.py nanogpt --nanogpt ../nanoGPT --out peer_parity   # seeds 1337 to 1341
    python benchmarks/peer_parity.py gptx --out peer_parity
    python benchmarks/peer_parity.py table --out peer_parity
    python -m gptx.analyze peer_parity/parity.csv --metric val_loss --baseline nanogpt

Ablations: `gptx --arm NAME KEY=VALUE ...` runs the preset with overrides; `nanogpt --arm NAME --train-chars
948085` trains nanoGPT on gptx's training part only. A run whose output is already there is not run again,
so an interrupted invocation resumes.
"""
from __future__ import annotations

import argparse
import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from gptx.result import RunResult, load_result, read_result

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO / "gptx" / "assets" / "tinyshakespeare.txt"
NANOGPT_ARGS = ["--device=cpu", "--compile=False", "--eval_iters=20", "--block_size=64", "--batch_size=12",
                "--n_layer=4", "--n_head=4", "--n_embd=128", "--max_iters=2000", "--lr_decay_iters=2000",
                "--dropout=0.0", "--always_save_checkpoint=True"]
WINDOW = 64


def prepare_nanogpt_data(nanogpt: Path, train_chars: int | None = None) -> str:
    """nanoGPT's train.bin / val.bin from gptx's bundled corpus (byte-identical to the file it downloads);
    with `train_chars`, a dataset `shakespeare_char_first_N` whose train.bin keeps only its first N
    characters (gptx's training part is the first 948,085). Returns the dataset's name."""
    data_dir = nanogpt / "data" / "shakespeare_char"
    if not (data_dir / "val.bin").exists():
        shutil.copyfile(CORPUS, data_dir / "input.txt")
        subprocess.run([sys.executable, "prepare.py"], cwd=data_dir, check=True)
    if train_chars is None:
        return "shakespeare_char"
    name = f"shakespeare_char_first_{train_chars}"
    if not (nanogpt / "data" / name / "meta.pkl").exists():  # written once: a running nanoGPT reads train.bin
        (nanogpt / "data" / name).mkdir(exist_ok=True)
        train = np.fromfile(data_dir / "train.bin", dtype=np.uint16)
        train[:train_chars].tofile(nanogpt / "data" / name / "train.bin")
        for file in ("val.bin", "meta.pkl"):
            shutil.copyfile(data_dir / file, nanogpt / "data" / name / file)
    return name


def run_nanogpt(nanogpt: Path, seed: int, out: Path, arm: str, dataset: str) -> Path:
    """One nanoGPT run at seed `seed` (its own 1337 + K); returns its folder holding ckpt.pt."""
    run_dir = out / arm / f"s{seed}"
    if (run_dir / "done").exists():
        return run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    seed_file = run_dir / "seed.py"
    seed_file.write_text("import torch as _torch\n_manual_seed = _torch.manual_seed\n"
                         f"_torch.manual_seed = lambda seed: _manual_seed(seed + {seed - 1337})\n")
    with open(run_dir / "train.log", "w") as log:
        subprocess.run([sys.executable, "train.py", "config/train_shakespeare_char.py", str(seed_file),
                        *NANOGPT_ARGS, f"--dataset={dataset}", f"--out_dir={run_dir}"], cwd=nanogpt, check=True,
                       stdout=log, stderr=subprocess.STDOUT)
    (run_dir / "done").touch()
    return run_dir


@torch.no_grad()
def whole_split_loss(nanogpt: Path, run_dir: Path, val_bin: Path) -> float:
    """Mean cross-entropy of the run's final checkpoint over every full window of the validation split."""
    if str(nanogpt) not in sys.path:  # once, however many checkpoints are scored
        sys.path.insert(0, str(nanogpt))
    from model import GPT, GPTConfig  # nanoGPT's own model.py
    ckpt = torch.load(run_dir / "ckpt.pt", map_location="cpu", weights_only=False)
    if ckpt["iter_num"] != 2000:
        raise SystemExit(f"{run_dir}/ckpt.pt is from step {ckpt['iter_num']}, not 2000")
    model = GPT(GPTConfig(**ckpt["model_args"]))
    model.load_state_dict({k.removeprefix("_orig_mod."): v for k, v in ckpt["model"].items()})
    model.eval()
    data = torch.from_numpy(np.memmap(val_bin, dtype=np.uint16, mode="r").astype(np.int64))
    n = (len(data) - 1) // WINDOW
    x = data[: n * WINDOW].view(n, WINDOW)
    y = data[1: n * WINDOW + 1].view(n, WINDOW)
    total = 0.0
    for i in range(0, n, 128):
        logits, _ = model(x[i:i + 128], y[i:i + 128])
        total += F.cross_entropy(logits.flatten(0, 1), y[i:i + 128].flatten(), reduction="sum").item()
    return total / (n * WINDOW)


def run_gptx(seed: int, out: Path, arm: str, overrides: list[str]) -> RunResult:
    """One gptx run of the parity preset (and `overrides`) at init_seed = data_seed = seed."""
    run_dir = (out / arm / f"s{seed}").resolve()
    if read_result(run_dir) is None:
        subprocess.run([sys.executable, "-m", "gptx.train", "+experiment=nanogpt_shakespeare_char_cpu_parity",
                        f"init_seed={seed}", f"data_seed={seed}", *overrides, f"hydra.run.dir={run_dir}"],
                       cwd=REPO, check=True)
    return load_result(run_dir)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("side", choices=["nanogpt", "gptx", "table"],
                        help="run one side's seeds (two invocations can share a machine's cores), or write "
                             "OUT/parity.csv from every arm's rows")
    parser.add_argument("overrides", nargs="*", help="gptx: config overrides on top of the parity preset")
    parser.add_argument("--nanogpt", type=Path, help="a checkout of karpathy/nanoGPT (side nanogpt)")
    parser.add_argument("--out", type=Path, default=Path("peer_parity"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[1337, 1338, 1339, 1340, 1341])
    parser.add_argument("--arm", help="the rows' arm (default: nanogpt, or gptx_parity)")
    parser.add_argument("--train-chars", type=int, help="nanogpt: train on the first N characters only")
    args = parser.parse_args()
    out = args.out.resolve()
    if args.side == "table":
        parts = sorted(p for p in out.glob("*.csv") if p.name != "parity.csv")
        lines = [p.read_text().splitlines() for p in parts]
        (out / "parity.csv").write_text("\n".join([lines[0][0], *(row for rows in lines for row in rows[1:])]) + "\n")
        print(f"wrote {out / 'parity.csv'} from {', '.join(p.name for p in parts)}")
        return
    arm = args.arm or ("nanogpt" if args.side == "nanogpt" else "gptx_parity")
    if args.side == "nanogpt":
        nanogpt = args.nanogpt.resolve()
        dataset = prepare_nanogpt_data(nanogpt, args.train_chars)
    rows = []
    for seed in args.seeds:
        if args.side == "nanogpt":
            loss = whole_split_loss(nanogpt, run_nanogpt(nanogpt, seed, out, arm, dataset),
                                    nanogpt / "data" / dataset / "val.bin")
            note = f"nanoGPT 2000 steps on {dataset}, ckpt.pt scored on every {WINDOW}-character window of val"
            init = f"nanogpt@{seed}"
        else:
            result = run_gptx(seed, out, arm, args.overrides)
            loss, init = result.val_loss, result.init_weights_sha256
            note = f"gptx parity preset {' '.join(args.overrides)}".strip() + f"; test_loss {result.test_loss:.4f}"
        rows.append({"arm": arm, "init_seed": seed, "data_seed": seed, "val_loss": f"{loss:.6f}",
                     "init_weights_sha256": init, "note": note})
        print(f"{arm} seed {seed}: val_loss {loss:.6f}", flush=True)
        with open(out / f"{arm}.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
