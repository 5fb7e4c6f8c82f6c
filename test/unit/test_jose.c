/*
 * test_jose.c — unit tests of the JOSE core with keys generated on the fly:
 * algorithm table, strict base64url, bounded JSON, key generation, JWS
 * sign/parse/verify round trips for every signing alg, public JWK export and
 * re-import, PKCS#8 DER storage, thumbprints, JWKS parsing and kid/alg key
 * selection, and the JWT registered-claim checks at their boundaries.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/rand.h>
#include <openssl/x509.h>

#include "jose.h"
#include "tap.h"
#include "util.h"

static const jose_alg sign_algs[] = {
	JOSE_ALG_ES256, JOSE_ALG_ES384, JOSE_ALG_ES512, JOSE_ALG_EDDSA,
	JOSE_ALG_RS256, JOSE_ALG_RS384, JOSE_ALG_RS512,
	JOSE_ALG_PS256, JOSE_ALG_PS384, JOSE_ALG_PS512,
};
#define NSIGN ((int) (sizeof(sign_algs) / sizeof(sign_algs[0])))

/* Generated once, reused by several sections. */
static jose_key *genkeys[NSIGN];

/* ---------------- algorithms and errors ---------------- */

static void
test_algs(void)
{
	bool		ok = true;

	for (int a = 1; a < JOSE_ALG_COUNT_; a++)
	{
		const char *n = jose_alg_name((jose_alg) a);

		if (n == NULL || jose_alg_from_name(n) != (jose_alg) a || jose_alg_kty((jose_alg) a) == 0)
			ok = false;
	}
	tap_ok(ok, "alg names round-trip for every alg and each has a kty");
	tap_ok(jose_alg_from_name("none") == JOSE_ALG_UNKNOWN &&
		   jose_alg_from_name(NULL) == JOSE_ALG_UNKNOWN &&
		   jose_alg_from_name("es256") == JOSE_ALG_UNKNOWN &&
		   jose_alg_from_name("EDDSA") == JOSE_ALG_UNKNOWN &&
		   jose_alg_from_name("ES256 ") == JOSE_ALG_UNKNOWN &&
		   jose_alg_from_name("") == JOSE_ALG_UNKNOWN,
		   "none, NULL, wrong case, trailing space, empty -> UNKNOWN");
	tap_ok(jose_alg_name(JOSE_ALG_UNKNOWN) == NULL, "jose_alg_name(UNKNOWN) is NULL");
	tap_ok(strcmp(jose_alg_name(JOSE_ALG_EDDSA), "EdDSA") == 0 &&
		   jose_alg_kty(JOSE_ALG_EDDSA) == JOSE_KTY_OKP &&
		   jose_alg_kty(JOSE_ALG_PS384) == JOSE_KTY_RSA &&
		   jose_alg_kty(JOSE_ALG_ES512) == JOSE_KTY_EC &&
		   jose_alg_kty(JOSE_ALG_HS384) == JOSE_KTY_OCT, "alg kty mapping");
	tap_ok(!jose_alg_can_sign(JOSE_ALG_HS256) && !jose_alg_can_sign(JOSE_ALG_HS512) &&
		   !jose_alg_can_sign(JOSE_ALG_UNKNOWN) && jose_alg_can_sign(JOSE_ALG_ES256) &&
		   jose_alg_can_sign(JOSE_ALG_PS512) && jose_alg_can_sign(JOSE_ALG_EDDSA),
		   "jose_alg_can_sign: asymmetric yes, HS*/UNKNOWN no");

	ok = true;
	for (int c = 0; c < JOSE_E_COUNT_; c++)
	{
		const char *s = jose_strerror((jose_errcode) c);

		if (s == NULL || s[0] == '\0')
			ok = false;
	}
	tap_ok(ok, "jose_strerror has a text for every code");
	ok = strcmp(jose_errcode_name(JOSE_OK), "OK") == 0 &&
		strcmp(jose_errcode_name(JOSE_E_EXPIRED), "EXPIRED") == 0 &&
		strcmp(jose_errcode_name(JOSE_E_COUNT_), "?") == 0;
	for (int c = 0; c < JOSE_E_COUNT_; c++)
		for (int d = 0; d < c; d++)
			if (strcmp(jose_errcode_name((jose_errcode) c), jose_errcode_name((jose_errcode) d)) == 0 ||
				strcmp(jose_strerror((jose_errcode) c), jose_strerror((jose_errcode) d)) == 0)
				ok = false;
	tap_ok(ok, "jose_errcode_name: every code has its own name and its own text");
	{
		jose_error	e = noerr();
		int			rc = jose_seterr(&e, JOSE_E_NO_KEY, "kid %s", "abc");

		tap_ok(rc == -1 && e.code == JOSE_E_NO_KEY && strcmp(e.detail, "kid abc") == 0,
			   "jose_seterr formats and returns -1");
		e.json_reason = JOSE_JSON_DUPLICATE;
		jose_seterr(&e, JOSE_E_JWKS, NULL);
		tap_ok(e.json_reason == JOSE_JSON_NONE && strcmp(e.detail, "invalid JWKS") == 0,
			   "jose_seterr: NULL format gives the code's text and clears json_reason");
	}
}

/* ---------------- base64url ---------------- */

static bool
dec_ok(const char *in, const char *want, size_t wantlen)
{
	uint8_t    *out = NULL;
	size_t		outlen = 99;
	jose_error	e = noerr();
	bool		ok;

	ok = jose_b64url_decode(in, strlen(in), 1024, &out, &outlen, &e) == 0 &&
		out != NULL && outlen == wantlen && memcmp(out, want, wantlen) == 0 &&
		out[outlen] == '\0';
	free(out);
	return ok;
}

static bool
dec_fails(const char *in, size_t inlen, size_t maxlen, jose_errcode want)
{
	uint8_t    *out = NULL;
	size_t		outlen = 0;
	jose_error	e = noerr();
	int			rc = jose_b64url_decode(in, inlen, maxlen, &out, &outlen, &e);

	if (rc == 0)
	{
		free(out);
		tap_diag("decode of a %zu-byte input unexpectedly succeeded", inlen);
		return false;
	}
	if (e.code != want || e.detail[0] == '\0')
		tap_diag("decode: got %s \"%s\", want %s", errname(e.code), e.detail, errname(want));
	return e.code == want && e.detail[0] != '\0';
}

