-- An attacker who shares the session's search_path cannot steer tokex: an
-- application role calls the public functions with a search_path that puts
-- its own schema and pg_temp first, holding look-alike operators (=, <>, ->>,
-- @>, ? on text, jsonb, uuid and timestamptz), look-alike functions (now,
-- lower, array_length, jsonb_build_object ...) and temporary tables named
-- like tokex's.  Every look-alike raises if it is ever reached; the answers
-- must be the same as with a clean search_path.  (Every SECURITY DEFINER
-- function pins search_path = pg_catalog, tokex, pg_temp: 02_privileges.sql.)
\ir preamble.psql
SELECT plan(10);

SELECT tokex.create_key() IS NOT NULL AS k \gset
INSERT INTO tokex.identity (id, kind) VALUES ('alice', 'human'), ('asst', 'agent'), ('mallory', 'agent');
INSERT INTO tokex.resource (audience, scopes) VALUES ('cal', '{cal.read}');
INSERT INTO tokex.delegation (principal, delegate, scopes) VALUES ('alice', 'asst', '{cal.read}');
INSERT INTO tokex.policy (effect, subject_kind, actor_kind) VALUES ('allow', 'human', 'agent');
CREATE TEMP TABLE fx AS
SELECT tokex.start_session('alice', 'asst', '{cal.read}')->>'session_token' AS st,
       tokex.identity_token('asst') AS at, tokex.identity_token('mallory') AS mt;

CREATE ROLE tokex_t92_app NOLOGIN IN ROLE tokex_app;
CREATE SCHEMA t92_evil;
GRANT USAGE ON SCHEMA t92_evil TO PUBLIC;
GRANT SELECT ON fx TO tokex_t92_app;

-- the look-alikes: each raises when reached
CREATE FUNCTION t92_evil.hit() RETURNS boolean LANGUAGE plpgsql AS
  $f$ BEGIN RAISE EXCEPTION 'hijacked: a look-alike ran as %', current_user; END $f$;
CREATE FUNCTION t92_evil.b(a text, b text) RETURNS boolean LANGUAGE sql AS $f$ SELECT t92_evil.hit() $f$;
CREATE FUNCTION t92_evil.b(a jsonb, b jsonb) RETURNS boolean LANGUAGE sql AS $f$ SELECT t92_evil.hit() $f$;
CREATE FUNCTION t92_evil.b(a jsonb, b text) RETURNS boolean LANGUAGE sql AS $f$ SELECT t92_evil.hit() $f$;
CREATE FUNCTION t92_evil.b(a uuid, b uuid) RETURNS boolean LANGUAGE sql AS $f$ SELECT t92_evil.hit() $f$;
CREATE FUNCTION t92_evil.b(a timestamptz, b timestamptz) RETURNS boolean LANGUAGE sql AS $f$ SELECT t92_evil.hit() $f$;
CREATE FUNCTION t92_evil.t(a jsonb, b text) RETURNS text LANGUAGE sql AS $f$ SELECT t92_evil.hit()::text $f$;
CREATE OPERATOR t92_evil.= (LEFTARG = text, RIGHTARG = text, FUNCTION = t92_evil.b);
CREATE OPERATOR t92_evil.<> (LEFTARG = text, RIGHTARG = text, FUNCTION = t92_evil.b);
CREATE OPERATOR t92_evil.= (LEFTARG = uuid, RIGHTARG = uuid, FUNCTION = t92_evil.b);
CREATE OPERATOR t92_evil.< (LEFTARG = timestamptz, RIGHTARG = timestamptz, FUNCTION = t92_evil.b);
CREATE OPERATOR t92_evil.> (LEFTARG = timestamptz, RIGHTARG = timestamptz, FUNCTION = t92_evil.b);
CREATE OPERATOR t92_evil.@> (LEFTARG = jsonb, RIGHTARG = jsonb, FUNCTION = t92_evil.b);
CREATE OPERATOR t92_evil.? (LEFTARG = jsonb, RIGHTARG = text, FUNCTION = t92_evil.b);
CREATE OPERATOR t92_evil.->> (LEFTARG = jsonb, RIGHTARG = text, FUNCTION = t92_evil.t);
CREATE FUNCTION t92_evil.now() RETURNS timestamptz LANGUAGE sql AS $f$ SELECT t92_evil.hit()::text::timestamptz $f$;
CREATE FUNCTION t92_evil.lower(text) RETURNS text LANGUAGE sql AS $f$ SELECT t92_evil.hit()::text $f$;
CREATE FUNCTION t92_evil.array_length(anyarray, int) RETURNS int LANGUAGE sql AS $f$ SELECT t92_evil.hit()::int $f$;
CREATE FUNCTION t92_evil.jsonb_build_object(text, text) RETURNS jsonb LANGUAGE sql AS $f$ SELECT t92_evil.hit()::text::jsonb $f$;
CREATE FUNCTION t92_evil.format(text, text) RETURNS text LANGUAGE sql AS $f$ SELECT t92_evil.hit()::text $f$;
-- and temporary tables named like tokex's, which would admit mallory
CREATE TEMP TABLE identity AS SELECT 'mallory'::text AS id, 'agent'::text AS kind, 'active'::text AS status;
CREATE TEMP TABLE delegation AS SELECT 'alice'::text AS principal, 'mallory'::text AS delegate,
                                       '{cal.read}'::text[] AS scopes, NULL::timestamptz AS revoked_at;
