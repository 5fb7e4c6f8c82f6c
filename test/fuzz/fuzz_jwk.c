/*
 * fuzz_jwk.c — one JWK as tokex.trust_issuer and the key store read it:
 * the JSON text, then jose_jwk_parse with and without private members,
 * bound to an algorithm chosen from the input.  The input is the JWK text
 * itself, so any JWK file is a seed.
 *
 * Oracles: an accepted key is bound to one algorithm of its type, has a
 * kid and a 43-character thumbprint, may verify or sign as its key_ops
 * say; its public JWK parses back to a key with the same thumbprint and
 * algorithm; a key read with its private half signs a message that its
 * public half verifies (a private half that is not the public key's
 * would sign under another key's kid).
 */
#include "fuzz.h"

int			LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
check_key(const jose_key *key, bool allow_private)
{
	jose_error	err = fuzz_err();
	json_t	   *pub;
	jose_key   *back;
	static const uint8_t msg[] = "eyJhbGciOiJFUzI1NiJ9.e30";

	FUZZ_ASSERT(key->alg != JOSE_ALG_UNKNOWN && jose_alg_kty(key->alg) == key->kty,
				"key bound to alg %d of another type", (int) key->alg);
	FUZZ_ASSERT(key->kid && key->kid[0] && strlen(key->thumbprint) == 43, "kid/thumbprint");
	FUZZ_ASSERT(key->ops != 0, "a key for nothing");
	FUZZ_ASSERT(allow_private || !key->has_private || key->kty == JOSE_KTY_OCT,
				"private half read when not allowed");
	if (key->kty == JOSE_KTY_OCT)
		return;

	pub = jose_jwk_public(key, &err);
	FUZZ_ASSERT(pub != NULL, "no public JWK: %s", err.detail);
	err = fuzz_err();
	back = jose_jwk_parse(pub, key->alg, false, &err);
	FUZZ_ASSERT(back != NULL, "own public JWK refused: %s", err.detail);
	FUZZ_ASSERT(strcmp(back->thumbprint, key->thumbprint) == 0, "thumbprint changed");
	FUZZ_ASSERT(back->alg == key->alg && !back->has_private, "public JWK changed the key");
	json_decref(pub);

	if (key->has_private && (key->ops & JOSE_OP_SIGN))
	{
		uint8_t    *sig = NULL;
		size_t		siglen = 0;

		err = fuzz_err();
		FUZZ_ASSERT(jose_sign_raw(key, msg, sizeof(msg) - 1, &sig, &siglen, &err) == 0,
					"an accepted private key cannot sign: %s", err.detail);
		err = fuzz_err();
		FUZZ_ASSERT(jose_verify_raw(back, key->alg, msg, sizeof(msg) - 1, sig, siglen, &err) == 0,
					"private half does not match the public half: %s", err.detail);
		free(sig);
	}
	jose_key_free(back);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* RSA and oct JWKs without "alg" take the caller's default: vary it */
	static const jose_alg dflts[] = {JOSE_ALG_UNKNOWN, JOSE_ALG_RS256, JOSE_ALG_HS256,
	JOSE_ALG_PS512, JOSE_ALG_HS512, JOSE_ALG_ES256};
	jose_alg	dflt = dflts[size % (sizeof(dflts) / sizeof(dflts[0]))];
	char	   *text = fuzz_copy(data, size);
	jose_error	err = fuzz_err();
	json_t	   *jwk;

	jwk = jose_json_parse(text, size, JOSE_E_JWK, &err);
	if (jwk == NULL)
		fuzz_check_refusal(&err, "json_parse");
	for (int priv = 0; jwk && priv < 2; priv++)
	{
		jose_key   *key;

		err = fuzz_err();
		key = jose_jwk_parse(jwk, dflt, priv, &err);
		if (key)
		{
			check_key(key, priv);
			jose_key_free(key);
		}
		else
			fuzz_check_refusal(&err, "jwk_parse");
	}
	json_decref(jwk);
	free(text);
	return 0;
}
