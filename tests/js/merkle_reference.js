// Reference output of @openzeppelin/merkle-tree for tests/test_merkle.py.
// stdin: {"values": [[...], ...], "leafEncoding": ["bytes32", ...]}
// stdout: {"root": "0x..", "proofs": [[..] per value, in input order], "dump": {...}}
'use strict';
const { StandardMerkleTree } = require('@openzeppelin/merkle-tree');

let input = '';
process.stdin.setEncoding('utf8');
process.stdin.on('data', chunk => (input += chunk));
process.stdin.on('end', () => {
  const { values, leafEncoding } = JSON.parse(input);
  const tree = StandardMerkleTree.of(values, leafEncoding);
  const proofs = values.map((_, i) => tree.getProof(i));
  process.stdout.write(JSON.stringify({ root: tree.root, proofs, dump: tree.dump() }));
});
