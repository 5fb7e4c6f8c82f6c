-- The privilege matrix, proved: for every object in schemas tokex and
-- tokex_api, what each role may do with it, decided in one table below and
-- compared with what PostgreSQL says each role can do (has_*_privilege, so
-- grants through PUBLIC and role membership count).  An object nobody decided
-- about fails the test, so does a grant the table does not list, and a listed
-- grant that is missing.  Adding a function or table means adding its row here
-- (and its GRANT in src/sql/90_privileges.sql).
\ir preamble.psql
SELECT plan(10);

-- a login role with no grants at all: what PUBLIC, and so anyone, can do
CREATE ROLE tokex_t90_nobody LOGIN;

-- Privileges in aclitem letters: r SELECT, a INSERT, w UPDATE, d DELETE,
-- D TRUNCATE, x REFERENCES, t TRIGGER, X EXECUTE, U USAGE, C CREATE;
-- '' = nothing.  Columns: 'schema.table(column)' rows list column-level grants
-- given to a role without the table-level privilege.  The extension owner
-- (and superusers) can do everything and are not in the table.
CREATE TEMP TABLE decided (object text PRIMARY KEY, admin text, app text, auditor text,
                           web text, nobody text);
INSERT INTO decided VALUES
-- object                                       admin    app  auditor web  nobody
-- schemas: the application roles reach tokex, PostgREST's anonymous role tokex_api
('tokex',                                        'U',    'U',  'U',   '',  ''),
('tokex_api',                                    '',     '',   '',    'U', ''),
-- the identity graph and policy: administrators' tables
('tokex.identity',                               'rawd', '',   '',    '',  ''),
('tokex.delegation',                             'rawd', '',   '',    '',  ''),
('tokex.delegation_id_seq',                      'U',    '',   '',    '',  ''),
('tokex.resource',                               'rawd', '',   '',    '',  ''),
('tokex.policy',                                 'rawd', '',   '',    '',  ''),
('tokex.policy_id_seq',                          'U',    '',   '',    '',  ''),
-- clients: admins manage them but never read the secret hashes
('tokex.client',                                 'awd',  '',   '',    '',  ''),
('tokex.client(client_id)',                      'r',    '',   '',    '',  ''),
('tokex.client(identity)',                       'r',    '',   '',    '',  ''),
('tokex.client(grant_types)',                    'r',    '',   '',    '',  ''),
('tokex.client(audiences)',                      'r',    '',   '',    '',  ''),
('tokex.client(status)',                         'r',    '',   '',    '',  ''),
('tokex.client(jwks)',                           'r',    '',   '',    '',  ''),
('tokex.client(description)',                    'r',    '',   '',    '',  ''),
('tokex.client(created_at)',                     'r',    '',   '',    '',  ''),
('tokex.client(introspect_any)',                 'r',    '',   '',    '',  ''),
('tokex.client_assertion_jti',                   '',     '',   '',    '',  ''),
-- keys: public columns only; private keys for the owner alone
('tokex.key',                                    '',     '',   '',    '',  ''),
('tokex.key(kid)',                               'r',    '',   '',    '',  ''),
('tokex.key(alg)',                               'r',    '',   '',    '',  ''),
('tokex.key(status)',                            'r',    '',   '',    '',  ''),
('tokex.key(public_jwk)',                        'r',    '',   '',    '',  ''),
('tokex.key(created_at)',                        'r',    '',   '',    '',  ''),
('tokex.key(activated_at)',                      'r',    '',   '',    '',  ''),
('tokex.key(retired_at)',                        'r',    '',   '',    '',  ''),
('tokex.key(revoked_at)',                        'r',    '',   '',    '',  ''),
-- trusted issuers: their JWKS may hold shared secrets
('tokex.trusted_issuer',                         '',     '',   '',    '',  ''),
('tokex.trusted_issuer(issuer)',                 'r',    '',   '',    '',  ''),
('tokex.trusted_issuer(audience)',               'r',    '',   '',    '',  ''),
('tokex.trusted_issuer(created_at)',             'r',    '',   '',    '',  ''),
('tokex.trusted_issuer(updated_at)',             'r',    '',   '',    '',  ''),
-- sessions and revocation
('tokex.session',                                'rw',   '',   '',    '',  ''),
('tokex.revoked_token',                          'ra',   '',   '',    '',  ''),
('tokex.revocation',                             'r',    '',   'r',   '',  ''),
('tokex.revocation_id_seq',                      '',     '',   '',    '',  ''),
-- audit: append-only, read through the views
('tokex.audit_event',                            '',     '',   '',    '',  ''),
('tokex.token_use',                              '',     '',   '',    '',  ''),
('tokex.token_use_id_seq',                       '',     '',   '',    '',  ''),
('tokex.audit',                                  'r',    '',   'r',   '',  ''),
('tokex.audit_trail',                            'r',    '',   'r',   '',  ''),
-- the public SQL contract
('tokex.jwks()',                                 'X',    'X',  'X',   '',  ''),
('tokex.jwt_decode(text)',                       'X',    'X',  'X',   '',  ''),
('tokex.jwt_verify(text,text)',                  'X',    'X',  '',    '',  ''),
('tokex.introspect(text)',                       'X',    'X',  '',    '',  ''),
('tokex.record_use(text,text,text)',             'X',    'X',  '',    '',  ''),
('tokex.start_session(text,text,text[],interval)',
                                                 'X',    'X',  '',    '',  ''),
