-- Garbage for test/limits/flood.sh: gen(i) makes the i-th hostile token,
-- flood(from, n) sends n of them through tokex.jwt_verify, and every seventh
-- through tokex.exchange and tokex.introspect, and counts what came back.
-- Loaded into the flood's own session (pg_temp), so one backend sees it all.
\set ON_ERROR_STOP 1

CREATE FUNCTION pg_temp.b64u(t text) RETURNS text LANGUAGE sql IMMUTABLE AS $$
  SELECT translate(encode(convert_to(t, 'UTF8'), 'base64'), E'+/=\n', '-_')
$$;

-- random characters of an alphabet
CREATE FUNCTION pg_temp.rnd(n int, alphabet text DEFAULT 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_')
RETURNS text LANGUAGE sql VOLATILE AS $$
  SELECT string_agg(substr(alphabet, 1 + floor(random() * length(alphabet))::int, 1), '')
    FROM generate_series(1, greatest(n, 0))
$$;

-- the i-th hostile token; valid is a real token of this database's issuer
CREATE FUNCTION pg_temp.gen(i int, valid text) RETURNS text LANGUAGE plpgsql VOLATILE AS $$
DECLARE
  d int;
  cut int := 1 + floor(random() * (length(valid) - 1))::int;  -- never the whole token
  c text := pg_temp.rnd(1);
BEGIN
  CASE i % 10
    WHEN 0 THEN  -- random segments
      RETURN pg_temp.rnd((random() * 300)::int) || '.' || pg_temp.rnd((random() * 300)::int) || '.'
             || pg_temp.rnd((random() * 120)::int);
    WHEN 1 THEN  -- truncated
      RETURN left(valid, cut);
    WHEN 2 THEN  -- one character changed
      IF c = substr(valid, cut, 1) THEN
        c := CASE WHEN c = 'A' THEN 'B' ELSE 'A' END;
      END IF;
      RETURN overlay(valid PLACING c FROM cut FOR 1);
    WHEN 3 THEN  -- oversized, around the 64 KiB limit
      RETURN pg_temp.b64u('{"alg":"ES256"}') || '.' || repeat('e', 65400 + (random() * 400)::int) || '.AAAA';
    WHEN 4 THEN  -- deeply nested header
      d := 20 + (random() * 2000)::int;
      RETURN pg_temp.b64u('{"alg":"ES256","x":' || repeat('[', d) || repeat(']', d) || '}') || '.e30.AAAA';
    WHEN 5 THEN  -- a payload of thousands of members, chosen by its iss before any signature
      RETURN pg_temp.b64u('{"alg":"ES256"}') || '.' ||
             pg_temp.b64u('{"iss":"https://tokex.flood.test","a":[' || repeat('0,', 3000 + (random() * 3000)::int) || '0]}')
             || '.' || pg_temp.rnd(86);
    WHEN 6 THEN  -- alg games: none, HS256 with the public key, crit
      RETURN pg_temp.b64u((ARRAY['{"alg":"none"}', '{"alg":"HS256"}', '{"alg":"ES256","crit":["x"],"x":1}',
                                 '{"alg":"EdDSA"}', '{"alg":"RS256","kid":"' || pg_temp.rnd(300) || '"}'])
                          [1 + (i / 10) % 5])
             || '.' || split_part(valid, '.', 2) || '.' || split_part(valid, '.', 3);
    WHEN 7 THEN  -- not base64url at all, multibyte characters included
      RETURN pg_temp.rnd((random() * 400)::int, 'ab.=+/ é€☃' || chr(1) || chr(127));
    WHEN 8 THEN  -- base64url of JSON-looking junk
      RETURN pg_temp.b64u(pg_temp.rnd((random() * 200)::int, '{}[]":,0123456789truefalsnul ')) || '.'
             || pg_temp.b64u(pg_temp.rnd((random() * 400)::int, '{}[]":,0123456789truefalsnul ')) || '.'
             || pg_temp.rnd(86);
    ELSE  -- claims nested as deep as they may be: act chains
      d := 1 + (random() * 40)::int;
      RETURN pg_temp.b64u('{"alg":"ES256"}') || '.' ||
             pg_temp.b64u('{"iss":"https://tokex.flood.test","sub":"alice","act":' || repeat('{"sub":"a","act":', d)
                          || '{"sub":"b"}' || repeat('}', d) || '}')
             || '.' || pg_temp.rnd(86);
  END CASE;
END $$;

-- n tokens from the from-th: {"jwt_verify 28000": count, "exchange invalid_grant": count, ...}
CREATE FUNCTION pg_temp.flood(start int, n int, valid text, actor text) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
  counts jsonb := '{}';
  t text;
  k text;
  r jsonb;
BEGIN
  FOR i IN start .. start + n - 1 LOOP
    t := pg_temp.gen(i, valid);
    BEGIN
      PERFORM tokex.jwt_verify(t);
      k := 'jwt_verify ok';
    EXCEPTION WHEN OTHERS THEN
      k := 'jwt_verify ' || SQLSTATE;
    END;
    counts := jsonb_set(counts, ARRAY[k], to_jsonb(coalesce((counts->>k)::int, 0) + 1));
    IF i % 7 = 0 THEN  -- coprime to the ten kinds: every kind reaches them
      BEGIN
        r := tokex.exchange(t, 'urn:ietf:params:oauth:token-type:jwt', actor,
                            'urn:ietf:params:oauth:token-type:jwt', audience => 'cal');
        k := 'exchange ' || coalesce(r->>'error', 'granted');
      EXCEPTION WHEN OTHERS THEN
        k := 'exchange raised ' || SQLSTATE;
      END;
      counts := jsonb_set(counts, ARRAY[k], to_jsonb(coalesce((counts->>k)::int, 0) + 1));
      BEGIN
        k := 'introspect active=' || (tokex.introspect(t)->>'active');
      EXCEPTION WHEN OTHERS THEN
        k := 'introspect raised ' || SQLSTATE;
      END;
      counts := jsonb_set(counts, ARRAY[k], to_jsonb(coalesce((counts->>k)::int, 0) + 1));
    END IF;
  END LOOP;
  RETURN counts;
END $$;

-- this backend's private resident memory (RssAnon), kB: VmRSS also counts
-- the shared buffers the backend has touched, which grows with every page read
CREATE FUNCTION pg_temp.rss() RETURNS bigint LANGUAGE sql AS $$
  SELECT substring(pg_read_file('/proc/self/status') FROM 'RssAnon:\s*(\d+)')::bigint
$$;
