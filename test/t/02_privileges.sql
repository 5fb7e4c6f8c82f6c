-- Privileges of the key and JWT surface: what a role with no grants, an admin,
-- the application tier and an auditor can and cannot do; private key
-- material is unreachable except through the extension owner; every
-- SECURITY DEFINER function pins its search_path.
\ir preamble.psql
SELECT plan(65);

CREATE ROLE tokex_t02_nobody NOLOGIN;
CREATE ROLE tokex_t02_admin NOLOGIN IN ROLE tokex_admin;
CREATE ROLE tokex_t02_app NOLOGIN IN ROLE tokex_app;
CREATE ROLE tokex_t02_auditor NOLOGIN IN ROLE tokex_auditor;

SELECT tokex.create_key() AS kid \gset
SELECT tokex.jwt_sign(jsonb_build_object('sub', 'alice',
         'exp', floor(extract(epoch FROM now()))::bigint + 600)) AS token \gset
SELECT tokex.trust_issuer('https://idp.test',
         '{"keys":[{"kty":"oct","alg":"HS256","kid":"h1","k":"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY"}]}') ;

------------------------------------------------------------------------
-- A role with no grants
------------------------------------------------------------------------
SET LOCAL ROLE tokex_t02_nobody;
SELECT throws_ok('SELECT kid FROM tokex.key', '42501', NULL, 'nobody: tokex.key is denied');
SELECT throws_ok('SELECT issuer FROM tokex.trusted_issuer', '42501', NULL, 'nobody: tokex.trusted_issuer is denied');
SELECT throws_ok($$SELECT tokex.jwt_sign('{"sub":"x"}')$$, '42501', NULL, 'nobody: jwt_sign is denied');
SELECT throws_ok('SELECT tokex.create_key()', '42501', NULL, 'nobody: create_key is denied');
SELECT throws_ok(format('SELECT tokex.jwt_verify(%L)', :'token'), '42501', NULL, 'nobody: jwt_verify is denied');
SELECT throws_ok(format('SELECT tokex.revoke_key(%L)', :'kid'), '42501', NULL, 'nobody: revoke_key is denied');
SELECT throws_ok($$SELECT * FROM tokex._generate_key('ES256')$$, '42501', NULL, 'nobody: _generate_key is denied');
-- the JWKS is public, but outsiders reach it through tokex_api.jwks() (the HTTP face)
SELECT throws_ok('SELECT tokex.jwks()', '42501', NULL, 'nobody: tokex.jwks() needs a tokex role');
RESET ROLE;
SELECT is(tokex.jwks()->'keys'->0->>'kid', :'kid', 'jwks() works for the owner (sanity)');

------------------------------------------------------------------------
-- tokex_admin
------------------------------------------------------------------------
SET LOCAL ROLE tokex_t02_admin;
SELECT results_eq('SELECT kid, alg, status FROM tokex.key',
                  format($$VALUES (%L, 'ES256', 'active')$$, :'kid'),
                  'admin: can read kid, alg, status');
SELECT lives_ok('SELECT public_jwk, created_at, activated_at, retired_at, revoked_at FROM tokex.key',
                'admin: can read public_jwk and timestamps');
SELECT throws_ok('SELECT private_key FROM tokex.key', '42501', 'permission denied for table key',
                 'admin: private_key is denied');
SELECT throws_ok('SELECT * FROM tokex.key', '42501', 'permission denied for table key',
                 'admin: SELECT * FROM tokex.key is denied');
SELECT throws_ok('SELECT k FROM tokex.key k', '42501', NULL, 'admin: whole-row reference is denied');
SELECT throws_ok($$SELECT kid FROM tokex.key WHERE private_key IS NOT NULL$$, '42501', NULL,
                 'admin: private_key cannot be used in WHERE either');
SELECT throws_ok($$UPDATE tokex.key SET status = 'revoked'$$, '42501', NULL, 'admin: tokex.key is not updatable');
SELECT throws_ok('DELETE FROM tokex.key', '42501', NULL, 'admin: tokex.key rows cannot be deleted');
SELECT throws_ok($$INSERT INTO tokex.key (kid, alg, status, public_jwk, private_key)
                   VALUES ('x', 'ES256', 'active', '{}', '\x00')$$, '42501', NULL,
                 'admin: tokex.key rows cannot be inserted');
