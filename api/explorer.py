"""The auditors' explorer: a static page (plain HTML and ES modules, no build step) served at
`/explorer`. It reads the JSON API like any client and verifies line proofs in the browser: the
server only hands out files, so a verified line does not rest on trusting this service's code."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).with_name("explorer")
PATH = "/explorer"


def mount(app: FastAPI) -> None:
    """Serves `api/explorer/` at `/explorer` (`/explorer/` answers index.html)."""
    app.mount(PATH, StaticFiles(directory=STATIC_DIR, html=True), name="explorer")
