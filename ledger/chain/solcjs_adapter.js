#!/usr/bin/env node
// Standard-JSON front end for the npm `solc` package (solcjs), the compiler of last resort in
// ledger/chain/compiler.py: it compiles offline because the compiler ships inside the package.
//
//   node solcjs_adapter.js <directory of the solc package>  < input.json  > output.json
//
// The package directory is an argument rather than a bare require("solc") so the adapter works
// wherever the Python package is installed. There is no import callback on purpose: the input
// from compiler.py already carries every source, exactly as Hardhat's does, so a missing import
// fails here just as it does with native solc instead of being resolved on one path only.
"use strict";

const fs = require("fs");

const solcPackage = process.argv[2];
if (!solcPackage) {
  process.stderr.write("usage: node solcjs_adapter.js <solc package directory> < input.json\n");
  process.exit(2);
}
const solc = require(solcPackage);
process.stdout.write(solc.compile(fs.readFileSync(0, "utf8")));
