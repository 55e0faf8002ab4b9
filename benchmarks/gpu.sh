#!/usr/bin/env bash
# The GPU checks, as one script of under ten minutes on an H100/H200-class GPU:
#   bash benchmarks/gpu.sh                 # gpt2_small, 12 x 1024 tokens, bf16, on CUDA
#   bash benchmarks/gpu.sh --device cpu    # the dry run (gpt2_tiny, a few tokens): checks the script itself
# 1. throughput and MFU of the training step, eager and compiled, deterministic and not (gptx.bench);
# 2. two short deterministic training runs of the same config: identical final_weights_sha256;
# 3. the sliced head + cross-entropy against the plain loss through full logits (benchmarks/check_loss.py).
# Figures land in $OUT (default benchmarks/gpu-out) and are printed; the exit status is non-zero when a
# check fails. Paste the output into docs/performance.md with the GPU's name.
set -euo pipefail
cd "$(dirname "$0")/.."

device=cuda
if [[ "${1:-}" == "--device" ]]; then device="${2:?--device needs cpu or cuda}"; fi
out="${OUT:-benchmarks/gpu-out}"
mkdir -p "$out"

if [[ "$device" == cuda ]]; then
  model=gpt2_small; batch=12; seq=1024; steps=20; warmup=3; run_steps=30; compile=(--compile)
  model_args=(model=gpt2_small)
else  # the dry run skips torch.compile: minutes of compiling on a CPU check nothing of the script
  model=gpt2_tiny; batch=2; seq=32; steps=2; warmup=1; run_steps=3; compile=()
  model_args=(model=gpt2_tiny model.context_length=32 model.d_model=32 model.n_heads=2 model.n_layers=1)
fi

echo "== 1. throughput and MFU ($model, $batch x $seq tokens, $device)"
python -m gptx.bench --model "$model" --batch-size "$batch" --seq-len "$seq" --device "$device" --steps "$steps" \
  --warmup "$warmup" "${compile[@]}" --json "$out/bench.json"

echo "== 2. two deterministic runs of one config"
for i in 1 2; do
  rm -rf "$out/deterministic-$i"
  python -m gptx.train "${model_args[@]}" train.device="$device" train.deterministic=true train.max_steps="$run_steps" \
    train.batch_size="$batch" train.seq_len="$seq" train.eval_every="$run_steps" train.eval_batches=2 \
    data.test_sequences=4 train.sample_tokens=5 hydra.run.dir="$out/deterministic-$i" > "$out/deterministic-$i.log" 2>&1
done
python - "$out" <<'PY'
import json, sys
a, b = (json.load(open(f"{sys.argv[1]}/deterministic-{i}/result.json")) for i in (1, 2))
print(f"final_weights_sha256 {a['final_weights_sha256']}  {b['final_weights_sha256']}")
print(f"test_loss {a['test_loss']:.6f}  {b['test_loss']:.6f}  device {a['device']}  precision {a['precision']}")
same = a["final_weights_sha256"] == b["final_weights_sha256"]
print("IDENTICAL" if same else "DIFFERENT")
sys.exit(0 if same else 1)
PY

echo "== 3. sliced loss against full logits"
python benchmarks/check_loss.py --device "$device" --model "$model" --batch-size "$batch" --seq-len "$seq"
