/*
 * dpop.c — DPoP proofs (RFC 9449) and tokex's stateless server nonces,
 * without PostgreSQL: what a proof must hold, checked against the request
 * and the clock the caller names.  What needs the database (remembering a
 * proof's jti, the nonce secret, the GUCs) stays in src/dpop.c, which
 * wraps these; here they are unit-tested and fuzzed.
 */
#include "jose.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

static const char *const private_members[] = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"};

/* RFC 9449 §4.3 step 9: the URL without its query and fragment */
size_t
jose_dpop_url_len(const char *url)
{
	return strcspn(url, "?#");
}

/* Refuse with the failing step's code, its detail after prefix. */
static int
inner(jose_error *err, jose_dpop_fault *fault, jose_dpop_fault f, const char *prefix)
{
	char		detail[sizeof(err->detail)];

	memcpy(detail, err->detail, sizeof(detail));
	detail[sizeof(detail) - 1] = '\0';
	*fault = f;
	return jose_seterr(err, err->code, "%s: %s", prefix, detail);
}

static int
refuse(jose_error *err, jose_dpop_fault *fault, jose_dpop_fault f, const char *why)
{
	*fault = f;
	return jose_seterr(err, JOSE_E_DPOP, "%s", why);
}

void
jose_dpop_clear(jose_dpop *p)
{
	free(p->jti);
	free(p->nonce);
	memset(p, 0, sizeof(*p));
}

/* 0 when the claims hold for rules; else -1, err and *fault set */
static int
check_claims(json_t *claims, const jose_dpop_rules *rules, jose_dpop *out,
			 jose_dpop_fault *fault, jose_error *err)
{
	json_t	   *v;
	double		iat;

	v = json_object_get(claims, "jti");
	if (!json_is_string(v) || json_string_length(v) == 0 || json_string_length(v) > 256)
		return refuse(err, fault, JOSE_DPOP_JTI, "the proof has no jti (a string of at most 256 characters)");
	if ((out->jti = strdup(json_string_value(v))) == NULL)
		return jose_seterr(err, JOSE_E_INTERNAL, "out of memory");
	v = json_object_get(claims, "htm");
	if (!json_is_string(v) || strcmp(json_string_value(v), rules->htm) != 0)
	{
		*fault = JOSE_DPOP_HTM;
		return jose_seterr(err, JOSE_E_DPOP, "the proof's htm is not %s", rules->htm);
	}
	v = json_object_get(claims, "htu");
	if (!json_is_string(v) || strstr(json_string_value(v), "://") == NULL ||
		jose_dpop_url_len(json_string_value(v)) != jose_dpop_url_len(rules->htu) ||
		memcmp(json_string_value(v), rules->htu, jose_dpop_url_len(rules->htu)) != 0)
	{
		*fault = JOSE_DPOP_HTU;
		return jose_seterr(err, JOSE_E_DPOP, "the proof's htu is not %.*s",
						   (int) jose_dpop_url_len(rules->htu), rules->htu);
	}
	v = json_object_get(claims, "iat");
	if (!json_is_number(v))
		return refuse(err, fault, JOSE_DPOP_IAT, "the proof has no iat");
	iat = json_number_value(v);
	/* in double: no clock or setting the caller passes overflows here */
	if (iat > (double) rules->now + (double) rules->skew)
		return refuse(err, fault, JOSE_DPOP_IAT_FUTURE, "the proof's iat is in the future");
	if (iat < (double) rules->now - (double) rules->max_age - (double) rules->skew)
		return refuse(err, fault, JOSE_DPOP_TOO_OLD, "the proof is too old (tokex.dpop_max_age)");
	/* beyond any real clock: refused before the conversion below could overflow */
	if (iat > JOSE_MAX_NUMERIC_DATE)
		return refuse(err, fault, JOSE_DPOP_IAT_FUTURE, "the proof's iat is in the future");
	if (iat < -JOSE_MAX_NUMERIC_DATE)
		return refuse(err, fault, JOSE_DPOP_TOO_OLD, "the proof is too old (tokex.dpop_max_age)");
	out->expires = (int64_t) iat + rules->max_age + rules->skew + 1;
	if (rules->access_token)
	{
		uint8_t		h[32];
		char	   *ath;
		bool		same;

		v = json_object_get(claims, "ath");
		if (EVP_Digest(rules->access_token, rules->at_len, h, NULL, EVP_sha256(), NULL) != 1 ||
			(ath = jose_b64url_encode(h, sizeof(h), NULL)) == NULL)
			return jose_seterr(err, JOSE_E_INTERNAL, "SHA-256 failed");
		same = json_is_string(v) && strcmp(json_string_value(v), ath) == 0;
		free(ath);
		if (!same)
			return refuse(err, fault, JOSE_DPOP_ATH, "the proof's ath is not the access token's hash");
	}
	v = json_object_get(claims, "nonce");
	if (json_is_string(v) && (out->nonce = strdup(json_string_value(v))) == NULL)
		return jose_seterr(err, JOSE_E_INTERNAL, "out of memory");
	return 0;
}

