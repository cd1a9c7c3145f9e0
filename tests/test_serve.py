"""The start-up block of `scripts.serve`: where everything is, without secrets."""

from __future__ import annotations

import argparse

from ledger.config import Settings
from scripts.serve import endpoints


def test_a_remote_nodes_url_is_shown_by_its_origin_only() -> None:
    """A hosted node's URL often carries its API key: neither its path, query nor user part is
    printed or put in the JSON start record."""
    args = argparse.Namespace(host="127.0.0.1", port=8000, api_processes=2, workers="process")
    url = "https://user:secret@node.example:8545/v3/key-in-path?apikey=key-in-query"
    block, where = endpoints(Settings(rpc_url=url), args, url, None)
    assert "  chain     https://node.example:8545\n" in block
    assert where["rpcUrl"] == "https://node.example:8545"
    assert not any(secret in block + str(where) for secret in ("secret", "key-in-path", "key-in-query", "user"))
