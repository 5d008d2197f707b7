"""Shared fixtures: tiny models built once per session (no download), offline settings for vLLM."""

from __future__ import annotations

import contextlib
import getpass
import logging
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# Set before anything imports vLLM: run the engine in-process (3 s instead of 29 s per LLM) and give the CPU
# backend an explicit KV-cache size (it would size it from a whole NUMA node and may refuse to start; see
# docs/cpu-vllm-notes.md). No test may reach a hub.
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session", autouse=True)
def session_temp_folder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The temp folder (TMPDIR) of the tests and of the processes they start: a folder in pytest's own, which
    pytest removes with its older runs, so that what a test's `kill -9` leaves stays out of /tmp. torch's compile
    cache stays where it was, for later runs."""
    folder = tmp_path_factory.mktemp("tmp", numbered=False)
    saved = {name: os.environ.get(name) for name in ("TMPDIR", "TORCHINDUCTOR_CACHE_DIR")}
    saved_tempdir = tempfile.tempdir
    user = re.sub(r'[\\/:*?"<>|]', "_", getpass.getuser())  # torch's default, as its cache_dir_utils names it
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", os.path.join(tempfile.gettempdir(), f"torchinductor_{user}"))
    os.environ["TMPDIR"] = tempfile.tempdir = str(folder)
    yield folder
    tempfile.tempdir = saved_tempdir
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


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


@pytest.fixture
def weight_hashes(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The model folders whose weight files were hashed while the test ran, in order (a hash reads the weights)."""
    from ssogen import fingerprint

    hashed: list[Path] = []
    weights_digest = fingerprint._weights_digest

    def counted(folder: Path, **kwargs: Any) -> str:
        hashed.append(folder)
        return weights_digest(folder, **kwargs)

    monkeypatch.setattr(fingerprint, "_weights_digest", counted)
    return hashed


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """The tiny model gains nothing from threads; on a shared 2-core machine they cost 10x (oversubscription)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@contextlib.contextmanager
def _vllm_logger_as_it_was() -> Iterator[logging.Logger]:
    """Give the `vllm` logger back with its handlers, propagation and level of before. An engine built outside a
    command log lets vLLM configure it (its own handler on the stdout of the moment, pytest's capture; no
    propagation), and it would stay so for the rest of the process, with pytest's capture handlers attached to it
    in each later test (pytest attaches them to every logger that does not propagate)."""
    vllm_logger = logging.getLogger("vllm")
    handlers, propagate, level = list(vllm_logger.handlers), vllm_logger.propagate, vllm_logger.level
    try:
        yield vllm_logger
    finally:
        vllm_logger.handlers[:] = handlers
        vllm_logger.propagate = propagate
        vllm_logger.setLevel(level)  # setLevel, not `.level =`: it also clears the isEnabledFor caches


@pytest.fixture
def vllm_logger() -> Iterator[logging.Logger]:
    """The `vllm` logger, put back as it was after the test whatever the test did to it."""
    with _vllm_logger_as_it_was() as logger:
        yield logger


@pytest.fixture(scope="module")
def vllm_engine(tiny_model: Path) -> Iterator[Any]:
    """One in-process vLLM engine for a module's tests, shut down when the module ends: in-process it holds a
    torch.distributed group (world size 1) that would otherwise outlive it and turn later in-process training
    into a "process group is initialized" DDP warning. vLLM's logger is put back as it was then too."""
    from ssogen.engine.launch import make_engine
    from ssogen.generate.config import RunConfig

    with _vllm_logger_as_it_was():
        engine = make_engine("vllm", str(tiny_model), RunConfig(model=str(tiny_model), out="-").engine_options())
        yield engine
        engine.close()  # tears down vLLM's parallel state and its process group


def _release_dropped_vllm_engines() -> None:
    """Finalize in-process vLLM engines that were dropped without `close()` (by a test, or by a command that
    failed before closing): vLLM froze the collector's view of them, so only a collection frees them.

    vLLM also keeps the ImportError of an optional package (torchcodec) at module level; its traceback pins the
    frames that first imported vLLM, among them the one building the first engine. Dropping that traceback
    lets the engine go."""
    for name, module in list(sys.modules.items()):
        if name.startswith("vllm"):
            for value in list(vars(module).values()):
                if isinstance(value, BaseException):
                    value.__traceback__ = None
    from ssogen.engine.vllm_llm import collect_dropped_engines

    collect_dropped_engines()


@pytest.fixture(scope="module", autouse=True)
def no_process_group_outlives_its_module() -> Iterator[None]:
    """Fail the module that leaves a torch.distributed process group behind, which would turn later in-process
    training into a DDP warning (torch is never imported here)."""
    yield
    if "vllm" in sys.modules:
        _release_dropped_vllm_engines()
    torch = sys.modules.get("torch")
    if torch is not None and torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()  # so that one leak does not fail every module after it
        pytest.fail("a torch.distributed process group outlived this module: tear down what the tests created",
                    pytrace=False)
