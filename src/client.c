/*
 * client.c — OAuth client authentication primitives for the HTTP face:
 * salted PBKDF2-HMAC-SHA256 secret hashes compared in constant time, and
 * RFC 7523 client assertions verified against a client's registered JWKS.
 *
 * PBKDF2 is slow on purpose, and PostgREST asks on every request, so a
 * backend remembers the SHA-256 of a secret it has already checked against
 * a given stored hash.  The stored hash is read from tokex.client on every
 * request, so a changed or removed secret never matches a stale entry.
 *
 * A failed check must not tell whether the client id exists: an unknown
 * client (stored hash '') costs tokex.secret_hash_iterations, and a known
 * client whose hash has fewer iterations is padded up to that count, so every
 * failure costs max(stored, configured) iterations.  The caller rehashes a
 * secret at the configured count once it authenticates, so hashes converge
 * and the max is the configured count (see _authenticate).
 *
 * PBKDF2 raises on failure: everything the JOSE core hands back here (the
 * decoded salt and hash, key sets) is owned by the call's memory context
 * from the start (tokex_track), so that ERROR leaks nothing.  OpenSSL's own
 * objects (the PBKDF2 and digest contexts) live only inside its one-shot
 * calls, which return before anything can raise.
 */
#include "tokex.h"

#include "utils/jsonb.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#define SECRET_SALT_LEN	16
#define SECRET_HASH_LEN	32
#define SECRET_CACHE	32

int			tokex_secret_iterations = 600000;

typedef struct SecretCacheEntry
{
	char		stored[160];	/* the hash string it was checked against */
	uint8		digest[32];		/* SHA-256 of the secret that matched it */
} SecretCacheEntry;

static SecretCacheEntry secret_cache[SECRET_CACHE];
static int	secret_cache_next = 0;

/* PBKDF2 iterations this backend has run: what the cost tests count */
static int64 pbkdf2_work = 0;

static void
pbkdf2(const char *secret, size_t len, const uint8 *salt, size_t saltlen, int iter,
	   uint8 out[SECRET_HASH_LEN])
{
	if (PKCS5_PBKDF2_HMAC(secret, (int) len, salt, (int) saltlen, iter, EVP_sha256(),
						  SECRET_HASH_LEN, out) != 1)
		ereport(ERROR, (errcode(ERRCODE_INTERNAL_ERROR), errmsg("PBKDF2 failed")));
	pbkdf2_work += iter;
}

static void
cache_secret(const char *stored, const uint8 digest[32])
{
	SecretCacheEntry *e = &secret_cache[secret_cache_next];

	if (strlen(stored) >= sizeof(e->stored))
		return;
	strlcpy(e->stored, stored, sizeof(e->stored));
	memcpy(e->digest, digest, 32);
	secret_cache_next = (secret_cache_next + 1) % SECRET_CACHE;
}

static char *
b64(const uint8 *p, size_t n)
{
	return tokex_adopt(jose_b64url_encode(p, n, NULL));
}

/* base64url -> bytes owned by the current memory context, or NULL if not base64url */
static uint8 *
unb64(const char *s, size_t *len)
{
	uint8_t    *out;
	jose_error	err;

	if (jose_b64url_decode(s, strlen(s), 64, &out, len, &err) < 0)
		return NULL;
	return tokex_track(out, *len, tokex_release_secret);
}

/* tokex._hash_secret(secret) -> 'pbkdf2-sha256$<iterations>$<salt>$<hash>' */
PG_FUNCTION_INFO_V1(tokex_hash_secret);
Datum
tokex_hash_secret(PG_FUNCTION_ARGS)
{
	text	   *secret = PG_GETARG_TEXT_PP(0);
	uint8		salt[SECRET_SALT_LEN];
	uint8		hash[SECRET_HASH_LEN];
	uint8		digest[32];
	char	   *out;

	if (RAND_bytes(salt, sizeof(salt)) != 1)
		ereport(ERROR, (errcode(ERRCODE_INTERNAL_ERROR), errmsg("no random bytes for a salt")));
	pbkdf2(VARDATA_ANY(secret), VARSIZE_ANY_EXHDR(secret), salt, sizeof(salt),
		   tokex_secret_iterations, hash);
	out = psprintf("pbkdf2-sha256$%d$%s$%s", tokex_secret_iterations,
				   b64(salt, sizeof(salt)), b64(hash, sizeof(hash)));
	OPENSSL_cleanse(hash, sizeof(hash));
	/* a rehash on authentication is followed by more requests from this backend */
	tokex_sha256(VARDATA_ANY(secret), VARSIZE_ANY_EXHDR(secret), digest);
	cache_secret(out, digest);
	OPENSSL_cleanse(digest, sizeof(digest));
	PG_RETURN_TEXT_P(cstring_to_text(out));
}

/*
 * tokex._verify_secret(secret, stored) -> whether secret matches the stored
 * hash; stored = '' stands for a client that has none (or does not exist).
 */