('tokex.jwt_sign(jsonb,text)',                   'X',    '',   '',    '',  ''),
('tokex.create_key(text)',                       'X',    '',   '',    '',  ''),
('tokex.activate_key(text)',                     'X',    '',   '',    '',  ''),
('tokex.retire_key(text)',                       'X',    '',   '',    '',  ''),
('tokex.revoke_key(text)',                       'X',    '',   '',    '',  ''),
('tokex.trust_issuer(text,jsonb,text)',          'X',    '',   '',    '',  ''),
('tokex.register_client(text,text,text[],text[],jsonb)',
                                                 'X',    '',   '',    '',  ''),
('tokex.identity_token(text,interval)',          'X',    '',   '',    '',  ''),
('tokex.revoke_session(uuid,text)',              'X',    '',   '',    '',  ''),
('tokex.revoke_identity(text,text)',             'X',    '',   '',    '',  ''),
('tokex.revoke_delegation(text,text,text)',      'X',    '',   '',    '',  ''),
('tokex.revoke_token(text,text,text)',           'X',    '',   '',    '',  ''),
('tokex.decide(text[],text[],timestamp with time zone[],text,text,text[],text[],text,text,bytea[],uuid,uuid[],text[],text[],timestamp with time zone)',
                                                 'X',    '',   '',    '',  ''),
-- the HTTP face: PostgREST's anonymous role, and nobody else
('tokex_api.introspect(text,text,text,text,text,text)',
                                                 '',     '',   '',    'X', ''),
('tokex_api.revoke(text,text,text,text,text,text)',
                                                 '',     '',   '',    'X', ''),