CREATE TEMP TABLE revoked_token (key bytea, jti text);
CREATE TEMP TABLE policy AS SELECT 'allow'::text AS effect;
GRANT SELECT ON identity, delegation, revoked_token, policy TO PUBLIC;

-- the calls, with the attacker's search_path while they run
CREATE FUNCTION pg_temp.x(actor text) RETURNS jsonb LANGUAGE sql
SET search_path = t92_evil, pg_temp, pg_catalog, tokex AS $f$
  SELECT tokex.exchange((SELECT st FROM fx), 'urn:ietf:params:oauth:token-type:jwt', actor,
                        'urn:ietf:params:oauth:token-type:jwt', audience => 'cal', scope => 'cal.read')
$f$;
CREATE FUNCTION pg_temp.i(t text) RETURNS jsonb LANGUAGE sql
SET search_path = t92_evil, pg_temp, pg_catalog, tokex AS $f$ SELECT tokex.introspect(t) $f$;
CREATE FUNCTION pg_temp.v(t text) RETURNS jsonb LANGUAGE sql
SET search_path = t92_evil, pg_temp, pg_catalog, tokex AS $f$ SELECT tokex.jwt_verify(t) $f$;
CREATE FUNCTION pg_temp.s() RETURNS jsonb LANGUAGE sql
SET search_path = t92_evil, pg_temp, pg_catalog, tokex AS $f$ SELECT tokex.start_session('alice', 'asst', '{cal.read}') $f$;
CREATE FUNCTION pg_temp.u(t text) RETURNS void LANGUAGE sql
SET search_path = t92_evil, pg_temp, pg_catalog, tokex AS $f$ SELECT tokex.record_use(t, 'read', 'ok') $f$;

SET LOCAL ROLE tokex_t92_app;
SELECT pg_temp.x((SELECT at FROM fx)) AS granted \gset
SELECT ok(:'granted'::jsonb ? 'access_token', 'the delegated agent is granted, look-alikes everywhere');
SELECT is(:'granted'::jsonb->>'scope', 'cal.read', '... with the scope the delegation allows');
SELECT is(pg_temp.x((SELECT mt FROM fx))->>'error', 'invalid_grant',
          'an agent admitted only by temporary tables named like tokex''s is refused');
SELECT is(pg_temp.i(:'granted'::jsonb->>'access_token')->>'active', 'true', 'introspection: the token is active');
SELECT is(pg_temp.i('not.a.token')->>'active', 'false', 'introspection: garbage is inactive');
SELECT is(pg_temp.v(:'granted'::jsonb->>'access_token')->>'sub', 'alice', 'jwt_verify reads the claims');
SELECT ok(pg_temp.s() ? 'session_token', 'start_session works');
SELECT lives_ok(format('SELECT pg_temp.u(%L)', :'granted'::jsonb->>'access_token'), 'record_use works');
RESET ROLE;
SELECT is((SELECT count(*) FROM tokex.audit WHERE actor = 'mallory' AND decision = 'granted'), 0::bigint,
          'no grant for mallory in the audit');
SELECT is((SELECT count(*) FROM tokex.audit WHERE actor = 'asst' AND decision = 'granted' AND operation = 'exchange'),
          1::bigint, 'one grant for the delegated agent');

SELECT * FROM finish();
ROLLBACK;
