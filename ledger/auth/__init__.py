"""Who may read what: scopes and roles, API tokens, and Sign-In with Ethereum messages (all pure)."""
