/*
 * jwt.c — JWTs: the one verification every caller uses (parse, choose the
 * keys, check the signature, check the claims) and the registered-claim
 * checks it ends with (RFC 7519 §4.1, RFC 8725 §3.8-3.9): time claims as
 * NumericDates with clock skew, and audience.
 */
#include "jose.h"

#include <stdlib.h>
#include <string.h>

/* -1: wrong type; 0: absent; 1: present, value in *out */
static int
numeric_date(json_t *payload, const char *name, double *out)
{
	json_t	   *v = json_object_get(payload, name);

	if (v == NULL)
		return 0;
	if (!json_is_number(v))
		return -1;
	*out = json_number_value(v);
	/* 1970 to 9999: anything else cannot be a real time, and would overflow */
	if (!(*out >= 0 && *out <= JOSE_MAX_NUMERIC_DATE))
		return -1;
	return 1;
}

/* aud (absent, a string or a checked array of strings) names audience. */
static int
check_audience(json_t *aud, const char *audience, jose_error *err)
{
	if (json_is_string(aud))
	{
		if (strcmp(json_string_value(aud), audience) == 0)
			return 0;
	}
	else if (aud)
	{
		size_t		i;
		json_t	   *v;

		json_array_foreach(aud, i, v)
			if (strcmp(json_string_value(v), audience) == 0)
			return 0;
	}
	return jose_seterr(err, JOSE_E_AUDIENCE, aud ? "audience not accepted" :
					   "token has no \"aud\" claim");
}

int
jose_jwt_check_claims(json_t *payload, int64_t now, int64_t skew,
					  const char *audience, bool require_exp, jose_error *err)
{
	static const char *const timeclaims[] = {"exp", "nbf", "iat"};
	double		t[3] = {0};
	int			has[3];
	json_t	   *aud;
	double		dnow = (double) now;

	for (int i = 0; i < 3; i++)
	{
		has[i] = numeric_date(payload, timeclaims[i], &t[i]);
		if (has[i] < 0)
			return jose_seterr(err, JOSE_E_CLAIM_TYPE, "claim \"%s\" is not a NumericDate",
							   timeclaims[i]);
	}
	if (!has[0] && require_exp)
		return jose_seterr(err, JOSE_E_CLAIM_TYPE, "token has no \"exp\" claim");
	if (has[0] && dnow >= t[0] + (double) skew)
		return jose_seterr(err, JOSE_E_EXPIRED, NULL);
	if (has[1] && dnow < t[1] - (double) skew)
		return jose_seterr(err, JOSE_E_NOT_YET_VALID, NULL);
	if (has[2] && t[2] > dnow + (double) skew)
		return jose_seterr(err, JOSE_E_IAT_FUTURE, NULL);

	for (int i = 0; i < 2; i++)
	{
		const char *name = i == 0 ? "iss" : "sub";
		json_t	   *v = json_object_get(payload, name);

		if (v && !json_is_string(v))
			return jose_seterr(err, JOSE_E_CLAIM_TYPE, "claim \"%s\" is not a string", name);
	}

	aud = json_object_get(payload, "aud");
	if (aud && !json_is_string(aud))
	{
		size_t		i;
		json_t	   *v;

		if (!json_is_array(aud) || json_array_size(aud) == 0)
			return jose_seterr(err, JOSE_E_CLAIM_TYPE, "claim \"aud\" is not a string or array of strings");
		json_array_foreach(aud, i, v)
			if (!json_is_string(v))
			return jose_seterr(err, JOSE_E_CLAIM_TYPE, "claim \"aud\" is not a string or array of strings");
	}
	return audience ? check_audience(aud, audience, err) : 0;
}

void
jose_jwt_free(jose_jwt *jwt)
{
	if (jwt == NULL)
		return;
	json_decref(jwt->header);
	json_decref(jwt->payload);
	free(jwt->payload_text);
	free(jwt);
}

jose_jwt *
jose_jwt_verify(const char *token, size_t len, const jose_jwt_rules *rules,
				jose_error *err)
{
	jose_jws	jws;
	jose_jwt   *jwt;
	jose_keyset keys = rules->keys;
	int			idx;

	if (jose_jws_parse(token, len, &jws, err) < 0)
		return NULL;
	jwt = calloc(1, sizeof(*jwt));
	if (jwt == NULL)
	{
		jose_seterr(err, JOSE_E_INTERNAL, "out of memory");
		goto fail;
	}

	/*
	 * The claims are read before the signature is checked only when they
	 * name the keys (a token's "iss" chooses among issuers); with the keys
	 * given, nothing of the payload is parsed until it is authenticated.
	 */
	if (rules->select)
	{
		if ((jwt->payload = jose_jws_payload_json(&jws, err)) == NULL ||
			rules->select(rules->select_arg, jwt->payload, &keys, err) < 0)
			goto fail;
	}
	idx = jose_jws_verify_with(&jws, keys.keys, keys.nkeys, err);
	if (idx < 0)
		goto fail;
	if (jwt->payload == NULL && (jwt->payload = jose_jws_payload_json(&jws, err)) == NULL)
		goto fail;
	if (jose_jwt_check_claims(jwt->payload, rules->now, rules->skew, rules->audience,
							  rules->require_exp, err) < 0)
		goto fail;
	/* the keys' own audience: aud's type was checked just above */
	if (keys.audience &&
		check_audience(json_object_get(jwt->payload, "aud"), keys.audience, err) < 0)
		goto fail;

	jwt->key = keys.keys[idx];
	jwt->header = json_incref(jws.header);
	/* hand the verified bytes over rather than copying them */
	jwt->payload_text = (char *) jws.payload;
	jwt->payload_len = jws.payload_len;
	jws.payload = NULL;
	jose_jws_clear(&jws);
	return jwt;

fail:
	jose_jws_clear(&jws);
	jose_jwt_free(jwt);
	return NULL;
}
