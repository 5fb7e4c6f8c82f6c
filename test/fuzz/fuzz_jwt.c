/*
 * fuzz_jwt.c — the whole verification a token goes through in jwt_verify
 * and the exchange (jose_jwt_verify): parse, choose the keys (given, or
 * by "iss" through a select callback as tokex chooses a trusted issuer),
 * verify, read the claims, check exp/nbf/iat with skew and the audiences.
 *
 * A fuzzer cannot forge signatures, so this harness signs what it is
 * given: the input is one options byte, then the JOSE header text, a
 * newline, and the payload text; the harness signs them with the key the
 * options choose (the header may name any alg) and verifies.  So the
 * claim checks, which run only after a signature verified, see fuzzed
 * claims.
 *
 * Oracles: a token verifies only with a header alg equal to its key's;
 * what verifies satisfies every rule it was checked against (read again
 * here from the returned claims); the returned payload text is the one
 * signed; every refusal has a known code.
 */
#include "fuzz.h"

#include <math.h>

int			LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define NOW 1700000000

/* keys[] of fuzz.h that the harness signs with (RSA signing is too slow to fuzz) */
static const int signers[4] = {4, 1, 0, 4};	/* HS256, EdDSA, ES256, HS256 */

static int
select_by_iss(void *arg, json_t *claims, jose_keyset *out, jose_error *err)
{
	jose_key  **keys = arg;
	const char *iss = json_string_value(json_object_get(claims, "iss"));

	if (iss && strcmp(iss, "https://a") == 0)
	{
		out->keys = &keys[4];
		out->nkeys = 1;
		out->audience = "aud-a";
		return 0;
	}
	if (iss && strcmp(iss, "https://b") == 0)
	{
		out->keys = keys;
		out->nkeys = FUZZ_NKEYS;
		out->audience = NULL;
		return 0;
	}
	return jose_seterr(err, JOSE_E_NO_KEY, "issuer not trusted");
}

static bool
names_audience(json_t *aud, const char *want)
{
	size_t		i;
	json_t	   *v;

	if (json_is_string(aud))
		return strcmp(json_string_value(aud), want) == 0;
	json_array_foreach(aud, i, v)
		if (json_is_string(v) && strcmp(json_string_value(v), want) == 0)
		return true;
	return false;
}

/* the time rules, read again from the verified claims */
static void
check_times(json_t *claims, const jose_jwt_rules *r)
{
	json_t	   *exp = json_object_get(claims, "exp"),
			   *nbf = json_object_get(claims, "nbf"),
			   *iat = json_object_get(claims, "iat");

	FUZZ_ASSERT(exp || !r->require_exp, "no exp, but exp required");
	FUZZ_ASSERT(!exp || (json_is_number(exp) && (double) r->now < json_number_value(exp) + (double) r->skew),
				"expired token verified");
	FUZZ_ASSERT(!nbf || (json_is_number(nbf) && (double) r->now >= json_number_value(nbf) - (double) r->skew),
				"token not yet valid verified");
	FUZZ_ASSERT(!iat || (json_is_number(iat) && json_number_value(iat) <= (double) (r->now + r->skew)),
				"token from the future verified");
	FUZZ_ASSERT(!exp || (json_number_value(exp) >= 0 && json_number_value(exp) <= JOSE_MAX_NUMERIC_DATE &&
						 !isnan(json_number_value(exp))), "exp out of range");
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	jose_key  **keys = fuzz_keys();
	uint8_t		opt;
	const uint8_t *nl;
	size_t		hlen,
				plen;
	const jose_key *signer;
	char	   *h,
			   *p,
			   *token;
	size_t		hl,
				pl,
				sl,
				siglen = 0;
	uint8_t    *sig = NULL;
	char	   *s;
	jose_error	err = fuzz_err();
	jose_jwt_rules rules;
	jose_jwt   *jwt;

	if (size < 1)
		return 0;
	opt = data[0];
	data++, size--;
	nl = memchr(data, '\n', size);
	hlen = nl ? (size_t) (nl - data) : 0;
	plen = nl ? size - hlen - 1 : size;
	signer = keys[signers[(opt >> 3) & 3]];

	/* sign b64(header).b64(payload) with the chosen key, whatever the header says */
	h = jose_b64url_encode(data, hlen, &hl);
	p = jose_b64url_encode(nl ? nl + 1 : data, plen, &pl);
	token = malloc(hl + pl + 2);
	if (h == NULL || p == NULL || token == NULL)
		abort();
	memcpy(token, h, hl);
	token[hl] = '.';
	memcpy(token + hl + 1, p, pl);
	if (jose_sign_raw(signer, (uint8_t *) token, hl + pl + 1, &sig, &siglen, &err) < 0)
		abort();
	s = jose_b64url_encode(sig, siglen, &sl);
	token = realloc(token, hl + pl + sl + 2);
	if (s == NULL || token == NULL)
		abort();
	token[hl + pl + 1] = '.';
	memcpy(token + hl + pl + 2, s, sl);

	memset(&rules, 0, sizeof(rules));
	rules.keys.keys = keys;
	rules.keys.nkeys = FUZZ_NKEYS;
	rules.audience = (opt & 1) ? "api" : NULL;
	rules.require_exp = (opt & 2) != 0;
	if (opt & 4)
	{
		rules.select = select_by_iss;
		rules.select_arg = keys;
	}
	rules.now = NOW;
	rules.skew = (opt & 32) ? 60 : 0;

	err = fuzz_err();
	jwt = jose_jwt_verify(token, hl + pl + sl + 2, &rules, &err);
	if (jwt)
	{
		const char *alg = json_string_value(json_object_get(jwt->header, "alg"));
		const char *iss = json_string_value(json_object_get(jwt->payload, "iss"));

		FUZZ_ASSERT(jwt->key == signer, "verified by a key that did not sign");
		FUZZ_ASSERT(alg && jose_alg_from_name(alg) == signer->alg,
					"verified with header alg %s for a %s key", alg ? alg : "(none)",
					jose_alg_name(signer->alg));
		FUZZ_ASSERT(json_is_object(jwt->payload), "claims not an object");
		FUZZ_ASSERT(jwt->payload_len == plen && memcmp(jwt->payload_text, nl ? nl + 1 : data, plen) == 0,
					"payload text is not what was signed");
		check_times(jwt->payload, &rules);
		FUZZ_ASSERT(!rules.audience || names_audience(json_object_get(jwt->payload, "aud"), "api"),
					"audience not named");
		if (rules.select)
		{
			FUZZ_ASSERT(iss && (strcmp(iss, "https://a") == 0 || strcmp(iss, "https://b") == 0),
						"untrusted issuer verified");
			FUZZ_ASSERT(strcmp(iss, "https://a") != 0 ||
						names_audience(json_object_get(jwt->payload, "aud"), "aud-a"),
						"issuer's own audience not named");
		}
		jose_jwt_free(jwt);
	}
	else
		fuzz_check_refusal(&err, "jwt_verify");
	free(h);
	free(p);
	free(s);
	free(sig);
	free(token);
	return 0;
}
