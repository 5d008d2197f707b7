"""GPU-box check of the placement plan (no vLLM needed): the GPUs nvidia-smi lists under several
CUDA_VISIBLE_DEVICES masks, the plan for `--dp <all GPUs>` and the refusal of one engine more, for a model of
Qwen2.5-7B's shape (config only, the weights estimated from a safetensors header with no data).

    python bench/gpu_placement_check.py
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import tempfile
from pathlib import Path

from ssogen.engine.devices import visible_gpus
from ssogen.engine.options import EngineOptions
from ssogen.engine.placement import plan_placement
from ssogen.errors import UserError

QWEN_7B = {"architectures": ["Qwen2ForCausalLM"], "hidden_size": 3584, "intermediate_size": 18944,
           "num_hidden_layers": 28, "num_attention_heads": 28, "num_key_value_heads": 4,
           "max_position_embeddings": 32768, "vocab_size": 152064, "dtype": "bfloat16"}


def fake_weights(folder: Path, parameters: int) -> None:
    """A safetensors file whose header declares `parameters` bf16 values (the data itself is left out)."""
    header = json.dumps({"w": {"dtype": "BF16", "shape": [parameters], "data_offsets": [0, 2 * parameters]}})
    (folder / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header.encode())


def main() -> None:
    smi = shutil.which("nvidia-smi")
    print("nvidia-smi:", smi)
    if smi:
        print(subprocess.run([smi, "--query-gpu=index,uuid,name,memory.total", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True).stdout)
    gpus = visible_gpus() or []
    print("visible (no mask):", gpus)
    for mask in ("0", gpus[0].id if gpus else "0", "", "-1"):
        os.environ["CUDA_VISIBLE_DEVICES"] = mask
        print(f"visible (CUDA_VISIBLE_DEVICES={mask!r}):", visible_gpus())
    os.environ.pop("CUDA_VISIBLE_DEVICES")
    uuid = subprocess.run([smi or "nvidia-smi", "--query-gpu=uuid", "--format=csv,noheader"], capture_output=True,
                          text=True).stdout.split()[0] if smi else "GPU-x"
    os.environ["CUDA_VISIBLE_DEVICES"] = uuid[:12]
    print(f"visible (CUDA_VISIBLE_DEVICES={uuid[:12]!r}):", visible_gpus())
    os.environ.pop("CUDA_VISIBLE_DEVICES")
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp)
        (model / "config.json").write_text(json.dumps(QWEN_7B))
        fake_weights(model, 7_615_616_512)
        n = max(1, len(gpus))
        for options in (EngineOptions(data_parallel_size=n), EngineOptions(data_parallel_size=n + 1),
                        EngineOptions(data_parallel_size=n, max_model_len=2_000_000)):
            plan = plan_placement(str(model), options, "vllm", cpu=False)
            print(f"--- --dp {options.data_parallel_size} --max-model-len {options.max_model_len}")
            print("\n".join(plan.lines()))
            try:
                plan.check()
                print("check: ok")
            except UserError as exc:
                print("check: refused:", exc)


if __name__ == "__main__":
    main()
