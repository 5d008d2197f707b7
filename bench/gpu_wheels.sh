#!/usr/bin/env bash
# Fills the ignored .whl folder with the py3.12 wheels that bench/gpu_run.sh installs on a lent GPU machine, which
# reaches no registry. Run it here (where PyPI is reachable), from the repository root, before the device call:
#
#     bash bench/gpu_wheels.sh [--with-pyarrow]
#
# --with-pyarrow adds pyarrow 26.0.1 (52.5 MB; needed only where the machine's pyarrow is older than 24: see
# environment.txt of an earlier run). The device tool carries at most 64 MiB.
set -euo pipefail
WHEELS=${WHEELS:-.whl}
packages=(
    trl==1.16.0 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 fsspec==2026.9.0
    pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5
    typing-extensions==4.16.0 ruamel.yaml==0.19.1 jsonlines==4.0.0 liger-kernel==0.8.5
)
case "${1:-}" in
    "") ;;
    --with-pyarrow) packages+=(pyarrow==26.0.1) ;;
    *) echo "error: unknown option '$1' (only --with-pyarrow)" >&2; exit 2 ;;
esac
mkdir -p "$WHEELS"
# --no-deps: the list above is the closure the GPU machine lacks; its torch, transformers, accelerate stay its own.
python3 -m pip download -q --no-deps --only-binary=:all: --dest "$WHEELS" \
    --python-version 3.12 --implementation cp --abi cp312 \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform any "${packages[@]}" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
du -sh "$WHEELS"
ls "$WHEELS"
