"""One router per resource: trades, submissions, participants, eip712, health."""