int
jose_dpop_check(const char *proof, size_t len, const jose_dpop_rules *rules,
				jose_dpop *out, jose_dpop_fault *fault, jose_error *err)
{
	jose_jws	jws;
	json_t	   *jwk;
	json_t	   *claims = NULL;
	jose_key   *key = NULL;
	int			rc = -1;

	memset(out, 0, sizeof(*out));
	*fault = JOSE_DPOP_OK;
	if (jose_jws_parse(proof, len, &jws, err) < 0)
		return inner(err, fault, JOSE_DPOP_NOT_JWS, "the proof is not a JWS");
	if (jws.typ == NULL || strcmp(jws.typ, "dpop+jwt") != 0)
	{
		refuse(err, fault, JOSE_DPOP_TYP, "the proof's typ is not dpop+jwt");
		goto out;
	}
	if (jose_alg_kty(jws.alg) == JOSE_KTY_OCT)
	{
		refuse(err, fault, JOSE_DPOP_SYMMETRIC, "the proof is signed with a symmetric algorithm");
		goto out;
	}
	jwk = json_object_get(jws.header, "jwk");
	if (!json_is_object(jwk))
	{
		refuse(err, fault, JOSE_DPOP_NO_JWK, "the proof has no jwk header");
		goto out;
	}
	for (size_t i = 0; i < sizeof(private_members) / sizeof(private_members[0]); i++)
		if (json_object_get(jwk, private_members[i]))
		{
			refuse(err, fault, JOSE_DPOP_PRIVATE_JWK, "the proof's jwk holds a private key");
			goto out;
		}
	if ((key = jose_jwk_parse(jwk, jws.alg, false, err)) == NULL)
	{
		inner(err, fault, JOSE_DPOP_JWK, "the proof's jwk");
		goto out;
	}
	if (jose_jws_verify(&jws, key, err) < 0)
	{
		inner(err, fault, JOSE_DPOP_SIGNATURE, "the proof's signature");
		goto out;
	}
	if ((claims = jose_jws_payload_json(&jws, err)) == NULL)
	{
		inner(err, fault, JOSE_DPOP_CLAIMS, "the proof's claims");
		goto out;
	}
	if (jose_jwk_thumbprint(key, out->jkt, err) < 0)
	{
		inner(err, fault, JOSE_DPOP_JWK, "the proof's jwk");
		goto out;
	}
	rc = check_claims(claims, rules, out, fault, err);
out:
	if (rc < 0)
		jose_dpop_clear(out);
	json_decref(claims);
	jose_key_free(key);
	jose_jws_clear(&jws);
	return rc;
}


/* ---------------- server nonces ---------------- */

static int
nonce_raw(const uint8_t *secret, size_t secret_len, int64_t t,
		  uint8_t out[JOSE_DPOP_NONCE_RAW], jose_error *err)
{
	uint8_t		mac[EVP_MAX_MD_SIZE];
	unsigned int maclen = 0;

	for (int i = 0; i < 8; i++)
		out[i] = (uint8_t) (((uint64_t) t) >> (56 - 8 * i));
	if (HMAC(EVP_sha256(), secret, (int) secret_len, out, 8, mac, &maclen) == NULL || maclen < 16)
		return jose_seterr(err, JOSE_E_INTERNAL, "HMAC failed");
	memcpy(out + 8, mac, 16);
	OPENSSL_cleanse(mac, sizeof(mac));
	return 0;
}

char *
jose_dpop_nonce_new(const uint8_t *secret, size_t secret_len, int64_t t, jose_error *err)
{
	uint8_t		raw[JOSE_DPOP_NONCE_RAW];
	char	   *s;

	if (nonce_raw(secret, secret_len, t, raw, err) < 0)
		return NULL;
	if ((s = jose_b64url_encode(raw, sizeof(raw), NULL)) == NULL)
		jose_seterr(err, JOSE_E_INTERNAL, "out of memory");
	return s;
}

/* The raw nonce (malloc'd, JOSE_DPOP_NONCE_RAW bytes) and the time it names */
static int
nonce_decode(const char *nonce, size_t len, uint8_t **raw, int64_t *t, jose_error *err)
{
	size_t		n = 0;
	uint64_t	v = 0;

	*t = 0;
	*raw = NULL;
	if (jose_b64url_decode(nonce, len, 64, raw, &n, err) < 0)
		return -1;
	if (n != JOSE_DPOP_NONCE_RAW)
	{
		free(*raw);
		*raw = NULL;
		return jose_seterr(err, JOSE_E_FORMAT, "a DPoP nonce is %d bytes", JOSE_DPOP_NONCE_RAW);
	}
	for (int i = 0; i < 8; i++)
		v = (v << 8) | (*raw)[i];
	*t = (int64_t) v;
	return 0;
}

int
jose_dpop_nonce_time(const char *nonce, size_t len, int64_t *t, jose_error *err)
{
	uint8_t    *raw;

	if (nonce_decode(nonce, len, &raw, t, err) < 0)
		return -1;
	free(raw);
	return 0;
}

int
jose_dpop_nonce_ok(const char *nonce, size_t len, const uint8_t *secret, size_t secret_len,
				   int64_t now, int64_t skew, int64_t lifetime, jose_error *err)
{
	uint8_t    *raw;
	uint8_t		want[JOSE_DPOP_NONCE_RAW];
	int64_t		t;
	jose_error	ignored;
	int			ok;

	if (nonce_decode(nonce, len, &raw, &t, &ignored) < 0)
		return 0;
	if (nonce_raw(secret, secret_len, t, want, err) < 0)
	{
		free(raw);
		return -1;
	}
	/* in double: no clock or setting the caller passes overflows here */
	ok = CRYPTO_memcmp(raw, want, sizeof(want)) == 0 &&
		(double) t <= (double) now + (double) skew &&
		(double) t >= (double) now - (double) lifetime;
	free(raw);
	return ok;
}