('tokex_api.jwks()',                             '',     '',   '',    'X', ''),
('tokex_api.oauth_authorization_server()',       '',     '',   '',    'X', ''),
-- 0.3: the translation layer (API keys, token types, the vault), DPoP and the
-- resource side, the audit proof, Shared Signals, hot standbys; the new
-- signatures of exchange and the token endpoint.  Decided as 90_privileges.sql
-- grants them: administrators manage, auditors read what is not secret, the
-- application exchanges and polls, tokex_web reaches tokex_api only; the vault's
-- ciphertexts, the audit and DPoP keys and tokex's internals: the owner alone.
('tokex._audit_active_kid()',                   '', '', '', '', ''),
('tokex._audit_altered(bigint,bigint)',         '', '', '', '', ''),
('tokex._audit_canonical(record)',              '', '', '', '', ''),
('tokex._audit_header(tokex.audit_block)',      '', '', '', '', ''),
('tokex._audit_jws_parts(text)',                '', '', '', '', ''),
('tokex._audit_jws_payload(text,jsonb)',        '', '', '', '', ''),
('tokex._audit_prune(bigint)',                  '', '', '', '', ''),
('tokex._audit_pruning()',                      '', '', '', '', ''),
('tokex._audit_retention()',                    '', '', '', '', ''),
('tokex._audit_row()',                          '', '', '', '', ''),
('tokex._audit_row_hash(record)',               '', '', '', '', ''),
('tokex._audit_rows(bigint,bigint)',            '', '', '', '', ''),
('tokex._audit_safe_seq()',                     '', '', '', '', ''),
('tokex._audit_sign(text,text)',                '', '', '', '', ''),
('tokex._audit_ts(timestamp with time zone)',   '', '', '', '', ''),
('tokex._audit_verify(bigint,bigint,boolean)',  '', '', '', '', ''),
('tokex._exchange_for_client(text,text,text,text,text,text,text,text,text,jsonb,jsonb,text)', '', '', '', '', ''),
('tokex._merkle_root(bytea[])',                 '', '', '', '', ''),
('tokex._opaque_new(text)',                     '', '', '', '', ''),
('tokex._random_bytes(integer)',                '', '', '', '', ''),
('tokex._revocation_stands()',                  '', '', '', '', ''),
('tokex._revocation_sync()',                    '', '', '', '', ''),
('tokex._seal_audit(bigint)',                   '', '', '', '', ''),
('tokex._ssf_affected(tokex.revocation)',       '', '', '', '', ''),
('tokex._ssf_aud(tokex.ssf_stream)',            '', '', '', '', ''),
('tokex._ssf_client_stream(text,text,text,text,text,text)', '', '', '', '', ''),
('tokex._ssf_config(tokex.ssf_stream)',         '', '', '', '', ''),
('tokex._ssf_emit(tokex.revocation)',           '', '', '', '', ''),
('tokex._ssf_event_named()',                    '', '', '', '', ''),
('tokex._ssf_iss_sub(text,text)',               '', '', '', '', ''),
('tokex._ssf_manage(text,text,jsonb,text,text,text,text)', '', '', '', '', ''),
('tokex._ssf_on_policy()',                      '', '', '', '', ''),
('tokex._ssf_on_revocation()',                  '', '', '', '', ''),
('tokex._ssf_policy_matches(tokex.policy,tokex.ssf_token,text,text,text,timestamp with time zone)', '', '', '', '', ''),
('tokex._ssf_poll(tokex.ssf_stream,integer,jsonb,jsonb)', '', '', '', '', ''),
('tokex._ssf_set_claims(tokex.ssf_event,text)', '', '', '', '', ''),
('tokex._ssf_stream_backfill()',                '', '', '', '', ''),
('tokex._ssf_stream_touch()',                   '', '', '', '', ''),
('tokex._ssf_subject(tokex.revocation,text)',   '', '', '', '', ''),
('tokex._ssf_track()',                          '', '', '', '', ''),
('tokex._token_type_check()',                   '', '', '', '', ''),
('tokex._vault_key_ids()',                      '', '', '', '', ''),
('tokex._vault_release(text,text)',             '', '', '', '', ''),
('tokex._verified_token_cache()',               '', '', '', '', ''),
('tokex.actor_chain()',                         'X', '', '', '', ''),
('tokex.api_key',                               'r', '', 'r', '', ''),
('tokex.api_key(expires_at)',                   'w', '', '', '', ''),
('tokex.api_key(label)',                        'w', '', '', '', ''),
('tokex.api_key(revoke_reason)',                'w', '', '', '', ''),
('tokex.api_key(revoked_at)',                   'w', '', '', '', ''),
('tokex.api_key_id_seq',                        '', '', '', '', ''),
('tokex.apply_audit_retention(interval)',       '', '', '', '', ''),
-- partitions of the audit (those made at run time: below) and their upkeep
('tokex.audit_event_default',                   '', '', '', '', ''),
('tokex.token_use_default',                     '', '', '', '', ''),
('tokex.audit_partition_ahead(boolean)',        'X', '', '', '', ''),
('tokex._audit_partition_create(text,timestamp with time zone,timestamp with time zone)', '', '', '', '', ''),
('tokex._audit_partition_dress(regclass)',      '', '', '', '', ''),
('tokex._audit_partition_lower(oid)',           '', '', '', '', ''),
('tokex._audit_partition_upper(oid)',           '', '', '', '', ''),
('tokex._audit_drop_partitions(bigint)',        '', '', '', '', ''),
('tokex._audit_by_jti(uuid,timestamp with time zone,timestamp with time zone)', '', '', '', '', ''),
('tokex._audit_by_token(bytea,boolean)',                '', '', '', '', ''),
('tokex.audit_block',                           'r', '', 'r', '', ''),
('tokex.audit_export(timestamp with time zone)', 'X', '', 'X', '', ''),
('tokex.audit_head()',                          'X', '', 'X', '', ''),
('tokex.audit_key',                             '', '', '', '', ''),
('tokex.audit_keys()',                          'X', 'X', 'X', '', ''),
('tokex.audit_rows(bigint,bigint)',             'X', '', '', '', ''),
('tokex.audit_seq',                             '', '', '', '', ''),
('tokex.audit_verify(bigint,bigint)',           'X', '', 'X', '', ''),
('tokex.audit_verify_head(text)',               'X', '', 'X', '', ''),
('tokex.authenticate(text,text,text,text)',     'X', '', '', '', ''),
('tokex.create_api_key(text,timestamp with time zone,text)', 'X', '', '', '', ''),
('tokex.credential',                            'd', '', '', '', ''),
('tokex.credential(audience)',                  'r', '', 'r', '', ''),
('tokex.credential(created_at)',                'r', '', 'r', '', ''),
('tokex.credential(created_by)',                'r', '', 'r', '', ''),
('tokex.credential(expires_at)',                'rw', '', 'r', '', ''),
('tokex.credential(header)',                    'r', '', 'r', '', ''),
('tokex.credential(id)',                        'r', '', 'r', '', ''),
('tokex.credential(kek_id)',                    'r', '', '', '', ''),
('tokex.credential(kind)',                      'r', '', 'r', '', ''),
('tokex.credential(principal)',                 'r', '', 'r', '', ''),
('tokex.credential(revoke_reason)',             'rw', '', 'r', '', ''),
('tokex.credential(revoked_at)',                'rw', '', 'r', '', ''),
('tokex.credential_id_seq',                     '', '', '', '', ''),
('tokex.current_actor()',                       'X', '', '', '', ''),
('tokex.dpop_jti',                              '', '', '', '', ''),
('tokex.dpop_secret',                           '', '', '', '', ''),
('tokex.exchange(text,text,text,text,text,text,text,text,text,jsonb,jsonb,text)', 'X', 'X', '', '', ''),
('tokex.has_scope(text)',                       'X', '', '', '', ''),
('tokex.heartbeat',                             'r', '', 'r', '', ''),
('tokex.heartbeat()',                           'X', '', '', '', ''),
('tokex.on_behalf_of()',                        'X', '', '', '', ''),
('tokex.register_token_type(text,regprocedure,text)', 'X', '', '', '', ''),
('tokex.revoke_api_key(text,text)',             'X', '', '', '', ''),
('tokex.revoke_credential(bigint,text)',        'X', '', '', '', ''),
('tokex.rotate_audit_key(text)',                'X', '', '', '', ''),
('tokex.seal_audit()',                          'X', '', 'X', '', ''),
('tokex.ssf_event',                             'r', '', '', '', ''),
('tokex.ssf_event_id_seq',                      '', '', '', '', ''),
('tokex.ssf_poll(uuid,integer,uuid[],jsonb)',   'X', 'X', '', '', ''),
('tokex.ssf_prune(uuid)',                       'X', '', '', '', ''),
('tokex.ssf_stream',                            'adrw', '', '', '', ''),
('tokex.ssf_token',                             'r', '', '', '', ''),
('tokex.store_credential(text,text,text,text,text,timestamp with time zone)', 'X', '', '', '', ''),
('tokex.token_claims()',                        'X', '', '', '', ''),
('tokex.token_type',                            'adrw', '', 'r', '', ''),
('tokex.vault_rewrap()',                        'X', '', '', '', ''),
('tokex.vault_status()',                        'X', '', '', '', ''),
('tokex_api.ssf_configuration()',               '', '', '', 'X', ''),
('tokex_api.ssf_poll(integer,boolean,jsonb,jsonb,text,text,text,text,text)', '', '', '', 'X', ''),
('tokex_api.ssf_status(text,text,text,text,text,text,text)', '', '', '', 'X', ''),
('tokex_api.ssf_stream(text,jsonb,text,text,text,text,text)', '', '', '', 'X', ''),
('tokex_api.token(text,text,text,text,text,text,text,text,text,text,text,text,text,text,text)', '', '', '', 'X', ''),
-- internals: only tokex's own SECURITY DEFINER functions call them
('tokex._setting(text)',                         '',     '',   '',    '',  ''),
('tokex._issuer()',                              '',     '',   '',    '',  ''),
('tokex._keystore_invalidate()',                 '',     '',   '',    '',  ''),
('tokex._generate_key(text)',                    '',     '',   '',    '',  ''),
('tokex._key_move(text,text,text[])',            '',     '',   '',    '',  ''),
('tokex._jwks_check(jsonb)',                     '',     '',   '',    '',  ''),
('tokex._sign(jsonb,text)',                      '',     '',   '',    '',  ''),
('tokex._hash_secret(text)',                     '',     '',   '',    '',  ''),
('tokex._verify_secret(text,text)',              '',     '',   '',    '',  ''),
('tokex._pbkdf2_iterations()',                   '',     '',   '',    '',  ''),
('tokex._random_secret()',                       '',     '',   '',    '',  ''),
('tokex._verify_assertion(text,jsonb)',          '',     '',   '',    '',  ''),
('tokex._authenticate(text,text,text,text,text)', '',    '',   '',    '',  ''),
('tokex._audit_write(jsonb,boolean)',            '',     '',   '',    '',  ''),
('tokex._append_only()',                         '',     '',   '',    '',  ''),
('tokex._decide_session(text,text,text[],timestamp with time zone)',
                                                 '',     '',   '',    '',  ''),
