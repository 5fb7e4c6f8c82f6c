// Writes N DPoP proofs (RFC 9449) for POST <htu>, one per line, signed by
// one fresh ES256 key, each with its own jti and iat = now: the benchmark
// loads them and spends one per DPoP-bound exchange.  node dpop-proofs.mjs N HTU
import { createSign, generateKeyPairSync, randomUUID } from 'node:crypto';

const [n, htu] = [Number(process.argv[2]), process.argv[3]];
const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const jwk = (({ kty, crv, x, y }) => ({ kty, crv, x, y }))(publicKey.export({ format: 'jwk' }));
const b64u = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
const header = b64u({ alg: 'ES256', typ: 'dpop+jwt', jwk });
const iat = Math.floor(Date.now() / 1000);
const out = [];
for (let i = 0; i < n; i++) {
  const input = `${header}.${b64u({ htm: 'POST', htu, jti: randomUUID(), iat })}`;
  const sig = createSign('SHA256').update(input).sign({ key: privateKey, dsaEncoding: 'ieee-p1363' });
  out.push(`${i + 1}\t${input}.${sig.toString('base64url')}`);
}
process.stdout.write(out.join('\n') + '\n');
