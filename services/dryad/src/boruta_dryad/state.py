"""What a dryad keeps on disk between runs: the UUIDs it generated for its boards and its
own id."""

from __future__ import annotations

import json
import logging
import os
import uuid as uuidlib
from pathlib import Path

from boruta_dryad.config import DryadConfig, with_uuids

log = logging.getLogger(__name__)


def ensure_uuids(config: DryadConfig) -> DryadConfig:
    """Give every board without a configured UUID one, generated once and saved."""
    path = Path(config.state_dir) / "uuids.json"
    saved: dict[str, str] = {}
    if path.exists():
        saved = json.loads(path.read_text())
    missing = [b.name for b in config.boards if not b.uuid and b.name not in saved]
    if missing:
        for name in missing:
            saved[name] = str(uuidlib.uuid4())
            log.info("generated a UUID", extra={"board": name, "uuid": saved[name]})
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(saved, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, path)
    return with_uuids(config, saved)


def dryad_id(state_dir: str) -> str:
    """This dryad's own id, made once and kept: it marks the job users the dryad makes,
    so that it never removes those of another dryad on the same host."""
    path = Path(state_dir) / "dryad-id"
    try:
        saved = path.read_text().strip()
    except FileNotFoundError:
        saved = ""
    if saved:
        if len(saved) != 32 or any(c not in "0123456789abcdef" for c in saved):
            # A new id would orphan the job users marked with the old one.
            raise ValueError(f"{path} is damaged; it must hold the 32 hex digits it was made with")
        return saved
    made = uuidlib.uuid4().hex
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(made + "\n")
    os.replace(tmp, path)
    log.info("made a dryad id", extra={"dryad_id": made})
    return made