('tokex._client_credentials(text,text,text,text)', '',   '',   '',    '',  ''),
('tokex._jti_key(text,text)',                    '',     '',   '',    '',  ''),
('tokex._revoked_token_key()',                   '',     '',   '',    '',  ''),
('tokex._revocation_target(text,text)',          '',     '',   '',    '',  ''),
('tokex._token_jti(text)',                       '',     '',   '',    '',  ''),
('tokex._on_revocation()',                       '',     '',   '',    '',  ''),
('tokex._resolve(text[],text[],text)',           '',     '',   '',    '',  ''),
('tokex._decide(text[],text[],timestamp with time zone[],text,text,text[],text[],text,text,bytea[],uuid,uuid[],text[],text[],timestamp with time zone)',
                                                 '',     '',   '',    '',  ''),
('tokex._decide_fast(text[],text[],timestamp with time zone[],text,text,text[],text[],text,text,bytea[],uuid,uuid[],text[],text[],timestamp with time zone)',
                                                 '',     '',   '',    '',  ''),
('tokex._token_active(text[],text[],timestamp with time zone,text,boolean,bytea,uuid,uuid,timestamp with time zone)',
                                                 '',     '',   '',    '',  ''),
('tokex._token_active_fast(text[],text[],timestamp with time zone,text,boolean,bytea,uuid,uuid,timestamp with time zone)',
                                                 '',     '',   '',    '',  ''),
