/*
 * fuzz_jws.c — a compact JWS as a client hands it to tokex.jwt_verify or
 * tokex.exchange: jose_jws_parse (length, segments, strict base64url,
 * header object, alg, kid/typ, crit), then jose_jws_verify_with against
 * one key of each type, with and without the header's kid.
 *
 * Oracles: a parsed JWS is consistent with its input (signing input is the
 * first two segments, alg known and never "none", lengths within the
 * limits); no signature the fuzzer made verifies under keys it has never
 * seen; every refusal has a known code and a detail.
 */
#include "fuzz.h"

int			LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	jose_key  **keys = fuzz_keys();
	char	   *token = fuzz_copy(data, size);
	jose_jws	jws;
	jose_error	err = fuzz_err();

	if (jose_jws_parse(token, size, &jws, &err) == 0)
	{
		const char *alg;
		int			idx;

		FUZZ_ASSERT(size <= JOSE_MAX_TOKEN_LEN, "parsed a token of %zu bytes", size);
		FUZZ_ASSERT(jws.alg != JOSE_ALG_UNKNOWN && jose_alg_name(jws.alg) != NULL, "alg");
		alg = json_string_value(json_object_get(jws.header, "alg"));
		FUZZ_ASSERT(alg && strcmp(alg, jose_alg_name(jws.alg)) == 0, "alg is not the header's");
		FUZZ_ASSERT(json_object_get(jws.header, "crit") == NULL, "crit accepted");
		FUZZ_ASSERT(jws.signing_input == token && jws.signing_input_len < size &&
					memchr(token, '.', jws.signing_input_len) != NULL &&
					token[jws.signing_input_len] == '.', "signing input");
		FUZZ_ASSERT(jws.payload && jws.payload[jws.payload_len] == 0, "payload");
		FUZZ_ASSERT(jws.sig_len <= 1024, "signature of %zu bytes", jws.sig_len);

		err = fuzz_err();
		idx = jose_jws_verify_with(&jws, keys, FUZZ_NKEYS, &err);
		FUZZ_ASSERT(idx < 0, "a fuzzed signature verified under key %d", idx);
		fuzz_check_refusal(&err, "jws_verify_with");
		/* each key on its own, as a caller holding one key does */
		for (int i = 0; i < FUZZ_NKEYS; i++)
		{
			err = fuzz_err();
			FUZZ_ASSERT(jose_jws_verify(&jws, keys[i], &err) < 0, "verified by key %d", i);
			fuzz_check_refusal(&err, "jws_verify");
		}
		/* the payload as the claims, what jose_jwt_verify reads after the signature */
		err = fuzz_err();
		{
			json_t	   *claims = jose_jws_payload_json(&jws, &err);

			if (claims)
				FUZZ_ASSERT(json_is_object(claims), "payload not an object");
			else
				fuzz_check_refusal(&err, "payload_json");
			json_decref(claims);
		}
		jose_jws_clear(&jws);
	}
	else
	{
		fuzz_check_refusal(&err, "jws_parse");
		FUZZ_ASSERT(jws.header == NULL && jws.payload == NULL && jws.sig == NULL,
					"refusal left a partial JWS");
	}
	free(token);
	return 0;
}
