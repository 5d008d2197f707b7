"""`ssogen push-to-hub`: upload an output folder to a Hub dataset repository as one commit.

What goes up: the card, the parquet configs, manifest/stats/library/config files, judge.json and the plots, once
the folder is found publishable (`ssogen.dataset.publishable`: the checks and what never goes up). The token is
only handed to huggingface_hub, which sends it in the Authorization header; it is never printed, logged or written
(errors are scrubbed of it as a second guard)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ssogen.dataset.card import card_is_generated, render_card
from ssogen.dataset.folder import CARD, OutputFolder
from ssogen.dataset.publishable import UploadFile, check_publishable, files_to_upload, refuse_special_uploads
from ssogen.errors import UserError
from ssogen.io import write_text_atomic
from ssogen.redaction import hide, secret_forms

# Exit code for a failure of the network or the Hub (bad input keeps UserError's default 2).
HUB_FAILURE = 1


@dataclass(frozen=True)
class PushResult:
    repo_id: str
    commit_url: str
    commit_oid: str
    files: list[UploadFile]


def validate_repo_id(repo_id: str) -> str:
    """ORG/NAME with the Hub's allowed characters; one clear line otherwise."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id as hub_validate

    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise UserError(f"--repo-id: {repo_id!r} is not a valid repo id (expected ORG/NAME, e.g. my-org/sso-data)")
    try:
        hub_validate(repo_id)
    except HFValidationError:
        raise UserError(f"--repo-id: {repo_id!r} is not a valid repo id (letters, digits, '-', '_' and '.' "
                        "only, no '--' or '..', at most 96 characters per part)") from None
    return repo_id


def prepare_card(out_dir: str | Path, repo_id: str, templates: str | Path | None = None) -> str | None:
    """The card to publish: ssogen's own card is re-rendered so its snippets load from `repo_id`; a card the
    user wrote is left alone (None). A missing card is rendered."""
    if not card_is_generated(out_dir):
        return None
    return render_card(out_dir, repo_id=repo_id, templates=templates)


def resolve_token(token: str | None) -> str:
    """--token, else HF_TOKEN, else the cached login (huggingface_hub.get_token reads both). Surrounding white
    space is no part of a token: a token file saved with Windows line endings ends in \r, which an HTTP library
    refuses in a header and then quotes, token included, in its error."""
    if token and token.strip():
        found, where = token.strip(), "--token"
    else:
        from huggingface_hub import get_token

        found, where = (get_token() or "").strip(), "HF_TOKEN or the cached login"
    if not found:
        raise UserError("no Hugging Face token: pass --token, set HF_TOKEN or run `hf auth login`",
                        exit_code=HUB_FAILURE)
    odd = sorted({f"0x{ord(c):02x}" for c in found if not c.isprintable() or c.isspace()})
    if odd:  # an HTTP header cannot carry these; say so before sending anything (and never show the token)
        raise UserError(f"the token from {where} holds characters a token cannot have ({', '.join(odd)}); check "
                        "the token file")
    return found


def _scrub(text: str, *secrets: str | None) -> str:
    for form in secret_forms(*secrets):
        text = text.replace(form, "***")
    return text


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[0] if lines else text.strip()


def _hub_error(exc: Exception, secrets: list[str], endpoint: str, repo_id: str) -> UserError:
    """One clear line for a failure of the network, the login or the Hub, with no form of the token in it (the
    error's text is scrubbed whole before its first line is taken: a cut could split a token)."""
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    detail = _first_line(_scrub(str(exc), *secrets))
    if isinstance(exc, OfflineModeIsEnabled):
        message = "HF_HUB_OFFLINE is set: unset it to push"
    elif isinstance(exc, HfHubHTTPError):
        status = exc.response.status_code if exc.response is not None else None
        if status in (401, 403):
            message = (f"authentication failed (HTTP {status}) for {repo_id}: check the token (--token, HF_TOKEN "
                       "or `hf auth login`) and that it may write to this namespace")
        elif status == 404:
            message = f"not found (HTTP 404) on {endpoint}: {repo_id} or its revision does not exist"
        else:
            message = f"the Hub refused the upload (HTTP {status}): {detail}"
    elif isinstance(exc, ValueError):  # e.g. the Hub's README metadata validation
        message = f"the Hub rejected the upload: {detail}"
    elif isinstance(exc, OSError) and not isinstance(exc, ConnectionError):  # e.g. a file vanished mid-upload
        message = f"upload failed: {type(exc).__name__}: {detail}"
    else:
        message = f"could not reach {endpoint}: {type(exc).__name__}: {detail}"
    return UserError(_scrub(message, *secrets), exit_code=HUB_FAILURE)


