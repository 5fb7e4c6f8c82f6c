-- Key lifecycle: next -> active -> retired -> revoked, what jwks() publishes
-- at each step, which key signs, and which tokens still verify.  Keys are
-- shown by label (k1, k2, ...), never by kid.
\set VERBOSITY default
\set SHOW_CONTEXT never
CREATE EXTENSION tokex;
SET tokex.issuer = 'https://tokex.test';

CREATE TEMP TABLE k (label text PRIMARY KEY, kid text UNIQUE);
CREATE TEMP TABLE tok (label text PRIMARY KEY, token text);
-- create a key and remember it under a label
CREATE FUNCTION pg_temp.mk(label text, alg text DEFAULT 'ES256') RETURNS text LANGUAGE sql AS $$
  INSERT INTO k VALUES (label, tokex.create_key(alg)) RETURNING label
$$;
CREATE FUNCTION pg_temp.kid(l text) RETURNS text LANGUAGE sql AS $$ SELECT kid FROM k WHERE label = l $$;
-- key label, alg and status, in label order
CREATE TEMP VIEW keys AS
  SELECT k.label, t.alg, t.status, (t.activated_at IS NOT NULL) AS activated,
         (t.retired_at IS NOT NULL) AS retired, (t.revoked_at IS NOT NULL) AS revoked,
         EXISTS (SELECT 1 FROM jsonb_array_elements(tokex.jwks()->'keys') j WHERE j->>'kid' = k.kid) AS published
    FROM k JOIN tokex.key t USING (kid) ORDER BY k.label;
-- sign a token (with the active key, or a given label's key) and keep it under a label
CREATE FUNCTION pg_temp.sign(label text, key_label text DEFAULT NULL) RETURNS text LANGUAGE sql AS $$
  INSERT INTO tok VALUES (label, tokex.jwt_sign(
    jsonb_build_object('sub', 'alice', 'exp', floor(extract(epoch FROM now()))::bigint + 600),
    pg_temp.kid(key_label)))
  RETURNING (SELECT k.label FROM k WHERE k.kid = tokex.jwt_decode(token)->'header'->>'kid')
$$;
CREATE FUNCTION pg_temp.verify(l text) RETURNS boolean LANGUAGE sql AS $$
  SELECT tokex.jwt_verify(token)->>'sub' = 'alice' FROM tok WHERE label = l
$$;
-- run a statement; on error say SQLSTATE, message and detail with kids shown as labels
CREATE FUNCTION pg_temp.try(q text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE st text; msg text; det text; r record;
BEGIN
  EXECUTE q;
  RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
  GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, det = PG_EXCEPTION_DETAIL;
  msg := st || ' ' || msg || coalesce(' (' || nullif(det, '') || ')', '');
  FOR r IN SELECT * FROM k LOOP
    msg := replace(msg, r.kid, r.label);
  END LOOP;
  RETURN msg;
END
$$;

-- no keys yet: nothing published, nothing signs
SELECT tokex.jwks();
SELECT pg_temp.try($$SELECT tokex.jwt_sign('{"sub":"alice"}')$$) AS sign_without_keys;

-- the first key is active, later ones wait as next
SELECT pg_temp.mk('k1'), pg_temp.mk('k2', 'EdDSA'), pg_temp.mk('k3', 'ES384');
SELECT * FROM keys;
SELECT jsonb_array_length(tokex.jwks()->'keys') AS published_keys;
SELECT pg_temp.sign('t1') AS t1_signed_by;
SELECT pg_temp.sign('t3', 'k3') AS t3_signed_by;
SELECT pg_temp.verify('t1') AS t1_valid, pg_temp.verify('t3') AS t3_valid;

-- rotation: k2 becomes active, k1 retires but is still published
SELECT tokex.activate_key(pg_temp.kid('k2'));
SELECT * FROM keys;
SELECT pg_temp.sign('t2') AS t2_signed_by;
SELECT pg_temp.verify('t1') AS t1_valid, pg_temp.verify('t2') AS t2_valid;
SELECT pg_temp.try(format('SELECT tokex.jwt_sign(%L, %L)', '{"sub":"alice"}', pg_temp.kid('k1'))) AS sign_with_retired;

-- retire the next key k3; retiring twice is a no-op
SELECT tokex.retire_key(pg_temp.kid('k3'));
SELECT tokex.retire_key(pg_temp.kid('k3'));
SELECT * FROM keys;
SELECT pg_temp.verify('t3') AS t3_valid;

-- revoke k1: unpublished, its tokens fail at once
SELECT tokex.revoke_key(pg_temp.kid('k1'));
SELECT * FROM keys;
SELECT jsonb_array_length(tokex.jwks()->'keys') AS published_keys;
SELECT pg_temp.verify('t1') AS t1_valid;
SELECT pg_temp.verify('t2') AS t2_valid;
SELECT pg_temp.try(format('SELECT tokex.activate_key(%L)', pg_temp.kid('k1'))) AS activate_revoked;
SELECT pg_temp.try(format('SELECT tokex.retire_key(%L)', pg_temp.kid('k1'))) AS retire_revoked;
SELECT pg_temp.try(format('SELECT tokex.revoke_key(%L)', pg_temp.kid('k1'))) AS revoke_again;
SELECT pg_temp.try($$SELECT tokex.activate_key('no-such-kid')$$) AS activate_unknown;
SELECT pg_temp.try($$SELECT tokex.revoke_key('no-such-kid')$$) AS revoke_unknown;

-- a revocation that rolls back leaves the key working (the cache follows the abort)
BEGIN;
SELECT tokex.revoke_key(pg_temp.kid('k2'));
SELECT pg_temp.try($$SELECT pg_temp.verify('t2')$$) AS verify_t2;
SELECT pg_temp.try($$SELECT tokex.jwt_sign('{"sub":"alice"}')$$) AS sign_without_active_key;
ROLLBACK;
SELECT * FROM keys;
SELECT pg_temp.verify('t2') AS t2_valid_after_rollback;

-- a retired key can be re-activated (rolling back a rotation)
SELECT tokex.activate_key(pg_temp.kid('k3'));
SELECT * FROM keys;
SELECT pg_temp.sign('t4') AS t4_signed_by;

-- revoke the active key, then recover with a new one
SELECT tokex.revoke_key(pg_temp.kid('k3'));
SELECT pg_temp.try($$SELECT tokex.jwt_sign('{"sub":"alice"}')$$) AS sign_without_active_key;
SELECT pg_temp.verify('t4') AS t4_valid;
SELECT pg_temp.mk('k4', 'RS256');
SELECT * FROM keys;
SELECT pg_temp.sign('t5') AS t5_signed_by;
SELECT label, pg_temp.verify(label) AS valid FROM tok WHERE label IN ('t2', 't5') ORDER BY label;

-- summary
SELECT status, count(*) FROM tokex.key GROUP BY status ORDER BY status;
SELECT count(*) FILTER (WHERE j ?| ARRAY['d', 'p', 'q', 'dp', 'dq', 'qi']) AS private_members,
       count(*) AS published_keys
  FROM jsonb_array_elements(tokex.jwks()->'keys') j;
SELECT count(*) AS active_keys FROM tokex.key WHERE status = 'active';

DROP VIEW keys;
DROP EXTENSION tokex CASCADE;
