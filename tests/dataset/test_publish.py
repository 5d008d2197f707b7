"""`ssogen push-to-hub` at the HTTP level, against a stand-in Hub on 127.0.0.1 that records every request.

The stand-in answers the endpoints huggingface_hub's create_repo/create_branch/create_commit use: repo
creation, README metadata validation, preupload (parquet and PNG as LFS, the rest as regular base64 files
inside the commit), the LFS batch API with a basic PUT transfer, and the NDJSON commit. Xet is switched off
so that LFS files take the plain HTTP path the stand-in can serve.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from ssogen.cli import app
from ssogen.dataset.folder import WORK_DIR, OutputFolder
from ssogen.dataset.refresh import refresh
from ssogen.testing.folders import make_record, snapshot, write_dataset

# huggingface_hub streams LFS uploads with a call httpx2 deprecates; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:Use .content=:DeprecationWarning")

TOKEN = "hf_standinSECRETtoken0123456789abcdef"
REPO = "my-org/sso-data"


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]  # names lower-cased
    body: bytes


@dataclass
class StandInHub:
    base: str
    requests: list[Recorded] = field(default_factory=list)
    lfs_objects: dict[str, bytes] = field(default_factory=dict)

    def commit_lines(self) -> list[dict]:
        commits = [r for r in self.requests if re.fullmatch(r"/api/datasets/.+/commit/.+", r.path)]
        assert len(commits) == 1, [r.path for r in self.requests]
        return [json.loads(line) for line in commits[0].body.decode().splitlines() if line.strip()]


def _read_body(handler: BaseHTTPRequestHandler) -> bytes:
    if handler.headers.get("Transfer-Encoding", "").lower() == "chunked":
        body = b""
        while True:
            size = int(handler.rfile.readline().strip(), 16)
            if size == 0:
                handler.rfile.readline()
                return body
            body += handler.rfile.read(size)
            handler.rfile.readline()
    return handler.rfile.read(int(handler.headers.get("Content-Length") or 0))


def _make_handler(hub: StandInHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            """Silenced: the stand-in logs nothing, so pytest's output stays clean."""

        def _reply(self, status: int, payload: object) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _handle(self) -> None:
            body = _read_body(self)
            path = self.path.split("?")[0]
            hub.requests.append(Recorded(self.command, path, {k.lower(): v for k, v in self.headers.items()}, body))
            if path.startswith("/lfs-put/"):  # storage upload: authorised by the signed URL, not the token
                hub.lfs_objects[path.rsplit("/", 1)[1]] = body
                return self._reply(200, {})
            if path.startswith("/echo/"):
                return self._reply(500, {"error": "no"})
            if self.headers.get("Authorization", "").startswith("Bearer hf_echo"):  # the token ends up in a URL
                self.send_response(307)
                self.send_header("Location", f"{hub.base}/echo/{self.headers['Authorization'].split()[1]}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return None
            if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                return self._reply(401, {"error": "Invalid username or password."})
            if path == "/api/repos/create":
                name = json.loads(body)
                return self._reply(200, {"url": f"{hub.base}/datasets/{name['organization']}/{name['name']}"})
            if path == "/api/validate-yaml":
                return self._reply(200, {"errors": [], "warnings": []})
            if re.fullmatch(r"/api/datasets/.+/branch/.+", path):
                return self._reply(200, {})
            if re.fullmatch(r"/api/datasets/.+/preupload/.+", path):
                files = json.loads(body)["files"]
                return self._reply(200, {"files": [
                    {"path": f["path"], "shouldIgnore": False, "oid": None,
                     "uploadMode": "lfs" if f["path"].endswith((".parquet", ".png")) else "regular"}
                    for f in files]})
            if re.fullmatch(r"/datasets/.+\.git/info/lfs/objects/batch", path):
                objects = json.loads(body)["objects"]
                return self._reply(200, {"transfer": "basic", "objects": [
                    {"oid": o["oid"], "size": o["size"],
                     "actions": {"upload": {"href": f"{hub.base}/lfs-put/{o['oid']}"}}} for o in objects]})
            if re.fullmatch(r"/api/datasets/.+/commit/.+", path):
                return self._reply(200, {"commitUrl": f"{hub.base}/datasets/{REPO}/commit/{'c' * 40}",
                                         "commitOid": "c" * 40, "pullRequestUrl": None})
            return self._reply(404, {"error": f"stand-in has no route for {self.command} {path}"})

        do_GET = do_POST = do_PUT = _handle

    return Handler


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[StandInHub]:
    from huggingface_hub import constants

    server = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(hub_state := StandInHub(base="")))
    hub_state.base = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    monkeypatch.setenv("HF_ENDPOINT", hub_state.base)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "hf-home" / "token"))  # no cached login
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # conftest sets offline mode for everything else
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    yield hub_state
    server.shutdown()
    server.server_close()


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    out = write_dataset(tmp_path / "out", [make_record(i) for i in range(3)]
                        + [make_record(3, kept=False, drop_reason="equal_responses")])
    refresh(out)  # card, stats.json and plots, as after `ssogen stats`
    work = out / WORK_DIR / "shards"
    work.mkdir(parents=True)
    (work / "shard-00000.jsonl").write_text('{"in": "progress"}\n')
    (out / "data" / "dpo" / "train-00000-of-00001.parquet.tmp").write_bytes(b"half written")
    return out