('tokex._form_decode(text)',                     '',     '',   '',    '',  ''),
('tokex._public_description(text,text)',         '',     '',   '',    '',  ''),
('tokex._respond(jsonb,integer,text)',           '',     '',   '',    '',  ''),
('tokex._refuse(text,text,integer,text,text,text,text,text)',
                                                 '',     '',   '',    '',  ''),
('tokex._not_post()',                            '',     '',   '',    '',  ''),
('tokex._endpoint(text)',                        '',     '',   '',    '',  ''),
('tokex._repeated_target()',                     '',     '',   '',    '',  ''),
('tokex._client_with_token(text,text,text,text,text,text)',
                                                 '',     '',   '',    '',  ''),
('tokex._issued_to(text,jsonb)',                 '',     '',   '',    '',  ''),
('tokex._may_introspect(tokex.client,jsonb)',    '',     '',   '',    '',  ''),
('tokex._token_endpoint(text,text,text,text,text,text)',
                                                 '',     '',   '',    '',  '');

-- The partitions tokex.audit_partition_ahead() makes (here, for the
-- intervals ahead; the background sealer may have made them already): like their parents, nothing for anyone.
SELECT ok(tokex.audit_partition_ahead() >= 0, 'the audit partitions ahead are made (or were already)');
INSERT INTO decided
SELECT c.oid::regclass::text, '', '', '', '', ''
  FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
 WHERE i.inhparent IN ('tokex.audit_event'::regclass, 'tokex.token_use'::regclass)
