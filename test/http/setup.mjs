// Registers the HTTP tests' clients with tokex.register_client and writes
// their credentials to the JSON file named by argv[2]:
//   web-app          client_secret (token-exchange)
//   app:x            client_secret, an id and secret that need form-encoding in Basic
//   agent-platform   private_key_jwt, registered with its public JWKS
//   old-platform     private_key_jwt with the same keys, disabled
//   agent-a-svc      client_secret, restricted to client_credentials, identity agent-a
//   calendar-gw      client_secret, audiences {calendar-api}: a resource server
//   mail-gw          client_secret, audiences {mail-api}: another one
//   edge-gateway     client_secret, introspect_any: a gateway for every resource
import { writeFileSync } from 'node:fs';
import { newKey, sql } from './lib.mjs';

const key = newKey('agent-platform-1');
const web = sql(`SELECT tokex.register_client('web-app')`);
// register_client generates base64url secrets; give app:x one that needs encoding
sql(`SELECT tokex.register_client('app:x')`);
const odd = 's3cr:t +%é/&=';
sql(`UPDATE tokex.client SET secret_hash = tokex._hash_secret(:'s') WHERE client_id = 'app:x'`, { s: odd });
const reg = sql(`SELECT tokex.register_client('agent-platform', jwks => :'jwks'::jsonb) IS NULL`,
                { jwks: JSON.stringify({ keys: [key.jwk] }) });
if (reg !== 't') throw new Error('a private_key_jwt client must get no secret');
sql(`SELECT tokex.register_client('old-platform', jwks => :'jwks'::jsonb)`,
    { jwks: JSON.stringify({ keys: [key.jwk] }) });
sql(`UPDATE tokex.client SET status = 'disabled' WHERE client_id = 'old-platform'`);
const cc = sql(`SELECT tokex.register_client('agent-a-svc', identity => 'agent-a', grant_types => '{client_credentials}')`);
const calGw = sql(`SELECT tokex.register_client('calendar-gw', audiences => '{calendar-api}')`);
const mailGw = sql(`SELECT tokex.register_client('mail-gw', audiences => '{mail-api}')`);
const edge = sql(`SELECT tokex.register_client('edge-gateway')`);
sql(`UPDATE tokex.client SET introspect_any = true WHERE client_id = 'edge-gateway'`);

writeFileSync(process.argv[2], JSON.stringify({
  secretClient: { id: 'web-app', secret: web },
  oddClient: { id: 'app:x', secret: odd },
  jwtClient: { id: 'agent-platform', privateJwk: key.privateJwk, jwk: key.jwk },
  disabledClient: { id: 'old-platform' },
  ccClient: { id: 'agent-a-svc', secret: cc, identity: 'agent-a' },
  calendarGateway: { id: 'calendar-gw', secret: calGw },
  mailGateway: { id: 'mail-gw', secret: mailGw },
  edgeGateway: { id: 'edge-gateway', secret: edge },
}, null, 2));
