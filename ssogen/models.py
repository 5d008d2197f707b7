"""One rule, for every command, that tells a local model folder from a hub id; checked before anything heavy
is imported.

* An existing folder is a local model: it must hold `config.json` (a readable JSON object), tokenizer files, and
  a chat template (ssogen renders every prompt through it); no file in it is a pipe or a device, and every file
  each command reads may be read.
* Anything else that looks like a path (starts with `.`, `/` or `~`, or has more than one `/`) is a missing
  folder.
* Otherwise it is a hub id, bare names such as `gpt2` included. Offline (HF_HUB_OFFLINE=1) a hub id that is
  not in the local hub cache is one clear line instead of a download attempt.

What a model is, not where it is, is `ssogen.fingerprint`'s."""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ssogen.errors import UserError, closest_name, file_system_error
from ssogen.io import NOT_A_REGULAR_FILE, is_special_file

# Where a tokenizer keeps its chat template, in the order transformers looks (any one is enough).
CHAT_TEMPLATE_FILES = ("chat_template.jinja", "chat_template.json")
# The files a tokenizer is built from (a folder needs at least one of the first six).
VOCABULARY_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt", "spiece.model",
                    "sentencepiece.bpe.model")
TOKENIZER_FILES = (*VOCABULARY_FILES, "merges.txt", "special_tokens_map.json", "added_tokens.json",
                   "tokenizer_config.json")
# The weight files a loader picks by their suffix; with the files above, config.json, generation_config.json and
# a sharded checkpoint's *.index.json, what every command reads of a local model (its fingerprint reads them all).
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")
_READ_BY_NAME = ("config.json", "generation_config.json", *TOKENIZER_FILES, *CHAT_TEMPLATE_FILES)
_READ_BY_SUFFIX = (*WEIGHT_SUFFIXES, ".index.json", ".tiktoken")
HUB_ID = re.compile(r"^(?:[A-Za-z0-9][\w.-]*/)?[A-Za-z0-9][\w.-]*$")
ENVIRONMENT_ERROR = 1


@dataclass(frozen=True)
class ModelRef:
    """A model named on the command line: `name` as given, `local` folder or hub id; `revision`: the commit the hub
    named for a hub id when the command checked it (`check_model_available`), so that it is asked once."""

    name: str
    local: bool
    revision: str | None = None

    @property
    def path(self) -> str:
        """What to hand to `from_pretrained` / vLLM: the expanded folder, or the hub id."""
        return str(Path(self.name).expanduser()) if self.local else self.name


def resolve_model(name: str, *, flag: str = "--model", chat: bool = True) -> ModelRef:
    """Classify `name` and check what can be checked without loading it (see the module docstring).
    `chat`: the model must have a chat template."""
    folder = Path(name).expanduser()
    if folder.exists():
        if not folder.is_dir():
            raise UserError(f"{flag} {name}: is a file, not a model folder")
        _check_model_files(folder, f"{flag} {name}")
        if not (folder / "config.json").is_file():
            raise UserError(f"{flag} {name}: not a model folder (no config.json)")
        read_model_config(folder, f"{flag} {name}")
        if not any((folder / file).is_file() for file in VOCABULARY_FILES) and not any(folder.glob("*.tiktoken")):
            raise UserError(f"{flag} {name}: no tokenizer files (none of {', '.join(VOCABULARY_FILES[:3])}, ...); "
                            "copy the tokenizer into the model folder")
        if chat and not _has_chat_template(folder):
            raise UserError(f"{flag} {name}: the tokenizer has no chat template (ssogen renders every prompt "
                            "through it)")
        return ModelRef(name, local=True)
    if name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name or not HUB_ID.match(name):
        raise UserError(f"{flag} {name}: no such folder (and not a hub id, which is NAME or ORG/NAME)"
                        + _did_you_mean(name))
    return ModelRef(name, local=False)


