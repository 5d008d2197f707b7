#!/usr/bin/env bash
# bench/gpu_train.py on a bare lent GPU machine, from the repository root:
#
#     bash bench/gpu_run.sh [gpu_train.py options]
#
# Wheels carried in ${WHEELS:-.whl} (bench/gpu_wheels.sh fetches them beforehand; list in BENCHMARKS.md) are
# installed into /tmp/site, each only where the machine lacks that distribution or has an older version. Table,
# JSON, profiles and logs go to $OUT (or ./gpu-results). First bench/gpu_lean_check.py (gradients of the lean
# checkpointed backward against the stock one) and bench/gpu_attention.py (one attention call's cost per SDPA
# kernel), then the benchmark. Default: 0.5b and 1.5b shapes, gradient checkpointing off and on, ~7.5 minutes.
set -uo pipefail
WHEELS=${WHEELS:-.whl}
OUT=${OUT:-gpu-results}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false

needed=$(python3 - "$WHEELS" <<'PY'
import importlib.metadata as metadata
import pathlib
import sys

from packaging.version import Version

for wheel in sorted(pathlib.Path(sys.argv[1]).glob("*.whl")):
    name, version = wheel.name.split("-")[:2]
    try:
        have = metadata.version(name)
    except metadata.PackageNotFoundError:
        have = None
    if have is None or Version(have) < Version(version):
        print(wheel)
PY
)
if [ -n "$needed" ]; then
    # shellcheck disable=SC2086  # one path per wheel
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site $needed \
        || { echo "error: installing the carried wheels failed" >&2; exit 1; }
fi
export PYTHONPATH=/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}

python3 - <<'PY' 2>&1 | tee "$OUT/environment.txt"
import importlib.metadata as metadata

import torch

print("gpu:", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none")
for name in ("torch", "transformers", "accelerate", "trl", "datasets", "pyarrow", "liger-kernel", "pydantic"):
    try:
        print(f"{name}: {metadata.version(name)}")
    except metadata.PackageNotFoundError:
        print(f"{name}: missing")
try:
    if int(metadata.version("pyarrow").split(".")[0]) < 24:
        print("warning: datasets 5.2 needs pyarrow >= 24: TRL runs will fail; carry the pyarrow 26 wheel too")
except metadata.PackageNotFoundError:
    print("warning: no pyarrow: carry the pyarrow 26 wheel")
PY
# Stop in seconds, not after the models build, when ssogen's trainer cannot import (the wheels did not travel);
# without TRL (or with a pyarrow too old for datasets) only the TRL rows fail, so that is a warning.
if ! python3 -c "import ssogen.train.run" 2> "$OUT/import_error.txt"; then
    tail -n 3 "$OUT/import_error.txt" >&2
    echo "error: ssogen's trainer cannot be imported (above); where PyPI is reachable run 'bash bench/gpu_wheels.sh'" \
         "and carry $WHEELS" >&2
    exit 1
fi
python3 -c "import trl" 2> "$OUT/import_error.txt" \
    || echo "warning: trl cannot be imported ($(tail -n 1 "$OUT/import_error.txt")): the TRL rows will fail" >&2

# The lean checkpointed backward against the stock one on this GPU's kernels (~10 s); the benchmark runs either way.
python3 bench/gpu_lean_check.py 2>&1 | tee "$OUT/lean_check.txt"
# What one packed attention call costs the host and the GPU per SDPA kernel, on a shape seen before and a new one
# (~15 s): whether the 128-token width buckets or another kernel address the host time of the 0.5B profile.
python3 bench/gpu_attention.py 2>&1 | grep -v '^USDT' | tee "$OUT/attention.txt"
python3 bench/gpu_train.py --profile --out-dir "$OUT" "$@" 2>&1 | tee "$OUT/run.log"
