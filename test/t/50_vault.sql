-- The credential vault: a stored credential is released to its audience,
-- the person's own before the shared one, never when revoked or expired;
-- what is stored is no plaintext and cannot be moved to another row; only
-- administrators store, rotate and revoke, nobody but the owner reads a
-- ciphertext; no error repeats the secret.  (The key file's own failures,
-- rotation, and the grep of pg_dump and the server log: test/vault/run.sh.)
-- Needs tokex.vault_key_file, which test/pgtap.sh sets up.
\ir preamble.psql
SELECT plan(83);

INSERT INTO tokex.identity (id, kind) VALUES ('alice', 'human'), ('bob', 'human'), ('carol', 'human'),
  ('agent-a', 'agent');
INSERT INTO tokex.resource (audience, scopes, token_format) VALUES
  ('crm', '{crm.read}', 'credential'), ('mail', '{mail.read}', 'credential'), ('wiki', '{}', 'credential');

\ir as_role.psql
-- What an error of q says of its own (SQLSTATE, message, detail, hint), or
-- 'no error'.  (Its context quotes the calling statement, which the caller
-- wrote; the server log leaves it out: test/vault/run.sh.)
CREATE FUNCTION pg_temp.error_of(q text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
  st text; m text; d text; h text;
BEGIN
  EXECUTE q;
  RETURN 'no error';
EXCEPTION WHEN OTHERS THEN
  GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, m = MESSAGE_TEXT, d = PG_EXCEPTION_DETAIL,
                          h = PG_EXCEPTION_HINT;
  RETURN concat_ws(' | ', st, m, d, h);
END
$$;
CREATE FUNCTION pg_temp.released(aud text, who text DEFAULT NULL) RETURNS text LANGUAGE sql AS $$
  SELECT COALESCE((SELECT format('%s %s %s', id, kind, secret) FROM tokex._vault_release(aud, who)), 'nothing')
$$;

------------------------------------------------------------------------
-- store and release
------------------------------------------------------------------------
SELECT tokex.store_credential('crm', 'crm-shared-Zq81') AS crm_shared \gset
SELECT tokex.store_credential('crm', 'alice:pa55-Wd3', 'alice', 'basic') AS crm_alice \gset
SELECT tokex.store_credential('crm', 'bob-bearer-Kx2', principal => 'bob', kind => 'bearer',
                              expires_at => now() + interval '1 hour') AS crm_bob \gset
SELECT tokex.store_credential('mail', 'mail-key-Lp0', header => 'X-Mail-Key') AS mail_shared \gset
SELECT tokex.store_credential('wiki', 'wiki-proxy-Qa9', kind => 'bearer', header => 'Proxy-Authorization') AS wiki_shared \gset

SELECT ok(:crm_shared > 0 AND :crm_alice > :crm_shared AND :crm_bob > :crm_alice, 'store_credential returns each credential''s id');
SELECT is((SELECT row(kind, header, principal, expires_at IS NULL)::text FROM tokex.credential WHERE id = :crm_shared),
          '(api_key,,,t)', 'the defaults: an api_key in the default header, shared, not expiring');

SELECT is(pg_temp.released('crm', 'alice'), :crm_alice || ' basic alice:pa55-Wd3',
          'a person with a credential of their own gets theirs');
SELECT is((SELECT row(header_name, header_value)::text FROM tokex._vault_release('crm', 'alice')),
          row('Authorization', 'Basic ' || encode(convert_to('alice:pa55-Wd3', 'UTF8'), 'base64'))::text,
          'basic: Authorization: Basic base64(user:password)');
SELECT is(pg_temp.released('crm', 'bob'), :crm_bob || ' bearer bob-bearer-Kx2', 'bob gets his own');
SELECT is((SELECT row(header_name, header_value)::text FROM tokex._vault_release('crm', 'bob')),
          '(Authorization,"Bearer bob-bearer-Kx2")', 'bearer: Authorization: Bearer secret');
SELECT is(pg_temp.released('crm', 'carol'), :crm_shared || ' api_key crm-shared-Zq81',
          'a person without one gets the shared credential');
SELECT is(pg_temp.released('crm', 'nobody-known'), :crm_shared || ' api_key crm-shared-Zq81',
          '... whoever the person is: the exchange decided before the vault is asked');
SELECT is(pg_temp.released('crm'), :crm_shared || ' api_key crm-shared-Zq81', 'no person: the shared credential');
SELECT is((SELECT row(header_name, header_value)::text FROM tokex._vault_release('crm')),
          '(X-API-Key,crm-shared-Zq81)', 'api_key: the secret as it is, in X-API-Key by default');
SELECT is((SELECT row(header, header_name, header_value)::text FROM tokex._vault_release('mail')),
          '(X-Mail-Key,X-Mail-Key,mail-key-Lp0)', 'api_key with a header: in that header');
SELECT is((SELECT row(header_name, header_value)::text FROM tokex._vault_release('wiki')),
          '(Proxy-Authorization,"Bearer wiki-proxy-Qa9")', 'bearer with a header: that header, same value');
SELECT is((SELECT count(*) FROM tokex._vault_release('nowhere', 'alice')), 0::bigint,
          'an audience without credentials: nothing');
SELECT is((SELECT count(*) FROM tokex._vault_release('mail', 'alice')), 1::bigint,
          'exactly one credential is released');

SELECT tokex.store_credential('crm', 'crm-shared-new-Yt4') AS crm_shared2 \gset
SELECT is(pg_temp.released('crm', 'carol'), :crm_shared2 || ' api_key crm-shared-new-Yt4',
          'of two live shared credentials the newest is released (store the new one, then revoke the old)');

------------------------------------------------------------------------
-- what is stored is no plaintext
------------------------------------------------------------------------
SELECT is((SELECT count(*) FROM tokex.credential c,
             unnest(ARRAY['crm-shared-Zq81', 'alice:pa55-Wd3', 'bob-bearer-Kx2', 'mail-key-Lp0', 'wiki-proxy-Qa9',
                          'crm-shared-new-Yt4']) s
           WHERE position(convert_to(s, 'UTF8') IN c.ciphertext) > 0
              OR position(convert_to(s, 'UTF8') IN c.wrapped_key) > 0
              OR row(c.*)::text LIKE '%' || s || '%'),
          0::bigint, 'no column of tokex.credential holds a secret');
SELECT tokex.store_credential('mail', 'mail-key-Lp0', 'alice') AS mail_alice \gset
SELECT isnt((SELECT ciphertext FROM tokex.credential WHERE id = :mail_shared),
            (SELECT ciphertext FROM tokex.credential WHERE id = :mail_alice),
            'the same secret stored twice: two different ciphertexts (a data key and nonce each)');
SELECT is((SELECT octet_length(ciphertext) - octet_length('mail-key-Lp0') FROM tokex.credential WHERE id = :mail_shared),
          29, 'a ciphertext is version, nonce, the sealed secret and its tag (1 + 12 + n + 16 bytes)');
SELECT is((SELECT octet_length(wrapped_key) FROM tokex.credential WHERE id = :mail_shared), 61,
          'a wrapped data key: 1 + 12 + 32 + 16 bytes');
SELECT is((SELECT array_agg(DISTINCT encode(kek_id, 'hex')) FROM tokex.credential),
          (SELECT array_agg(key_id) FROM tokex.vault_status() WHERE key = 'current'),
          'every row names the key-encryption key it is under, the current one (vault_status)');
SELECT is((SELECT credentials FROM tokex.vault_status() WHERE key = 'current'),
          (SELECT count(*) FROM tokex.credential), 'vault_status counts the credentials under each key');
SELECT is(tokex.vault_rewrap(), 0::bigint, 'vault_rewrap without a previous key: nothing to re-wrap');

------------------------------------------------------------------------
-- expired and revoked credentials are never released
------------------------------------------------------------------------
UPDATE tokex.credential SET expires_at = clock_timestamp() - interval '1 second' WHERE id = :crm_bob;
SELECT is(pg_temp.released('crm', 'bob'), :crm_shared2 || ' api_key crm-shared-new-Yt4',
          'an expired credential of bob''s is not released: he gets the shared one');
SELECT tokex.revoke_credential(:crm_alice, 'rotated at the downstream');
SELECT is(pg_temp.released('crm', 'alice'), :crm_shared2 || ' api_key crm-shared-new-Yt4',
          'a revoked credential of alice''s is not released: she gets the shared one');
SELECT is((SELECT row(kind, target, reason)::text FROM tokex.revocation WHERE kind = 'credential'),
          row('credential', :crm_alice, 'rotated at the downstream')::text,
          'revoke_credential is recorded in tokex.revocation (kind credential, the id)');
SELECT is((SELECT revoke_reason FROM tokex.credential WHERE id = :crm_alice), 'rotated at the downstream',
          '... and on the row');
SELECT lives_ok(format('SELECT tokex.revoke_credential(%s, %L)', :crm_alice, 'again'),
                'revoking a revoked credential again is no error');
SELECT is((SELECT count(*) FROM tokex.revocation WHERE kind = 'credential'), 1::bigint, '... and no second record');
SELECT throws_ok('SELECT tokex.revoke_credential(999999, ''x'')', 'P0002', 'credential 999999 does not exist',
                 'revoking an unknown credential: P0002');

SELECT is(pg_temp.as_role('tokex_admin', format('UPDATE tokex.credential SET revoked_at = now(), revoke_reason = %L
                                                   WHERE id = %s RETURNING id', 'plain DML', :crm_shared2)),
          :'crm_shared2', 'tokex_admin revokes with a plain UPDATE of revoked_at');
SELECT is(pg_temp.released('crm', 'carol'), :crm_shared || ' api_key crm-shared-Zq81',
          '... which takes effect at the next release (the older shared one is live again)');
SELECT is((SELECT reason FROM tokex.revocation WHERE kind = 'credential' AND target = :'crm_shared2'), 'plain DML',
          '... and is recorded in tokex.revocation like revoke_credential');
SELECT tokex.revoke_credential(:crm_shared, 'gone');
SELECT is(pg_temp.released('crm', 'carol'), 'nothing', 'every credential of the audience revoked: nothing is released');
SELECT is(pg_temp.released('crm', 'bob'), 'nothing', '... not even bob''s expired one');

------------------------------------------------------------------------
-- a ciphertext is bound to its row (the owner can write the table; the
-- result is a clean error, never another row's secret)
------------------------------------------------------------------------
SELECT tokex.store_credential('crm', 'carol-own-Vb6', 'carol') AS crm_carol \gset
SELECT tokex.store_credential('crm', 'dave-own-Hn7', 'bob') AS crm_bob2 \gset
SAVEPOINT moved;
UPDATE tokex.credential t SET ciphertext = s.ciphertext, wrapped_key = s.wrapped_key, kek_id = s.kek_id
  FROM tokex.credential s WHERE t.id = :crm_bob2 AND s.id = :crm_carol;
SELECT throws_ok($$SELECT * FROM tokex._vault_release('crm', 'bob')$$, 'XX001',
                 format('credential %s cannot be decrypted', :crm_bob2),
                 'carol''s ciphertext and wrapped key copied onto bob''s row: a clean error, not carol''s secret');
ROLLBACK TO moved;
UPDATE tokex.credential t SET ciphertext = s.ciphertext
  FROM tokex.credential s WHERE t.id = :crm_bob2 AND s.id = :crm_carol;
SELECT throws_ok($$SELECT * FROM tokex._vault_release('crm', 'bob')$$, 'XX001', NULL,
                 'only the ciphertext copied: the same error');
ROLLBACK TO moved;
UPDATE tokex.credential SET principal = 'alice' WHERE id = :crm_carol;
SELECT throws_ok($$SELECT * FROM tokex._vault_release('crm', 'alice')$$, 'XX001', NULL,
                 'a row''s principal changed: carol''s credential cannot be released to alice');
ROLLBACK TO moved;
UPDATE tokex.credential SET principal = NULL WHERE id = :crm_carol;
SELECT throws_ok($$SELECT * FROM tokex._vault_release('crm', 'bob-nobody')$$, 'XX001', NULL,
                 'a person''s credential made shared: refused');
ROLLBACK TO moved;
UPDATE tokex.credential SET audience = 'mail' WHERE id = :crm_carol;
SELECT throws_ok($$SELECT * FROM tokex._vault_release('mail', 'carol')$$, 'XX001', NULL,
                 'a credential moved to another audience: refused');
ROLLBACK TO moved;
UPDATE tokex.credential SET kind = 'basic' WHERE id = :crm_carol;
SELECT throws_ok($$SELECT * FROM tokex._vault_release('crm', 'carol')$$, 'XX001', NULL,
                 'its kind changed: refused');
ROLLBACK TO moved;
UPDATE tokex.credential SET header = 'X-Other' WHERE id = :crm_carol;
SELECT throws_ok($$SELECT * FROM tokex._vault_release('crm', 'carol')$$, 'XX001', NULL,
                 'its header changed: refused');
ROLLBACK TO moved;
UPDATE tokex.credential SET ciphertext = set_byte(ciphertext, 20, get_byte(ciphertext, 20) # 1) WHERE id = :crm_carol;
SELECT throws_ok($$SELECT * FROM tokex._vault_release('crm', 'carol')$$, 'XX001', NULL,
                 'one bit of the ciphertext flipped: refused');
ROLLBACK TO moved;
UPDATE tokex.credential SET kek_id = '\x00112233445566778899aabbccddeeff' WHERE id = :crm_carol;
SELECT throws_ok($$SELECT * FROM tokex._vault_release('crm', 'carol')$$, '55000',
                 format('credential %s is encrypted under a key-encryption key the server does not have', :crm_carol),
                 'a row naming another key-encryption key: 55000, saying so');
SELECT alike(pg_temp.error_of($$SELECT * FROM tokex._vault_release('crm', 'carol')$$),
            '%names key 00112233445566778899aabbccddeeff%', '... and naming the row''s key id');
ROLLBACK TO moved;
SELECT is(pg_temp.released('crm', 'carol'), :crm_carol || ' api_key carol-own-Vb6', 'the untouched row decrypts');
SELECT throws_ok($$UPDATE tokex.resource SET audience = 'crm2' WHERE audience = 'crm'$$, '23503', NULL,
                 'a resource with credentials cannot be renamed (its credentials are bound to the audience)');

------------------------------------------------------------------------
-- bad input: a clear error that never repeats the secret
------------------------------------------------------------------------
SELECT throws_ok($$SELECT tokex.store_credential('crm', 'Sx-1', kind => 'password')$$, '22023', 'unknown credential kind',
                 'an unknown kind: 22023');
SELECT throws_ok($$SELECT tokex.store_credential('crm', E'Sx-2\r\nX-Injected: 1')$$, '22023',
                 'the secret contains a control character', 'a secret with a line break (header injection): 22023');
SELECT throws_ok($$SELECT tokex.store_credential('crm', 'Sx-3', kind => 'basic')$$, '22023',
                 'a basic credential must be user:password', 'basic without a colon: 22023');
SELECT throws_ok($$SELECT tokex.store_credential('crm', 'Sx-4', header => 'X Bad')$$, '22023',
                 'the header is not an HTTP field name', 'a header that is no field name: 22023');
SELECT throws_ok($$SELECT tokex.store_credential('nowhere', 'Sx-5')$$, '23503',
                 'the audience is not a registered resource', 'an unknown audience: 23503');
SELECT throws_ok($$SELECT tokex.store_credential('crm', 'Sx-6', 'mallory')$$, '23503',
                 'the principal is not an identity', 'an unknown principal: 23503');
SELECT throws_ok($$SELECT tokex.store_credential('crm', NULL)$$, '22004', 'secret is required', 'no secret: 22004');
SELECT throws_ok($$SELECT tokex.store_credential(NULL, 'Sx-7')$$, '22004', 'audience is required', 'no audience: 22004');
SELECT throws_ok($$SELECT tokex.store_credential('crm', '')$$, '22023', 'the secret is empty', 'an empty secret: 22023');
SELECT throws_ok($$SELECT tokex.store_credential('crm', repeat('x', 8193))$$, '22023', NULL, 'a secret over 8 KiB: 22023');
SELECT throws_ok($$SELECT tokex.store_credential('crm', 'Sx-8', expires_at => now() - interval '1 minute')$$, '22023',
                 'expires_at is in the past', 'already expired: 22023');
SELECT is((SELECT count(*) FROM unnest(ARRAY[
             pg_temp.error_of($$SELECT tokex.store_credential('crm', 'Sx-1', kind => 'password')$$),
             pg_temp.error_of($$SELECT tokex.store_credential('crm', E'Sx-2\r\nX-Injected: 1')$$),
             pg_temp.error_of($$SELECT tokex.store_credential('crm', 'Sx-3', kind => 'basic')$$),
             pg_temp.error_of($$SELECT tokex.store_credential('nowhere', 'Sx-5')$$),
             pg_temp.error_of($$SELECT tokex.store_credential('crm', 'Sx-6', 'mallory')$$),
             pg_temp.error_of($$SELECT tokex.store_credential('crm', 'Sx-8', expires_at => now() - interval '1 minute')$$)]) e
           WHERE e LIKE '%Sx-%' OR e = 'no error'),
          0::bigint, 'no message, detail or hint of these errors holds the secret');
SELECT is(pg_temp.error_of($$SELECT tokex.store_credential('crm', 'x', 'Sx-in-principal', 'Sx-in-kind')$$)
            NOT LIKE '%Sx-in%', true,
          'nor the principal or kind (a secret passed in the wrong argument is not echoed either)');

------------------------------------------------------------------------
-- privileges
------------------------------------------------------------------------
SELECT is(pg_temp.as_role('tokex_app', 'SELECT count(*) FROM tokex.credential'), 'ERROR 42501',
          'tokex_app cannot read tokex.credential, not even its metadata');
SELECT is(pg_temp.as_role('tokex_app', $$SELECT tokex.store_credential('crm', 'app-Sx')$$), 'ERROR 42501',
          'tokex_app cannot store a credential');
SELECT is(pg_temp.as_role('tokex_app', format('SELECT tokex.revoke_credential(%s, %L)', :crm_carol, 'x')), 'ERROR 42501',
          'tokex_app cannot revoke one');
SELECT is(pg_temp.as_role('tokex_app', $$SELECT secret FROM tokex._vault_release('crm', 'carol')$$), 'ERROR 42501',
          'tokex_app cannot release one outside the exchange');
SELECT is(pg_temp.as_role('tokex_app', 'SELECT tokex.vault_rewrap()'), 'ERROR 42501', 'tokex_app cannot rotate');

SELECT is(pg_temp.as_role('tokex_auditor', format('SELECT row(audience, principal, kind, revoked_at IS NULL)::text
                                                    FROM tokex.credential WHERE id = %s', :crm_carol)),
          '(crm,carol,api_key,t)', 'tokex_auditor reads what is not secret: audience, principal, kind, state');
SELECT is(pg_temp.as_role('tokex_auditor', 'SELECT count(ciphertext) FROM tokex.credential'), 'ERROR 42501',
          'tokex_auditor cannot read a ciphertext');
SELECT is(pg_temp.as_role('tokex_auditor', 'SELECT count(wrapped_key) FROM tokex.credential'), 'ERROR 42501',
          'nor a wrapped data key');
SELECT is(pg_temp.as_role('tokex_auditor', $$SELECT tokex.store_credential('crm', 'aud-Sx')$$), 'ERROR 42501',
          'tokex_auditor cannot store a credential');
SELECT is(pg_temp.as_role('tokex_auditor', format('UPDATE tokex.credential SET revoked_at = now() WHERE id = %s RETURNING id', :crm_carol)),
          'ERROR 42501', 'nor revoke one');

SELECT ok(pg_temp.as_role('tokex_admin', $$SELECT tokex.store_credential('mail', 'admin-stored-Mc5', 'carol', 'bearer')$$)
            ~ '^[0-9]+$', 'tokex_admin stores a credential');
SELECT is(pg_temp.released('mail', 'carol'), (SELECT max(id) FROM tokex.credential) || ' bearer admin-stored-Mc5',
          '... which is released');
SELECT is(pg_temp.as_role('tokex_admin', format('SELECT row(audience, kind, encode(kek_id, %L))::text FROM tokex.credential WHERE id = %s',
                                                'hex', :crm_carol)),
          (SELECT row('crm', 'api_key', key_id)::text FROM tokex.vault_status() WHERE key = 'current'),
          'tokex_admin reads what is not secret, and the key each row is under');
SELECT is(pg_temp.as_role('tokex_admin', 'SELECT count(ciphertext) FROM tokex.credential'), 'ERROR 42501',
          'tokex_admin cannot read a ciphertext');
SELECT is(pg_temp.as_role('tokex_admin', 'SELECT count(wrapped_key) FROM tokex.credential'), 'ERROR 42501',
          'nor a wrapped data key');
SELECT is(pg_temp.as_role('tokex_admin', format('UPDATE tokex.credential SET ciphertext = %L WHERE id = %s RETURNING id',
                                                '\x00', :crm_carol)),
          'ERROR 42501', 'nor write one');
SELECT is(pg_temp.as_role('tokex_admin', format('UPDATE tokex.credential SET principal = NULL WHERE id = %s RETURNING id', :crm_carol)),
          'ERROR 42501', 'nor move a credential to another person');
SELECT is(pg_temp.as_role('tokex_admin', $$SELECT secret FROM tokex._vault_release('crm', 'carol')$$), 'ERROR 42501',
          'nor release one outside the exchange');
SELECT is(pg_temp.as_role('tokex_admin', 'SELECT count(*) FROM tokex._vault_key_ids()'), 'ERROR 42501',
          'nor call the vault''s internals');
SELECT is(pg_temp.as_role('tokex_admin', format('SELECT tokex.revoke_credential(%s, %L)', :crm_carol, 'by admin')), '',
          'tokex_admin revokes with revoke_credential');
SELECT is(pg_temp.as_role('tokex_admin', 'SELECT tokex.vault_rewrap()'), '0', 'tokex_admin rotates');
SELECT is(pg_temp.as_role('tokex_admin', 'SELECT count(*) FROM tokex.vault_status()'), '1', 'tokex_admin reads vault_status');
SELECT is(pg_temp.as_role('tokex_admin', format('DELETE FROM tokex.credential WHERE id = %s RETURNING id', :crm_carol)),
          :'crm_carol', 'tokex_admin deletes a credential');
SELECT is(pg_temp.as_role('tokex_web', 'SELECT count(*) FROM tokex.credential'), 'ERROR 42501',
          'tokex_web reads nothing of the vault');

SELECT * FROM finish();
ROLLBACK;