SELECT lives_ok('SELECT issuer, audience, created_at, updated_at FROM tokex.trusted_issuer',
                'admin: can read trusted issuers');
SELECT throws_ok('SELECT jwks FROM tokex.trusted_issuer', '42501', NULL,
                 'admin: trusted issuer JWKS (may hold shared secrets) is denied');
SELECT throws_ok('SELECT secret_hash FROM tokex.client', '42501', NULL, 'admin: client secret hashes are denied');
SELECT throws_ok($$SELECT * FROM tokex._generate_key('ES256')$$, '42501',
                 'permission denied for function _generate_key', 'admin: _generate_key is denied');
SELECT throws_ok($$SELECT tokex._jwks_check('{"keys":[]}')$$, '42501',
                 'permission denied for function _jwks_check', 'admin: _jwks_check is denied');
SELECT throws_ok(format('SELECT tokex._key_move(%L, %L, %L)', :'kid', 'active', '{next}'), '42501', NULL,
                 'admin: _key_move is denied');
SELECT lives_ok('SELECT tokex.create_key(''ES256'')', 'admin: can create_key');
SELECT lives_ok($$SELECT tokex.jwt_sign('{"sub":"x"}')$$, 'admin: can jwt_sign');
SELECT lives_ok(format('SELECT tokex.jwt_verify(%L)', :'token'), 'admin: can jwt_verify');
SELECT lives_ok($$SELECT tokex.trust_issuer('https://idp2.test',
  '{"keys":[{"kty":"oct","k":"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY"}]}')$$, 'admin: can trust_issuer');
SELECT lives_ok('SELECT tokex.jwks()', 'admin: jwks() is readable');
SELECT throws_ok($$SET tokex.issuer = 'https://evil.test'$$, '42501', NULL, 'admin: cannot change tokex.issuer');
SELECT throws_ok($$SET tokex.clock_skew = 600$$, '42501', NULL, 'admin: cannot widen tokex.clock_skew');
RESET ROLE;

------------------------------------------------------------------------
-- tokex_app
------------------------------------------------------------------------
SET LOCAL ROLE tokex_t02_app;
SELECT is((tokex.jwt_verify(:'token'))->>'sub', 'alice', 'app: can jwt_verify');
SELECT lives_ok(format('SELECT tokex.jwt_decode(%L)', :'token'), 'app: can jwt_decode');
SELECT lives_ok('SELECT tokex.jwks()', 'app: jwks() is readable');
SELECT throws_ok($$SELECT tokex.jwt_sign('{"sub":"x"}')$$, '42501',
                 'permission denied for function jwt_sign', 'app: jwt_sign is denied');
SELECT throws_ok('SELECT tokex.create_key()', '42501',
                 'permission denied for function create_key', 'app: create_key is denied');
SELECT throws_ok(format('SELECT tokex.activate_key(%L)', :'kid'), '42501', NULL, 'app: activate_key is denied');
SELECT throws_ok(format('SELECT tokex.retire_key(%L)', :'kid'), '42501', NULL, 'app: retire_key is denied');
SELECT throws_ok(format('SELECT tokex.revoke_key(%L)', :'kid'), '42501', NULL, 'app: revoke_key is denied');
SELECT throws_ok($$SELECT tokex.trust_issuer('https://x.test', '{"keys":[]}')$$, '42501', NULL,
                 'app: trust_issuer is denied');
SELECT throws_ok('SELECT kid FROM tokex.key', '42501', NULL, 'app: tokex.key is denied');
SELECT throws_ok('SELECT issuer FROM tokex.trusted_issuer', '42501', NULL, 'app: tokex.trusted_issuer is denied');
SELECT throws_ok($$SELECT * FROM tokex._generate_key('ES256')$$, '42501', NULL, 'app: _generate_key is denied');
SELECT throws_ok($$SET tokex.clock_skew = 600$$, '42501', NULL, 'app: cannot widen tokex.clock_skew');
SELECT throws_ok($$SELECT set_config('tokex.issuer', 'https://evil.test', true)$$, '42501', NULL,
                 'app: cannot change tokex.issuer');
RESET ROLE;