def _check_model_files(folder: Path, label: str) -> None:
    """Before any file of a model folder is opened: none of them (nor of its additional_chat_templates/) is a FIFO
    or a device, whose open would block forever (a loader picks weight files by their suffix: any name can be
    opened), and each that every command reads may be opened; an unreadable one was found only by the fingerprint
    or a loader, once the command had taken its output folder and opened its log. Hidden files are no loader's."""
    templates = folder / "additional_chat_templates"
    try:
        entries = sorted([*folder.iterdir(), *(templates.iterdir() if templates.is_dir() else ())])
        for path in entries:
            if path.name.startswith("."):
                continue
            if is_special_file(path):
                raise UserError(f"{label}: {path.relative_to(folder)}: {NOT_A_REGULAR_FILE}")
            if path.is_file() and (path.parent == templates or path.name in _READ_BY_NAME
                                   or path.name.endswith(_READ_BY_SUFFIX)):
                os.close(os.open(path, os.O_RDONLY | os.O_NONBLOCK))  # opened, not read: a weight file is large
    except OSError as exc:  # no permission (of the folder, or of one of its files), an I/O error: the machine's
        raise (file_system_error(exc, folder)
               or UserError(f"{exc.filename or folder}: cannot read it ({exc.strerror or exc})", ENVIRONMENT_ERROR)) \
            from None


def _did_you_mean(name: str) -> str:
    """"; did you mean FOLDER?" for a model folder beside where `name` points whose name is close to it (a typo
    in a folder name reads as a hub id, which offline cannot be told from one the cache lacks); else ""."""
    path = Path(name).expanduser()
    try:
        folders = [entry.name for entry in path.parent.iterdir() if (entry / "config.json").is_file()]
    except OSError:
        return ""
    near = closest_name(path.name, folders)
    return f"; did you mean {path.parent / near if path.parent != Path() else near}?" if near else ""


# What config.json holds when it is JSON but not an object, as JSON names it.
_JSON_KINDS = {list: "an array", str: "a string", int: "a number", float: "a number", bool: "true or false",
               type(None): "null"}