def all_files_text(folder: Path) -> bytes:
    return b"".join(p.read_bytes() for p in folder.rglob("*") if p.is_file())


def test_push_uploads_one_commit_without_the_token_anywhere(hub: StandInHub, dataset: Path) -> None:
    result = CliRunner().invoke(app, ["push-to-hub", str(dataset), "--repo-id", REPO, "--token", TOKEN,
                                      "--private", "--commit-message", "first upload"])
    assert result.exit_code == 0, result.output
    assert "one commit" in result.stdout

    create = next(r for r in hub.requests if r.path == "/api/repos/create")
    assert json.loads(create.body) == {"name": "sso-data", "organization": "my-org", "visibility": "private",
                                       "type": "dataset"}
    lines = hub.commit_lines()
    assert lines[0] == {"key": "header", "value": {"summary": "first upload", "description": ""}}
    regular = {v["value"]["path"]: base64.b64decode(v["value"]["content"]) for v in lines if v["key"] == "file"}
    lfs = {v["value"]["path"]: v["value"]["oid"] for v in lines if v["key"] == "lfsFile"}
    assert set(regular) == {"README.md", "manifest.json", "stats.json"}
    configs = ("triplets", "dpo", "sso", "reward", "pairs")
    assert set(lfs) == {f"data/{c}/train-00000-of-00001.parquet" for c in configs} | {"plots/lengths.png"}
    for path, oid in lfs.items():  # the bytes the storage received are the local file's
        local = (dataset / path).read_bytes()
        assert hashlib.sha256(local).hexdigest() == oid
        assert hub.lfs_objects[oid] == local
    assert regular["README.md"] == (dataset / "README.md").read_bytes()
    assert f'load_dataset("{REPO}", "dpo"' in regular["README.md"].decode()  # card re-rendered for the repo
    assert "configs:" in regular["README.md"].decode()
    assert json.loads(regular["manifest.json"])["status"] == "complete"
    assert not any(WORK_DIR in p or p.endswith(".tmp") for p in [*regular, *lfs])

    secret = TOKEN.encode()
    for request in hub.requests:
        assert secret not in request.body, request.path
        for name, value in request.headers.items():
            if name != "authorization":
                assert TOKEN not in value, name
    assert any(r.headers.get("authorization") == f"Bearer {TOKEN}" for r in hub.requests)
    assert TOKEN not in result.output
    assert secret not in all_files_text(dataset)
    # The command's log stays local (it names local paths) and shows the command line with the token hidden.
    (log,) = (dataset / "logs").glob("push-to-hub-*.log")
    assert re.search(r"ssogen push-to-hub .* --token='?\*\*\*'?( |$)", log.read_text(), re.MULTILINE)
    assert f"pushed {len(regular) + len(lfs)} files to {REPO} in one commit" in log.read_text()  # its summary too
    assert not any(p.startswith("logs/") for p in [*regular, *lfs])


def test_license_is_set_in_the_manifest_and_the_pushed_card(hub: StandInHub, dataset: Path) -> None:
    result = CliRunner().invoke(app, ["push-to-hub", str(dataset), "--repo-id", REPO, "--token", TOKEN,
                                      "--license", "apache-2.0"])
    assert result.exit_code == 0, result.output
    regular = {v["value"]["path"]: base64.b64decode(v["value"]["content"]) for v in hub.commit_lines()
               if v["key"] == "file"}
    assert "\nlicense: apache-2.0\n" in regular["README.md"].decode()
    assert json.loads(regular["manifest.json"])["license"] == "apache-2.0"


