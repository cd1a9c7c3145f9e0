"""The Merkle trees of the last few runs built or read, for proofs and disputes."""

from __future__ import annotations

import threading
from collections import OrderedDict

from sqlalchemy import select

from ledger import errors
from ledger.domain.merkle import StandardMerkleTree
from ledger.domain.settlement import LEAF_ENCODING
from ledger.services.context import LedgerContext
from ledger.services.settlement.views import RunSummary
from ledger.store.settlement_models import StatementLine

TREE_CACHE_RUNS = 4


class TreeCache:
    """The last TREE_CACHE_RUNS trees, shared by the threads of one process."""

    def __init__(self, context: LedgerContext) -> None:
        self._read_sessions = context.read_sessions
        self._trees: OrderedDict[str, StandardMerkleTree] = OrderedDict()
        self._lock = threading.Lock()

    def tree(self, run: RunSummary) -> StandardMerkleTree:
        """The run's tree, rebuilt from its stored lines (and checked against its root) when it
        is not among the last few built."""
        with self._lock:
            tree = self._trees.get(run.run_id)
            if tree is not None:
                self._trees.move_to_end(run.run_id)
                return tree
        with self._read_sessions() as session:
            values = [
                [run.run_id, account, kind, ref, energy, amount]
                for account, kind, ref, energy, amount in session.execute(
                    select(
                        StatementLine.account,
                        StatementLine.kind,
                        StatementLine.ref,
                        StatementLine.energy_wh,
                        StatementLine.amount_minor,
                    )
                    .where(StatementLine.run_id == run.run_id)
                    .order_by(StatementLine.leaf_index)
                )
            ]
        tree = StandardMerkleTree.of(values, LEAF_ENCODING)
        if tree.root != run.root:
            raise errors.LedgerError("the stored lines do not hash to the run's root", run_id=run.run_id)
        self.remember(run.run_id, tree)
        return tree

    def remember(self, identity: str, tree: StandardMerkleTree) -> None:
        with self._lock:
            self._trees[identity] = tree
            self._trees.move_to_end(identity)
            while len(self._trees) > TREE_CACHE_RUNS:
                self._trees.popitem(last=False)
