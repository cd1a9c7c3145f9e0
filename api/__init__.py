"""GridLedger's HTTP API: a FastAPI adapter over `ledger.services` (see `api.app.create_app`)."""