PG_FUNCTION_INFO_V1(tokex_verify_secret);
Datum
tokex_verify_secret(PG_FUNCTION_ARGS)
{
	text	   *secret = PG_GETARG_TEXT_PP(0);
	char	   *stored = text_to_cstring(PG_GETARG_TEXT_PP(1));
	uint8		digest[32];
	uint8		hash[SECRET_HASH_LEN];
	uint8	   *salt = NULL,
			   *want = NULL;
	size_t		saltlen = 0,
				wantlen = 0;
	int			iter;
	char		saltb64[64],
				hashb64[64];
	bool		ok;

	tokex_sha256(VARDATA_ANY(secret), VARSIZE_ANY_EXHDR(secret), digest);
	if (stored[0] == '\0')
	{
		/* nothing to match: spend what a failed check of a known client spends */
		static const uint8 nosalt[SECRET_SALT_LEN];

		pbkdf2(VARDATA_ANY(secret), VARSIZE_ANY_EXHDR(secret), nosalt, sizeof(nosalt),
			   tokex_secret_iterations, hash);
		OPENSSL_cleanse(hash, sizeof(hash));
		PG_RETURN_BOOL(false);
	}
	for (int i = 0; i < SECRET_CACHE; i++)
		if (strcmp(secret_cache[i].stored, stored) == 0 &&
			CRYPTO_memcmp(secret_cache[i].digest, digest, 32) == 0)
			PG_RETURN_BOOL(true);

	if (sscanf(stored, "pbkdf2-sha256$%d$%63[A-Za-z0-9_-]$%63[A-Za-z0-9_-]", &iter, saltb64, hashb64) != 3 ||
		iter < 1 || iter > 10000000 ||
		(salt = unb64(saltb64, &saltlen)) == NULL ||
		(want = unb64(hashb64, &wantlen)) == NULL ||
		wantlen != SECRET_HASH_LEN)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("malformed client secret hash")));
	pbkdf2(VARDATA_ANY(secret), VARSIZE_ANY_EXHDR(secret), salt, saltlen, iter, hash);
	ok = CRYPTO_memcmp(hash, want, SECRET_HASH_LEN) == 0;
	/* a failure costs at least the configured count, like an unknown client */
	if (!ok && iter < tokex_secret_iterations)
		pbkdf2(VARDATA_ANY(secret), VARSIZE_ANY_EXHDR(secret), salt, saltlen,
			   tokex_secret_iterations - iter, hash);
	OPENSSL_cleanse(hash, sizeof(hash));
	if (ok)
		cache_secret(stored, digest);
	PG_RETURN_BOOL(ok);
}

/*
 * tokex._verify_assertion(token, jwks) -> claims, for RFC 7523
 * private_key_jwt: the assertion must verify against the client's own JWKS
 * and carry a valid exp (the caller checks iss, sub, aud and jti).
 * Failure: 28000 "invalid token".
 */
PG_FUNCTION_INFO_V1(tokex_verify_assertion);
Datum
tokex_verify_assertion(PG_FUNCTION_ARGS)
{
	text	   *token = PG_GETARG_TEXT_PP(0);
	Jsonb	   *jb = PG_GETARG_JSONB_P(1);
	char	   *jwkstext = JsonbToCString(NULL, &jb->root, VARSIZE(jb));
	jose_error	err;
	jose_key  **keys;
	size_t		nkeys;
	jose_jwt_rules rules = {0};
	jose_jwt   *jwt;

	if (jose_jwks_parse_text(jwkstext, strlen(jwkstext), &keys, &nkeys, &err) < 0)
		tokex_invalid_token(&err);
	rules.keys.keys = tokex_track(keys, nkeys, tokex_release_keys);
	rules.keys.nkeys = nkeys;
	rules.now = tokex_now();
	rules.skew = tokex_clock_skew;
	rules.require_exp = true;
	jwt = tokex_track(jose_jwt_verify(VARDATA_ANY(token), VARSIZE_ANY_EXHDR(token), &rules, &err),
					  0, tokex_release_jwt);
	if (jwt == NULL)
		tokex_invalid_token(&err);
	PG_RETURN_DATUM(tokex_json_to_jsonb(jwt->payload));
}

/* tokex._random_secret() -> 256 random bits, base64url: a new client secret */
PG_FUNCTION_INFO_V1(tokex_random_secret);
Datum
tokex_random_secret(PG_FUNCTION_ARGS)
{
	uint8		buf[32];
	char	   *s;

	if (RAND_bytes(buf, sizeof(buf)) != 1)
		ereport(ERROR, (errcode(ERRCODE_INTERNAL_ERROR), errmsg("no random bytes for a secret")));
	s = b64(buf, sizeof(buf));
	OPENSSL_cleanse(buf, sizeof(buf));
	PG_RETURN_TEXT_P(cstring_to_text(s));
}

/* tokex._pbkdf2_iterations() -> PBKDF2 iterations run by this backend so far */
PG_FUNCTION_INFO_V1(tokex_pbkdf2_iterations);
Datum
tokex_pbkdf2_iterations(PG_FUNCTION_ARGS)
{
	PG_RETURN_INT64(pbkdf2_work);
}