------------------------------------------------------------------------
-- tokex_auditor
------------------------------------------------------------------------
SET LOCAL ROLE tokex_t02_auditor;
SELECT lives_ok(format('SELECT tokex.jwt_decode(%L)', :'token'), 'auditor: can jwt_decode');
SELECT throws_ok(format('SELECT tokex.jwt_verify(%L)', :'token'), '42501', NULL, 'auditor: jwt_verify is denied');
SELECT throws_ok($$SELECT tokex.jwt_sign('{"sub":"x"}')$$, '42501', NULL, 'auditor: jwt_sign is denied');
SELECT throws_ok('SELECT tokex.create_key()', '42501', NULL, 'auditor: create_key is denied');
SELECT throws_ok('SELECT kid FROM tokex.key', '42501', NULL, 'auditor: tokex.key is denied');
RESET ROLE;

------------------------------------------------------------------------
-- Catalog checks
------------------------------------------------------------------------
-- functions that hand out private key material: bytea results or OUT
-- parameters, private/secret-named outputs, or rows of the secret tables
CREATE TEMP VIEW secret_fn AS
SELECT p.oid, p.oid::regprocedure::text AS fn
  FROM pg_proc p
 WHERE p.pronamespace = 'tokex'::regnamespace
   AND (p.prorettype = 'bytea'::regtype
        OR EXISTS (SELECT 1 FROM unnest(p.proallargtypes, p.proargmodes, p.proargnames) a(t, m, n)
                    WHERE m IN ('o', 'b', 't')
                      AND (t = 'bytea'::regtype OR n ~ '(private|secret)'))
        OR EXISTS (SELECT 1 FROM pg_type ty JOIN pg_attribute at ON at.attrelid = ty.typrelid
                    WHERE ty.oid = p.prorettype AND at.attnum > 0 AND NOT at.attisdropped
                      AND (at.atttypid = 'bytea'::regtype OR at.attname ~ '(private|secret)'
                           OR ty.typrelid = 'tokex.trusted_issuer'::regclass)));
GRANT SELECT ON secret_fn TO PUBLIC;
SELECT ok((SELECT bool_or(fn = 'tokex._generate_key(text)') FROM secret_fn),
          'the private-material query finds tokex._generate_key (sanity)');
SELECT is_empty(
  $$SELECT r || ' -> ' || s.fn FROM secret_fn s,
      unnest(ARRAY['tokex_admin', 'tokex_app', 'tokex_auditor', 'tokex_web']) r
     WHERE has_function_privilege(r, s.oid, 'EXECUTE')$$,
  'no function returning private key material is executable by tokex_admin/app/auditor/web');
SELECT is_empty(
  $$SELECT s.fn FROM secret_fn s WHERE has_function_privilege('public', s.oid, 'EXECUTE')$$,
  'nor by PUBLIC');
SELECT is_empty(
  $$SELECT r || ' -> ' || c.oid::regclass || '.' || a.attname
      FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid,
           unnest(ARRAY['tokex_admin', 'tokex_app', 'tokex_auditor', 'tokex_web', 'public']) r
     WHERE c.relnamespace = 'tokex'::regnamespace AND a.attnum > 0 AND NOT a.attisdropped
       AND (c.oid, a.attname) IN (('tokex.key'::regclass, 'private_key'), ('tokex.trusted_issuer'::regclass, 'jwks'),
                                  ('tokex.client'::regclass, 'secret_hash'), ('tokex.credential'::regclass, 'ciphertext'),
                                  ('tokex.credential'::regclass, 'wrapped_key'))
       AND has_column_privilege(r, c.oid, a.attname, 'SELECT')$$,
  'key.private_key, trusted_issuer.jwks, client.secret_hash and credential.ciphertext/wrapped_key are readable by no tokex role nor PUBLIC');
SELECT is_empty(
  $$SELECT c.oid::regclass::text FROM pg_class c
     WHERE c.relnamespace = 'tokex'::regnamespace AND c.relkind IN ('r', 'v', 'm', 'p', 'S')
       AND has_table_privilege('public', c.oid, 'SELECT, INSERT, UPDATE, DELETE, TRUNCATE')$$,
  'PUBLIC has no privilege on any table, view or sequence in tokex');
SELECT is_empty(
  $$SELECT p.oid::regprocedure::text FROM pg_proc p
     WHERE p.pronamespace = 'tokex'::regnamespace AND p.prosecdef
       AND p.oid <> 'tokex.jwks()'::regprocedure
       AND has_function_privilege('public', p.oid, 'EXECUTE')$$,
  'no SECURITY DEFINER function but jwks() is executable by PUBLIC');
