import os
import socket
import subprocess
import sys
import time

import pytest
from eth_account import Account

from ledger.chain.compiler import PROJECT_ROOT
from ledger.chain.node import DEV_ACCOUNT_KEYS, DEV_MNEMONIC, LocalNode, connect
from ledger.errors import ChainError

KINDS = [
    pytest.param("hardhat", marks=pytest.mark.hardhat),
    pytest.param("anvil", marks=pytest.mark.anvil),
]


def _gone(pid: int) -> bool:
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_dev_account_keys_are_the_first_ten_of_the_test_mnemonic() -> None:
    Account.enable_unaudited_hdwallet_features()
    paths = [f"m/44'/60'/0'/0/{i}" for i in range(10)]
    derived = ["0x" + Account.from_mnemonic(DEV_MNEMONIC, account_path=path).key.hex() for path in paths]

    assert derived == list(DEV_ACCOUNT_KEYS)


@pytest.mark.parametrize("kind", KINDS)
def test_node_serves_its_chain_id_and_leaves_no_process(kind: str) -> None:
    with LocalNode(kind, chain_id=4242) as node:
        pid = node.pid
        web3 = connect(node.rpc_url, 4242)

        assert web3.eth.chain_id == 4242
        assert web3.eth.accounts[:10] == [Account.from_key(k).address for k in DEV_ACCOUNT_KEYS]
        assert pid is not None and not _gone(pid)

    assert node.pid is None
    assert _gone(pid)


@pytest.mark.parametrize("kind", KINDS)
def test_connect_refuses_another_chain_id(kind: str) -> None:
    with LocalNode(kind, chain_id=4242) as node, pytest.raises(ChainError) as raised:
        connect(node.rpc_url, 1)

    assert "chain id 4242, expected chain id 1" in str(raised.value)
    assert raised.value.context["actual_chain_id"] == 4242


@pytest.mark.parametrize("kind", KINDS)
def test_interval_mining_produces_blocks_without_transactions(kind: str) -> None:
    with LocalNode(kind, block_time=0.5) as node:
        web3 = connect(node.rpc_url, 31337)
        deadline = time.monotonic() + 15
        while web3.eth.block_number < 3:
            assert time.monotonic() < deadline, "no interval blocks within 15 s"
            time.sleep(0.2)

        assert web3.eth.get_block("latest")["transactions"] == []


@pytest.mark.hardhat
def test_automine_ignores_a_block_time_in_the_callers_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRIDLEDGER_BLOCK_TIME_MS", "100")

    with LocalNode("hardhat") as node:
        time.sleep(1.5)

        assert connect(node.rpc_url, 31337).eth.block_number == 0


@pytest.mark.anvil
def test_node_that_dies_is_reported_with_its_log() -> None:
    with socket.socket() as taken:
        # Bound but not listening: the node cannot bind the port, and nothing answers on it.
        taken.bind(("127.0.0.1", 0))
        node = LocalNode("anvil", port=taken.getsockname()[1])

        with pytest.raises(ChainError, match=r"exited with code .* before answering; last output:\n.+"), node:
            pass

    assert node.pid is None


@pytest.mark.anvil
def test_a_node_does_not_outlive_a_killed_caller() -> None:
    """A caller killed without a chance to call stop() (SIGKILL) takes its node with it."""
    script = (
        "import sys, time\n"
        "from ledger.chain.node import LocalNode\n"
        "node = LocalNode('anvil').start()\n"
        "node.wait_ready()\n"
        "print(node.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    caller = subprocess.Popen([sys.executable, "-c", script], cwd=PROJECT_ROOT, stdout=subprocess.PIPE, text=True)
    assert caller.stdout is not None
    node_pid = int(caller.stdout.readline())
    os.kill(node_pid, 0)  # running

    caller.kill()
    caller.wait()

    deadline = time.monotonic() + 10
    while _alive(node_pid):
        assert time.monotonic() < deadline, "the node outlived its caller"
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (dead, not yet reaped by init) counts as gone.
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split(") ")[1][0] != "Z"
