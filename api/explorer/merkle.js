// StandardMerkleTree.verify of @openzeppelin/merkle-tree, in the browser: leaf =
// keccak256(keccak256(abi.encode(values))), pairs hashed sorted (OpenZeppelin MerkleProof).
// Static ABI types only (bytes1..32, address, bool, uintN, intN): every settlement, reading and
// price leaf of GridLedger is made of them. keccak-256 is js-sha3 0.8.0 (vendor/, MIT).
import './vendor/sha3.min.js';

const keccak = bytes => Uint8Array.from(globalThis.keccak256.array(bytes));

export function hexToBytes(hex) {
  if (typeof hex !== 'string' || !/^0x([0-9a-fA-F]{2})*$/.test(hex)) throw new Error(`not hex: ${hex}`);
  const out = new Uint8Array((hex.length - 2) / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.slice(2 + 2 * i, 4 + 2 * i), 16);
  return out;
}

export function bytesToHex(bytes) {
  return '0x' + Array.from(bytes, b => b.toString(16).padStart(2, '0')).join('');
}

function word(n) {
  // Two's complement in 256 bits.
  const u = BigInt.asUintN(256, n);
  return hexToBytes('0x' + u.toString(16).padStart(64, '0'));
}

function encodeOne(type, value) {
  let m;
  if (type === 'address') {
    const bytes = hexToBytes(value);
    if (bytes.length !== 20) throw new Error(`address of ${bytes.length} bytes`);
    return word(BigInt(value));
  }
  if (type === 'bool') return word(value === true || value === 'true' ? 1n : 0n);
  if ((m = /^bytes(\d+)$/.exec(type))) {
    const size = Number(m[1]);
    const bytes = hexToBytes(value);
    if (size < 1 || size > 32 || bytes.length !== size) throw new Error(`${type} of ${bytes.length} bytes`);
    const out = new Uint8Array(32);
    out.set(bytes);
    return out;
  }
  if ((m = /^(u?)int(\d*)$/.exec(type))) {
    const bits = Number(m[2] || 256);
    const n = BigInt(value);
    const [low, high] = m[1] ? [0n, (1n << BigInt(bits)) - 1n] : [-(1n << BigInt(bits - 1)), (1n << BigInt(bits - 1)) - 1n];
    if (bits % 8 || bits < 8 || bits > 256 || n < low || n > high) throw new Error(`${value} out of range of ${type}`);
    return word(n);
  }
  throw new Error(`unsupported ABI type ${type}`);
}

export function abiEncode(types, values) {
  if (types.length !== values.length) throw new Error('types and values differ in length');
  const out = new Uint8Array(32 * types.length);
  types.forEach((type, i) => out.set(encodeOne(type, values[i]), 32 * i));
  return out;
}

export function leafHash(types, values) {
  return bytesToHex(keccak(keccak(abiEncode(types, values))));
}

function compare(a, b) {
  for (let i = 0; i < 32; i++) if (a[i] !== b[i]) return a[i] - b[i];
  return 0;
}

function hashPair(a, b) {
  const [x, y] = compare(a, b) <= 0 ? [a, b] : [b, a];
  const both = new Uint8Array(64);
  both.set(x);
  both.set(y, 32);
  return keccak(both);
}

export function processProof(leaf, proof) {
  return bytesToHex(proof.reduce((node, sibling) => hashPair(node, hexToBytes(sibling)), hexToBytes(leaf)));
}

/** {verified, leaf, computedRoot}; throws on a malformed document. */
export function verify(root, leafEncoding, values, proof) {
  const leaf = leafHash(leafEncoding, values);
  const computedRoot = processProof(leaf, proof);
  return { verified: computedRoot === root.toLowerCase(), leaf, computedRoot };
}