SELECT is_empty(
  $$SELECT r || ' -> ' || p.oid::regprocedure FROM pg_proc p,
      unnest(ARRAY['tokex_admin', 'tokex_app', 'tokex_auditor', 'tokex_web']) r
     WHERE p.oid IN ('tokex._generate_key(text)'::regprocedure, 'tokex._jwks_check(jsonb)'::regprocedure,
                     'tokex._key_move(text,text,text[])'::regprocedure)
       AND has_function_privilege(r, p.oid, 'EXECUTE')$$,
  'the internal key helpers are executable by no tokex role');
SELECT is(
  (SELECT array_agg(f ORDER BY f) FROM unnest(ARRAY['jwt_sign(jsonb,text)', 'create_key(text)',
     'activate_key(text)', 'retire_key(text)', 'revoke_key(text)', 'trust_issuer(text,jsonb,text)']) f
    WHERE has_function_privilege('tokex_admin', ('tokex.' || f)::regprocedure, 'EXECUTE')
      AND NOT has_function_privilege('tokex_app', ('tokex.' || f)::regprocedure, 'EXECUTE')
      AND NOT has_function_privilege('tokex_auditor', ('tokex.' || f)::regprocedure, 'EXECUTE')
      AND NOT has_function_privilege('tokex_web', ('tokex.' || f)::regprocedure, 'EXECUTE')
      AND NOT has_function_privilege('public', ('tokex.' || f)::regprocedure, 'EXECUTE')),
  ARRAY['activate_key(text)', 'create_key(text)', 'jwt_sign(jsonb,text)', 'retire_key(text)',
        'revoke_key(text)', 'trust_issuer(text,jsonb,text)'],
  'key management and signing are executable by tokex_admin only');
SELECT ok(has_function_privilege('tokex_app', 'tokex.jwt_verify(text,text)', 'EXECUTE')
          AND NOT has_function_privilege('tokex_auditor', 'tokex.jwt_verify(text,text)', 'EXECUTE')
          AND NOT has_function_privilege('public', 'tokex.jwt_verify(text,text)', 'EXECUTE'),
          'jwt_verify: tokex_app yes, tokex_auditor and PUBLIC no');
SELECT ok(NOT has_schema_privilege('tokex_web', 'tokex', 'USAGE'), 'tokex_web has no USAGE on schema tokex');

SELECT cmp_ok((SELECT count(*) FROM pg_proc WHERE pronamespace = 'tokex'::regnamespace AND prosecdef),
              '>=', 8::bigint, 'schema tokex has SECURITY DEFINER functions (sanity)');
SELECT is_empty(
  $$SELECT p.oid::regprocedure::text FROM pg_proc p
     WHERE p.pronamespace = 'tokex'::regnamespace AND p.prosecdef
       AND NOT coalesce(p.proconfig @> ARRAY['search_path=pg_catalog, tokex, pg_temp'], false)$$,
  'every SECURITY DEFINER function in tokex has SET search_path = pg_catalog, tokex, pg_temp (pg_temp last: its types cannot shadow)');
SELECT is_empty(
  $$SELECT p.oid::regprocedure::text FROM pg_proc p
     WHERE p.pronamespace = 'tokex_api'::regnamespace AND p.prosecdef
       AND NOT coalesce(p.proconfig @> ARRAY['search_path=pg_catalog, tokex, pg_temp'], false)$$,
  'and so does every SECURITY DEFINER function in tokex_api');
SELECT is_empty(
  $$SELECT p.oid::regprocedure::text FROM pg_proc p JOIN pg_roles r ON r.oid = p.proowner
     WHERE p.pronamespace = 'tokex'::regnamespace AND p.prosecdef
       AND r.rolname IN ('tokex_admin', 'tokex_app', 'tokex_auditor', 'tokex_web')$$,
  'no SECURITY DEFINER function is owned by a tokex_* group role');
SELECT ok(NOT has_schema_privilege('tokex_admin', 'tokex', 'CREATE')
          AND NOT has_schema_privilege('tokex_app', 'tokex', 'CREATE')
          AND NOT has_schema_privilege('public', 'tokex', 'CREATE'),
          'no tokex role can create objects in schema tokex (no search_path hijack)');

SELECT * FROM finish();
ROLLBACK;
