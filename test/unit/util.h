/*
 * util.h — small helpers shared by the JOSE unit tests: error-code names,
 * hex and base64url conversion, token assembly and JSON shortcuts.
 * Everything is static inline so each test program stays self-contained.
 */
#ifndef TOKEX_TEST_UTIL_H
#define TOKEX_TEST_UTIL_H

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jose.h"

static inline const char *
errname(jose_errcode code)
{
	return jose_errcode_name(code);
}

/* A fresh error record: code OK, empty detail. */
static inline jose_error
noerr(void)
{
	jose_error	e;

	memset(&e, 0, sizeof(e));
	return e;
}

/* Lowercase/uppercase hex -> malloc'd bytes ("" gives a 1-byte buffer, len 0). */
static inline bool
hex_decode(const char *hex, uint8_t **out, size_t *outlen)
{
	size_t		n = strlen(hex);
	uint8_t    *buf;

	*out = NULL;
	*outlen = 0;
	if (n % 2)
		return false;
	buf = malloc(n / 2 + 1);
	if (buf == NULL)
		return false;
	for (size_t i = 0; i < n / 2; i++)
	{
		unsigned int v;

		if (sscanf(hex + 2 * i, "%2x", &v) != 1)
		{
			free(buf);
			return false;
		}
		buf[i] = (uint8_t) v;
	}
	*out = buf;
	*outlen = n / 2;
	return true;
}

/* base64url of bytes / of a C string; malloc'd, aborts on allocation failure. */
static inline char *
b64(const void *p, size_t len)
{
	char	   *s = jose_b64url_encode((const uint8_t *) p, len, NULL);

	if (s == NULL)
		abort();
	return s;
}

static inline char *
b64s(const char *s)
{
	return b64(s, strlen(s));
}

/* "a" "." "b" (sep may be NULL for plain concatenation); malloc'd. */
static inline char *
join(const char *a, const char *sep, const char *b)
{
	size_t		la = strlen(a),
				ls = sep ? strlen(sep) : 0,
				lb = strlen(b);
	char	   *s = malloc(la + ls + lb + 1);

	if (s == NULL)
		abort();
	memcpy(s, a, la);
	if (ls)
		memcpy(s + la, sep, ls);
	memcpy(s + la + ls, b, lb + 1);
	return s;
}

/* "b64(header).b64(payload)" — the JWS signing input; malloc'd. */
static inline char *
signing_input(const char *header_json, const char *payload_json)
{
	char	   *h = b64s(header_json),
			   *p = b64s(payload_json),
			   *s = join(h, ".", p);

	free(h);
	free(p);
	return s;
}

/* signing input + "." + b64(sig); malloc'd. */
static inline char *
token_with_sig(const char *header_json, const char *payload_json,
			   const uint8_t *sig, size_t siglen)
{
	char	   *si = signing_input(header_json, payload_json),
			   *s = b64(sig, siglen),
			   *t = join(si, ".", s);

	free(si);
	free(s);
	return t;
}

/*
 * Token signed with key over its own header and payload (assembled by hand,
 * so the header may say anything).  Aborts if signing fails: that is a
 * broken fixture, not a test result.
 */
static inline char *
token_signed(const char *header_json, const char *payload_json, const jose_key *key)
{
	char	   *si = signing_input(header_json, payload_json);
	uint8_t    *sig;
	size_t		siglen;
	jose_error	err = noerr();
	char	   *s,
			   *t;

	if (jose_sign_raw(key, (const uint8_t *) si, strlen(si), &sig, &siglen, &err) < 0)
	{
		fprintf(stderr, "fixture: jose_sign_raw failed: %s %s\n", errname(err.code), err.detail);
		abort();
	}
	s = b64(sig, siglen);
	t = join(si, ".", s);
	free(si);
	free(s);
	free(sig);
	return t;
}

/* Parse a JSON text for fixtures; aborts on error. */
static inline json_t *
json_fixture(const char *text)
{
	json_error_t jerr;
	json_t	   *j = json_loads(text, 0, &jerr);

	if (j == NULL)
	{
		fprintf(stderr, "fixture: bad JSON (%s): %s\n", jerr.text, text);
		abort();
	}
	return j;
}

/* JWK text -> key, or NULL with err filled. */
static inline jose_key *
jwk_from_text(const char *text, jose_alg default_alg, bool allow_private, jose_error *err)
{
	json_t	   *j = json_fixture(text);
	jose_key   *k = jose_jwk_parse(j, default_alg, allow_private, err);

	json_decref(j);
	return k;
}

/* Public JWK of key with "kid" replaced, re-parsed as a public key; aborts on error. */
static inline jose_key *
public_with_kid(const jose_key *key, const char *kid)
{
	jose_error	err = noerr();
	json_t	   *j = jose_jwk_public(key, &err);
	jose_key   *k;

	if (j == NULL || json_object_set_new(j, "kid", json_string(kid)) < 0)
		abort();
	k = jose_jwk_parse(j, key->alg, false, &err);
	json_decref(j);
	if (k == NULL)
	{
		fprintf(stderr, "fixture: re-parse failed: %s %s\n", errname(err.code), err.detail);
		abort();
	}
	return k;
}

#endif							/* TOKEX_TEST_UTIL_H */
