"""Shared fixtures: tiny models built once per session (no download), offline settings for vLLM."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

# Set before anything imports vLLM: run the engine in-process (3 s instead of 29 s per LLM) and give the CPU
# backend an explicit KV-cache size (it would size it from a whole NUMA node and may refuse to start; see
# docs/cpu-vllm-notes.md). No test may reach a hub.
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ssogen.testing.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture(scope="session")
def tiny_model_no_system(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ssogen.testing.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny-nosys", reject_system_role=True)


@pytest.fixture(scope="session")
def tiny_model_base_eos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """eos <|endoftext|> while the ChatML template closes turns with <|im_end|>, as in Qwen2.5 base."""
    from ssogen.testing.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny-base-eos", base_eos=True)


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """The tiny model gains nothing from threads; on a shared 2-core machine they cost 10x (oversubscription)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