ON CONFLICT (object) DO NOTHING;

-- the roles of the matrix's columns
CREATE TEMP VIEW matrix_role (col, role) AS
VALUES ('admin', 'tokex_admin'), ('app', 'tokex_app'), ('auditor', 'tokex_auditor'),
       ('web', 'tokex_web'), ('nobody', 'tokex_t90_nobody');

-- every object of the two schemas, by the name the table uses, and its kind
CREATE TEMP VIEW object (name, kind, oid) AS
SELECT n.nspname::text, 'schema', n.oid FROM pg_namespace n WHERE n.nspname IN ('tokex', 'tokex_api')
UNION ALL
SELECT format('%I.%I', n.nspname, c.relname), c.relkind::text, c.oid
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname IN ('tokex', 'tokex_api') AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
UNION ALL
SELECT p.oid::regprocedure::text, 'function', p.oid
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE n.nspname IN ('tokex', 'tokex_api');

-- what each role can do, as (object, role column, letter)
CREATE TEMP VIEW actual (name, col, priv) AS
SELECT o.name, r.col, l.letter
  FROM object o CROSS JOIN matrix_role r
  JOIN (VALUES ('r', 'SELECT'), ('a', 'INSERT'), ('w', 'UPDATE'), ('d', 'DELETE'),
               ('D', 'TRUNCATE'), ('x', 'REFERENCES'), ('t', 'TRIGGER'),
               ('X', 'EXECUTE'), ('U', 'USAGE'), ('C', 'CREATE')) l (letter, priv)
    ON CASE o.kind
         WHEN 'schema' THEN l.priv IN ('USAGE', 'CREATE') AND has_schema_privilege(r.role, o.oid, l.priv)
         WHEN 'function' THEN l.priv = 'EXECUTE' AND has_function_privilege(r.role, o.oid, l.priv)
         WHEN 'S' THEN l.priv IN ('USAGE', 'SELECT', 'UPDATE') AND has_sequence_privilege(r.role, o.oid, l.priv)
         ELSE l.priv IN ('SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE', 'REFERENCES', 'TRIGGER')
              AND has_table_privilege(r.role, o.oid, l.priv)
       END
