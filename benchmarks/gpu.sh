#!/usr/bin/env bash
# The GPU checks, on a fresh GPU machine that has python3 and torch but reaches no package registry:
#   bash benchmarks/build_wheelhouse.sh        # here, once: benchmarks/wheelhouse (~22 MB, git-ignored)
#   bash benchmarks/gpu.sh                     # there: gpt2_small, 12 x 1024 tokens, bf16, on CUDA, < 10 min
#   bash benchmarks/gpu.sh --dry-run           # here: the same phases on the CPU at a tiny size
# With the device tool: run(command="bash benchmarks/gpu.sh", carry=["benchmarks/wheelhouse"], timeout_s=600).
# What gptx needs beyond torch and is missing is installed from benchmarks/wheelhouse with pip --no-index
# (into python3's own environment: on the device image that adds hydra-core, omegaconf, antlr4,
# submitit and hydra-submitit-launcher). Then benchmarks/gpu_checks.py runs the phases (environment and
# SDPA probe, bench, profile, determinism and resume, CUDA fault tests), each under its own timeout, going
# on past a failed one. Into $OUT (default benchmarks/gpu-out) go only summary.json, environment.json,
# bench.json, profile.txt and log.txt; run folders go to $TMPDIR/gptx-gpu-work. Exit status 1 when a phase failed.
set -uo pipefail
cd "$(dirname "$0")/.."

wheels="${GPTX_WHEELHOUSE:-benchmarks/wheelhouse}"
needed="import hydra, omegaconf, antlr4, yaml, submitit, tiktoken, safetensors, numpy, cloudpickle, pytest
import hydra_plugins.hydra_submitit_launcher"
if ! python3 -c "$needed" 2>/dev/null; then
  if [[ -d "$wheels" ]]; then
    echo "== installing what is missing from $wheels (pip --no-index)"
    python3 -m pip install -q --no-index --no-cache-dir --find-links "$wheels" -r benchmarks/gpu-requirements.txt \
      || echo "== the offline install failed: the phases that need the missing packages will fail"
  else
    echo "== packages missing and no $wheels: run bash benchmarks/build_wheelhouse.sh where pip works, and carry it"
  fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
python3 benchmarks/gpu_checks.py "$@"
