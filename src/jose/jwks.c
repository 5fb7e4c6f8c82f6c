/*
 * jwks.c — sets of keys (RFC 7517 §5): reading a JWKS into keys, with the
 * rules that apply to a set rather than to one key (skipping keys for other
 * uses, refusing a set that mixes shared secrets with public keys), and
 * choosing the key of a set that verifies a JWS.
 *
 * A trust anchor is not half-read: a key that does not parse makes the
 * whole set an error, unless the set itself says the key is not for
 * signatures.
 */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

void
jose_keys_free(jose_key **keys, size_t nkeys)
{
	if (keys == NULL)
		return;
	for (size_t i = 0; i < nkeys; i++)
		jose_key_free(keys[i]);
	free(keys);
}

int
jose_jwks_parse(json_t *jwks, jose_key ***keys, size_t *nkeys, jose_error *err)
{
	json_t	   *arr = json_is_object(jwks) ? json_object_get(jwks, "keys") : NULL;
	size_t		i,
				n = 0;
	json_t	   *jwk;
	jose_key  **out;
	bool		saw_oct = false,
				saw_asym = false;

	*keys = NULL;
	*nkeys = 0;
	if (!json_is_array(arr))
		return jose_seterr(err, JOSE_E_JWKS, "JWKS must be an object with a \"keys\" array");
	if (json_array_size(arr) > JOSE_MAX_JWKS_KEYS)
		return jose_seterr(err, JOSE_E_JWKS, "JWKS has more than %d keys", JOSE_MAX_JWKS_KEYS);
	out = calloc(json_array_size(arr) + 1, sizeof(*out));
	if (out == NULL)
		return jose_seterr(err, JOSE_E_INTERNAL, "out of memory");
	json_array_foreach(arr, i, jwk)
	{
		json_t	   *kty = json_object_get(jwk, "kty");
		json_t	   *use = json_object_get(jwk, "use");
		jose_error	kerr;
		jose_alg	dflt;
		unsigned	ops;
		bool		other_ops;

		if (!json_is_object(jwk) || !json_is_string(kty))
		{
			jose_keys_free(out, n);
			return jose_seterr(err, JOSE_E_JWKS, "JWKS key %zu is not a JWK", i);
		}

		/*
		 * Shared secrets and public keys never belong in one set: a set that
		 * holds both is a private keyset published, or pasted, by mistake
		 * (Wycheproof's "MixedKeySet").  Counted over every key, skipped or
		 * not, since a secret leaks wherever the set goes.
		 */
		if (strcmp(json_string_value(kty), "oct") == 0)
			saw_oct = true;
		else
			saw_asym = true;
		if (saw_oct && saw_asym)
		{
			jose_keys_free(out, n);
			return jose_seterr(err, JOSE_E_JWKS,
							   "JWKS mixes symmetric (oct) and asymmetric keys (key %zu)", i);
		}
		/* RFC 7517 §5: skip keys for other uses, or that may not verify */
		if (use && json_is_string(use) && strcmp(json_string_value(use), "sig") != 0)
			continue;
		if (jose_jwk_key_ops(jwk, &ops, &other_ops, &kerr) < 0)
		{
			jose_keys_free(out, n);
			return jose_seterr(err, JOSE_E_JWKS, "JWKS key %zu: %s", i, kerr.detail);
		}
		if (!(ops & JOSE_OP_VERIFY))
			continue;
		/*
		 * RSA/oct JWKs without "alg" (common in IdP JWKS) are bound to RS256
		 * and HS256: one algorithm per key, never chosen by a token header.
		 */
		dflt = strcmp(json_string_value(kty), "oct") == 0 ? JOSE_ALG_HS256 : JOSE_ALG_RS256;
		out[n] = jose_jwk_parse(jwk, dflt, false, &kerr);
		if (out[n] == NULL)
		{
			jose_keys_free(out, n);
			return jose_seterr(err, kerr.code == JOSE_E_KEY_TOO_WEAK ? JOSE_E_KEY_TOO_WEAK : JOSE_E_JWKS,
							   "JWKS key %zu: %s", i, kerr.detail);
		}
		n++;
	}
	if (n == 0)
	{
		jose_keys_free(out, n);
		return jose_seterr(err, JOSE_E_JWKS, "JWKS has no signature keys");
	}
	*keys = out;
	*nkeys = n;
	return 0;
}

int
jose_jwks_parse_text(const char *text, size_t len, jose_key ***keys, size_t *nkeys,
					 jose_error *err)
{
	json_t	   *jwks = jose_json_parse(text, len, JOSE_E_JWKS, err);
	int			rc;

	*keys = NULL;
	*nkeys = 0;
	if (jwks == NULL)
		return -1;
	rc = jose_jwks_parse(jwks, keys, nkeys, err);
	json_decref(jwks);
	return rc;
}

int
jose_jws_verify_with(const jose_jws *jws, jose_key *const *keys, size_t nkeys,
					 jose_error *err)
{
	bool		tried = false;

	for (size_t i = 0; i < nkeys; i++)
	{
		if (jws->kid ? strcmp(keys[i]->kid, jws->kid) != 0 : keys[i]->alg != jws->alg)
			continue;
		/* without a kid, a key that may not verify is no candidate */
		if (!jws->kid && !(keys[i]->ops & JOSE_OP_VERIFY))
			continue;
		tried = true;
		if (jose_jws_verify(jws, keys[i], err) == 0)
			return (int) i;
		/* with a kid, the key is chosen: its verdict is final */
		if (jws->kid)
			return -1;
	}
	if (!tried)
		return jose_seterr(err, JOSE_E_NO_KEY, jws->kid ? "no key with this kid" :
						   "no key for this alg");
	return -1;
}
