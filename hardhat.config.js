// Hardhat 2: compiles contracts/ and runs the local development chain (`hardhat node`).
//
// The solidity version and settings come from contracts/solc-settings.json, which
// ledger/chain/compiler.py reads too: the metadata hash at the end of the bytecode covers them.
// tests/test_compiler.py compiles with both and compares the bytecode.
const { subtask } = require("hardhat/config");
const { TASK_COMPILE_SOLIDITY_GET_SOLC_BUILD } = require("hardhat/builtin-tasks/task-names");

const { version: SOLC_VERSION, settings: SOLC_SETTINGS } = require("./contracts/solc-settings.json");

// Hardhat downloads its compilers; this machine and CI reach only package registries, so the
// build is the npm `solc` package (solcjs) that `npm ci` installs, pinned in package.json.
subtask(TASK_COMPILE_SOLIDITY_GET_SOLC_BUILD, async (args, hre, runSuper) => {
  if (args.solcVersion !== SOLC_VERSION) return runSuper();
  const solc = require("solc");
  return {
    compilerPath: require.resolve("solc/soljson.js"),
    isSolcJs: true,
    version: SOLC_VERSION,
    longVersion: solc.version(),
  };
});

const blockTimeMs = process.env.GRIDLEDGER_BLOCK_TIME_MS;

/** @type import('hardhat/config').HardhatUserConfig */
module.exports = {
  solidity: {
    version: SOLC_VERSION,
    settings: SOLC_SETTINGS,
  },
  networks: {
    hardhat: {
      chainId: Number(process.env.GRIDLEDGER_CHAIN_ID ?? 31337),
      // Keeps Hardhat's default accounts (mnemonic "test test ... junk"), which anvil uses too,
      // so ledger.chain.node.DEV_ACCOUNT_KEYS hold on both.
      mining: blockTimeMs ? { auto: false, interval: Number(blockTimeMs) } : { auto: true },
      allowUnlimitedContractSize: false,
      // ledger/chain/node.py sets it, the same for hardhat and anvil.
      blockGasLimit: Number(process.env.GRIDLEDGER_BLOCK_GAS_LIMIT ?? 100_000_000),
    },
  },
};
