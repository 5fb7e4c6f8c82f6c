// Verifies tokex's sealed audit trail outside the database, with npm jose
// and node's crypto only: no trust in the server that exported it.
//
//   node audit-verify.mjs <jwks.json> <blocks.txt> <rows.txt> [<head.jws>]
//
// jwks.json: tokex.audit_keys() as the verifier got it (a witness keeps its
//   own copy); blocks.txt: one block per line, the compact JWS of
//   tokex.audit_block.jws, in block order; rows.txt: one row per line, the
//   canonical text of tokex.audit_rows(); head.jws: a head a witness kept
//   earlier (tokex.audit_head()), which must still be in the chain.
// Checks every block's signature, that its header is in canonical form,
// its link to the block before (prev = SHA-256 of that block's header,
// from_seq = its to_seq), and, for blocks whose rows were not pruned, that
// the rows in (from_seq, to_seq] are in canonical form and give the block's
// row count and RFC 9162 Merkle root (leaf = SHA-256(0x00 || row text)).
// Prints one line per problem; exits 1 if there is any, else prints "ok".
import { readFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { compactVerify, decodeProtectedHeader, importJWK } from 'jose';

const [jwksFile, blocksFile, rowsFile, headFile] = process.argv.slice(2);
if (!rowsFile) {
  console.error('usage: node audit-verify.mjs <jwks.json> <blocks.txt> <rows.txt> [<head.jws>]');
  process.exit(2);
}
const lines = (f) => readFileSync(f, 'utf8').split('\n').filter((l) => l.length > 0);
const sha256 = (...parts) => {
  const h = createHash('sha256');
  for (const p of parts) h.update(p);
  return h.digest();
};
// RFC 8785 for what tokex writes: objects, arrays, strings and null
const canon = (v) => Array.isArray(v) ? `[${v.map(canon).join(',')}]`
  : v !== null && typeof v === 'object'
    ? `{${Object.keys(v).sort().map((k) => `${JSON.stringify(k)}:${canon(v[k])}`).join(',')}}`
    : JSON.stringify(v);
const mth = (leaves) => {   // RFC 9162 §2.1.1 over leaf hashes
  if (leaves.length === 0) return sha256(Buffer.alloc(0));
  if (leaves.length === 1) return leaves[0];
  let k = 1;
  while (k * 2 < leaves.length) k *= 2;
  return sha256(Buffer.from([1]), mth(leaves.slice(0, k)), mth(leaves.slice(k)));
};

const problems = [];
const problem = (block, what) => problems.push(`block ${block}: ${what}`);

const keys = new Map();
for (const jwk of JSON.parse(readFileSync(jwksFile, 'utf8')).keys) {
  keys.set(jwk.kid, await importJWK(jwk, jwk.alg));
}

const rows = lines(rowsFile).map((text) => {
  const row = JSON.parse(text);
  if (canon(row) !== text) problems.push(`row ${row.seq}: not in canonical form`);
  return { seq: BigInt(row.seq), leaf: sha256(Buffer.from([0]), Buffer.from(text, 'utf8')) };
}).sort((a, b) => (a.seq < b.seq ? -1 : a.seq > b.seq ? 1 : 0));

const headers = [];
let prev = null;
let prunedThrough = 0n;
for (const jws of lines(blocksFile)) {
  let payload;
  try {
    const { kid } = decodeProtectedHeader(jws);
    if (!keys.has(kid)) { problems.push(`a block signed by unknown key ${kid}`); continue; }
    payload = Buffer.from((await compactVerify(jws, keys.get(kid))).payload);
  } catch (e) {
    problems.push(`a block whose signature does not verify (${e.code || e.message})`);
    continue;
  }
  const text = payload.toString('utf8');
  const h = JSON.parse(text);
  const block = BigInt(h.block);
  if (canon(h) !== text) problem(block, 'header not in canonical form');
  if (prev === null) {
    // the chain starts at block 1, whatever was exported: a later first block hides the ones before
    if (block !== 1n) problem(block, 'the export does not start at block 1');
    else if (h.prev !== '00'.repeat(32) || h.from_seq !== '0') problem(block, 'does not start the chain');
  } else {
    if (block !== prev.block + 1n) problem(block, `follows block ${prev.block}`);
    if (h.prev !== prev.hash) problem(block, `prev is not the hash of block ${prev.block}`);
    if (h.from_seq !== prev.to_seq) problem(block, `from_seq ${h.from_seq} is not block ${prev.block}'s to_seq`);
  }
  if (h.pruned_through !== undefined && BigInt(h.pruned_through) > prunedThrough) prunedThrough = BigInt(h.pruned_through);
  prev = { block, hash: sha256(payload).toString('hex'), to_seq: h.to_seq };
  headers.push({ block, h, text });
}
let next = 0;   // rows and blocks are both in seq order: one sweep
for (const { block, h } of headers) {
  const lo = BigInt(h.from_seq);
  const hi = BigInt(h.to_seq);
  while (next < rows.length && rows[next].seq <= lo) next++;
  const first = next;
  while (next < rows.length && rows[next].seq <= hi) next++;
  const mine = rows.slice(first, next);
  if (block <= prunedThrough) {
    // its rows were dropped by the retention: any row here was put back or never dropped
    if (mine.length > 0) problem(block, `${mine.length} rows in a block the retention emptied`);
    continue;
  }
  if (BigInt(mine.length) !== BigInt(h.count)) problem(block, `${mine.length} rows, the block sealed ${h.count}`);
  else if (mth(mine.map((r) => r.leaf)).toString('hex') !== h.root) problem(block, 'rows do not give the block\'s Merkle root');
}
// every row is in a block, or after the last one (not sealed yet)
for (const r of rows) if (r.seq <= 0n) problems.push(`row ${r.seq}: outside every block`);
if (headFile) {
  const head = readFileSync(headFile, 'utf8').trim();
  const { kid } = decodeProtectedHeader(head);
  try {
    const text = Buffer.from((await compactVerify(head, keys.get(kid))).payload).toString('utf8');
    const today = headers.find((x) => x.block === BigInt(JSON.parse(text).block));
    if (!today) problems.push(`the witnessed head (block ${JSON.parse(text).block}) is not in the chain`);
    else if (today.text !== text) problems.push(`block ${today.block} differs from the witnessed head`);
  } catch (e) {
    problems.push(`the witnessed head does not verify with the witness's keys (${e.code || e.message})`);
  }
}
for (const p of problems) console.log(p);
if (problems.length > 0) process.exit(1);
console.log(`ok: ${headers.length} blocks, ${rows.length} rows`);
