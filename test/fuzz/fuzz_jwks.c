/*
 * fuzz_jwks.c — a JWKS as tokex.trust_issuer reads it (jose_jwks_parse_text),
 * then a token checked against the set the way jwt_verify checks a trusted
 * issuer's token.  The input is the JWKS text itself.
 *
 * Oracles: an accepted set has 1..JOSE_MAX_JWKS_KEYS keys, each able to
 * verify, never both shared secrets and public keys; a token signed by a
 * key the set cannot hold never verifies; every refusal has a known code.
 */
#include "fuzz.h"

int			LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* one token per algorithm family, signed by the harness's own keys */
static char *tokens[FUZZ_NKEYS];

static void
make_tokens(void)
{
	static const char payload[] = "{\"iss\":\"https://issuer\"}";
	jose_key  **keys = fuzz_keys();

	for (int i = 0; i < FUZZ_NKEYS; i++)
	{
		jose_error	err = fuzz_err();
		char		header[96];
		char	   *t;

		/* no kid: the set's keys are tried by alg, as for an IdP without kids */
		snprintf(header, sizeof(header), "{\"alg\":\"%s\"}", jose_alg_name(keys[i]->alg));
		t = jose_jws_sign(keys[i], header, strlen(header), payload, strlen(payload), &err);
		if (t == NULL)
			abort();
		tokens[i] = t;
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char	   *text = fuzz_copy(data, size);
	jose_key  **set = NULL;
	size_t		n = 0;
	jose_error	err = fuzz_err();

	if (tokens[0] == NULL)
		make_tokens();
	if (jose_jwks_parse_text(text, size, &set, &n, &err) == 0)
	{
		bool		oct = false,
					asym = false;

		FUZZ_ASSERT(set != NULL && n >= 1 && n <= JOSE_MAX_JWKS_KEYS, "%zu keys", n);
		for (size_t i = 0; i < n; i++)
		{
			FUZZ_ASSERT(set[i]->ops & JOSE_OP_VERIFY, "key %zu may not verify", i);
			FUZZ_ASSERT(!set[i]->has_private || set[i]->kty == JOSE_KTY_OCT,
						"key %zu read with its private half", i);
			if (set[i]->kty == JOSE_KTY_OCT)
				oct = true;
			else
				asym = true;
		}
		FUZZ_ASSERT(!(oct && asym), "a set mixing secrets and public keys");
		for (int t = 0; t < FUZZ_NKEYS; t++)
		{
			jose_jws	jws;
			int			idx;

			err = fuzz_err();
			if (jose_jws_parse(tokens[t], strlen(tokens[t]), &jws, &err) < 0)
				abort();
			idx = jose_jws_verify_with(&jws, set, n, &err);
			/* the fixed HMAC key can be in the set (its k is no secret here) */
			FUZZ_ASSERT(idx < 0 || t == FUZZ_NKEYS - 1, "token %d verified by key %d", t, idx);
			if (idx < 0)
				fuzz_check_refusal(&err, "jws_verify_with");
			jose_jws_clear(&jws);
		}
		jose_keys_free(set, n);
	}
	else
	{
		fuzz_check_refusal(&err, "jwks_parse_text");
		FUZZ_ASSERT(set == NULL && n == 0, "refusal left keys behind");
	}
	free(text);
	return 0;
}
