-- A failed client-secret check costs the same whether the client id is known
-- or not (issue 8, item 6): a stored hash with fewer PBKDF2 iterations than
-- tokex.secret_hash_iterations is padded up to it, and an unknown client
-- (stored hash '') costs exactly tokex.secret_hash_iterations.  The cost is
-- counted in PBKDF2 iterations (tokex._pbkdf2_iterations()), which wall-clock
-- noise cannot blur; test/http/client-auth.test.mjs times it end to end.
\ir preamble.psql
SELECT plan(9);

SET LOCAL tokex.secret_hash_iterations = 100000;
SELECT tokex._hash_secret('right') AS low \gset
SET LOCAL tokex.secret_hash_iterations = 200000;
SELECT tokex._hash_secret('right') AS cur \gset
SET LOCAL tokex.secret_hash_iterations = 300000;
SELECT tokex._hash_secret('right') AS high \gset
SET LOCAL tokex.secret_hash_iterations = 200000;

-- PBKDF2 iterations one check runs
CREATE FUNCTION pg_temp.work(secret text, stored text) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
  before bigint := tokex._pbkdf2_iterations();
BEGIN
  PERFORM tokex._verify_secret(secret, stored);
  RETURN tokex._pbkdf2_iterations() - before;
END
$$;

SELECT ok(tokex._verify_secret('right', :'low') AND tokex._verify_secret('right', :'cur')
          AND tokex._verify_secret('right', :'high'), 'hashes of every count verify their secret');
SELECT ok(NOT tokex._verify_secret('right', '') AND NOT tokex._verify_secret('', ''),
          'an unknown client (no stored hash) never verifies');

SELECT is(pg_temp.work('wrong', :'cur'), 200000::bigint, 'a failure at the configured count costs that count');
SELECT is(pg_temp.work('wrong', :'low'), 200000::bigint, 'a failure against fewer iterations is padded to it');
SELECT is(pg_temp.work('wrong', ''), 200000::bigint, 'an unknown client costs the same');
SELECT is(pg_temp.work('wrong', :'high'), 300000::bigint,
          'a hash with more iterations costs its own count (until its client authenticates and is rehashed)');
SELECT is(pg_temp.work('other', :'low'), 200000::bigint, 'every failure, not only the first');

-- a success is not padded, and a checked secret is not hashed again
SELECT is(pg_temp.work('right', :'low'), 0::bigint, 'a secret verified before costs nothing (backend cache)');
SELECT tokex._hash_secret('fresh') AS fresh \gset
SELECT is(pg_temp.work('fresh', :'fresh'), 0::bigint, 'nor does a secret this backend has just hashed');

SELECT * FROM finish();
ROLLBACK;