def read_model_config(folder: Path, label: str) -> dict[str, Any]:
    """A model folder's config.json, which every loader would otherwise refuse with a traceback of its own: one line
    `LABEL: config.json:LINE: invalid JSON: ...` when it is not UTF-8, not JSON, or JSON but not an object (exit 2),
    or cannot be read (exit 1: the machine)."""
    path = folder / "config.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise UserError(f"{label}: {path.name}: not UTF-8 text (byte {exc.object[exc.start]:#04x})") from None
    except json.JSONDecodeError as exc:
        raise UserError(f"{label}: {path.name}:{exc.lineno}: invalid JSON: {exc.msg}") from None
    except RecursionError:
        raise UserError(f"{label}: {path.name}: invalid JSON: nested too deeply") from None
    except OSError as exc:
        raise UserError(f"{label}: {path.name}: cannot read it ({exc.strerror or exc})", ENVIRONMENT_ERROR) from None
    if not isinstance(data, dict):
        raise UserError(f"{label}: {path.name}: not a JSON object (it holds {_JSON_KINDS.get(type(data), 'a value')})")
    return data


def require_available(model: ModelRef, *, flag: str = "--model") -> None:
    """Before a model is loaded: offline, a hub id must already be in the local hub cache."""
    if model.local or not hub_offline():
        return
    from huggingface_hub import try_to_load_from_cache

    if not isinstance(try_to_load_from_cache(model.name, "config.json"), str):
        raise neither_folder_nor_hub(model, "not a hub model in the local cache (HF_HUB_OFFLINE is set); download "
                                     "it first or give a model folder", flag=flag)


def neither_folder_nor_hub(model: ModelRef, why: str, *, flag: str = "--model",
                           exit_code: int = ENVIRONMENT_ERROR) -> UserError:
    """A name that is no local folder and a hub id that cannot be had. Both readings are named: `gpt2` is a
    hub id, but `my-modle` is as likely a mistyped folder. Exit 1 when the hub could not be asked (the
    environment), 2 when it answered that there is no such model (the input)."""
    return UserError(f"{flag} {model.name}: no such local folder, and {why}{_did_you_mean(model.name)}", exit_code)


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _has_chat_template(folder: Path) -> bool:
    if any((folder / name).is_file() for name in CHAT_TEMPLATE_FILES):
        return True
    if (folder / "additional_chat_templates").is_dir():
        return True
    try:
        config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        # No readable tokenizer config: let the tokenizer load decide (and say what is wrong).
        return True
    return bool(config.get("chat_template"))


def config_problem(exc: BaseException) -> str:
    """The first sentence of what an exception says. vLLM checks its settings with pydantic, whose first line is
    only "1 validation error for ModelConfig": then the first error's message."""
    errors = getattr(exc, "errors", None)
    if callable(errors) and hasattr(exc, "error_count"):  # a pydantic ValidationError
        text = str(errors()[0].get("msg", "")).removeprefix("Value error, ")
    else:
        text = str(exc).strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    return first.split(". ")[0].rstrip(".")


@contextlib.contextmanager
def engine_load_errors(model: ModelRef, engine: str, *, flag: str = "--model",
                       max_model_len: int | None = None) -> Iterator[None]:
    """While an engine loads `model`: anything but a UserError becomes `load_error`'s one line with the reason (vLLM
    checks its settings with pydantic, e.g. --tp the heads do not divide); a context longer than the model allows
    is blamed on --max-model-len, not on the model."""
    try:
        yield
    except UserError:
        raise
    except Exception as exc:
        if max_model_len is not None and "max_model_len" in str(exc):
            raise UserError(f"--max-model-len {max_model_len}: {config_problem(exc)}") from None
        raise load_error(model, exc, what=f"load it in the {engine} engine", flag=flag) from None


def load_error(model: ModelRef, exc: BaseException, *, what: str = "load it", flag: str = "--model") -> UserError:
    """One line for a failed load: an unreachable hub or a full disk (exit 1) told apart from a broken model (exit
    2)."""
    if isinstance(exc, OSError) and (machine := file_system_error(exc, writing=_loading(model, flag))) is not None:
        return machine  # a full disk or an unreadable file, not a broken model
    first = config_problem(exc)
    if not model.local and network_failure(exc):
        return neither_folder_nor_hub(model, f"the hub cannot be reached to download it ({first}); check the "
                                      "network or give a model folder", flag=flag)
    return UserError(f"{flag} {model.name}: cannot {what} ({type(exc).__name__}: {first})")


def _loading(model: ModelRef, flag: str) -> str:
    """What a model's load writes, for a write error that names no file: a hub model is downloaded into the hub
    cache (a local one, only the engine's own caches)."""
    if model.local:
        return f"loading {flag} {model.name}"
    from huggingface_hub.constants import HF_HUB_CACHE

    return f"downloading {flag} {model.name} into the hub cache {HF_HUB_CACHE}"


@dataclass(frozen=True)
class HubAnswer:
    """What the hub said of a repository: its commit (None when it will not say, e.g. a gated one), that it has
    none of that name (`missing`; a private one looks the same), or the error that kept it from answering."""

    sha: str | None = None
    missing: bool = False
    error: BaseException | None = None


def ask_hub(name: str, repo_type: str) -> HubAnswer:
    """One question to the hub about a model or dataset (`repo_type`), with a 20 s timeout and no retries."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    try:
        info = getattr(HfApi(), f"{repo_type}_info")(name, timeout=20)
    except GatedRepoError:  # a subclass of RepositoryNotFoundError: it exists, its files need access
        return HubAnswer()
    except RepositoryNotFoundError:
        return HubAnswer(missing=True)
    except Exception as exc:  # noqa: BLE001 - unreachable or refused: the caller decides
        return HubAnswer(error=exc)
    return HubAnswer(sha=getattr(info, "sha", None) or None)


def network_failure(exc: BaseException | None) -> bool:
    """The exception (or one it was raised from) says the hub could not be reached: the network, not the input."""
    seen = 0
    while exc is not None and seen < 10:
        # Connect: requests' ConnectionError and httpx's ConnectError (huggingface_hub's HTTP client).
        if any(word in type(exc).__name__ for word in ("Connect", "Network", "Timeout", "Offline",
                                                       "LocalEntryNotFound")):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False