def test_token_from_env_and_revision_branch(hub: StandInHub, dataset: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    result = CliRunner().invoke(app, ["push-to-hub", str(dataset), "--repo-id", REPO, "--revision", "v1"])
    assert result.exit_code == 0, result.output
    paths = [r.path for r in hub.requests]
    assert f"/api/datasets/{REPO}/branch/v1" in paths
    assert f"/api/datasets/{REPO}/commit/v1" in paths
    assert json.loads(next(r for r in hub.requests if r.path == "/api/repos/create").body).get("visibility") is None
    assert TOKEN not in result.output


def test_token_from_cached_login(hub: StandInHub, dataset: Path) -> None:
    from huggingface_hub import constants

    Path(constants.HF_TOKEN_PATH).parent.mkdir(parents=True)
    Path(constants.HF_TOKEN_PATH).write_text(TOKEN)
    result = CliRunner().invoke(app, ["push-to-hub", str(dataset), "--repo-id", REPO])
    assert result.exit_code == 0, result.output
    assert all(r.headers.get("authorization") == f"Bearer {TOKEN}" for r in hub.requests
               if not r.path.startswith("/lfs-put/"))


def test_dry_run_contacts_nothing_and_shows_files_and_card(hub: StandInHub, dataset: Path) -> None:
    before = (dataset / "README.md").read_bytes()
    result = CliRunner().invoke(app, ["push-to-hub", str(dataset), "--repo-id", REPO, "--dry-run",
                                      "--token", TOKEN])
    assert result.exit_code == 0, result.output
    assert hub.requests == []
    assert "data/dpo/train-00000-of-00001.parquet" in result.stdout
    assert "plots/lengths.png" in result.stdout
    assert WORK_DIR not in result.stdout and ".tmp" not in result.stdout
    assert f'load_dataset("{REPO}", "dpo"' in result.stdout
    assert (dataset / "README.md").read_bytes() == before  # a dry run writes nothing
    assert TOKEN not in result.output


def test_the_pushed_card_can_come_from_your_template(hub: StandInHub, dataset: Path, tmp_path: Path) -> None:
    (tmp_path / "card.md.jinja").write_text("---\nlicense: mit\n---\n# {{ name }}, loaded from {{ source }}\n")
    result = CliRunner().invoke(app, ["push-to-hub", str(dataset), "--repo-id", REPO, "--dry-run",
                                      "--templates", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert f"# sso-data, loaded from {REPO}" in result.stdout and hub.requests == []


def test_a_folder_another_command_is_writing_is_not_pushed(hub: StandInHub, dataset: Path) -> None:
    """push-to-hub took no lock: a `score` rewriting the data files meanwhile could be uploaded half-written."""
    import signal

    from tests.test_lock import _hold

    holder = _hold(dataset / WORK_DIR / "lock")
    try:
        result = CliRunner().invoke(app, ["push-to-hub", str(dataset), "--repo-id", REPO, "--token", TOKEN])
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert result.exit_code == 1
    assert f"{dataset}: in use by process {holder.pid}" in result.stderr and not hub.requests


def test_wrong_token_is_one_line_and_nonzero(hub: StandInHub, dataset: Path) -> None:
    result = CliRunner().invoke(app, ["push-to-hub", str(dataset), "--repo-id", REPO, "--token", "hf_wrong"])
    assert result.exit_code == 1
    assert "authentication failed (HTTP 401)" in result.stderr
    assert result.stderr.strip().count("\n") == 0
    assert "hf_wrong" not in result.output


def test_unreachable_hub_is_one_line(hub: StandInHub, dataset: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    with socket.socket() as probe:  # a port that nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    result = CliRunner().invoke(app, ["push-to-hub", str(dataset), "--repo-id", REPO, "--token", TOKEN])
    assert result.exit_code == 1
    assert f"could not reach http://127.0.0.1:{port}" in result.stderr
    assert result.stderr.strip().count("\n") == 0
    assert TOKEN not in result.output


def test_no_token_anywhere_is_one_line(hub: StandInHub, dataset: Path) -> None:
    result = CliRunner().invoke(app, ["push-to-hub", str(dataset), "--repo-id", REPO])
    assert result.exit_code == 1
    assert "no Hugging Face token" in result.stderr
    assert hub.requests == [] and not (dataset / "logs").exists()


@pytest.mark.parametrize("repo_id", ["no-slash", "a/b/c", "org/bad name", "org/..x", "/name"])
def test_invalid_repo_id_is_one_line(hub: StandInHub, dataset: Path, repo_id: str) -> None:
    result = CliRunner().invoke(app, ["push-to-hub", str(dataset), "--repo-id", repo_id, "--token", TOKEN])
    assert result.exit_code == 2
    assert "is not a valid repo id" in result.stderr
    assert result.stderr.strip().count("\n") == 0
    assert hub.requests == []


def test_refuses_unfinished_run_unless_allowed(hub: StandInHub, dataset: Path) -> None:
    manifest = json.loads((dataset / "manifest.json").read_text())
    OutputFolder(dataset).write_manifest({**manifest, "status": "running"})
    result = CliRunner().invoke(app, ["push-to-hub", str(dataset), "--repo-id", REPO, "--token", TOKEN])
    assert result.exit_code == 2
    assert "not complete" in result.stderr and "--allow-incomplete" in result.stderr
    assert hub.requests == []
    allowed = CliRunner().invoke(app, ["push-to-hub", str(dataset), "--repo-id", REPO, "--token", TOKEN,
                                       "--allow-incomplete"])
    assert allowed.exit_code == 0, allowed.output


def test_refuses_empty_responses_in_pair_configs(hub: StandInHub, tmp_path: Path) -> None:
    out = write_dataset(tmp_path / "blank", [make_record(0), make_record(1, response_bad="  ")])
    result = CliRunner().invoke(app, ["push-to-hub", str(out), "--repo-id", REPO, "--dry-run"])
    assert result.exit_code == 2
    assert "empty or null" in result.stderr
    assert result.stderr.strip().count("\n") == 0


def test_bad_folders_are_one_line(hub: StandInHub, tmp_path: Path, dataset: Path) -> None:
    result = CliRunner().invoke(app, ["push-to-hub", str(tmp_path / "nothing"), "--repo-id", REPO, "--dry-run"])
    assert result.exit_code == 2 and "no such folder" in result.stderr
    (tmp_path / "plain").mkdir()
    result = CliRunner().invoke(app, ["push-to-hub", str(tmp_path / "plain"), "--repo-id", REPO, "--dry-run"])
    assert result.exit_code == 2 and "not an ssogen output folder" in result.stderr
    (dataset / "data" / "reward" / "train-00000-of-00001.parquet").write_bytes(b"garbage")
    result = CliRunner().invoke(app, ["push-to-hub", str(dataset), "--repo-id", REPO, "--dry-run"])
    assert result.exit_code == 2 and "corrupt parquet file" in result.stderr
    assert result.stderr.strip().count("\n") == 0


def _bad_folder(kind: str, tmp_path: Path, dataset: Path) -> Path:
    if kind == "nothing":
        return tmp_path / "nothing"
    if kind == "a file":
        (tmp_path / "afile").write_text("x")
        return tmp_path / "afile"
    if kind == "plain":
        (tmp_path / "plain").mkdir()
        return tmp_path / "plain"
    if kind == "corrupt":
        (dataset / "data" / "reward" / "train-00000-of-00001.parquet").write_bytes(b"garbage")
    elif kind == "blank":
        write_dataset(dataset, [make_record(0), make_record(1, response_bad="  ")])
    else:
        OutputFolder(dataset).write_manifest({**json.loads((dataset / "manifest.json").read_text()),
                                              "status": "running"})
    return dataset


@pytest.mark.parametrize("token", [TOKEN, None], ids=["token", "no-token"])
@pytest.mark.parametrize("kind", ["nothing", "a file", "plain", "corrupt", "blank", "unfinished"])
def test_a_push_refuses_bad_folders_as_the_dry_run_does_and_writes_nothing(hub: StandInHub, tmp_path: Path,
                                                                           dataset: Path, kind: str,
                                                                           token: str | None) -> None:
    """The push checks the folder under its lock, no longer before it too: the same line and exit code as the dry
    run, before the token is looked for. Nothing is written in a folder that is not an ssogen output; in one that is,
    only the lock and ssogen's mark, which generate leaves there anyway (this hand-built one lacks them)."""
    folder = _bad_folder(kind, tmp_path, dataset)
    dry = CliRunner().invoke(app, ["push-to-hub", str(folder), "--repo-id", REPO, "--dry-run"])
    before = snapshot(folder) if folder.is_dir() else None
    pushed = CliRunner().invoke(app, ["push-to-hub", str(folder), "--repo-id", REPO,
                                      *(["--token", token] if token else [])])
    assert (pushed.exit_code, pushed.stderr) == (dry.exit_code, dry.stderr) and dry.exit_code == 2, pushed.stderr
    assert pushed.stderr.strip().count("\n") == 0
    assert hub.requests == [] and not (tmp_path / "nothing").exists()
    if before is not None:
        after = snapshot(folder)
        assert {k: after[k] for k in before} == before
        assert set(after) - set(before) <= ({WORK_DIR, f"{WORK_DIR}/lock", f"{WORK_DIR}/marker.json"}
                                            if (folder / "manifest.json").is_file() else set())


def test_a_push_reads_the_folder_once(hub: StandInHub, dataset: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """It checked every row of every config twice: in the command, then again under the lock."""
    from ssogen.dataset import publishable

    scanned: list[str] = []
    scan = publishable._scan

    def counted(folder: OutputFolder, config: str, columns: tuple[str, ...]) -> Any:
        scanned.append(config)
        return scan(folder, config, columns)

    monkeypatch.setattr(publishable, "_scan", counted)
    result = CliRunner().invoke(app, ["push-to-hub", str(dataset), "--repo-id", REPO, "--token", TOKEN])
    assert result.exit_code == 0, result.output
    assert sorted(scanned) == ["dpo", "pairs", "reward", "sso", "triplets"]
    assert "(3 pairs, " in json.dumps(hub.commit_lines()[0])  # the commit message still counts the checked rows


def test_hand_written_card_is_uploaded_as_is(hub: StandInHub, dataset: Path) -> None:
    mine = "---\nlicense: mit\nconfigs:\n- config_name: dpo\n  data_files: data/dpo/*.parquet\n---\n# Mine\n"
    (dataset / "README.md").write_text(mine)
    result = CliRunner().invoke(app, ["push-to-hub", str(dataset), "--repo-id", REPO, "--token", TOKEN])
    assert result.exit_code == 0, result.output
    regular = {v["value"]["path"]: base64.b64decode(v["value"]["content"]) for v in hub.commit_lines()
               if v["key"] == "file"}
    assert regular["README.md"].decode() == mine
    assert (dataset / "README.md").read_text() == mine


# -- the token never leaks, in any spelling (issue 10 item 7) ---------------------------------------------------
def _leaks(text: str | bytes, *secrets: str) -> list[str]:
    """The forms of the secrets (and their halves) found in text: as is, repr-escaped, JSON-escaped, bytes repr."""
    from ssogen.redaction import secret_forms

    data = text if isinstance(text, str) else text.decode("utf-8", errors="replace")
    halves = [part for s in secrets for part in (s[:len(s) // 2], s[len(s) // 2:]) if len(part) >= 8]
    return [form for form in [*secret_forms(*secrets), *halves] if form in data]


# Every path this process opens for writing or renames to while a token test runs (Python's audit events see
# each open, ours and the HTTP stack's, wherever it is), so the scan covers files written outside the folders too.
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
_written: list[Path] | None = None
_hook_installed = False


def _record_writes(event: str, args: tuple[Any, ...]) -> None:
    if _written is None:
        return
    if event == "open" and isinstance(args[0], (str, bytes, os.PathLike)) and args[2] & _WRITE_FLAGS:
        _written.append(Path(os.fsdecode(args[0])))
    elif event in ("os.rename", "os.replace") and isinstance(args[1], (str, bytes, os.PathLike)):
        _written.append(Path(os.fsdecode(args[1])))


@pytest.fixture
def written(tmp_path: Path) -> Iterator[list[Path]]:
    """The files written meanwhile (audit hooks cannot be removed: one hook, switched on for the test)."""
    global _written, _hook_installed
    if not _hook_installed:
        sys.addaudithook(_record_writes)
        _hook_installed = True
    _written = []
    (tmp_path / "hook-check").write_text("x")  # the hook sees writes, or this test would prove nothing
    assert _written == [tmp_path / "hook-check"]
    try:
        yield _written
    finally:
        _written = None


def _scan_everything(hub: StandInHub, result: Any, folders: list[Path], written: list[Path], *secrets: str) -> None:
    """stdout, stderr, every file in the folders and every file written anywhere, every request body and every
    header but Authorization."""
    assert _leaks(result.stdout, *secrets) == [] and _leaks(result.stderr, *secrets) == []
    files = {p for folder in folders for p in folder.rglob("*") if p.is_file()}
    files |= {p for p in written if p.is_file()}
    for path in files:
        assert _leaks(path.read_bytes(), *secrets) == [], path
    for request in hub.requests:
        assert _leaks(request.body, *secrets) == [], request.path
        for name, value in request.headers.items():
            if name != "authorization":
                assert _leaks(value, *secrets) == [], name


@pytest.mark.parametrize("given", [TOKEN + "\r", TOKEN + "\n", TOKEN + "\r\n", f"  {TOKEN}\t"],
                         ids=["cr", "lf", "crlf", "blanks"])
@pytest.mark.parametrize("source", ["flag", "env"])
def test_a_token_with_line_endings_is_stripped_and_never_shown(hub: StandInHub, dataset: Path, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch, given: str,
                                                               source: str, written: list[Path]) -> None:
    """A token file saved with Windows line endings: the token works, and appears nowhere but in the header."""
    args = ["push-to-hub", str(dataset), "--repo-id", REPO]
    if source == "flag":
        args += ["--token", given]
    else:
        monkeypatch.setenv("HF_TOKEN", given)
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert {r.headers.get("authorization") for r in hub.requests if not r.path.startswith("/lfs-put/")} == {
        f"Bearer {TOKEN}"}
    _scan_everything(hub, result, [dataset, tmp_path], written, TOKEN, given)


@pytest.mark.parametrize("given", ["hf_standinSECRET\rtoken0123456789", "hf_standinSECRET\ntoken0123456789",
                                   "hf_standinSECRET\x00token0123456789", "hf_standin SECRET0123456789"],
                         ids=["cr", "lf", "nul", "space"])
def test_a_token_no_header_can_carry_is_one_line_before_any_request(hub: StandInHub, dataset: Path,
                                                                    tmp_path: Path, given: str,
                                                                    written: list[Path]) -> None:
    """A character inside the token that an HTTP library would refuse, quoting the header in its error."""
    result = CliRunner().invoke(app, ["push-to-hub", str(dataset), "--repo-id", REPO, "--token", given])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: the token from --token holds characters a token cannot have (0x")
    assert result.stderr.strip().count("\n") == 0 and hub.requests == []
    assert not (dataset / "logs").exists()  # bad input writes nothing (a log was started before the check)
    _scan_everything(hub, result, [dataset, tmp_path], written, given)
    # The dry run checks a token given, as the push would: it passed, and the push then failed.
    dry = CliRunner().invoke(app, ["push-to-hub", str(dataset), "--repo-id", REPO, "--token", given, "--dry-run"])
    assert dry.exit_code == 2 and "holds characters a token cannot have" in dry.stderr and given not in dry.output


def test_a_hub_error_quoting_the_token_is_scrubbed(hub: StandInHub, dataset: Path, tmp_path: Path,
                                                  written: list[Path]) -> None:
    token = "hf_echoSECRETtoken0123456789"
    result = CliRunner().invoke(app, ["push-to-hub", str(dataset), "--repo-id", REPO, "--token", token])
    assert result.exit_code == 1, result.output
    assert "the Hub refused the upload (HTTP 500)" in result.stderr and "***" in result.stderr
    assert result.stderr.strip().count("\n") == 0
    _scan_everything(hub, result, [dataset, tmp_path], written, token)


def test_every_spelling_of_the_token_is_scrubbed() -> None:
    from ssogen.dataset.publish import _scrub

    token = "hf_abc\r\ndef"
    spellings = [token, repr(token), json.dumps(token), repr(token.encode()), "hf_abc%0D%0Adef",
                 f"Illegal header value b'Bearer {token}'".encode().decode("unicode_escape")]
    from ssogen.redaction import hide, scrub

    hide(token)  # the command logs' scrubber: every log line and warning goes through it
    for spelling in spellings:
        for scrubbed in (_scrub(f"before {spelling} after", token), scrub(f"before {spelling} after")):
            assert "hf_abc" not in scrubbed and "def" not in scrubbed.replace("after", ""), scrubbed
            assert scrubbed.startswith("before ") and scrubbed.endswith(" after")
