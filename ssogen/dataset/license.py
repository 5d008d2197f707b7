"""The `license` of a dataset card: a Hub license identifier (the `license:` key of the card's YAML header).

ssogen cannot know the license of text a model wrote (it depends on the model's terms and on the queries), so
the default is `unknown`, which the Hub accepts; `--license` sets another. The identifiers below are the Hub's
list as of this version; the Hub adds new ones now and then, so an identifier that is well formed but not listed
is accepted with a warning rather than refused."""

from __future__ import annotations

import re
from pathlib import Path

LICENSE_DEFAULT = "unknown"
LICENSE_HELP = ("License of the dataset, as a Hub license id for the card's header (e.g. apache-2.0, cc-by-4.0, "
                "mit, other).")
HUB_LICENSES = frozenset({
    "apache-2.0", "mit", "openrail", "bigscience-openrail-m", "creativeml-openrail-m", "bigscience-bloom-rail-1.0",
    "bigcode-openrail-m", "afl-3.0", "artistic-2.0", "bsl-1.0", "bsd", "bsd-2-clause", "bsd-3-clause",
    "bsd-3-clause-clear", "c-uda", "cc", "cc0-1.0", "cc-by-2.0", "cc-by-2.5", "cc-by-3.0", "cc-by-4.0",
    "cc-by-sa-3.0", "cc-by-sa-4.0", "cc-by-nc-2.0", "cc-by-nc-3.0", "cc-by-nc-4.0", "cc-by-nd-4.0",
    "cc-by-nc-nd-3.0", "cc-by-nc-nd-4.0", "cc-by-nc-sa-2.0", "cc-by-nc-sa-3.0", "cc-by-nc-sa-4.0",
    "cdla-sharing-1.0", "cdla-permissive-1.0", "cdla-permissive-2.0", "wtfpl", "ecl-2.0", "epl-1.0", "epl-2.0",
    "etalab-2.0", "eupl-1.1", "agpl-3.0", "gfdl", "gpl", "gpl-2.0", "gpl-3.0", "lgpl", "lgpl-2.1", "lgpl-3.0",
    "isc", "lppl-1.3c", "ms-pl", "mpl-2.0", "odc-by", "odbl", "openrail++", "osl-3.0", "postgresql", "ofl-1.1",
    "ncsa", "unlicense", "zlib", "pddl", "lgpl-lr", "deepfloyd-if-license", "llama2", "llama3", "llama3.1",
    "llama3.2", "llama3.3", "gemma", "unknown", "other",
})
_WELL_FORMED = re.compile(r"^[a-z0-9][a-z0-9.+\-]*$")


def check_license(value: str) -> str:
    """A pydantic validator: a Hub license id is lower-case letters, digits and . + -."""
    if not _WELL_FORMED.match(value):
        # The value is not repeated here: the option's error names it ("(got 'MIT')").
        raise ValueError("not a Hub license id (lower case, e.g. apache-2.0, cc-by-4.0, mit, other, unknown)")
    return value


def license_note(value: str) -> str | None:
    """A warning for an id the Hub may not know (it refuses a card whose license it does not list)."""
    if value in HUB_LICENSES:
        return None
    return (f"warning: --license {value} is not in the Hub's license list as ssogen knows it; the Hub may refuse "
            "the card (use other, and name the license in your card template)")


def record_license(folder: str | Path, value: str) -> None:
    """Record `value` as the license in the folder's manifest (the card is rendered from it afterwards)."""
    from ssogen.dataset.folder import OutputFolder  # here: generate's settings import this module, pyarrow-free

    out = OutputFolder(folder)
    manifest = out.read_manifest()
    if manifest.get("license") != value:
        out.write_manifest({**manifest, "license": value})