def _network_errors() -> tuple[type[BaseException], ...]:
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    errors: list[type[BaseException]] = [HfHubHTTPError, OfflineModeIsEnabled, OSError, ValueError]
    for module in ("httpx2", "httpx", "requests"):  # whichever HTTP client this huggingface_hub uses
        try:
            imported = __import__(module)
        except ImportError:
            continue
        for name in ("HTTPError", "RequestException", "TransportError"):
            error = getattr(imported, name, None)
            if isinstance(error, type) and issubclass(error, BaseException):
                errors.append(error)
    return tuple(errors)


def hub_endpoint() -> str:
    """HF_ENDPOINT read now (huggingface_hub reads it once at import), else the library's default."""
    from huggingface_hub import constants

    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def push_to_hub(
    out_dir: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    commit_message: str | None = None,
    token: str | None = None,
    allow_incomplete: bool = False,
    templates: str | Path | None = None,
    checked: dict[str, int] | None = None,
) -> PushResult:
    """Create the dataset repo if needed (and the branch), then upload the folder as one commit. `checked`: what
    `check_publishable` returned to a caller that ran it under the folder's lock (it reads every row: not twice)."""
    from huggingface_hub import CommitOperationAdd, HfApi

    from ssogen import __version__

    folder = OutputFolder(out_dir)
    validate_repo_id(repo_id)
    counts = checked if checked is not None else check_publishable(folder.root, allow_incomplete=allow_incomplete)
    secret = resolve_token(token)
    hide(secret)  # whichever way it was found: never in a log line or a message
    refuse_special_uploads(folder.root)  # before the card is written
    card = prepare_card(folder.root, repo_id, templates)
    if card is not None:  # keep the local folder identical to what the Hub will hold
        write_text_atomic(folder.card, card)
    files = files_to_upload(folder.root)
    endpoint = hub_endpoint()
    api = HfApi(endpoint=endpoint, token=secret, library_name="ssogen", library_version=__version__)
    message = commit_message or f"Upload ssogen dataset ({counts.get('dpo', 0)} pairs, {len(files)} files)"
    try:
        api.create_repo(repo_id, repo_type="dataset", private=True if private else None, exist_ok=True)
        if revision and revision != "main":
            api.create_branch(repo_id, repo_type="dataset", branch=revision, exist_ok=True)
        info = api.create_commit(
            repo_id, repo_type="dataset", revision=revision, commit_message=message,
            operations=[CommitOperationAdd(path_in_repo=f.path_in_repo, path_or_fileobj=str(f.local_path))
                        for f in files],
        )
    except _network_errors() as exc:
        raise _hub_error(exc, [secret, token or ""], endpoint, repo_id) from None  # type: ignore[arg-type]
    except Exception as exc:  # anything else from the HTTP stack: still one line, and still scrubbed of the token
        detail = _first_line(_scrub(str(exc), secret, token))  # scrubbed whole: a cut may split a token
        raise UserError(f"upload failed: {type(exc).__name__}: {detail}", exit_code=HUB_FAILURE) from None
    return PushResult(repo_id=repo_id, commit_url=str(info.commit_url), commit_oid=str(info.oid), files=files)


def dry_run(out_dir: str | Path, repo_id: str, *, allow_incomplete: bool = False,
            templates: str | Path | None = None) -> tuple[list[UploadFile], str]:
    """What a push would upload and the card it would carry; contacts nothing and writes nothing."""
    folder = OutputFolder(out_dir)
    validate_repo_id(repo_id)
    check_publishable(folder.root, allow_incomplete=allow_incomplete)
    card = prepare_card(folder.root, repo_id, templates)
    files = files_to_upload(folder.root)
    if card is None:
        return files, folder.card.read_text(encoding="utf-8")
    # The push would write this card first: list it with the size it will have.
    others = [f for f in files if f.path_in_repo != CARD]
    files = sorted([*others, UploadFile(CARD, folder.card, len(card.encode()))], key=lambda f: f.path_in_repo)
    return files, card
