-- PL/Proxy sharding prototype (docs/scale-out.md, stage 2): the router
-- database.  It holds no tokex data: PL/Proxy functions that run tokex on
-- the shard a person hashes to (hashtext(person id), masked to the
-- partition count), or on all shards, plus two small tables: the kid ->
-- shard map and the log of global revocations.  Needs CREATE EXTENSION
-- plproxy and a SQL/MED server tokex_shards (p0 .. p<n-1>, n a power of
-- two) with a user mapping; see test/shard/run.sh.
CREATE SCHEMA router;

-- a JWT segment (0 header, 1 payload) as jsonb, unverified: routing only;
-- the shard verifies.  NULL when it cannot be read.
CREATE FUNCTION router.jwt_part(token text, n int) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
  s text := translate(split_part(token, '.', n + 1), '-_', '+/');
BEGIN
  s := s || repeat('=', (4 - length(s) % 4) % 4);
  RETURN convert_from(decode(s, 'base64'), 'UTF8')::jsonb;
EXCEPTION WHEN OTHERS THEN
  RETURN NULL;
END
$$;

-- The person at the root of the chain: tokex tokens name them in sub at every depth.
CREATE FUNCTION router.person_hash(token text) RETURNS int
LANGUAGE sql IMMUTABLE AS $$ SELECT hashtext(router.jwt_part(token, 1)->>'sub') $$;

-- ---- writes routed by the person -------------------------------------------------
CREATE FUNCTION router.add_person(id text) RETURNS boolean AS $$
  CLUSTER 'tokex_shards'; RUN ON hashtext(id);
  SELECT tokex_shard.add_identity(id, 'human');
$$ LANGUAGE plproxy;

CREATE FUNCTION router.delegate(principal text, delegate text, scopes text[]) RETURNS bigint AS $$
  CLUSTER 'tokex_shards'; RUN ON hashtext(principal);
  TARGET tokex_shard.delegate;
$$ LANGUAGE plproxy;

CREATE FUNCTION router.session_token(principal text, agent text) RETURNS text AS $$
  CLUSTER 'tokex_shards'; RUN ON hashtext(principal);
  TARGET tokex_shard.session_token;
$$ LANGUAGE plproxy;

-- An agent's actor token, from the shard of the person it will act for (each
-- shard verifies only its own keys; see docs/scale-out.md on agent credentials).
CREATE FUNCTION router.actor_token(agent text, for_person text) RETURNS text AS $$
  CLUSTER 'tokex_shards'; RUN ON hashtext(for_person);
  SELECT tokex_shard.actor_token(agent);
$$ LANGUAGE plproxy;

-- tokex.exchange, routed by the subject token's person
CREATE FUNCTION router.exchange(subject_token text, actor_token text, audience text, scope text)
RETURNS jsonb AS $$
  CLUSTER 'tokex_shards'; RUN ON router.person_hash(subject_token);
  SELECT tokex.exchange(subject_token, 'urn:ietf:params:oauth:token-type:jwt',
                        actor_token, 'urn:ietf:params:oauth:token-type:jwt', audience, NULL, scope);
$$ LANGUAGE plproxy;

-- ---- global writes: agents on every shard ----------------------------------------
CREATE FUNCTION router.add_agent(id text) RETURNS SETOF boolean AS $$
  CLUSTER 'tokex_shards'; RUN ON ALL;
  SELECT tokex_shard.add_identity(id, 'agent');
$$ LANGUAGE plproxy;

-- ---- keys: the JWKS is the union; introspection goes to the shard that signed ----
CREATE FUNCTION router.shard_jwks() RETURNS SETOF jsonb AS $$
  CLUSTER 'tokex_shards'; RUN ON ALL;
  SELECT tokex.jwks();
$$ LANGUAGE plproxy;

