"""The one error type that the CLI turns into a single clear line and a non-zero exit, the interruption its
signal handler raises, and the "did you mean" lookup their messages share."""

from __future__ import annotations

import difflib
import errno
import getpass
import os
import re
import sys
import tempfile
from collections.abc import Iterable


class UserError(Exception):
    """Bad input or an impossible request, described for the user (name the file, line or field).

    `exit_code` is 2 for bad input by default; 130 is used for an interrupted run."""

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class Interrupted(BaseException):
    """Raised by the CLI's handler of Ctrl-C (SIGINT) and SIGTERM while a command runs: the command stops, saving
    its finished work and shutting its engines down. Not a KeyboardInterrupt: vLLM swallows that while an engine
    starts (`zmq_socket_ctx`), and then waited up to 600 s for an engine that had stopped."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum  # SIGTERM reached this process alone: a command running a child passes it on


# What the commands catch to stop cleanly: their own signal handler's exception, or a KeyboardInterrupt raised
# outside it (a library call, a test).
STOPPED = (KeyboardInterrupt, Interrupted)


# Set by `ssogen iterate` for the commands it runs as steps: an interrupted step does not print its own "to resume"
# line (iterate prints the one to run).
STEP_OF_ITERATE_ENV = "SSOGEN_STEP_OF_ITERATE"
# Set by `ssogen iterate --num-processes N` for its train steps: the number of processes it asked `accelerate launch`
# for, which `ssogen train` checks against the number it runs in (accelerate may start fewer without a word).
NUM_PROCESSES_ENV = "SSOGEN_NUM_PROCESSES"


# What to do about an operating-system error of the file system, by errno. Every file is written atomically and
# each shard chunk is fsynced, so after any of these the finished work is on disk and the same command resumes.
_AGAIN = "run the same command again (finished work is kept)"
_FILE_SYSTEM_ADVICE = {
    errno.ENOSPC: f"the disk is full: free some space and {_AGAIN}",
    errno.EDQUOT: f"the disk quota is used up: free some space and {_AGAIN}",
    errno.EFBIG: f"the file size limit (ulimit -f) is reached: raise it and {_AGAIN}",
    errno.EACCES: "make it readable (an input) or writable (the output folder), or choose another path",
    errno.EPERM: "make it readable (an input) or writable (the output folder), or choose another path",
    errno.EROFS: "the file system is read-only: choose a folder on a writable one",
    errno.EISDIR: "a folder is where a file is expected: move it away or choose another path",
    errno.ENOTDIR: "a file is where a folder is expected: move it away or choose another path",
    errno.EIO: f"the disk reported an input/output error: check it, then {_AGAIN}",
}


# The errors only a write gives. A write(2) names no file, so neither does the error of one inside a library
# (transformers' save_pretrained, a download into the hub cache): `writing` then says what was being written.
_WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS})


def file_system_error(exc: OSError, at: os.PathLike[str] | None = None, *,
                      writing: str | os.PathLike[str] | None = None) -> UserError | None:
    """The one-line error (exit 1: the machine, not the input) for a full, read-only or forbidden file system,
    naming the path when the error carries one (pyarrow's carry none: the file their text quotes), else for a write
    error `writing` (what was being written: "writing in OUT"), else `at` (what was read); the path once, then the
    system's words for the error. None for any other OSError (left to show its traceback)."""
    advice = _FILE_SYSTEM_ADVICE.get(exc.errno or 0)
    if advice is None:
        return None
    quoted, reason = _arrow_words(exc.strerror or os.strerror(exc.errno or 0))
    path = exc.filename if isinstance(exc.filename, (str, bytes, os.PathLike)) else None  # not a descriptor
    if not path:
        path = quoted or (writing if writing and exc.errno in _WRITE_ERRNOS else at)
    # A path that is not UTF-8 is shown with its odd bytes escaped (the terminal may not print them).
    where = f"{os.fsencode(path).decode('utf-8', 'backslashreplace')}: " if path else ""
    return UserError(f"{where}{reason}; {advice}", exit_code=1)


def _chain_to_file_system_error(exc: BaseException) -> list[BaseException]:
    """`exc`, then each error it wraps, down to the OSError of a full, read-only or forbidden file system (one
    `file_system_error` words), its last item; empty when it wraps none. A wrapper is raised from the next, or
    raised while handling it with its words in the message (torch's InductorError, when its compile cache fills the
    disk, keeps it only as the context). Another error raised while one was handled is its own (a bug in an
    `except` block keeps its traceback)."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    for _ in range(10):  # a chain is short; a cycle of contexts must not loop
        if current is None:
            return []
        chain.append(current)
        if isinstance(current, OSError) and (current.errno or 0) in _FILE_SYSTEM_ADVICE:
            return chain
        inner = current.__cause__ or current.__context__
        if current.__cause__ is None and isinstance(inner, OSError) and (inner.strerror or "") not in str(current):
            return []  # not a wrapper of it: an error of its own, raised while the OSError was handled
        current = inner
    return []


def file_system_cause(exc: BaseException) -> OSError | None:
    """The file-system OSError that `exc` is or wraps (`_chain_to_file_system_error`); None for any other error."""
    chain = _chain_to_file_system_error(exc)
    return chain[-1] if chain and isinstance(chain[-1], OSError) else None


# On a worker's plain copy of the OSError (`file_system_copy`): what the worker was writing, where it could tell.
_WRITING_ATTRIBUTE = "ssogen_writing"


def wrapped_writing(exc: BaseException) -> str | None:
    """What was being written when the file-system error that `exc` is or wraps struck, where the error tells:
    torch's compile cache for torch's InductorError (its compiler's writes go there, to the temp folder by default,
    not to the command's folder), or what an engine worker's copy says. None otherwise."""
    chain = _chain_to_file_system_error(exc)
    if any(c.__name__ == "InductorError" and c.__module__.startswith("torch._inductor")
           for wrapper in chain[:-1] for c in type(wrapper).__mro__):  # by name: torch is not imported for it
        return f"writing torch's compile cache in {torch_compile_cache()}"
    said = getattr(chain[-1], _WRITING_ATTRIBUTE, None) if chain else None
    return said if isinstance(said, str) else None


def file_system_copy(exc: BaseException, cause: OSError) -> OSError:
    """A plain copy of `cause`, the file-system error `exc` wraps, for another process (a library's subclass may not
    pickle; EACCES gives a PermissionError, as raised), that keeps what was being written (`wrapped_writing`)."""
    copy = OSError(cause.errno, cause.strerror, cause.filename)
    if (writing := wrapped_writing(exc)) is not None:
        setattr(copy, _WRITING_ATTRIBUTE, writing)  # pickled with it (an exception's __dict__)
    return copy


def torch_compile_cache() -> str:
    """The folder of torch's compile cache, found as torch finds it (`cache_dir` in
    torch/_inductor/runtime/cache_dir_utils.py), without importing torch where it is not imported yet."""
    folder = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if folder is None and (torchs := sys.modules.get("torch._inductor.runtime.cache_dir_utils")) is not None:
        folder = str(torchs.default_cache_dir())
    if folder is None:
        try:
            user = getpass.getuser()
        except (KeyError, ModuleNotFoundError, OSError):
            getuid = getattr(os, "getuid", None)
            user = f"uid_{getuid()}" if callable(getuid) else "unknown_user"
        folder = os.path.join(tempfile.gettempdir(), "torchinductor_" + re.sub(r'[\\/:*?"<>|]', "_", user))
    return os.path.abspath(folder)


# Arrow's OSErrors carry no file name: their text quotes the file, then gives the system's words ("Failed to open
# local file 'PATH'. Detail: [errno 13] Permission denied"), and the line said the path twice.
_ARROW_FILE = re.compile(r"local file '(.+)'")  # in the text before the detail: a quote in the path is kept
_ARROW_DETAIL = re.compile(r"Detail: \[errno \d+\] (.+)$", re.DOTALL)


def _arrow_words(strerror: str) -> tuple[str | None, str]:
    """The file an Arrow error's text quotes (None where it quotes none, and for any other error) and the system's
    own words for the error (the text as it is, where it is not Arrow's)."""
    detail = _ARROW_DETAIL.search(strerror)
    if detail is None:
        return None, strerror
    quoted = _ARROW_FILE.search(strerror[:detail.start()])
    return (quoted.group(1) if quoted else None), detail.group(1).strip()


def closest_name(word: str, known: Iterable[str]) -> str | None:
    """The known name nearest to `word`, compared case-insensitively, for a "did you mean" hint; None when
    none is close enough to be a likely typo."""
    by_folded = {name.casefold(): name for name in known}
    close = difflib.get_close_matches(word.casefold(), list(by_folded), n=1, cutoff=0.6)
    return by_folded[close[0]] if close else None
