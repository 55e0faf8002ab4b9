#!/usr/bin/env bash
# Wheels of everything benchmarks/gpu.sh needs but torch (benchmarks/gpu-requirements.txt), for a GPU
# machine that reaches no package registry:
#   bash benchmarks/build_wheelhouse.sh                          # for the device image: CPython 3.12, x86-64 Linux
#   bash benchmarks/build_wheelhouse.sh --python-version 3.11    # for another Python (the suite's offline test)
#   bash benchmarks/build_wheelhouse.sh --out DIR                # default benchmarks/wheelhouse (git-ignored)
# antlr4-python3-runtime (hydra-core's parser) is published only as a source archive: it is built to a
# pure-Python wheel here first, then every other requirement is downloaded as a binary wheel for the
# target Python and platform. About 22 MB for Python 3.12 (numpy is 16 MB of it). Carry the folder
# with the working tree (the device tool's carry: ["benchmarks/wheelhouse"]); gpu.sh installs from it
# with pip --no-index.
set -euo pipefail
cd "$(dirname "$0")/.."

python_version=3.12
out=benchmarks/wheelhouse
while [[ $# -gt 0 ]]; do
  case "$1" in
    --python-version) python_version="${2:?}"; shift 2 ;;
    --out) out="${2:?}"; shift 2 ;;
    *) echo "build_wheelhouse.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
python=$(command -v python3 || command -v python)
rm -rf "$out"
mkdir -p "$out"
"$python" -m pip wheel -q --no-deps --no-build-isolation "antlr4-python3-runtime==4.9.3" -w "$out"
"$python" -m pip download -q --only-binary=:all: --python-version "$python_version" --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --platform manylinux_2_5_x86_64 --platform manylinux1_x86_64 --platform any \
  --find-links "$out" -d "$out" -r benchmarks/gpu-requirements.txt
echo "$out: $(ls "$out" | wc -l) wheels, $(du -sh "$out" | cut -f1) for CPython $python_version"