UNION ALL
-- column-level grants a role holds without the table-level privilege
SELECT format('%s(%s)', o.name, a.attname), r.col, l.letter
  FROM object o CROSS JOIN matrix_role r
  JOIN pg_attribute a ON a.attrelid = o.oid AND a.attnum > 0 AND NOT a.attisdropped
  JOIN (VALUES ('r', 'SELECT'), ('a', 'INSERT'), ('w', 'UPDATE'), ('x', 'REFERENCES')) l (letter, priv)
    ON has_column_privilege(r.role, o.oid, a.attnum, l.priv) AND NOT has_table_privilege(r.role, o.oid, l.priv)
 WHERE o.kind IN ('r', 'p', 'v', 'm', 'f');

-- what the table grants, as the same triples
CREATE TEMP VIEW expected (name, col, priv) AS
SELECT d.object, m.col, letter
  FROM decided d
 CROSS JOIN LATERAL (VALUES ('admin', d.admin), ('app', d.app), ('auditor', d.auditor),
                            ('web', d.web), ('nobody', d.nobody)) m (col, privs)
 CROSS JOIN LATERAL regexp_split_to_table(m.privs, '') letter
 WHERE m.privs <> '';

SELECT cmp_ok((SELECT count(*) FROM object), '>', 80::bigint,
              'the matrix covers the objects of schemas tokex and tokex_api');
SELECT is(ARRAY(SELECT name FROM object WHERE name NOT IN (SELECT object FROM decided) ORDER BY 1),
          '{}'::text[], 'every object in tokex and tokex_api has its decided privileges');
SELECT is(ARRAY(SELECT object FROM decided
                 WHERE object NOT IN (SELECT name FROM object)
                   AND object NOT IN (SELECT format('%s(%s)', o.name, a.attname) FROM object o
                                        JOIN pg_attribute a ON a.attrelid = o.oid AND a.attnum > 0)
                ORDER BY 1),
          '{}'::text[], 'the table names no object or column that does not exist');
SELECT is(ARRAY(SELECT format('%s: %s %s', col, priv, name) FROM (SELECT * FROM actual EXCEPT SELECT * FROM expected) x ORDER BY 1),
          '{}'::text[], 'no role can do more than the table grants');
SELECT is(ARRAY(SELECT format('%s: %s %s', col, priv, name) FROM (SELECT * FROM expected EXCEPT SELECT * FROM actual) x ORDER BY 1),
          '{}'::text[], 'every role can do what the table grants');

-- the invariants the table's rows add up to, said once more on their own
SELECT is(ARRAY(SELECT DISTINCT name FROM actual WHERE col = 'nobody'), '{}'::text[],
          'a login role with no grants (PUBLIC) can do nothing in tokex and tokex_api');
SELECT is(ARRAY(SELECT DISTINCT format('%s %s', col, name) FROM actual
                 WHERE name ~ '^tokex\.(key|trusted_issuer|client)$' AND priv = 'r'
                    OR name IN ('tokex.key(private_key)', 'tokex.trusted_issuer(jwks)', 'tokex.client(secret_hash)')),
          '{}'::text[], 'no role reads private keys, trusted issuers'' JWKS or client secret hashes');
SELECT is(ARRAY(SELECT DISTINCT format('%s %s', col, name) FROM actual
                 WHERE name IN ('tokex.audit_event', 'tokex.token_use', 'tokex.revocation', 'tokex.audit', 'tokex.audit_trail')
                   AND priv IN ('a', 'w', 'd', 'D')),
          '{}'::text[], 'no role writes the audit trail or the revocation log directly');
SELECT is(ARRAY(SELECT DISTINCT format('%s %s', col, name) FROM actual
                 WHERE (col = 'web') <> (name LIKE 'tokex\_api%')),
          '{}'::text[], 'tokex_web reaches tokex_api and nothing else; no other role reaches tokex_api');

SELECT * FROM finish();
ROLLBACK;
