/*
 * jwt.c — JWT registered-claim checks (RFC 7519 §4.1, RFC 8725 §3.8-3.9):
 * time claims as NumericDates with clock skew, and audience.
 */
#include "jose.h"

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
	if (audience)
	{
		bool		found = false;

		if (json_is_string(aud))
			found = strcmp(json_string_value(aud), audience) == 0;
		else if (aud)
		{
			size_t		i;
			json_t	   *v;

			json_array_foreach(aud, i, v)
				if (strcmp(json_string_value(v), audience) == 0)
				found = true;
		}
		if (!found)
			return jose_seterr(err, JOSE_E_AUDIENCE, aud ? "audience not accepted" :
							   "token has no \"aud\" claim");
	}
	return 0;
}