static void
test_base64url(void)
{
	/* RFC 4648 §10 test vectors, unpadded */
	static const char *const plain[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
	static const char *const enc[] = {"", "Zg", "Zm8", "Zm9v", "Zm9vYg", "Zm9vYmE", "Zm9vYmFy"};
	static const uint8_t urlbytes[] = {0xfb, 0xff, 0xbf};
	bool		ok = true;

	for (int i = 0; i < 7; i++)
	{
		size_t		ol = 99;
		char	   *e = jose_b64url_encode((const uint8_t *) plain[i], strlen(plain[i]), &ol);

		if (e == NULL || strcmp(e, enc[i]) != 0 || ol != strlen(enc[i]))
			ok = false;
		free(e);
		if (!dec_ok(enc[i], plain[i], strlen(plain[i])))
			ok = false;
	}
	tap_ok(ok, "RFC 4648 vectors encode/decode (including empty input)");
	{
		char	   *e = jose_b64url_encode(urlbytes, 3, NULL);

		tap_ok(e && strcmp(e, "-_-_") == 0 && dec_ok("-_-_", (const char *) urlbytes, 3),
			   "URL-safe alphabet: 0xfb 0xff 0xbf <-> \"-_-_\"");
		free(e);
	}

	ok = true;
	for (size_t n = 0; n <= 70 && ok; n++)
	{
		uint8_t		buf[70];
		size_t		ol;
		char	   *e;
		uint8_t    *d = NULL;
		size_t		dl = 0;
		jose_error	err = noerr();

		if (RAND_bytes(buf, (int) (n ? n : 1)) != 1)
			abort();
		e = jose_b64url_encode(buf, n, &ol);
		ok = e && strlen(e) == ol && strchr(e, '=') == NULL &&
			jose_b64url_decode(e, ol, n, &d, &dl, &err) == 0 && dl == n &&
			memcmp(d, buf, n) == 0;
		free(e);
		free(d);
	}
	tap_ok(ok, "random round trips of 0..70 bytes (maxlen exactly the length)");

	tap_ok(dec_fails("Zg==", 4, 1024, JOSE_E_BASE64), "padding \"Zg==\" refused");
	tap_ok(dec_fails("Zm8=", 4, 1024, JOSE_E_BASE64), "padding \"Zm8=\" refused");
	tap_ok(dec_fails("Zm9v=", 5, 1024, JOSE_E_BASE64), "trailing '=' after full quantum refused");
	tap_ok(dec_fails("Zm+v", 4, 1024, JOSE_E_BASE64), "'+' refused");
	tap_ok(dec_fails("Zm/v", 4, 1024, JOSE_E_BASE64), "'/' refused");
	tap_ok(dec_fails("Zm9 v", 5, 1024, JOSE_E_BASE64) &&
		   dec_fails("Zm9v\n", 5, 1024, JOSE_E_BASE64), "whitespace refused");
	tap_ok(dec_fails("Zm\0v", 4, 1024, JOSE_E_BASE64), "embedded NUL refused");
	tap_ok(dec_fails("Zm\xc3\xa9", 4, 1024, JOSE_E_BASE64), "non-ASCII byte refused");
	tap_ok(dec_fails("Z", 1, 1024, JOSE_E_BASE64) &&
		   dec_fails("Zm9vY", 5, 1024, JOSE_E_BASE64), "length %% 4 == 1 refused");
	tap_ok(dec_fails("Zh", 2, 1024, JOSE_E_BASE64) &&
		   dec_fails("Zm9", 3, 1024, JOSE_E_BASE64) &&
		   dec_fails("Zm9vYh", 6, 1024, JOSE_E_BASE64),
		   "non-zero unused trailing bits refused (\"Zh\", \"Zm9\", \"Zm9vYh\")");
	tap_ok(dec_ok("Zg", "f", 1) && dec_ok("Zm8", "fo", 2), "canonical short forms accepted");
	tap_ok(dec_fails("Zm9vYmFy", 8, 5, JOSE_E_TOO_LONG), "longer than maxlen -> TOO_LONG");
	tap_ok(dec_fails("Zm9vYmFy", 8, 0, JOSE_E_TOO_LONG), "maxlen 0 refuses any non-empty value");
}

/* ---------------- JSON ---------------- */

static char *
nested(int depth, const char *open, const char *close, const char *inner)
{
	size_t		lo = strlen(open),
				lc = strlen(close),
				li = strlen(inner);
	char	   *s = malloc((size_t) depth * (lo + lc) + li + 1),
			   *p = s;

	for (int i = 0; i < depth; i++, p += lo)
		memcpy(p, open, lo);
	memcpy(p, inner, li);
	p += li;
	for (int i = 0; i < depth; i++, p += lc)
		memcpy(p, close, lc);
	*p = '\0';
	return s;
}

static void
json_case(const char *name, const char *text, jose_errcode want, jose_json_reason why)
{
	jose_error	e = noerr();
	json_t	   *j = jose_json_parse(text, strlen(text), JOSE_E_HEADER, &e);

	if (want == JOSE_OK)
		tap_ok(j != NULL, "json: %s parses (%s)", name, j ? "ok" : e.detail);
	else
		tap_ok(j == NULL && e.code == want && e.json_reason == why && e.detail[0] &&
			   (why == JOSE_JSON_DEPTH || strstr(e.detail, jose_json_reason_text(why)) != NULL),
			   "json: %s -> %s, %s (got %s, %s: \"%s\")", name, errname(want),
			   jose_json_reason_text(why), errname(e.code),
			   jose_json_reason_text(e.json_reason), e.detail);
	json_decref(j);
}

static void
test_json(void)
{
	char	   *ok32 = nested(JOSE_MAX_JSON_DEPTH, "[", "]", "1");
	char	   *bad33 = nested(JOSE_MAX_JSON_DEPTH + 1, "[", "]", "1");
	char	   *obj33 = nested(JOSE_MAX_JSON_DEPTH + 1, "{\"a\":", "}", "1");
	char	   *instr = nested(200, "[", "", "");
	char	   *strtext;

	strtext = malloc(strlen(instr) + 16);
	sprintf(strtext, "{\"s\":\"%s\"}", instr);
	json_case("object", "{\"a\":1}", JOSE_OK, JOSE_JSON_NONE);
	json_case("duplicate member", "{\"a\":1,\"a\":2}", JOSE_E_HEADER, JOSE_JSON_DUPLICATE);
	json_case("nested duplicate member", "{\"o\":{\"a\":1,\"a\":1}}", JOSE_E_HEADER,
			  JOSE_JSON_DUPLICATE);
	json_case("invalid JSON", "{\"a\":", JOSE_E_HEADER, JOSE_JSON_SYNTAX);
	json_case("trailing garbage", "{\"a\":1}x", JOSE_E_HEADER, JOSE_JSON_SYNTAX);
	json_case("integer beyond 64 bits", "{\"a\":123456789012345678901234567890}", JOSE_E_HEADER,
			  JOSE_JSON_RANGE);
	json_case("negative integer beyond 64 bits", "{\"a\":-99999999999999999999 }", JOSE_E_HEADER,
			  JOSE_JSON_RANGE);
	json_case("integer beyond 64 bits in an array", "[1,99999999999999999999]", JOSE_E_HEADER,
			  JOSE_JSON_RANGE);
	json_case("real beyond a double (refused as invalid JSON)", "{\"a\":1e400}", JOSE_E_HEADER,
			  JOSE_JSON_SYNTAX);
	json_case("real with a fraction beyond a double", "[1.5E+999]", JOSE_E_HEADER, JOSE_JSON_SYNTAX);
	json_case("depth == JOSE_MAX_JSON_DEPTH", ok32, JOSE_OK, JOSE_JSON_NONE);
	json_case("depth == JOSE_MAX_JSON_DEPTH + 1 (arrays)", bad33, JOSE_E_JSON_DEPTH, JOSE_JSON_DEPTH);
	json_case("depth == JOSE_MAX_JSON_DEPTH + 1 (objects)", obj33, JOSE_E_JSON_DEPTH, JOSE_JSON_DEPTH);
	json_case("brackets inside a string do not count", strtext, JOSE_OK, JOSE_JSON_NONE);
	json_case("escaped quote inside a string", "{\"s\":\"\\\"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\"}",
			  JOSE_OK, JOSE_JSON_NONE);
	/* JOSE_MAX_JSON_MEMBERS counts commas and brackets outside strings */
	{
		char	   *arr = malloc(2 * (JOSE_MAX_JSON_MEMBERS + 1) + 8);
		char	   *commas = malloc(JOSE_MAX_JSON_MEMBERS + 16);

		for (int n = JOSE_MAX_JSON_MEMBERS; n <= JOSE_MAX_JSON_MEMBERS + 1; n++)
		{
			/* [0,0,...]: n elements, n - 1 commas and one bracket */
			char	   *p = arr;

			*p++ = '[';
			for (int i = 0; i < n; i++)
			{
				*p++ = '0';
				*p++ = ',';
			}
			p[-1] = ']';
			*p = '\0';
			if (n == JOSE_MAX_JSON_MEMBERS)
				json_case("JOSE_MAX_JSON_MEMBERS elements", arr, JOSE_OK, JOSE_JSON_NONE);
			else
				json_case("JOSE_MAX_JSON_MEMBERS + 1 elements", arr, JOSE_E_JSON_MEMBERS,
						  JOSE_JSON_MEMBERS);
		}
		sprintf(commas, "{\"s\":\"");
		memset(commas + 6, ',', JOSE_MAX_JSON_MEMBERS + 1);
		strcpy(commas + 6 + JOSE_MAX_JSON_MEMBERS + 1, "\"}");
		json_case("commas inside a string do not count", commas, JOSE_OK, JOSE_JSON_NONE);
		free(arr);
		free(commas);
	}
	free(ok32);
	free(bad33);
	free(obj33);
	free(instr);
	free(strtext);
	{
		jose_error	e = noerr();
		json_t	   *j = jose_json_parse("[1,", 3, JOSE_E_PAYLOAD, &e);

		tap_ok(j == NULL && e.code == JOSE_E_PAYLOAD && e.json_reason == JOSE_JSON_SYNTAX,
			   "json: caller's error code is used, with the JSON reason beside it");
		json_decref(j);
	}
}

/* ---------------- keys and JWS round trips ---------------- */

static const char *const payload_json =
"{\"iss\":\"https://issuer.example\",\"sub\":\"alice\",\"n\":1,\"s\":\"\\u2019\"}";

static void
test_roundtrip(int i)
{
	jose_alg	alg = sign_algs[i];
	const char *name = jose_alg_name(alg);
	jose_key   *k = genkeys[i],
			   *pub = NULL,
			   *k2 = NULL;
	jose_error	err = noerr();
	char		header[512];
	char	   *tok = NULL,
			   *tok2 = NULL;
	jose_jws	jws;
	json_t	   *jwk = NULL,
			   *jwk2 = NULL;
	uint8_t    *der = NULL;
	size_t		derlen = 0;
	int			rc;

	if (!tap_ok(k != NULL, "%s: jose_key_generate", name))
		return;
	{
		int			bits = k->pkey ? EVP_PKEY_get_bits(k->pkey) : 0;
		int			want = alg == JOSE_ALG_RS256 || alg == JOSE_ALG_PS256 ? 2048 : 3072;

		tap_ok(k->alg == alg && k->kty == jose_alg_kty(alg) && k->has_private &&
			   k->kid && strcmp(k->kid, k->thumbprint) == 0 && strlen(k->thumbprint) == 43 &&
			   (k->kty != JOSE_KTY_RSA || bits == want),
			   "%s: generated key: alg, kty, private, kid = thumbprint%s", name,
			   k->kty == JOSE_KTY_RSA ? ", RSA size" : "");
	}

	snprintf(header, sizeof(header), "{\"alg\":\"%s\",\"kid\":\"%s\",\"typ\":\"JWT\"}",
			 name, k->kid);
	tok = jose_jws_sign(k, header, strlen(header), payload_json, strlen(payload_json), &err);
	if (!tap_ok(tok != NULL, "%s: jose_jws_sign (%s)", name, tok ? "ok" : err.detail))
		goto done;
	rc = jose_jws_parse(tok, strlen(tok), &jws, &err);
	if (!tap_ok(rc == 0, "%s: jose_jws_parse (%s)", name, rc == 0 ? "ok" : err.detail))
		goto done;
	{
		size_t		siglen = alg == JOSE_ALG_ES256 ? 64 : alg == JOSE_ALG_ES384 ? 96 :
			alg == JOSE_ALG_ES512 ? 132 : alg == JOSE_ALG_EDDSA ? 64 :
			(size_t) EVP_PKEY_get_size(k->pkey);

		tap_ok(jws.alg == alg && jws.kid && strcmp(jws.kid, k->kid) == 0 &&
			   jws.typ && strcmp(jws.typ, "JWT") == 0 &&
			   jws.payload_len == strlen(payload_json) &&
			   memcmp(jws.payload, payload_json, jws.payload_len) == 0 &&
			   jws.signing_input == tok &&
			   jws.signing_input_len == (size_t) (strrchr(tok, '.') - tok) &&
			   jws.sig_len == siglen,
			   "%s: parsed alg/kid/typ/payload/signing input/signature length (%zu)", name,
			   jws.sig_len);
	}
	err = noerr();
	rc = jose_jws_verify(&jws, k, &err);
	tap_ok(rc == 0, "%s: verifies with the signing key (%s)", name, rc == 0 ? "ok" : err.detail);

	/* public JWK export -> re-parse -> verifies */
	jwk = jose_jwk_public(k, &err);
	if (tap_ok(jwk != NULL, "%s: jose_jwk_public", name))
	{
		static const char *const priv[] = {"d", "p", "q", "dp", "dq", "qi", "k"};
		bool		nopriv = true;

		for (size_t j = 0; j < sizeof(priv) / sizeof(priv[0]); j++)
			if (json_object_get(jwk, priv[j]))
				nopriv = false;
		tap_ok(nopriv && json_is_string(json_object_get(jwk, "kty")) &&
			   strcmp(json_string_value(json_object_get(jwk, "alg")), name) == 0 &&
			   strcmp(json_string_value(json_object_get(jwk, "use")), "sig") == 0 &&
			   strcmp(json_string_value(json_object_get(jwk, "kid")), k->kid) == 0,
			   "%s: public JWK has kty/alg/use/kid and no private members", name);
		err = noerr();
		pub = jose_jwk_parse(jwk, JOSE_ALG_UNKNOWN, false, &err);
		if (tap_ok(pub != NULL, "%s: public JWK re-parses (%s)", name, pub ? "ok" : err.detail))
		{
			uint8_t    *s = NULL;
			size_t		sl = 0;

			tap_ok(pub->alg == alg && !pub->has_private && strcmp(pub->kid, k->kid) == 0 &&
				   strcmp(pub->thumbprint, k->thumbprint) == 0,
				   "%s: re-parsed key: same alg, kid, thumbprint; public only", name);
			err = noerr();
			rc = jose_jws_verify(&jws, pub, &err);
			tap_ok(rc == 0, "%s: token verifies with the re-parsed public key (%s)", name,
				   rc == 0 ? "ok" : err.detail);
			err = noerr();
			rc = jose_sign_raw(pub, (const uint8_t *) "m", 1, &s, &sl, &err);
			tap_ok(rc < 0 && s == NULL && err.detail[0], "%s: public key cannot sign", name);
			free(s);
			jwk2 = jose_jwk_public(pub, &err);
			tap_ok(jwk2 && json_equal(jwk, jwk2), "%s: JWK export is stable across a round trip",
				   name);
		}
	}

	/* PKCS#8 DER round trip */
	err = noerr();
	rc = jose_key_to_der(k, &der, &derlen, &err);
	if (tap_ok(rc == 0 && der && derlen > 0, "%s: jose_key_to_der", name))
	{
		jose_alg	wrong = alg == JOSE_ALG_ES256 ? JOSE_ALG_ES384 : JOSE_ALG_ES256;
		jose_key   *bad;

		k2 = jose_key_from_der(alg, der, derlen, &err);
		if (tap_ok(k2 != NULL, "%s: jose_key_from_der (%s)", name, k2 ? "ok" : err.detail))
		{
			tap_ok(k2->alg == alg && k2->has_private &&
				   strcmp(k2->thumbprint, k->thumbprint) == 0 && strcmp(k2->kid, k->kid) == 0,
				   "%s: DER round trip keeps alg and thumbprint", name);
			tok2 = jose_jws_sign(k2, header, strlen(header), payload_json,
								 strlen(payload_json), &err);
			if (tok2 && pub)
			{
				jose_jws	j2;

				rc = jose_jws_parse(tok2, strlen(tok2), &j2, &err);
				if (rc == 0)
				{
					rc = jose_jws_verify(&j2, pub, &err);
					jose_jws_clear(&j2);
				}
				tap_ok(rc == 0, "%s: token signed by the DER-loaded key verifies with the JWK",
					   name);
			}
			else
				tap_ok(false, "%s: sign with DER-loaded key (%s)", name, err.detail);
		}
		err = noerr();
		bad = jose_key_from_der(wrong, der, derlen, &err);
		tap_ok(bad == NULL && err.code != JOSE_OK && err.detail[0],
			   "%s: DER loaded under the wrong alg (%s) is refused (%s)", name,
			   jose_alg_name(wrong), errname(err.code));
		jose_key_free(bad);
	}

	/* tampering */
	{
		char	   *t = strdup(tok);
		char	   *p = strchr(t, '.') + 1;
		jose_jws	j3;

		*p = *p == 'A' ? 'B' : 'A';	/* change the first payload character */
		err = noerr();
		rc = jose_jws_parse(t, strlen(t), &j3, &err);
		if (rc == 0)
		{
			rc = jose_jws_verify(&j3, k, &err);
			jose_jws_clear(&j3);
		}
		tap_ok(rc < 0 && err.code == JOSE_E_SIGNATURE, "%s: modified payload -> SIGNATURE (%s)",
			   name, errname(err.code));
		free(t);
	}
	jose_jws_clear(&jws);
done:
	free(tok);
	free(tok2);
	free(der);
	json_decref(jwk);
	json_decref(jwk2);
	jose_key_free(pub);
	jose_key_free(k2);
}

static void
test_oct_key_not_exported(void)
{
	jose_error	e = noerr();
	jose_key   *k = jwk_from_text("{\"kty\":\"oct\",\"k\":\"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8\"}",
								  JOSE_ALG_HS256, false, &e);
	json_t	   *j;
	uint8_t    *der = NULL;
	size_t		derlen = 0;
	int			rc;

	if (!tap_ok(k != NULL && k->kty == JOSE_KTY_OCT && k->alg == JOSE_ALG_HS256,
				"oct: HS256 key of 32 bytes parses"))
		return;
	e = noerr();
	j = jose_jwk_public(k, &e);
	tap_ok(j == NULL && e.code != JOSE_OK && e.detail[0], "oct: no \"public\" JWK of a secret key (%s)",
		   errname(e.code));
	json_decref(j);
	e = noerr();
	rc = jose_key_to_der(k, &der, &derlen, &e);
	tap_ok(rc < 0 && der == NULL && e.detail[0], "oct: jose_key_to_der refused (%s)", errname(e.code));
	free(der);
	jose_key_free(k);
}

static void
test_generate_refusals(void)
{
	jose_alg	bad[] = {JOSE_ALG_HS256, JOSE_ALG_HS384, JOSE_ALG_HS512, JOSE_ALG_UNKNOWN};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
	{
		jose_error	e = noerr();
		jose_key   *k = jose_key_generate(bad[i], &e);

		tap_ok(k == NULL && e.code != JOSE_OK && e.detail[0],
			   "jose_key_generate(%s) refused (%s)",
			   jose_alg_name(bad[i]) ? jose_alg_name(bad[i]) : "UNKNOWN", errname(e.code));
		jose_key_free(k);
	}
	{
		jose_error	e = noerr();
		jose_key   *k = jose_key_from_der(JOSE_ALG_ES256, (const uint8_t *) "\x30\x03\x02\x01\x00",
										  5, &e);

		tap_ok(k == NULL && e.code != JOSE_OK, "jose_key_from_der of garbage refused (%s)",
			   errname(e.code));
		jose_key_free(k);
	}
}

/* ---------------- JWK parsing details ---------------- */

static void
jwk_case(const char *name, const char *text, jose_alg dflt, bool allow_private,
		 jose_errcode want)
{
	jose_error	e = noerr();
	jose_key   *k = jwk_from_text(text, dflt, allow_private, &e);

	if (want == JOSE_OK)
		tap_ok(k != NULL, "jwk: %s (%s)", name, k ? "ok" : e.detail);
	else
		tap_ok(k == NULL && e.code == want && e.detail[0], "jwk: %s -> %s (got %s \"%s\")",
			   name, errname(want), errname(e.code), e.detail);
	jose_key_free(k);
}

static void
test_jwk(void)
{
	jose_key   *es = genkeys[0];	/* ES256 */
	json_t	   *j;
	char	   *txt,
			   *x,
			   *y;
	char		buf[1024];

	j = jose_jwk_public(es, &(jose_error) {0});
	x = strdup(json_string_value(json_object_get(j, "x")));
	y = strdup(json_string_value(json_object_get(j, "y")));
	json_decref(j);

	snprintf(buf, sizeof(buf), "{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"%s\",\"y\":\"%s\"}", x, y);
	jwk_case("EC P-256 without alg/kid/use", buf, JOSE_ALG_UNKNOWN, false, JOSE_OK);
	{
		jose_error	e = noerr();
		jose_key   *k = jwk_from_text(buf, JOSE_ALG_UNKNOWN, false, &e);

		tap_ok(k && k->alg == JOSE_ALG_ES256 && strcmp(k->kid, es->thumbprint) == 0,
			   "jwk: P-256 implies ES256, kid defaults to the thumbprint");
		jose_key_free(k);
	}
	snprintf(buf, sizeof(buf), "{\"kty\":\"EC\",\"crv\":\"P-256\",\"alg\":\"ES384\",\"x\":\"%s\",\"y\":\"%s\"}", x, y);
	jwk_case("EC P-256 with alg ES384", buf, JOSE_ALG_UNKNOWN, false, JOSE_E_ALG_KEY_MISMATCH);
	snprintf(buf, sizeof(buf), "{\"kty\":\"EC\",\"crv\":\"P-256\",\"use\":\"enc\",\"x\":\"%s\",\"y\":\"%s\"}", x, y);
	jwk_case("use enc", buf, JOSE_ALG_UNKNOWN, false, JOSE_E_JWK);
	snprintf(buf, sizeof(buf), "{\"kty\":\"EC\",\"crv\":\"P-256\",\"alg\":\"none\",\"x\":\"%s\",\"y\":\"%s\"}", x, y);
	jwk_case("alg none", buf, JOSE_ALG_UNKNOWN, false, JOSE_E_ALG_UNSUPPORTED);
	snprintf(buf, sizeof(buf), "{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"%s\",\"y\":\"%s\"}", x, x);
	jwk_case("EC point not on the curve", buf, JOSE_ALG_UNKNOWN, false, JOSE_E_JWK);
	snprintf(buf, sizeof(buf), "{\"kty\":\"EC\",\"crv\":\"P-384\",\"x\":\"%s\",\"y\":\"%s\"}", x, y);
	jwk_case("EC coordinates of the wrong size for P-384", buf, JOSE_ALG_UNKNOWN, false, JOSE_E_JWK);
	snprintf(buf, sizeof(buf), "{\"kty\":\"EC\",\"crv\":\"secp256k1\",\"x\":\"%s\",\"y\":\"%s\"}", x, y);
	jwk_case("EC secp256k1", buf, JOSE_ALG_UNKNOWN, false, JOSE_E_JWK);
	snprintf(buf, sizeof(buf), "{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"%s=\",\"y\":\"%s\"}", x, y);
	jwk_case("EC x with padding", buf, JOSE_ALG_UNKNOWN, false, JOSE_E_JWK);
	snprintf(buf, sizeof(buf), "{\"kty\":\"EC\",\"crv\":\"P-256\",\"y\":\"%s\"}", y);
	jwk_case("EC without x", buf, JOSE_ALG_UNKNOWN, false, JOSE_E_JWK);
	snprintf(buf, sizeof(buf), "{\"kty\":\"EC\",\"crv\":\"P-256\",\"kid\":\"\",\"x\":\"%s\",\"y\":\"%s\"}", x, y);
	jwk_case("empty kid", buf, JOSE_ALG_UNKNOWN, false, JOSE_E_JWK);
	snprintf(buf, sizeof(buf), "{\"kty\":\"EC\",\"crv\":\"P-256\",\"kid\":7,\"x\":\"%s\",\"y\":\"%s\"}", x, y);
	jwk_case("numeric kid", buf, JOSE_ALG_UNKNOWN, false, JOSE_E_JWK);
	jwk_case("no kty", "{\"crv\":\"P-256\"}", JOSE_ALG_UNKNOWN, false, JOSE_E_JWK);
	jwk_case("unknown kty", "{\"kty\":\"XYZ\"}", JOSE_ALG_UNKNOWN, false, JOSE_E_JWK);
	jwk_case("not an object", "[1]", JOSE_ALG_UNKNOWN, false, JOSE_E_JWK);
	jwk_case("OKP X25519", "{\"kty\":\"OKP\",\"crv\":\"X25519\",\"x\":\"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo\"}",
			 JOSE_ALG_UNKNOWN, false, JOSE_E_JWK);
	jwk_case("OKP x of 31 bytes", "{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"x\":\"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHUQ\"}",
			 JOSE_ALG_UNKNOWN, false, JOSE_E_JWK);
	/* RFC 8037 A.1 d with a different x: the private key does not match the public */
	jwk_case("Ed25519 d that does not belong to x",
			 "{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"x\":\"KmBr9nrHcMYHA4sAQQGzJe21ae_TQT0tHyw-a05uMII\","
			 "\"d\":\"nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A\"}",
			 JOSE_ALG_UNKNOWN, true, JOSE_E_JWK);
	jwk_case("oct without alg and no default", "{\"kty\":\"oct\",\"k\":\"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\"}",
			 JOSE_ALG_UNKNOWN, false, JOSE_E_JWK);
	jwk_case("oct 32 bytes for HS256", "{\"kty\":\"oct\",\"k\":\"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\"}",
			 JOSE_ALG_HS256, false, JOSE_OK);
	jwk_case("oct 31 bytes for HS256", "{\"kty\":\"oct\",\"k\":\"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\"}",
			 JOSE_ALG_HS256, false, JOSE_E_KEY_TOO_WEAK);
	jwk_case("oct 32 bytes for HS384", "{\"kty\":\"oct\",\"alg\":\"HS384\",\"k\":\"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\"}",
			 JOSE_ALG_UNKNOWN, false, JOSE_E_KEY_TOO_WEAK);
	jwk_case("oct with alg ES256", "{\"kty\":\"oct\",\"alg\":\"ES256\",\"k\":\"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\"}",
			 JOSE_ALG_UNKNOWN, false, JOSE_E_ALG_KEY_MISMATCH);
	txt = NULL;
	{
		/* an RSA JWK whose alg is EdDSA */
		json_t	   *r = jose_jwk_public(genkeys[4], &(jose_error) {0});

		json_object_set_new(r, "alg", json_string("EdDSA"));
		txt = json_dumps(r, JSON_COMPACT);
		jwk_case("RSA with alg EdDSA", txt, JOSE_ALG_UNKNOWN, false, JOSE_E_ALG_KEY_MISMATCH);
		free(txt);
		json_object_del(r, "alg");
		txt = json_dumps(r, JSON_COMPACT);
		jwk_case("RSA without alg and no default", txt, JOSE_ALG_UNKNOWN, false, JOSE_E_JWK);
		jwk_case("RSA without alg, default PS512", txt, JOSE_ALG_PS512, false, JOSE_OK);
		free(txt);
		json_object_set_new(r, "e", json_string("AQAA"));	/* even exponent */
		txt = json_dumps(r, JSON_COMPACT);
		jwk_case("RSA with even e", txt, JOSE_ALG_RS256, false, JOSE_E_JWK);
		free(txt);
		json_decref(r);
	}
	free(x);
	free(y);
}

/*
 * Private JWKs whose private part does not belong to the public members.
 * jwk.c refuses this for Ed25519 ("would sign under a lie"); the same must
 * hold for EC and RSA, or jose_sign_raw signs with a key the JWK (and its
 * thumbprint/kid) does not describe.
 */
static json_t *
private_jwk_of(const jose_key *k)
{
	uint8_t    *der = NULL;
	size_t		derlen = 0;
	jose_error	e = noerr();
	json_t	   *j = jose_jwk_public(k, &e);
	EVP_PKEY   *pk;
	const unsigned char *p;

	/* pull the private scalars out of the key via its PKCS#8 form */
	if (j == NULL || jose_key_to_der(k, &der, &derlen, &e) < 0)
		abort();
	p = der;
	pk = d2i_AutoPrivateKey(NULL, &p, (long) derlen);
	if (pk == NULL)
		abort();
	if (k->kty == JOSE_KTY_EC)
	{
		BIGNUM	   *d = NULL;
		uint8_t		buf[66];
		size_t		fs = k->alg == JOSE_ALG_ES256 ? 32 : k->alg == JOSE_ALG_ES384 ? 48 : 66;
		char	   *s;

		if (!EVP_PKEY_get_bn_param(pk, OSSL_PKEY_PARAM_PRIV_KEY, &d) ||
			BN_bn2binpad(d, buf, (int) fs) < 0)
			abort();
		s = b64(buf, fs);
		json_object_set_new(j, "d", json_string(s));
		free(s);
		BN_clear_free(d);
	}
	else if (k->kty == JOSE_KTY_RSA)
	{
		static const char *const names[] = {"d", "p", "q", "dp", "dq", "qi"};
		static const char *const params[] = {
			OSSL_PKEY_PARAM_RSA_D, OSSL_PKEY_PARAM_RSA_FACTOR1, OSSL_PKEY_PARAM_RSA_FACTOR2,
			OSSL_PKEY_PARAM_RSA_EXPONENT1, OSSL_PKEY_PARAM_RSA_EXPONENT2,
		OSSL_PKEY_PARAM_RSA_COEFFICIENT1};

		for (int i = 0; i < 6; i++)
		{
			BIGNUM	   *bn = NULL;
			uint8_t		buf[512];
			int			n;
			char	   *s;

			if (!EVP_PKEY_get_bn_param(pk, params[i], &bn) || (n = BN_bn2bin(bn, buf)) <= 0)
				abort();
			s = b64(buf, (size_t) n);
			json_object_set_new(j, names[i], json_string(s));
			free(s);
			BN_clear_free(bn);
		}
	}
	EVP_PKEY_free(pk);
	OPENSSL_clear_free(der, derlen);
	return j;
}

static void
test_private_jwk(void)
{
	static const int pairs[][2] = {{0, 0}, {4, 4}};	/* ES256, RS256 */

	for (size_t i = 0; i < sizeof(pairs) / sizeof(pairs[0]); i++)
	{
		jose_key   *k = genkeys[pairs[i][0]];
		const char *name = jose_alg_name(k->alg);
		jose_error	e = noerr();
		jose_key   *other = jose_key_generate(k->alg, &e);
		json_t	   *mine = private_jwk_of(k),
				   *theirs = private_jwk_of(other),
				   *mixed = json_deep_copy(mine);
		jose_key   *pk;
		const char *const *members;
		static const char *const ec_members[] = {"d", NULL};
		static const char *const rsa_members[] = {"d", "p", "q", "dp", "dq", "qi", NULL};

		pk = jose_jwk_parse(mine, JOSE_ALG_UNKNOWN, true, &e);
		tap_ok(pk && pk->has_private && strcmp(pk->thumbprint, k->thumbprint) == 0,
			   "%s: private JWK (allow_private) parses with its thumbprint", name);
		if (pk)
		{
			char	   *tok = jose_jws_sign(pk, "{\"alg\":\"ES256\"}", 15, "{}", 2, &e);
			jose_jws	jws;
			int			rc = -1;

			if (k->alg != JOSE_ALG_ES256)
			{
				free(tok);
				tok = jose_jws_sign(pk, "{\"alg\":\"RS256\"}", 15, "{}", 2, &e);
			}
			if (tok && jose_jws_parse(tok, strlen(tok), &jws, &e) == 0)
			{
				rc = jose_jws_verify(&jws, k, &e);
				jose_jws_clear(&jws);
			}
			tap_ok(rc == 0, "%s: a token signed by the JWK-loaded private key verifies", name);
			free(tok);
		}
		jose_key_free(pk);

		members = k->kty == JOSE_KTY_EC ? ec_members : rsa_members;
		for (int m = 0; members[m]; m++)
			json_object_set(mixed, members[m], json_object_get(theirs, members[m]));
		e = noerr();
		pk = jose_jwk_parse(mixed, JOSE_ALG_UNKNOWN, true, &e);
		tap_ok(pk == NULL && e.code == JOSE_E_JWK,
			   "%s: private JWK whose private part belongs to another key is refused (got %s)",
			   name, pk ? "a key" : errname(e.code));
		if (pk)
		{
			/* show the consequence: what it signs does not verify under its own JWK */
			uint8_t    *sig = NULL;
			size_t		sl = 0;
			int			src = jose_sign_raw(pk, (const uint8_t *) "m", 1, &sig, &sl, &e);
			int			vrc = src == 0 ? jose_verify_raw(pk, pk->alg, (const uint8_t *) "m", 1,
														 sig, sl, &e) : -1;

			tap_diag("  accepted key: kid/thumbprint %s describe the public members; "
					 "sign %s; own signature %s under it", pk->thumbprint,
					 src == 0 ? "succeeds" : "fails", vrc == 0 ? "verifies" : "does NOT verify");
			free(sig);
		}
		jose_key_free(pk);
		json_decref(mine);
		json_decref(theirs);
		json_decref(mixed);
		jose_key_free(other);
	}
}

/* An error record that already holds an earlier failure must be overwritten. */
static void
test_stale_error(void)
{
	static const struct
	{
		const char *name;
		const char *jwk;
	}			cases[] = {
		{"EC JWK without y", "{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\"}"},
		{"EC JWK without x and y", "{\"kty\":\"EC\",\"crv\":\"P-256\"}"},
		{"OKP JWK without x", "{\"kty\":\"OKP\",\"crv\":\"Ed25519\"}"},
		{"RSA JWK without e", "{\"kty\":\"RSA\",\"alg\":\"RS256\",\"n\":\"AQAB\"}"},
		{"oct JWK without k", "{\"kty\":\"oct\",\"alg\":\"HS256\"}"},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
	{
		jose_error	e;
		jose_key   *k;

		e.code = JOSE_E_JWK;
		strcpy(e.detail, "STALE detail from an earlier call");
		k = jwk_from_text(cases[i].jwk, JOSE_ALG_UNKNOWN, false, &e);
		tap_ok(k == NULL && e.code == JOSE_E_JWK && strstr(e.detail, "STALE") == NULL &&
			   e.detail[0] != '\0',
			   "stale error: %s -> fresh JWK detail (got %s \"%s\")", cases[i].name,
			   errname(e.code), e.detail);
		jose_key_free(k);
	}
}

/* ---------------- JWKS and key selection ---------------- */

static json_t *
pub_jwk(const jose_key *k, const char *kid, const char *alg)
{
	jose_error	e = noerr();
	json_t	   *j = jose_jwk_public(k, &e);

	if (j == NULL)
		abort();
	if (kid)
		json_object_set_new(j, "kid", json_string(kid));
	if (alg)
		json_object_set_new(j, "alg", json_string(alg));
	else
		json_object_del(j, "alg");
	return j;
}

static int
select_key(const char *token, jose_key *const *keys, size_t n, jose_error *err)
{
	jose_jws	jws;
	int			rc;

	if (jose_jws_parse(token, strlen(token), &jws, err) < 0)
		return -100;
	rc = jose_jws_verify_with(&jws, keys, n, err);
	jose_jws_clear(&jws);
	return rc;
}

static void
sel_case(const char *name, const char *header, const jose_key *signer,
		 jose_key *const *keys, size_t n, int want_index, jose_errcode want_code)
{
	char	   *tok = token_signed(header, "{\"sub\":\"x\"}", signer);
	jose_error	e = noerr();
	int			rc = select_key(tok, keys, n, &e);

	if (want_index >= 0)
		tap_ok(rc == want_index, "select: %s -> key %d%s%s", name, want_index,
			   rc == want_index ? "" : " got ", rc == want_index ? "" : e.detail);
	else
		tap_ok(rc == -1 && e.code == want_code && e.detail[0], "select: %s -> %s (got %d %s \"%s\")",
			   name, errname(want_code), rc, errname(e.code), e.detail);
	free(tok);
}

static void
test_jwks(void)
{
	jose_error	err = noerr();
	jose_key   *es_a = genkeys[0],
			   *ed = genkeys[3],
			   *rs = genkeys[4],
			   *ps = genkeys[7],
			   *es_e = jose_key_generate(JOSE_ALG_ES256, &err),
			   *foreign = jose_key_generate(JOSE_ALG_ES256, &err),
			   *rs_as_ps = NULL;
	jose_key  **keys = NULL;
	size_t		n = 0;
	json_t	   *jwks,
			   *arr,
			   *withd;
	int			rc;
	uint8_t    *der = NULL;
	size_t		derlen = 0;

	/* the RS256 key's material, loaded as a PS256 key (same RSA key, other alg) */
	if (jose_key_to_der(rs, &der, &derlen, &err) == 0)
		rs_as_ps = jose_key_from_der(JOSE_ALG_PS256, der, derlen, &err);
	free(der);
	if (es_e == NULL || foreign == NULL || rs_as_ps == NULL)
		abort();

	arr = json_array();
	json_array_append_new(arr, pub_jwk(es_a, "a", "ES256"));	/* 0 */
	json_array_append_new(arr, pub_jwk(ed, "b", NULL));	/* 1 */
	json_array_append_new(arr, pub_jwk(rs, "c", NULL));	/* 2: no alg -> RS256 */
	json_array_append_new(arr, pub_jwk(rs_as_ps, "rsa-ps", "PS256"));	/* 3 */
	{
		json_t	   *enc = pub_jwk(ps, "enc-key", NULL);

		json_object_set_new(enc, "use", json_string("enc"));
		json_array_append_new(arr, enc);	/* skipped */
	}
	withd = pub_jwk(es_e, "e", NULL);
	/* private member that must never be read from a JWKS */
	json_object_set_new(withd, "d", json_string("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"));
	json_array_append_new(arr, withd);	/* 4 */
	jwks = json_pack("{s:o}", "keys", arr);

	rc = jose_jwks_parse(jwks, &keys, &n, &err);
	if (!tap_ok(rc == 0 && n == 5, "jwks: 6 JWKs, the use=enc one skipped -> 5 keys (%s)",
				rc == 0 ? "ok" : err.detail))
		goto done;
	tap_ok(keys[0]->alg == JOSE_ALG_ES256 && keys[1]->alg == JOSE_ALG_EDDSA &&
		   keys[2]->alg == JOSE_ALG_RS256 && keys[3]->alg == JOSE_ALG_PS256 &&
		   keys[4]->alg == JOSE_ALG_ES256 && strcmp(keys[4]->kid, "e") == 0,
		   "jwks: algs bound (RSA without alg -> RS256), order kept");
	tap_ok(!keys[4]->has_private, "jwks: private member \"d\" is not read");

	sel_case("kid a, ES256", "{\"alg\":\"ES256\",\"kid\":\"a\"}", es_a, keys, n, 0, 0);
	sel_case("kid e, ES256", "{\"alg\":\"ES256\",\"kid\":\"e\"}", es_e, keys, n, 4, 0);
	sel_case("no kid, ES256 by key e: a tried, e verifies", "{\"alg\":\"ES256\"}", es_e, keys, n, 4, 0);
	sel_case("no kid, EdDSA", "{\"alg\":\"EdDSA\"}", ed, keys, n, 1, 0);
	sel_case("no kid, RS256", "{\"alg\":\"RS256\"}", rs, keys, n, 2, 0);
	sel_case("no kid, PS256 by the shared RSA key", "{\"alg\":\"PS256\"}", rs_as_ps, keys, n, 3, 0);
	sel_case("kid rsa-ps but RS256 signature by the same RSA key",
			 "{\"alg\":\"RS256\",\"kid\":\"rsa-ps\"}", rs, keys, n, -1, JOSE_E_ALG_KEY_MISMATCH);
	sel_case("kid b (EdDSA key) on an ES256 token", "{\"alg\":\"ES256\",\"kid\":\"b\"}", es_a,
			 keys, n, -1, JOSE_E_ALG_KEY_MISMATCH);
	sel_case("kid that matches no key", "{\"alg\":\"ES256\",\"kid\":\"zzz\"}", es_a, keys, n,
			 -1, JOSE_E_NO_KEY);
	sel_case("kid of the skipped enc key", "{\"alg\":\"PS256\",\"kid\":\"enc-key\"}", ps, keys, n,
			 -1, JOSE_E_NO_KEY);
	sel_case("no kid, no key of that alg (ES384)", "{\"alg\":\"ES384\"}", genkeys[1], keys, n,
			 -1, JOSE_E_NO_KEY);
	sel_case("no kid, PS384: only keys of matching alg are tried", "{\"alg\":\"PS384\"}",
			 genkeys[8], keys, n, -1, JOSE_E_NO_KEY);
	sel_case("kid a, signed by a foreign ES256 key", "{\"alg\":\"ES256\",\"kid\":\"a\"}", foreign,
			 keys, n, -1, JOSE_E_SIGNATURE);
	sel_case("kid e, signed by key a (kid chooses, its verdict is final)",
			 "{\"alg\":\"ES256\",\"kid\":\"e\"}", es_a, keys, n, -1, JOSE_E_SIGNATURE);
	sel_case("no kid, signed by a foreign ES256 key", "{\"alg\":\"ES256\"}", foreign, keys, n,
			 -1, JOSE_E_SIGNATURE);
	{
		/* HS256 through a JWKS: oct key without alg is bound to HS256 */
		static const char secret[] = "0123456789abcdef0123456789abcdef";
		char	   *k = b64s(secret);
		json_t	   *hj;
		jose_key  **hk = NULL;
		size_t		hn = 0;
		jose_key   *signer;
		jose_error	e = noerr();

		hj = json_pack("{s:[{s:s,s:s,s:s}]}", "keys", "kty", "oct", "kid", "h", "k", k);
		{
			json_t	   *sj = json_pack("{s:s,s:s}", "kty", "oct", "k", k);

			signer = jose_jwk_parse(sj, JOSE_ALG_HS256, false, &e);
			json_decref(sj);
		}
		rc = jose_jwks_parse(hj, &hk, &hn, &e);
		if (tap_ok(rc == 0 && hn == 1 && hk[0]->alg == JOSE_ALG_HS256 && signer,
				   "jwks: oct key without alg bound to HS256"))
		{
			sel_case("HS256 with kid h", "{\"alg\":\"HS256\",\"kid\":\"h\"}", signer, hk, hn, 0, 0);
			sel_case("HS256 without kid", "{\"alg\":\"HS256\"}", signer, hk, hn, 0, 0);
			sel_case("ES256 token against the HS256 key's kid", "{\"alg\":\"ES256\",\"kid\":\"h\"}",
					 es_a, hk, hn, -1, JOSE_E_ALG_KEY_MISMATCH);
		}
		jose_keys_free(hk, hn);
		jose_key_free(signer);
		json_decref(hj);
		free(k);
	}
	{
		jose_error	e = noerr();

		rc = select_key("x", keys, 0, &e);
		tap_ok(rc == -100 && e.code == JOSE_E_FORMAT, "select: garbage token refused at parse");
	}

done:
	jose_keys_free(keys, n);
	json_decref(jwks);

	/* malformed JWKS documents */
	{
		static const struct
		{
			const char *name;
			const char *text;
		}			bad[] = {
			{"not an object", "[]"},
			{"no keys", "{}"},
			{"keys not an array", "{\"keys\":{}}"},
			{"empty keys", "{\"keys\":[]}"},
			{"a key that is not an object", "{\"keys\":[1]}"},
			{"only an enc key", "{\"keys\":[{\"kty\":\"oct\",\"use\":\"enc\",\"k\":\"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\"}]}"},
			{"one key with an unknown kty", "{\"keys\":[{\"kty\":\"XYZ\"}]}"},
		};

		for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		{
			json_t	   *j = json_fixture(bad[i].text);
			jose_error	e = noerr();

			keys = NULL;
			n = 0;
			rc = jose_jwks_parse(j, &keys, &n, &e);
			tap_ok(rc < 0 && e.code == JOSE_E_JWKS && e.detail[0] && keys == NULL && n == 0,
				   "jwks: %s -> JWKS (got %s \"%s\")", bad[i].name, errname(e.code), e.detail);
			jose_keys_free(keys, n);
			json_decref(j);
		}
	}
	{
		/* one bad key among good ones spoils the whole set; so do too many keys */
		json_t	   *a = json_array(),
				   *j;
		jose_error	e = noerr();
		json_t	   *badpt = pub_jwk(es_a, "bad", NULL);

		json_array_append_new(a, pub_jwk(es_a, "ok", NULL));
		json_object_set(badpt, "y", json_object_get(badpt, "x"));
		json_array_append_new(a, badpt);
		j = json_pack("{s:o}", "keys", a);
		keys = NULL;
		n = 0;
		rc = jose_jwks_parse(j, &keys, &n, &e);
		tap_ok(rc < 0 && e.code == JOSE_E_JWKS && keys == NULL,
			   "jwks: one invalid EC point among valid keys -> whole JWKS refused (%s)",
			   errname(e.code));
		jose_keys_free(keys, n);
		json_decref(j);

		a = json_array();
		for (int i = 0; i <= JOSE_MAX_JWKS_KEYS; i++)
		{
			char		kid[16];

			snprintf(kid, sizeof(kid), "k%d", i);
			json_array_append_new(a, pub_jwk(ed, kid, NULL));
		}
		j = json_pack("{s:o}", "keys", a);
		e = noerr();
		keys = NULL;
		n = 0;
		rc = jose_jwks_parse(j, &keys, &n, &e);
		tap_ok(rc < 0 && e.code == JOSE_E_JWKS, "jwks: %d keys -> JWKS (%s)",
			   JOSE_MAX_JWKS_KEYS + 1, errname(e.code));
		jose_keys_free(keys, n);
		json_array_remove(json_object_get(j, "keys"), 0);
		keys = NULL;
		n = 0;
		rc = jose_jwks_parse(j, &keys, &n, &e);
		tap_ok(rc == 0 && n == JOSE_MAX_JWKS_KEYS, "jwks: exactly %d keys accepted",
			   JOSE_MAX_JWKS_KEYS);
		jose_keys_free(keys, n);
		json_decref(j);
	}
	{
		/* one kind of key per set: every asymmetric kind together, or only secrets */
		static const char oct1[] = "{\"kty\":\"oct\",\"kid\":\"h1\",\"k\":\"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY\"}";
		static const char oct2[] = "{\"kty\":\"oct\",\"kid\":\"h2\",\"alg\":\"HS384\","
			"\"k\":\"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWYwMTIzNDU2Nzg5YWJjZGVm\"}";
		json_t	   *j;
		jose_error	e = noerr();

		j = json_pack("{s:[o,o,o]}", "keys", pub_jwk(es_a, "a", NULL), pub_jwk(ed, "b", NULL),
					  pub_jwk(rs, "c", NULL));
		keys = NULL;
		n = 0;
		rc = jose_jwks_parse(j, &keys, &n, &e);
		tap_ok(rc == 0 && n == 3, "jwks: EC, OKP and RSA keys together are one kind (%s)",
			   rc == 0 ? "ok" : e.detail);
		jose_keys_free(keys, n);
		json_decref(j);

		j = json_pack("{s:[o,o]}", "keys", json_fixture(oct1), json_fixture(oct2));
		keys = NULL;
		n = 0;
		rc = jose_jwks_parse(j, &keys, &n, &e);
		tap_ok(rc == 0 && n == 2, "jwks: two oct keys together are one kind (%s)",
			   rc == 0 ? "ok" : e.detail);
		jose_keys_free(keys, n);
		json_decref(j);

		j = json_pack("{s:[o,o,o]}", "keys", pub_jwk(es_a, "a", NULL), pub_jwk(rs, "c", NULL),
					  json_fixture(oct1));
		keys = NULL;
		n = 0;
		e = noerr();
		rc = jose_jwks_parse(j, &keys, &n, &e);
		tap_ok(rc < 0 && keys == NULL && n == 0 && e.code == JOSE_E_JWKS &&
			   strstr(e.detail, "mixes symmetric (oct) and asymmetric keys") &&
			   strstr(e.detail, "key 2"),
			   "jwks: an oct key after two public keys refuses the set, naming it (got %s \"%s\")",
			   errname(e.code), e.detail);
		jose_keys_free(keys, n);
		json_decref(j);
	}
	jose_key_free(es_e);
	jose_key_free(foreign);
	jose_key_free(rs_as_ps);
}

/* ---------------- key_ops and use ---------------- */

/*
 * RFC 7517 §4.3 key_ops and §4.2 use: a key is used only for what its JWK
 * says.  "sign"/"verify" limit jose_sign_raw/jose_verify_raw; a key_ops that
 * names neither is not a signature key, like use "enc"; a malformed key_ops
 * refuses the key.
 */

/* jwk (copied) with key_ops set from a JSON text, or removed when NULL */
static json_t *
with_key_ops(json_t *jwk, const char *key_ops)
{
	json_t	   *j = json_deep_copy(jwk);

	json_object_del(j, "key_ops");
	if (key_ops)
	{
		json_t	   *v = json_loads(key_ops, JSON_DECODE_ANY, NULL);

		if (v == NULL)
			abort();
		json_object_set_new(j, "key_ops", v);
	}
	return j;
}

/* sign "m" with k, then verify with v: 0 when both succeed; err says which failed */
static int
sign_then_verify(const jose_key *k, const jose_key *v, jose_error *err, bool *signed_ok)
{
	uint8_t    *sig = NULL;
	size_t		sl = 0;
	int			rc;

	*signed_ok = jose_sign_raw(k, (const uint8_t *) "m", 1, &sig, &sl, err) == 0;
	if (!*signed_ok)
		return -1;
	rc = jose_verify_raw(v, v->alg, (const uint8_t *) "m", 1, sig, sl, err);
	free(sig);
	return rc;
}

static void
test_key_ops(void)
{
	jose_key   *es = genkeys[0],	/* ES256 */
			   *rs = genkeys[4];	/* RS256 */
	json_t	   *espub = pub_jwk(es, "es", "ES256"),
			   *espriv = private_jwk_of(es),
			   *rspub = pub_jwk(rs, "rs", NULL);
	jose_error	e;
	jose_key   *k;
	bool		signed_ok;
	int			rc;

	/* jose_jwk_public writes use "sig": drop it so key_ops alone speaks, unless a case sets it */
	json_object_del(espub, "use");
	json_object_del(espriv, "use");
	json_object_del(rspub, "use");

	/* the well-formed cases */
	{
		static const struct
		{
			const char *key_ops;
			bool		can_sign;
			bool		can_verify;
		}			ok[] = {
			{NULL, true, true},
			{"[\"sign\",\"verify\"]", true, true},
			{"[\"verify\"]", false, true},
			{"[\"sign\"]", true, false},
			{"[\"verify\",\"encrypt\"]", false, true},	/* other ops tolerated without use */
			{"[\"deriveKey\",\"sign\"]", true, false},
		};

		for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++)
		{
			json_t	   *priv = with_key_ops(espriv, ok[i].key_ops),
					   *pub = with_key_ops(espub, ok[i].key_ops);
			jose_key   *sk,
					   *vk;
			const char *name = ok[i].key_ops ? ok[i].key_ops : "absent";

			e = noerr();
			sk = jose_jwk_parse(priv, JOSE_ALG_UNKNOWN, true, &e);
			vk = sk ? jose_jwk_parse(pub, JOSE_ALG_UNKNOWN, false, &e) : NULL;
			if (!tap_ok(sk && vk, "key_ops %s: private and public JWK parse (%s)", name,
						sk && vk ? "ok" : e.detail))
			{
				jose_key_free(sk);
				json_decref(priv);
				json_decref(pub);
				continue;
			}
			/* signing with the private JWK, verifying with the generated key */
			e = noerr();
			rc = sign_then_verify(sk, es, &e, &signed_ok);
			if (ok[i].can_sign)
				tap_ok(rc == 0, "key_ops %s: the private key signs (%s)", name,
					   rc == 0 ? "ok" : e.detail);
			else
				tap_ok(!signed_ok && e.code == JOSE_E_KEY_OPS && strstr(e.detail, "\"sign\""),
					   "key_ops %s: the private key refuses to sign -> KEY_OPS (got %s \"%s\")",
					   name, signed_ok ? "a signature" : errname(e.code), e.detail);
			/* signing with the generated key, verifying with the public JWK */
			e = noerr();
			rc = sign_then_verify(es, vk, &e, &signed_ok);
			if (ok[i].can_verify)
				tap_ok(rc == 0, "key_ops %s: the public key verifies (%s)", name,
					   rc == 0 ? "ok" : e.detail);
			else
				tap_ok(signed_ok && rc < 0 && e.code == JOSE_E_KEY_OPS &&
					   strstr(e.detail, "\"verify\""),
					   "key_ops %s: the public key refuses to verify a valid signature "
					   "-> KEY_OPS (got %s \"%s\")", name, rc == 0 ? "verified" : errname(e.code),
					   e.detail);
			jose_key_free(sk);
			jose_key_free(vk);
			json_decref(priv);
			json_decref(pub);
		}
	}

	/* refused: malformed, no signature operation, or disagreeing with use */
	{
		static const struct
		{
			const char *name;
			const char *key_ops;
			const char *use;
			const char *phrase;
		}			bad[] = {
			{"a string", "\"verify\"", NULL, "array"},
			{"an object", "{\"verify\":true}", NULL, "array"},
			{"an array with a number", "[\"verify\",1]", NULL, "array"},
			{"an array with null", "[null]", NULL, "array"},
			{"17 entries", "[\"verify\",\"a\",\"b\",\"c\",\"d\",\"e\",\"f\",\"g\",\"h\",\"i\",\"j\",\"k\","
			"\"l\",\"m\",\"n\",\"o\",\"p\"]", NULL, "at most 16"},
			{"\"verify\" twice", "[\"verify\",\"verify\"]", NULL, "distinct"},
			{"\"encrypt\" twice", "[\"verify\",\"encrypt\",\"encrypt\"]", NULL, "distinct"},
			{"empty", "[]", NULL, "neither"},
			{"[\"encrypt\"]", "[\"encrypt\"]", NULL, "neither"},
			{"[\"encrypt\",\"wrapKey\"]", "[\"encrypt\",\"wrapKey\"]", NULL, "neither"},
			{"[\"Verify\"] (values are case-sensitive)", "[\"Verify\"]", NULL, "neither"},
			{"[\"verify\",\"encrypt\"] with use sig", "[\"verify\",\"encrypt\"]", "sig", "use"},
			{"[\"encrypt\"] with use sig", "[\"encrypt\"]", "sig", "neither"},
		};

		for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		{
			json_t	   *pub = with_key_ops(espub, bad[i].key_ops),
					   *priv = with_key_ops(espriv, bad[i].key_ops);

			if (bad[i].use)
			{
				json_object_set_new(pub, "use", json_string(bad[i].use));
				json_object_set_new(priv, "use", json_string(bad[i].use));
			}
			e = noerr();
			k = jose_jwk_parse(pub, JOSE_ALG_UNKNOWN, false, &e);
			tap_ok(k == NULL && e.code == JOSE_E_JWK && strstr(e.detail, "key_ops") &&
				   strstr(e.detail, bad[i].phrase),
				   "key_ops %s: public JWK refused -> JWK (got %s \"%s\")", bad[i].name,
				   k ? "a key" : errname(e.code), e.detail);
			jose_key_free(k);
			e = noerr();
			k = jose_jwk_parse(priv, JOSE_ALG_UNKNOWN, true, &e);
			tap_ok(k == NULL && e.code == JOSE_E_JWK && strstr(e.detail, "key_ops"),
				   "key_ops %s: private JWK refused -> JWK (got %s)", bad[i].name,
				   k ? "a key" : errname(e.code));
			jose_key_free(k);
			json_decref(pub);
			json_decref(priv);
		}
	}
	{
		/* use sig with key_ops [verify] agree; use enc is refused whatever key_ops says */
		json_t	   *j = with_key_ops(espub, "[\"verify\"]");

		json_object_set_new(j, "use", json_string("sig"));
		e = noerr();
		k = jose_jwk_parse(j, JOSE_ALG_UNKNOWN, false, &e);
		tap_ok(k != NULL && k->ops == JOSE_OP_VERIFY,
			   "key_ops [\"verify\"] with use sig: accepted, verify only (%s)", k ? "ok" : e.detail);
		jose_key_free(k);
		json_object_set_new(j, "use", json_string("enc"));
		e = noerr();
		k = jose_jwk_parse(j, JOSE_ALG_UNKNOWN, false, &e);
		tap_ok(k == NULL && e.code == JOSE_E_JWK && strstr(e.detail, "use"),
			   "key_ops [\"verify\"] with use enc: refused (got %s \"%s\")",
			   k ? "a key" : errname(e.code), e.detail);
		jose_key_free(k);
		json_decref(j);
	}
	{
		/* generated and stored keys may do both */
		uint8_t    *der = NULL;
		size_t		derlen = 0;

		e = noerr();
		k = jose_key_to_der(es, &der, &derlen, &e) == 0 ?
			jose_key_from_der(JOSE_ALG_ES256, der, derlen, &e) : NULL;
		tap_ok(es->ops == (JOSE_OP_SIGN | JOSE_OP_VERIFY) && k &&
			   k->ops == (JOSE_OP_SIGN | JOSE_OP_VERIFY),
			   "key_ops: generated and DER-loaded keys may sign and verify");
		jose_key_free(k);
		free(der);
	}

	/* JWKS: keys whose key_ops lack verify are skipped like use enc; malformed refuses all */
	{
		json_t	   *arr = json_array(),
				   *jwks;
		jose_key  **keys = NULL;
		size_t		n = 0;

		json_array_append_new(arr, with_key_ops(espub, "[\"verify\"]"));	/* 0 */
		{
			json_t	   *r = with_key_ops(rspub, "[\"encrypt\"]");

			json_object_set_new(r, "kid", json_string("rs-enc"));
			json_array_append_new(arr, r);	/* skipped */
		}
		{
			json_t	   *r = with_key_ops(rspub, "[\"sign\"]");

			json_object_set_new(r, "kid", json_string("rs-sign"));
			json_array_append_new(arr, r);	/* skipped */
		}
		{
			/* an encryption key of a kind tokex cannot even parse: skipped unread */
			json_t	   *x = json_fixture("{\"kty\":\"OKP\",\"crv\":\"X25519\",\"kid\":\"x\","
										 "\"x\":\"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo\","
										 "\"key_ops\":[\"deriveKey\"]}");

			json_array_append_new(arr, x);
		}
		json_array_append_new(arr, with_key_ops(rspub, "[\"verify\",\"sign\"]"));	/* 1 */
		jwks = json_pack("{s:o}", "keys", arr);
		e = noerr();
		rc = jose_jwks_parse(jwks, &keys, &n, &e);
		if (tap_ok(rc == 0 && n == 2 && keys[0]->ops == JOSE_OP_VERIFY &&
				   strcmp(keys[1]->kid, "rs") == 0,
				   "jwks: keys whose key_ops lack \"verify\" are skipped -> 2 of 5 (%s)",
				   rc == 0 ? "ok" : e.detail))
		{
			sel_case("kid of a skipped key_ops [\"encrypt\"] key", "{\"alg\":\"RS256\",\"kid\":\"rs-enc\"}",
					 rs, keys, n, -1, JOSE_E_NO_KEY);
			sel_case("kid of a skipped key_ops [\"sign\"] key", "{\"alg\":\"RS256\",\"kid\":\"rs-sign\"}",
					 rs, keys, n, -1, JOSE_E_NO_KEY);
			sel_case("kid of the verify-only key", "{\"alg\":\"ES256\",\"kid\":\"es\"}", es, keys, n, 0, 0);
		}
		jose_keys_free(keys, n);
		json_decref(jwks);

		jwks = json_pack("{s:[o,o]}", "keys", with_key_ops(espub, "[\"verify\"]"),
						 with_key_ops(rspub, "[\"verify\",\"verify\"]"));
		keys = NULL;
		n = 0;
		e = noerr();
		rc = jose_jwks_parse(jwks, &keys, &n, &e);
		tap_ok(rc < 0 && keys == NULL && e.code == JOSE_E_JWKS && strstr(e.detail, "key 1") &&
			   strstr(e.detail, "key_ops"),
			   "jwks: one key with a malformed key_ops refuses the whole JWKS (got %s \"%s\")",
			   errname(e.code), e.detail);
		jose_keys_free(keys, n);
		json_decref(jwks);

		jwks = json_pack("{s:[o]}", "keys", with_key_ops(espub, "[\"encrypt\"]"));
		keys = NULL;
		n = 0;
		e = noerr();
		rc = jose_jwks_parse(jwks, &keys, &n, &e);
		tap_ok(rc < 0 && keys == NULL && e.code == JOSE_E_JWKS && strstr(e.detail, "no signature keys"),
			   "jwks: only a key_ops [\"encrypt\"] key -> no signature keys (got %s \"%s\")",
			   errname(e.code), e.detail);
		jose_keys_free(keys, n);
		json_decref(jwks);
	}
	{
		/*
		 * jose_jws_verify_with: without a kid, a key that may not verify is
		 * no candidate; with its kid, its refusal is the verdict.
		 */
		jose_key   *vo = NULL,
				   *so = NULL;
		json_t	   *j = with_key_ops(espub, "[\"sign\"]");

		e = noerr();
		so = jose_jwk_parse(j, JOSE_ALG_UNKNOWN, false, &e);
		json_decref(j);
		j = with_key_ops(espub, "[\"verify\"]");
		json_object_set_new(j, "kid", json_string("es-v"));
		vo = jose_jwk_parse(j, JOSE_ALG_UNKNOWN, false, &e);
		json_decref(j);
		if (tap_ok(so && vo, "key_ops: sign-only and verify-only public keys parse"))
		{
			sel_case("no kid, sign-only key then verify-only key", "{\"alg\":\"ES256\"}", es,
					 (jose_key *[]) {so, vo}, 2, 1, 0);
			sel_case("no kid, only a sign-only key", "{\"alg\":\"ES256\"}", es,
					 (jose_key *[]) {so}, 1, -1, JOSE_E_NO_KEY);
			sel_case("kid of a sign-only key", "{\"alg\":\"ES256\",\"kid\":\"es\"}", es,
					 (jose_key *[]) {so, vo}, 2, -1, JOSE_E_KEY_OPS);
		}
		jose_key_free(so);
		jose_key_free(vo);
	}
	json_decref(espub);
	json_decref(espriv);
	json_decref(rspub);
}

/* ---------------- thumbprints ---------------- */

static void
test_thumbprints(void)
{
	bool		ok = true;

	for (int i = 0; i < NSIGN; i++)
	{
		jose_key   *k = genkeys[i];
		char		tp[44];
		json_t	   *j;
		jose_key   *k2;
		jose_error	e = noerr();

		if (k == NULL)
		{
			ok = false;
			continue;
		}
		/* with extra members and another kid: the thumbprint must not change */
		j = pub_jwk(k, "some-other-kid", jose_alg_name(k->alg));
		json_object_set_new(j, "x5t", json_string("ignored"));
		k2 = jose_jwk_parse(j, k->alg, false, &e);
		if (k2 == NULL || jose_jwk_thumbprint(k, tp, &e) < 0 ||
			strcmp(tp, k->thumbprint) != 0 || strcmp(k2->thumbprint, tp) != 0 ||
			jose_jwk_thumbprint(k2, tp, &e) < 0 || strcmp(tp, k->thumbprint) != 0)
			ok = false;
		jose_key_free(k2);
		json_decref(j);
	}
	tap_ok(ok, "thumbprint stable across JWK round trip, kid and extra members for every alg");
	ok = true;
	for (int i = 0; i < NSIGN; i++)
		for (int j = i + 1; j < NSIGN; j++)
			if (genkeys[i] && genkeys[j] &&
				strcmp(genkeys[i]->thumbprint, genkeys[j]->thumbprint) == 0 &&
				genkeys[i]->pkey != genkeys[j]->pkey)
				ok = false;
	tap_ok(ok, "distinct generated keys have distinct thumbprints");
	{
		jose_error	e = noerr();
		jose_key   *a = jwk_from_text("{\"kty\":\"oct\",\"k\":\"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\"}",
									  JOSE_ALG_HS256, false, &e);
		jose_key   *b = jwk_from_text("{\"kty\":\"oct\",\"k\":\"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\"}",
									  JOSE_ALG_HS384, false, &e);	/* HS384 needs 48 */
		jose_key   *c = jwk_from_text("{\"kty\":\"oct\",\"kid\":\"x\",\"k\":\"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\"}",
									  JOSE_ALG_HS256, false, &e);

		tap_ok(a && c && b == NULL && strcmp(a->thumbprint, c->thumbprint) == 0 &&
			   strcmp(a->kid, a->thumbprint) == 0 && strcmp(c->kid, "x") == 0,
			   "oct thumbprint independent of kid; kid defaults to thumbprint");
		jose_key_free(a);
		jose_key_free(b);
		jose_key_free(c);
	}
}

/* ---------------- claims ---------------- */

#define NOW 1700000000

static void
claims_case(const char *name, const char *payload, int64_t skew, const char *aud,
			bool require_exp, jose_errcode want)
{
	json_t	   *p = json_fixture(payload);
	jose_error	e = noerr();
	int			rc = jose_jwt_check_claims(p, NOW, skew, aud, require_exp, &e);

	if (want == JOSE_OK)
		tap_ok(rc == 0, "claims: %s -> ok%s%s", name, rc ? " got " : "", rc ? e.detail : "");
	else
		tap_ok(rc < 0 && e.code == want && e.detail[0], "claims: %s -> %s (got %s \"%s\")",
			   name, errname(want), rc ? errname(e.code) : "OK", rc ? e.detail : "");
	json_decref(p);
}

static void
test_claims(void)
{
	char		b[256];

#define C(name, skew, aud, req, want, ...) \
	do { snprintf(b, sizeof(b), __VA_ARGS__); claims_case(name, b, skew, aud, req, want); } while (0)

	C("empty, exp not required", 0, NULL, false, JOSE_OK, "{}");
	C("empty, exp required", 0, NULL, true, JOSE_E_CLAIM_TYPE, "{}");
	C("exp = now + 1", 0, NULL, true, JOSE_OK, "{\"exp\":%d}", NOW + 1);
	C("exp = now, skew 0 (now >= exp)", 0, NULL, true, JOSE_E_EXPIRED, "{\"exp\":%d}", NOW);
	C("exp = now - 1, skew 0", 0, NULL, true, JOSE_E_EXPIRED, "{\"exp\":%d}", NOW - 1);
	C("exp = now - 29, skew 30", 30, NULL, true, JOSE_OK, "{\"exp\":%d}", NOW - 29);
	C("exp = now - 30, skew 30 (boundary)", 30, NULL, true, JOSE_E_EXPIRED, "{\"exp\":%d}", NOW - 30);
	C("exp = now + 0.5 (fractional)", 0, NULL, true, JOSE_OK, "{\"exp\":%d.5}", NOW);
	C("exp = now - 0.5 (fractional)", 0, NULL, true, JOSE_E_EXPIRED, "{\"exp\":%d.5}", NOW - 1);
	C("exp = 0", 0, NULL, true, JOSE_E_EXPIRED, "{\"exp\":0}");
	/* outside 1970..9999 a NumericDate is malformed (and would overflow time_t math) */
	C("exp negative", 0, NULL, true, JOSE_E_CLAIM_TYPE, "{\"exp\":-1}");
	C("iat far in the past (-1e13)", 0, NULL, true, JOSE_E_CLAIM_TYPE, "{\"exp\":%d,\"iat\":-1e13}", NOW + 100);
	C("exp 1e300", 0, NULL, true, JOSE_E_CLAIM_TYPE, "{\"exp\":1e300}");
	C("nbf past year 9999", 0, NULL, true, JOSE_E_CLAIM_TYPE, "{\"exp\":%d,\"nbf\":253402300800}", NOW + 100);
	C("exp as string \"123\"", 0, NULL, true, JOSE_E_CLAIM_TYPE, "{\"exp\":\"123\"}");
	C("exp as string, not required", 0, NULL, false, JOSE_E_CLAIM_TYPE, "{\"exp\":\"%d\"}", NOW + 100);
	C("exp null", 0, NULL, true, JOSE_E_CLAIM_TYPE, "{\"exp\":null}");
	C("exp true", 0, NULL, true, JOSE_E_CLAIM_TYPE, "{\"exp\":true}");
	C("exp array", 0, NULL, true, JOSE_E_CLAIM_TYPE, "{\"exp\":[%d]}", NOW + 100);
	C("nbf = now, skew 0", 0, NULL, false, JOSE_OK, "{\"nbf\":%d}", NOW);
	C("nbf = now + 1, skew 0", 0, NULL, false, JOSE_E_NOT_YET_VALID, "{\"nbf\":%d}", NOW + 1);
	C("nbf = now + 30, skew 30 (boundary)", 30, NULL, false, JOSE_OK, "{\"nbf\":%d}", NOW + 30);
	C("nbf = now + 31, skew 30", 30, NULL, false, JOSE_E_NOT_YET_VALID, "{\"nbf\":%d}", NOW + 31);
	C("nbf as string", 0, NULL, false, JOSE_E_CLAIM_TYPE, "{\"nbf\":\"%d\"}", NOW);
	C("iat = now, skew 0", 0, NULL, false, JOSE_OK, "{\"iat\":%d}", NOW);
	C("iat = now + 1, skew 0", 0, NULL, false, JOSE_E_IAT_FUTURE, "{\"iat\":%d}", NOW + 1);
	C("iat = now + 30, skew 30 (boundary)", 30, NULL, false, JOSE_OK, "{\"iat\":%d}", NOW + 30);
	C("iat = now + 31, skew 30", 30, NULL, false, JOSE_E_IAT_FUTURE, "{\"iat\":%d}", NOW + 31);
	C("iat as object", 0, NULL, false, JOSE_E_CLAIM_TYPE, "{\"iat\":{}}");
	C("iss number", 0, NULL, false, JOSE_E_CLAIM_TYPE, "{\"iss\":5}");
	C("sub array", 0, NULL, false, JOSE_E_CLAIM_TYPE, "{\"sub\":[\"a\"]}");
	C("aud string match", 0, "api", false, JOSE_OK, "{\"aud\":\"api\"}");
	C("aud array match", 0, "api", false, JOSE_OK, "{\"aud\":[\"x\",\"api\"]}");
	C("aud string mismatch", 0, "api", false, JOSE_E_AUDIENCE, "{\"aud\":\"other\"}");
	C("aud differs in case", 0, "api", false, JOSE_E_AUDIENCE, "{\"aud\":\"API\"}");
	C("aud is a prefix of the audience", 0, "api", false, JOSE_E_AUDIENCE, "{\"aud\":\"ap\"}");
	C("audience is a prefix of aud", 0, "api", false, JOSE_E_AUDIENCE, "{\"aud\":\"api2\"}");
	C("aud array without the audience", 0, "api", false, JOSE_E_AUDIENCE, "{\"aud\":[\"x\",\"y\"]}");
	C("aud missing, audience required", 0, "api", false, JOSE_E_AUDIENCE, "{\"sub\":\"a\"}");
	C("aud number", 0, "api", false, JOSE_E_CLAIM_TYPE, "{\"aud\":5}");
	C("aud array with a number", 0, "api", false, JOSE_E_CLAIM_TYPE, "{\"aud\":[\"api\",5]}");
	C("aud present, no audience asked", 0, NULL, false, JOSE_OK, "{\"aud\":\"x\"}");
	C("all claims fine", 60, "api", true, JOSE_OK,
	  "{\"iss\":\"i\",\"sub\":\"s\",\"aud\":[\"api\"],\"iat\":%d,\"nbf\":%d,\"exp\":%d}",
	  NOW, NOW, NOW + 300);
#undef C
	{
		/* aud: [] is neither a match nor a usable value: refused either way */
		json_t	   *p = json_fixture("{\"aud\":[]}");
		jose_error	e = noerr();
		int			rc = jose_jwt_check_claims(p, NOW, 0, "api", false, &e);

		tap_ok(rc < 0 && (e.code == JOSE_E_AUDIENCE || e.code == JOSE_E_CLAIM_TYPE),
			   "claims: aud [] with an audience is refused (%s)", errname(e.code));
		json_decref(p);
	}
}

/* ---------------- jose_jwt_verify ---------------- */

/* Two issuers for the selection callback: "a" (ES256 key, no audience of its own) and "b". */
typedef struct issuers_fixture
{
	jose_key   *a[2];			/* a[1] verifies; a[0] is another key of the same alg */
	jose_key   *b[1];
	int			calls;
} issuers_fixture;

static int
select_by_iss(void *arg, json_t *claims, jose_keyset *out, jose_error *err)
{
	issuers_fixture *f = arg;
	json_t	   *iss = json_object_get(claims, "iss");

	f->calls++;
	if (!json_is_string(iss))
		return jose_seterr(err, JOSE_E_CLAIM_TYPE, "token has no \"iss\" claim");
	if (strcmp(json_string_value(iss), "a") == 0)
		*out = (jose_keyset) {f->a, 2, NULL};
	else if (strcmp(json_string_value(iss), "b") == 0)
		*out = (jose_keyset) {f->b, 1, "b-api"};
	else
		return jose_seterr(err, JOSE_E_NO_KEY, "issuer is not trusted");
	return 0;
}

/* jose_jwt_verify over token text; NULL with e filled on refusal. */
static jose_jwt *
jwt_case(const char *token, const jose_jwt_rules *rules, jose_error *e)
{
	*e = noerr();
	return jose_jwt_verify(token, strlen(token), rules, e);
}

static void
test_jwt_verify(void)
{
	const char *hdr = "{\"alg\":\"ES256\"}";
	char		payload[256];
	issuers_fixture f = {{NULL, NULL}, {NULL}, 0};
	jose_error	e;
	jose_jwt   *jwt;
	char	   *tok;
	jose_jwt_rules fixed,
				byiss;

	f.a[0] = jose_key_generate(JOSE_ALG_ES256, &e);	/* same alg, another key: tried first */
	f.a[1] = genkeys[0];
	f.b[0] = genkeys[3];		/* EdDSA */
	fixed = (jose_jwt_rules) {.keys = {f.a, 2, NULL}, .now = NOW, .skew = 0,
	.audience = NULL, .require_exp = true};
	byiss = (jose_jwt_rules) {.select = select_by_iss, .select_arg = &f, .now = NOW,
	.skew = 60, .require_exp = true};

	snprintf(payload, sizeof(payload), "{\"iss\":\"a\",\"exp\":%d,\"n\":1.50}", NOW + 10);
	tok = token_signed(hdr, payload, genkeys[0]);
	jwt = jwt_case(tok, &fixed, &e);
	tap_ok(jwt && jwt->key == genkeys[0] && json_is_object(jwt->header) &&
		   json_is_object(jwt->payload) && jwt->payload_len == strlen(payload) &&
		   strcmp(jwt->payload_text, payload) == 0,
		   "jwt_verify: fixed keys; the second key verifies and is named; payload text as signed (%s)",
		   jwt ? "ok" : e.detail);
	jose_jwt_free(jwt);
	jwt = jwt_case(tok, &byiss, &e);
	tap_ok(jwt && jwt->key == genkeys[0] && f.calls == 1,
		   "jwt_verify: keys chosen by iss through the callback (%s)", jwt ? "ok" : e.detail);
	jose_jwt_free(jwt);
	free(tok);

	/* the callback's refusal is the verdict, code and words */
	snprintf(payload, sizeof(payload), "{\"iss\":\"z\",\"exp\":%d}", NOW + 10);
	tok = token_signed(hdr, payload, genkeys[0]);
	jwt = jwt_case(tok, &byiss, &e);
	tap_ok(!jwt && e.code == JOSE_E_NO_KEY && strcmp(e.detail, "issuer is not trusted") == 0,
		   "jwt_verify: callback refusal passed through (%s \"%s\")", errname(e.code), e.detail);
	free(tok);
	snprintf(payload, sizeof(payload), "{\"exp\":%d}", NOW + 10);
	tok = token_signed(hdr, payload, genkeys[0]);
	jwt = jwt_case(tok, &byiss, &e);
	tap_ok(!jwt && e.code == JOSE_E_CLAIM_TYPE, "jwt_verify: callback refuses a token without iss");
	free(tok);

	/* the keyset's audience and the caller's are both required */
	snprintf(payload, sizeof(payload), "{\"iss\":\"b\",\"exp\":%d}", NOW + 10);
	tok = token_signed("{\"alg\":\"EdDSA\"}", payload, genkeys[3]);
	jwt = jwt_case(tok, &byiss, &e);
	tap_ok(!jwt && e.code == JOSE_E_AUDIENCE && strstr(e.detail, "no \"aud\""),
		   "jwt_verify: the keyset's audience is required (%s)", e.detail);
	free(tok);
	snprintf(payload, sizeof(payload), "{\"iss\":\"b\",\"aud\":[\"x\",\"b-api\"],\"exp\":%d}", NOW + 10);
	tok = token_signed("{\"alg\":\"EdDSA\"}", payload, genkeys[3]);
	jwt = jwt_case(tok, &byiss, &e);
	tap_ok(jwt != NULL, "jwt_verify: keyset audience found in an aud array (%s)", jwt ? "ok" : e.detail);
	jose_jwt_free(jwt);
	byiss.audience = "x";
	jwt = jwt_case(tok, &byiss, &e);
	tap_ok(jwt != NULL, "jwt_verify: caller's and keyset's audiences both present");
	jose_jwt_free(jwt);
	byiss.audience = "y";
	jwt = jwt_case(tok, &byiss, &e);
	tap_ok(!jwt && e.code == JOSE_E_AUDIENCE, "jwt_verify: caller's audience missing -> AUDIENCE");
	byiss.audience = NULL;
	free(tok);

	/* claims: expiry with and without skew, exp required or not */
	snprintf(payload, sizeof(payload), "{\"iss\":\"a\",\"exp\":%d}", NOW - 30);
	tok = token_signed(hdr, payload, genkeys[0]);
	jwt = jwt_case(tok, &fixed, &e);
	tap_ok(!jwt && e.code == JOSE_E_EXPIRED, "jwt_verify: expired, skew 0 -> EXPIRED");
	jwt = jwt_case(tok, &byiss, &e);
	tap_ok(jwt != NULL, "jwt_verify: expired 30 s ago, skew 60 -> accepted");
	jose_jwt_free(jwt);
	free(tok);
	tok = token_signed(hdr, "{\"iss\":\"a\"}", genkeys[0]);
	jwt = jwt_case(tok, &fixed, &e);
	tap_ok(!jwt && e.code == JOSE_E_CLAIM_TYPE, "jwt_verify: no exp, exp required -> CLAIM_TYPE");
	fixed.require_exp = false;
	jwt = jwt_case(tok, &fixed, &e);
	tap_ok(jwt != NULL, "jwt_verify: no exp, exp not required -> accepted");
	jose_jwt_free(jwt);
	fixed.require_exp = true;
	free(tok);

	/*
	 * With the keys given, an unauthenticated payload is never parsed: a
	 * forged token with a broken payload is refused for its signature.
	 * When the claims choose the keys they must be read first.
	 */
	{
		char	   *si = signing_input(hdr, "{\"iss\":\"a\",\"iss\":\"a\"}");
		char	   *forged = join(si, ".", "AAAA");

		jwt = jwt_case(forged, &fixed, &e);
		tap_ok(!jwt && e.code == JOSE_E_SIG_LENGTH,
			   "jwt_verify: fixed keys: the signature is judged before the payload (%s)", errname(e.code));
		f.calls = 0;
		jwt = jwt_case(forged, &byiss, &e);
		tap_ok(!jwt && e.code == JOSE_E_PAYLOAD && e.json_reason == JOSE_JSON_DUPLICATE && f.calls == 0,
			   "jwt_verify: chosen by claims: a payload with a duplicate member never reaches the callback");
		free(forged);
		free(si);
	}
	f.calls = 0;
	jwt = jwt_case("e30.e30.", &byiss, &e);
	tap_ok(!jwt && e.code == JOSE_E_ALG_MISSING && f.calls == 0,
		   "jwt_verify: a header without alg is refused before the callback");
	snprintf(payload, sizeof(payload), "{\"iss\":\"a\",\"exp\":%d}", NOW + 10);
	tok = token_signed(hdr, payload, genkeys[0]);
	tok[strlen(tok) - 2] = tok[strlen(tok) - 2] == 'A' ? 'B' : 'A';
	jwt = jwt_case(tok, &byiss, &e);
	tap_ok(!jwt && e.code == JOSE_E_SIGNATURE, "jwt_verify: altered signature -> SIGNATURE");
	free(tok);
	jose_jwt_free(NULL);
	jose_key_free(f.a[0]);
}

/* jose_jwks_parse_text: the JSON and the set judged in one call. */
static void
test_jwks_text(void)
{
	jose_error	e = noerr();
	json_t	   *pub = jose_jwk_public(genkeys[0], &e);
	char	   *jwk = json_dumps(pub, JSON_COMPACT);
	char		text[1024];
	jose_key  **keys = NULL;
	size_t		n = 99;

	snprintf(text, sizeof(text), "{\"keys\":[%s]}", jwk);
	tap_ok(jose_jwks_parse_text(text, strlen(text), &keys, &n, &e) == 0 && n == 1 &&
		   strcmp(keys[0]->kid, genkeys[0]->kid) == 0, "jwks text: one key read");
	jose_keys_free(keys, n);
	snprintf(text, sizeof(text), "{\"keys\":[%s],\"keys\":[]}", jwk);
	e = noerr();
	tap_ok(jose_jwks_parse_text(text, strlen(text), &keys, &n, &e) < 0 && keys == NULL && n == 0 &&
		   e.code == JOSE_E_JWKS && e.json_reason == JOSE_JSON_DUPLICATE,
		   "jwks text: duplicate member -> JWKS, reason duplicate (%s)", e.detail);
	e = noerr();
	tap_ok(jose_jwks_parse_text("{\"keys\":", 8, &keys, &n, &e) < 0 &&
		   e.code == JOSE_E_JWKS && e.json_reason == JOSE_JSON_SYNTAX,
		   "jwks text: not JSON -> JWKS, reason syntax");
	e = noerr();
	tap_ok(jose_jwks_parse_text("{\"keys\":[]}", 11, &keys, &n, &e) < 0 &&
		   e.code == JOSE_E_JWKS && e.json_reason == JOSE_JSON_NONE,
		   "jwks text: valid JSON, no keys -> JWKS without a JSON reason");
	free(jwk);
	json_decref(pub);
}

/*
 * EC keys keep one signing and one verifying context, set up on first use
 * (jose_key.sign_ctx / verify_ctx): reused call after call, they must give
 * the same answers as a fresh one, a fresh nonce for every signature, and
 * stay usable after a refusal.
 */
static void
test_key_contexts(void)
{
	for (int i = 0; i < NSIGN; i++)
	{
		jose_key   *k = genkeys[i],
				   *other;
		const char *name = jose_alg_name(sign_algs[i]);
		jose_error	e = noerr();
		uint8_t    *s1 = NULL,
				   *s2 = NULL,
				   *s3 = NULL;
		size_t		l1 = 0,
					l2 = 0,
					l3 = 0;
		const uint8_t m1[] = "first message",
					m2[] = "second message";
		bool		good = true;

		if (k->kty != JOSE_KTY_EC)
			continue;
		other = jose_key_generate(k->alg, &e);
		if (!tap_ok(other != NULL, "%s contexts: second key", name))
			continue;
		tap_ok(jose_sign_raw(k, m1, sizeof(m1), &s1, &l1, &e) == 0 &&
			   jose_sign_raw(k, m1, sizeof(m1), &s2, &l2, &e) == 0 &&
			   jose_sign_raw(k, m2, sizeof(m2), &s3, &l3, &e) == 0 && k->sign_ctx != NULL,
			   "%s contexts: three signatures through the key's kept signing context", name);
		if (s1 == NULL || s2 == NULL || s3 == NULL)
			goto next;
		/* the same message twice: ECDSA with a reused nonce would give the same r (and the key) */
		tap_ok(l1 == l2 && memcmp(s1, s2, l1 / 2) != 0,
			   "%s contexts: the same message signed twice has two different r (fresh nonce)", name);
		for (int round = 0; round < 3; round++)
			good &= jose_verify_raw(k, k->alg, m1, sizeof(m1), s1, l1, &e) == 0 &&
				jose_verify_raw(k, k->alg, m1, sizeof(m1), s2, l2, &e) == 0 &&
				jose_verify_raw(k, k->alg, m2, sizeof(m2), s3, l3, &e) == 0;
		tap_ok(good && k->verify_ctx != NULL,
			   "%s contexts: each verifies, three times over, through the kept verifying context", name);
		e = noerr();
		tap_ok(jose_verify_raw(k, k->alg, m2, sizeof(m2), s1, l1, &e) < 0 && e.code == JOSE_E_SIGNATURE,
			   "%s contexts: a signature of another message is refused (SIGNATURE)", name);
		s1[l1 - 1] ^= 1;
		e = noerr();
		tap_ok(jose_verify_raw(k, k->alg, m1, sizeof(m1), s1, l1, &e) < 0 && e.code == JOSE_E_SIGNATURE,
			   "%s contexts: an altered signature is refused (SIGNATURE)", name);
		s1[l1 - 1] ^= 1;
		e = noerr();
		tap_ok(jose_verify_raw(other, other->alg, m1, sizeof(m1), s1, l1, &e) < 0 &&
			   e.code == JOSE_E_SIGNATURE,
			   "%s contexts: another key of the same algorithm refuses it (its own context)", name);
		e = noerr();
		tap_ok(jose_verify_raw(k, k->alg, m1, sizeof(m1), s1, l1, &e) == 0,
			   "%s contexts: after those refusals the key's context still verifies", name);
next:
		free(s1);
		free(s2);
		free(s3);
		jose_key_free(other);
	}
}

int
main(void)
{
	for (int i = 0; i < NSIGN; i++)
	{
		jose_error	e = noerr();

		genkeys[i] = jose_key_generate(sign_algs[i], &e);
		if (genkeys[i] == NULL)
			tap_diag("jose_key_generate(%s): %s", jose_alg_name(sign_algs[i]), e.detail);
	}
	test_algs();
	test_base64url();
	test_json();
	for (int i = 0; i < NSIGN; i++)
		test_roundtrip(i);
	test_generate_refusals();
	test_oct_key_not_exported();
	for (int i = 0; i < NSIGN; i++)
		if (genkeys[i] == NULL)
		{
			tap_ok(false, "all keys generated; later sections need them");
			goto out;
		}
	test_jwk();
	test_private_jwk();
	test_stale_error();
	test_jwks();
	test_key_ops();
	test_key_contexts();
	test_thumbprints();
	test_claims();
	test_jwt_verify();
	test_jwks_text();
out:
	for (int i = 0; i < NSIGN; i++)
		jose_key_free(genkeys[i]);
	return tap_done();
}