CREATE FUNCTION router.jwks() RETURNS jsonb
LANGUAGE sql AS $$
  SELECT jsonb_build_object('keys', COALESCE(jsonb_agg(k ORDER BY k->>'kid'), '[]'))
    FROM router.shard_jwks() s, jsonb_array_elements(s->'keys') k
$$;

CREATE TABLE router.key (kid text PRIMARY KEY, shard int NOT NULL);

CREATE FUNCTION router.shard_keys(OUT shard int, OUT kid text) RETURNS SETOF record AS $$
  CLUSTER 'tokex_shards'; RUN ON ALL;
  TARGET tokex_shard.keys;
$$ LANGUAGE plproxy;

-- run whenever a shard creates or revokes a key
CREATE FUNCTION router.refresh_keys() RETURNS bigint
LANGUAGE sql AS $$
  DELETE FROM router.key;
  INSERT INTO router.key SELECT kid, shard FROM router.shard_keys();
  SELECT count(*) FROM router.key
$$;

CREATE FUNCTION router._introspect(token text, shard int) RETURNS jsonb AS $$
  CLUSTER 'tokex_shards'; RUN ON shard;
  SELECT tokex.introspect(token);
$$ LANGUAGE plproxy;

-- RFC 7662: a token whose kid no shard published is inactive without asking anyone
CREATE FUNCTION router.introspect(token text) RETURNS jsonb
LANGUAGE sql AS $$
  SELECT COALESCE((SELECT router._introspect(token, k.shard) FROM router.key k
                    WHERE k.kid = router.jwt_part(token, 0)->>'kid'), '{"active": false}')
$$;

-- ---- global revocation of an identity (an agent acts for people on every shard) ----
CREATE TABLE router.revocation (
  id bigserial PRIMARY KEY,
  target text NOT NULL,
  reason text,
  at timestamptz NOT NULL DEFAULT clock_timestamp(),
  done_at timestamptz,           -- NULL: pending, retried by router.apply_revocations()
  last_error text
);

CREATE FUNCTION router._revoke_identity_at(id text, reason text, at timestamptz) RETURNS SETOF boolean AS $$
  CLUSTER 'tokex_shards'; RUN ON ALL;
  TARGET tokex_shard.revoke_identity_at;
$$ LANGUAGE plproxy;

-- Apply every pending revocation on all shards; one that fails (a shard is
-- down) stays pending with its error.  Idempotent on the shards, so retrying
-- is always safe.  Returns how many are still pending.
CREATE FUNCTION router.apply_revocations() RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
  r router.revocation;
BEGIN
  FOR r IN SELECT * FROM router.revocation WHERE done_at IS NULL ORDER BY id LOOP
    BEGIN
      PERFORM count(*) FROM router._revoke_identity_at(r.target, r.reason, r.at);
      UPDATE router.revocation SET done_at = clock_timestamp(), last_error = NULL WHERE id = r.id;
    EXCEPTION WHEN OTHERS THEN
      UPDATE router.revocation SET last_error = SQLERRM WHERE id = r.id;
    END;
  END LOOP;
  RETURN (SELECT count(*) FROM router.revocation WHERE done_at IS NULL);
END
$$;

-- Revoke an identity everywhere: the intent is recorded (and commits with
-- the caller even if a shard is down), then applied.  Returns true when
-- every shard has applied it, false when it is pending.
CREATE FUNCTION router.revoke_identity(id text, reason text) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
  rid bigint;
BEGIN
  INSERT INTO router.revocation (target, reason) VALUES (id, reason) RETURNING router.revocation.id INTO rid;
  PERFORM router.apply_revocations();
  RETURN (SELECT done_at IS NOT NULL FROM router.revocation WHERE router.revocation.id = rid);
END
$$;

CREATE FUNCTION router.counts(who text, OUT shard int, OUT audit_rows bigint, OUT revocations bigint)
RETURNS SETOF record AS $$
  CLUSTER 'tokex_shards'; RUN ON ALL;
  TARGET tokex_shard.counts;
$$ LANGUAGE plproxy;
