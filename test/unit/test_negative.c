/*
 * test_negative.c — a corpus of hostile or broken tokens and keys, each of
 * which the JOSE core must refuse with a specific jose_errcode and a
 * non-empty, client-safe err.detail (containing an expected phrase and none
 * of the token's own header or signature text).
 *
 * Tokens are assembled by hand (jose_b64url_encode + jose_sign_raw with
 * generated keys) so the header may lie.  Each token goes through what
 * tokex's verifiers call, jose_jwt_verify(now, skew 0, audience "tokex", exp
 * required), or the same steps with jose_jws_verify and one key.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>

#include "jose.h"
#include "tap.h"
#include "util.h"

#define NOW			1700000000
#define AUDIENCE	"tokex"

typedef enum verify_mode
{
	WITH_KEYS,					/* jose_jwt_verify(keys) */
	ONE_KEY						/* jose_jws_verify(keys[0]) */
} verify_mode;

/* Case-insensitive substring test. */
static bool
contains(const char *hay, const char *needle)
{
	size_t		n = strlen(needle);

	for (; *hay; hay++)
	{
		size_t		i = 0;

		while (i < n && hay[i] && tolower((unsigned char) hay[i]) == tolower((unsigned char) needle[i]))
			i++;
		if (i == n)
			return true;
	}
	return n == 0;
}

/* The whole pipeline; returns 0 when the token is accepted. */
static int
verify_token(const char *token, size_t len, jose_key *const *keys, size_t nkeys,
			 verify_mode mode, jose_error *err)
{
	jose_jws	jws;
	json_t	   *payload;
	int			rc;

	if (mode == WITH_KEYS)
	{
		jose_jwt_rules rules = {.keys = {keys, nkeys, NULL}, .now = NOW, .skew = 0,
		.audience = AUDIENCE, .require_exp = true};
		jose_jwt   *jwt = jose_jwt_verify(token, len, &rules, err);

		rc = jwt ? 0 : -1;
		jose_jwt_free(jwt);
		return rc;
	}
	if (jose_jws_parse(token, len, &jws, err) < 0)
		return -1;
	rc = jose_jws_verify(&jws, keys[0], err);
	payload = rc < 0 ? NULL : jose_jws_payload_json(&jws, err);
	jose_jws_clear(&jws);
	if (payload == NULL)
		return -1;
	rc = jose_jwt_check_claims(payload, NOW, 0, AUDIENCE, true, err);
	json_decref(payload);
	return rc;
}

/* Does detail leak a segment (header or signature) of the token? */
static bool
leaks_token(const char *detail, const char *token, size_t len)
{
	const char *d1 = memchr(token, '.', len);
	const char *d2 = d1 ? memchr(d1 + 1, '.', len - (size_t) (d1 + 1 - token)) : NULL;
	char		seg[64];
	size_t		sl;

	if (d1 && d1 - token >= 12)
	{
		sl = (size_t) (d1 - token) < sizeof(seg) - 1 ? (size_t) (d1 - token) : sizeof(seg) - 1;
		memcpy(seg, token, sl);
		seg[sl] = '\0';
		if (strstr(detail, seg))
			return true;
	}
	if (d2 && token + len - (d2 + 1) >= 12)
	{
		sl = (size_t) (token + len - (d2 + 1));
		if (sl > sizeof(seg) - 1)
			sl = sizeof(seg) - 1;
		memcpy(seg, d2 + 1, sl);
		seg[sl] = '\0';
		if (strstr(detail, seg))
			return true;
	}
	return false;
}

static void
refuse_len(const char *name, const char *token, size_t len, jose_key *const *keys, size_t nkeys,
		   verify_mode mode, jose_errcode want, const char *phrase)
{
	jose_error	err = noerr();
	int			rc = verify_token(token, len, keys, nkeys, mode, &err);
	bool		ok = rc < 0 && err.code == want && err.detail[0] != '\0' &&
		contains(err.detail, phrase) && !leaks_token(err.detail, token, len);

	tap_ok(ok, "%s -> %s", name, errname(want));
	if (!ok)
		tap_diag("  got rc=%d %s \"%s\"; want %s with \"%s\"%s", rc, errname(err.code),
				 err.detail, errname(want), phrase,
				 leaks_token(err.detail, token, len) ? " (detail leaks token text)" : "");
}

static void
refuse(const char *name, char *token, jose_key *const *keys, size_t nkeys,
	   verify_mode mode, jose_errcode want, const char *phrase)
{
	refuse_len(name, token, strlen(token), keys, nkeys, mode, want, phrase);
	free(token);
}

static void
refuse_jwk(const char *name, json_t *jwk, jose_alg dflt, jose_errcode want, const char *phrase)
{
	jose_error	err = noerr();
	jose_key   *k = jose_jwk_parse(jwk, dflt, false, &err);
	bool		ok = k == NULL && err.code == want && err.detail[0] && contains(err.detail, phrase);

	tap_ok(ok, "%s -> %s", name, errname(want));
	if (!ok)
		tap_diag("  got %s \"%s\"; want %s with \"%s\"", k ? "a key" : errname(err.code),
				 err.detail, errname(want), phrase);
	jose_key_free(k);
	json_decref(jwk);
}

/* b64url(header) "." b64url(payload) "." sig_b64 (sig_b64 used verbatim) */
static char *
token_raw_sig(const char *header, const char *payload, const char *sig_b64)
{
	char	   *si = signing_input(header, payload);
	char	   *t = join(si, ".", sig_b64);

	free(si);
	return t;
}

/* A valid ES256 signature of header.payload by key, with r and/or s replaced. */
static char *
token_ecdsa_rs(const char *header, const char *payload, const jose_key *key,
			   const uint8_t *r, const uint8_t *s)
{
	char	   *si = signing_input(header, payload);
	uint8_t    *sig;
	size_t		siglen;
	jose_error	err = noerr();
	char	   *t;

	if (jose_sign_raw(key, (const uint8_t *) si, strlen(si), &sig, &siglen, &err) < 0 ||
		siglen != 64)
		abort();
	if (r)
		memcpy(sig, r, 32);
	if (s)
		memcpy(sig + 32, s, 32);
	free(si);
	t = token_with_sig(header, payload, sig, siglen);
	free(sig);
	return t;
}

/* A validly signed token whose signature is then resized (truncate or append). */
static char *
token_sig_resized(const char *header, const char *payload, const jose_key *key, int delta)
{
	char	   *si = signing_input(header, payload);
	uint8_t    *sig,
			   *sig2;
	size_t		siglen,
				n;
	jose_error	err = noerr();
	char	   *t;

	if (jose_sign_raw(key, (const uint8_t *) si, strlen(si), &sig, &siglen, &err) < 0)
		abort();
	n = (size_t) ((long) siglen + delta);
	sig2 = calloc(1, n + 1);
	memcpy(sig2, sig, n < siglen ? n : siglen);
	t = token_with_sig(header, payload, sig2, n);
	free(si);
	free(sig);
	free(sig2);
	return t;
}

/* Insert text at the end of segment seg (0 header, 1 payload, 2 signature); frees token. */
static char *
poke_segment(char *token, int seg, const char *text)
{
	char	   *p = token;
	char	   *out;
	size_t		at;

	for (int i = 0; i < seg && p; i++)
	{
		p = strchr(p, '.');
		if (p)
			p++;
	}
	if (p == NULL)
		abort();
	at = strchr(p, '.') ? (size_t) (strchr(p, '.') - token) : strlen(token);
	out = malloc(strlen(token) + strlen(text) + 1);
	memcpy(out, token, at);
	strcpy(out + at, text);
	strcat(out, token + at);
	free(token);
	return out;
}

/* Replace character at index i of segment seg with c. */
static char *
set_char(char *token, int seg, size_t i, char c)
{
	char	   *p = token;

	for (int k = 0; k < seg; k++)
		p = strchr(p, '.') + 1;
	p[i] = c;
	return token;
}

static char *
nested_payload(int depth)
{
	size_t		n = strlen("{\"exp\":9999999999,\"aud\":\"tokex\",\"x\":") + 2 * (size_t) depth + 3;
	char	   *s = malloc(n),
			   *p;

	p = s + sprintf(s, "{\"exp\":9999999999,\"aud\":\"tokex\",\"x\":");
	for (int i = 0; i < depth; i++)
		*p++ = '[';
	for (int i = 0; i < depth; i++)
		*p++ = ']';
	*p++ = '}';
	*p = '\0';
	return s;
}

static json_t *
rsa_jwk_of_bits(int bits)
{
	EVP_PKEY   *pk = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t) bits);
	BIGNUM	   *n = NULL,
			   *e = NULL;
	uint8_t		nb[1024],
				eb[16];
	int			nl,
				el;
	char	   *ns,
			   *es;
	json_t	   *j;

	if (pk == NULL || !EVP_PKEY_get_bn_param(pk, OSSL_PKEY_PARAM_RSA_N, &n) ||
		!EVP_PKEY_get_bn_param(pk, OSSL_PKEY_PARAM_RSA_E, &e))
		abort();
	nl = BN_bn2bin(n, nb);
	el = BN_bn2bin(e, eb);
	ns = b64(nb, (size_t) nl);
	es = b64(eb, (size_t) el);
	j = json_pack("{s:s,s:s,s:s,s:s}", "kty", "RSA", "alg", "RS256", "n", ns, "e", es);
	free(ns);
	free(es);
	BN_free(n);
	BN_free(e);
	EVP_PKEY_free(pk);
	return j;
}

/* PEM (SubjectPublicKeyInfo) text of a key's public part; malloc'd. */
static char *
public_pem(const jose_key *k)
{
	BIO		   *bio = BIO_new(BIO_s_mem());
	char	   *data;
	long		len;
	char	   *out;

	if (bio == NULL || PEM_write_bio_PUBKEY(bio, k->pkey) != 1)
		abort();
	len = BIO_get_mem_data(bio, &data);
	out = malloc((size_t) len + 1);
	memcpy(out, data, (size_t) len);
	out[len] = '\0';
	BIO_free(bio);
	return out;
}

/* Public JWK of k with members edited: set from a JSON object text, then "alg"/"use" dropped if asked. */
static json_t *
jwk_edited(const jose_key *k, const char *set, bool drop_alg, bool drop_use)
{
	jose_error	err = noerr();
	json_t	   *j = jose_jwk_public(k, &err);

	if (j == NULL)
		abort();
	if (drop_alg)
		json_object_del(j, "alg");
	if (drop_use)
		json_object_del(j, "use");
	if (set)
	{
		json_t	   *m = json_fixture(set);

		json_object_update(j, m);
		json_decref(m);
	}
	return j;
}

/* Keys of a JWKS built from jwks (stolen); aborts when it does not parse. */
static jose_key **
jwks_keys(json_t *jwks, size_t *n)
{
	jose_key  **keys = NULL;
	jose_error	err = noerr();

	if (jose_jwks_parse(jwks, &keys, n, &err) < 0)
	{
		fprintf(stderr, "fixture: JWKS refused: %s\n", err.detail);
		abort();
	}
	json_decref(jwks);
	return keys;
}

static char *
bn_b64(const BIGNUM *bn)
{
	uint8_t		buf[512];
	int			n = BN_bn2bin(bn, buf);

	if (n <= 0)
		abort();
	return b64(buf, (size_t) n);
}

/*
 * An RSA-2048 key made the way Infineon's RSALib made them (CVE-2017-15361,
 * Nemec et al., CCS 2017): each prime is k*M + (65537^a mod M), with M the
 * product of the first 126 primes, RSALib's M for 2048-bit keys.  Returns
 * the public JWK and, in *priv, the private one; aborts when the key it
 * built is not a valid RSA key pair by OpenSSL's own check.
 */
static json_t *
roca_rsa_jwk(json_t **priv)
{
	BN_CTX	   *ctx = BN_CTX_new();
	BIGNUM	   *m = BN_new(),
			   *g = BN_new(),
			   *a = BN_new(),
			   *k = BN_new(),
			   *f[2] = {BN_new(), BN_new()},
			   *n = BN_new(),
			   *e = BN_new(),
			   *d = BN_new(),
			   *p1 = BN_new(),
			   *q1 = BN_new(),
			   *phi = BN_new(),
			   *dp = BN_new(),
			   *dq = BN_new(),
			   *qi = BN_new();
	OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
	OSSL_PARAM *params;
	EVP_PKEY_CTX *pctx;
	EVP_PKEY   *pk = NULL;
	json_t	   *pub;
	int			count = 0;
	char	   *ns,
			   *ds,
			   *ps,
			   *qs,
			   *dps,
			   *dqs,
			   *qis;

	BN_one(m);
	for (unsigned long c = 2; count < 126; c++)
	{
		unsigned long t = 2;

		while (t * t <= c && c % t)
			t++;
		if (t * t > c)
		{
			BN_mul_word(m, c);
			count++;
		}
	}
	BN_set_word(g, 65537);
	BN_set_word(e, 65537);
	for (int i = 0; i < 2;)
	{
		/* p = k*M + (65537^a mod M), 1024 bits, prime, and p - 1 prime to e */
		BN_rand(a, 64, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY);
		BN_mod_exp(a, g, a, m, ctx);
		BN_rand(k, 1025 - BN_num_bits(m), BN_RAND_TOP_ONE, BN_RAND_BOTTOM_ANY);
		BN_mul(f[i], k, m, ctx);
		BN_add(f[i], f[i], a);
		if (BN_num_bits(f[i]) != 1024 || BN_mod_word(f[i], 65537) == 1 ||
			BN_check_prime(f[i], ctx, NULL) != 1)
			continue;
		if (i == 1 && (BN_mul(n, f[0], f[1], ctx), BN_num_bits(n) != 2048))
			continue;
		i++;
	}
	BN_sub(p1, f[0], BN_value_one());
	BN_sub(q1, f[1], BN_value_one());
	BN_mul(phi, p1, q1, ctx);
	if (BN_mod_inverse(d, e, phi, ctx) == NULL ||
		!BN_mod(dp, d, p1, ctx) || !BN_mod(dq, d, q1, ctx) ||
		BN_mod_inverse(qi, f[1], f[0], ctx) == NULL)
		abort();

	/* the fixture must be a real key pair, or a refusal proves nothing */
	OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, n);
	OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, e);
	OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_D, d);
	OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_FACTOR1, f[0]);
	OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_FACTOR2, f[1]);
	OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_EXPONENT1, dp);
	OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_EXPONENT2, dq);
	OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_COEFFICIENT1, qi);
	params = OSSL_PARAM_BLD_to_param(bld);
	pctx = EVP_PKEY_CTX_new_from_name(NULL, "RSA", NULL);
	if (params == NULL || pctx == NULL || EVP_PKEY_fromdata_init(pctx) <= 0 ||
		EVP_PKEY_fromdata(pctx, &pk, EVP_PKEY_KEYPAIR, params) <= 0)
		abort();
	EVP_PKEY_CTX_free(pctx);
	pctx = EVP_PKEY_CTX_new_from_pkey(NULL, pk, NULL);
	if (pctx == NULL || EVP_PKEY_pairwise_check(pctx) != 1)
		abort();

	ns = bn_b64(n);
	pub = json_pack("{s:s,s:s,s:s,s:s,s:s}", "kty", "RSA", "alg", "RS256", "kid", "roca",
					"n", ns, "e", "AQAB");
	ds = bn_b64(d);
	ps = bn_b64(f[0]);
	qs = bn_b64(f[1]);
	dps = bn_b64(dp);
	dqs = bn_b64(dq);
	qis = bn_b64(qi);
	*priv = json_deep_copy(pub);
	json_object_update_new(*priv, json_pack("{s:s,s:s,s:s,s:s,s:s,s:s}", "d", ds, "p", ps,
											"q", qs, "dp", dps, "dq", dqs, "qi", qis));
	free(ns);
	free(ds);
	free(ps);
	free(qs);
	free(dps);
	free(dqs);
	free(qis);
	EVP_PKEY_free(pk);
	EVP_PKEY_CTX_free(pctx);
	OSSL_PARAM_free(params);
	OSSL_PARAM_BLD_free(bld);
	BN_free(m);
	BN_free(g);
	BN_free(a);
	BN_free(k);
	BN_free(f[0]);
	BN_free(f[1]);
	BN_free(n);
	BN_free(e);
	BN_free(d);
	BN_free(p1);
	BN_free(q1);
	BN_free(phi);
	BN_free(dp);
	BN_free(dq);
	BN_free(qi);
	BN_CTX_free(ctx);
	return pub;
}

/* oct HS256 key whose secret is the given bytes (the attacker's HMAC key). */
static jose_key *
hmac_key_from(const void *secret, size_t len)
{
	char	   *k = b64(secret, len);
	json_t	   *j = json_pack("{s:s,s:s}", "kty", "oct", "k", k);
	jose_error	err = noerr();
	jose_key   *key = jose_jwk_parse(j, JOSE_ALG_HS256, false, &err);

	free(k);
	json_decref(j);
	if (key == NULL)
		abort();
	return key;
}

int
main(void)
{
	/* P-256 group order n */
	static const uint8_t p256_n[32] = {
		0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
		0xbc, 0xe6, 0xfa, 0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63, 0x25, 0x51,
	};
	static const uint8_t zero32[32] = {0};
	uint8_t		ones32[32];
	jose_error	err = noerr();
	jose_key   *es = jose_key_generate(JOSE_ALG_ES256, &err),
			   *ed = jose_key_generate(JOSE_ALG_EDDSA, &err),
			   *rs = jose_key_generate(JOSE_ALG_RS256, &err),
			   *ps = jose_key_generate(JOSE_ALG_PS256, &err),
			   *attacker = jose_key_generate(JOSE_ALG_ES256, &err),
			   *ps_as_rs = NULL;
	jose_key   *es_pub,
			   *es_shared,
			   *ed_shared,
			   *rs_pub,
			   *ps_pub;
	char		good[512],
				hdr[4096];
	const char *es_hdr = "{\"alg\":\"ES256\",\"kid\":\"k-es\"}";
	uint8_t    *der;
	size_t		derlen;

	memset(ones32, 0xff, sizeof(ones32));
	if (!es || !ed || !rs || !ps || !attacker)
	{
		tap_ok(false, "key generation (%s)", err.detail);
		return tap_done();
	}
	if (jose_key_to_der(ps, &der, &derlen, &err) < 0 ||
		(ps_as_rs = jose_key_from_der(JOSE_ALG_RS256, der, derlen, &err)) == NULL)
		abort();
	free(der);

	/* trust anchors, as a verifier would load them from a JWKS */
	es_pub = public_with_kid(es, "k-es");
	es_shared = public_with_kid(es, "shared");
	ed_shared = public_with_kid(ed, "shared");
	rs_pub = public_with_kid(rs, "rsa");
	ps_pub = public_with_kid(ps, "ps");

	jose_key   *trusted[] = {es_pub, rs_pub, ps_pub};
	jose_key   *only_ed[] = {ed_shared};
	jose_key   *only_rs[] = {rs_pub};
	jose_key   *only_ps[] = {ps_pub};
	jose_key   *only_es[] = {es_pub};
	const size_t ntrusted = sizeof(trusted) / sizeof(trusted[0]);

	snprintf(good, sizeof(good),
			 "{\"iss\":\"https://issuer.example\",\"sub\":\"alice\",\"aud\":\"" AUDIENCE "\","
			 "\"iat\":%d,\"exp\":%d}", NOW - 10, NOW + 600);

	/* sanity: the fixture itself is accepted, so refusals below are meaningful */
	{
		char	   *t = token_signed(es_hdr, good, es);
		jose_error	e = noerr();
		int			rc = verify_token(t, strlen(t), trusted, ntrusted, WITH_KEYS, &e);

		tap_ok(rc == 0, "control: a well-formed ES256 token is accepted (%s)",
			   rc == 0 ? "ok" : e.detail);
		free(t);
		t = token_signed("{\"alg\":\"RS256\"}", good, rs);
		e = noerr();
		rc = verify_token(t, strlen(t), trusted, ntrusted, WITH_KEYS, &e);
		tap_ok(rc == 0, "control: a well-formed RS256 token without kid is accepted (%s)",
			   rc == 0 ? "ok" : e.detail);
		free(t);
	}

	/* ---- alg ---- */
	refuse("alg none, empty signature", token_raw_sig("{\"alg\":\"none\"}", good, ""),
		   trusted, ntrusted, WITH_KEYS, JOSE_E_ALG_NONE, "none");
	refuse("alg none, with a signature", token_signed("{\"alg\":\"none\"}", good, es),
		   trusted, ntrusted, WITH_KEYS, JOSE_E_ALG_NONE, "none");
	refuse("alg \"None\" (case variant of none)", token_raw_sig("{\"alg\":\"None\"}", good, ""),
		   trusted, ntrusted, WITH_KEYS, JOSE_E_ALG_UNSUPPORTED, "unsupported");
	refuse("alg missing", token_signed("{\"typ\":\"JWT\",\"kid\":\"k-es\"}", good, es),
		   trusted, ntrusted, WITH_KEYS, JOSE_E_ALG_MISSING, "alg");
	refuse("alg is a number", token_signed("{\"alg\":256,\"kid\":\"k-es\"}", good, es),
		   trusted, ntrusted, WITH_KEYS, JOSE_E_ALG_MISSING, "alg");
	refuse("alg lowercase \"es256\"", token_signed("{\"alg\":\"es256\",\"kid\":\"k-es\"}", good, es),
		   trusted, ntrusted, WITH_KEYS, JOSE_E_ALG_UNSUPPORTED, "unsupported");
	refuse("alg \"ES256K\"", token_signed("{\"alg\":\"ES256K\",\"kid\":\"k-es\"}", good, es),
		   trusted, ntrusted, WITH_KEYS, JOSE_E_ALG_UNSUPPORTED, "unsupported");

	/* ---- alg / key binding ---- */
	refuse("ES256 token, Ed25519 key with the same kid",
		   token_signed("{\"alg\":\"ES256\",\"kid\":\"shared\"}", good, es),
		   only_ed, 1, WITH_KEYS, JOSE_E_ALG_KEY_MISMATCH, "match");
	refuse("EdDSA token, ES256 key with the same kid",
		   token_signed("{\"alg\":\"EdDSA\",\"kid\":\"shared\"}", good, ed),
		   (jose_key *[]) {es_shared}, 1, WITH_KEYS, JOSE_E_ALG_KEY_MISMATCH, "match");
	refuse("RS256 header on a PS256 key (valid RS256 signature by the same RSA key)",
		   token_signed("{\"alg\":\"RS256\",\"kid\":\"ps\"}", good, ps_as_rs),
		   only_ps, 1, WITH_KEYS, JOSE_E_ALG_KEY_MISMATCH, "match");
	refuse("RS256 header on a PS256 key, jose_jws_verify",
		   token_signed("{\"alg\":\"RS256\"}", good, ps_as_rs),
		   only_ps, 1, ONE_KEY, JOSE_E_ALG_KEY_MISMATCH, "match");
	{
		char	   *pem = public_pem(rs);
		jose_key   *h = hmac_key_from(pem, strlen(pem));
		json_t	   *jwk = jose_jwk_public(rs, &err);
		const char *n = json_string_value(json_object_get(jwk, "n"));
		jose_key   *h2 = hmac_key_from(n, strlen(n));

		refuse("HS256 signed with the RSA public key PEM as secret, kid of the RSA key",
			   token_signed("{\"alg\":\"HS256\",\"kid\":\"rsa\"}", good, h),
			   trusted, ntrusted, WITH_KEYS, JOSE_E_ALG_KEY_MISMATCH, "match");
		refuse("HS256 signed with the RSA JWK \"n\" as secret, jose_jws_verify on the RSA key",
			   token_signed("{\"alg\":\"HS256\"}", good, h2),
			   only_rs, 1, ONE_KEY, JOSE_E_ALG_KEY_MISMATCH, "match");
		refuse("HS256 signed with the RSA public key PEM, no kid (no HS256 key trusted)",
			   token_signed("{\"alg\":\"HS256\"}", good, h),
			   trusted, ntrusted, WITH_KEYS, JOSE_E_NO_KEY, "no key");
		jose_key_free(h);
		jose_key_free(h2);
		json_decref(jwk);
		free(pem);
	}

	/* ---- ECDSA signature values ---- */
	refuse("ECDSA r = 0, s = 0", token_ecdsa_rs(es_hdr, good, es, zero32, zero32),
		   trusted, ntrusted, WITH_KEYS, JOSE_E_SIGNATURE, "verify");
	refuse("ECDSA r = 0", token_ecdsa_rs(es_hdr, good, es, zero32, NULL),
		   trusted, ntrusted, WITH_KEYS, JOSE_E_SIGNATURE, "verify");
	refuse("ECDSA s = 0", token_ecdsa_rs(es_hdr, good, es, NULL, zero32),
		   trusted, ntrusted, WITH_KEYS, JOSE_E_SIGNATURE, "verify");
	refuse("ECDSA r = n", token_ecdsa_rs(es_hdr, good, es, p256_n, NULL),
		   trusted, ntrusted, WITH_KEYS, JOSE_E_SIGNATURE, "verify");
	refuse("ECDSA s = n", token_ecdsa_rs(es_hdr, good, es, NULL, p256_n),
		   trusted, ntrusted, WITH_KEYS, JOSE_E_SIGNATURE, "verify");
	refuse("ECDSA r = s = 2^256 - 1", token_ecdsa_rs(es_hdr, good, es, ones32, ones32),
		   trusted, ntrusted, WITH_KEYS, JOSE_E_SIGNATURE, "verify");

	/* ---- signature length ---- */
	refuse("ES256 signature truncated to 63 bytes", token_sig_resized(es_hdr, good, es, -1),
		   trusted, ntrusted, WITH_KEYS, JOSE_E_SIG_LENGTH, "length");
	refuse("ES256 signature with an extra byte", token_sig_resized(es_hdr, good, es, +1),
		   trusted, ntrusted, WITH_KEYS, JOSE_E_SIG_LENGTH, "length");
	refuse("EdDSA signature truncated to 63 bytes",
		   token_sig_resized("{\"alg\":\"EdDSA\",\"kid\":\"shared\"}", good, ed, -1),
		   only_ed, 1, WITH_KEYS, JOSE_E_SIG_LENGTH, "length");
	refuse("RS256 signature with an extra byte",
		   token_sig_resized("{\"alg\":\"RS256\",\"kid\":\"rsa\"}", good, rs, +1),
		   trusted, ntrusted, WITH_KEYS, JOSE_E_SIG_LENGTH, "length");
	refuse("RS256 signature one byte short",
		   token_sig_resized("{\"alg\":\"RS256\",\"kid\":\"rsa\"}", good, rs, -1),
		   trusted, ntrusted, WITH_KEYS, JOSE_E_SIG_LENGTH, "length");
	refuse("empty signature segment", token_raw_sig(es_hdr, good, ""),
		   trusted, ntrusted, WITH_KEYS, JOSE_E_SIG_LENGTH, "length");
	{
		uint8_t    *big = calloc(1, 2000);
		char	   *t = token_with_sig(es_hdr, good, big, 2000);

		refuse("2000-byte signature", t, trusted, ntrusted, WITH_KEYS, JOSE_E_SIG_LENGTH, "signature");
		free(big);
	}

	/* ---- base64url ---- */
	refuse("padded signature ('==')", poke_segment(token_signed(es_hdr, good, es), 2, "=="),
		   trusted, ntrusted, WITH_KEYS, JOSE_E_BASE64, "base64");
	refuse("padded header ('=')", poke_segment(token_signed(es_hdr, good, es), 0, "="),
		   trusted, ntrusted, WITH_KEYS, JOSE_E_BASE64, "base64");
	refuse("'+' in the payload", set_char(token_signed(es_hdr, good, es), 1, 2, '+'),
		   trusted, ntrusted, WITH_KEYS, JOSE_E_BASE64, "base64");
	refuse("'/' in the signature", set_char(token_signed(es_hdr, good, es), 2, 5, '/'),
		   trusted, ntrusted, WITH_KEYS, JOSE_E_BASE64, "base64");
	refuse("trailing newline", poke_segment(token_signed(es_hdr, good, es), 2, "\n"),
		   trusted, ntrusted, WITH_KEYS, JOSE_E_BASE64, "base64");

	/* ---- segments ---- */
	{
		char	   *h = b64s(es_hdr),
				   *p = b64s(good);

		refuse("two segments (one dot)", join(h, ".", p), trusted, ntrusted, WITH_KEYS,
			   JOSE_E_FORMAT, "segment");
		refuse("two dots only \"..\"", strdup(".."), trusted, ntrusted, WITH_KEYS,
			   JOSE_E_FORMAT, "segment");
		refuse("empty string", strdup(""), trusted, ntrusted, WITH_KEYS, JOSE_E_FORMAT, "segment");
		refuse("four segments", poke_segment(token_signed(es_hdr, good, es), 2, ".AAAA"),
			   trusted, ntrusted, WITH_KEYS, JOSE_E_FORMAT, "segment");
		refuse("empty header segment", poke_segment(join(".", NULL, p), 1, ".AAAA"),
			   trusted, ntrusted, WITH_KEYS, JOSE_E_FORMAT, "header");
		free(h);
		free(p);
	}
	/* "h..s": empty payload segment, signature valid over "h." -> not a JWT payload */
	refuse("duplicated dots \"h..s\" (empty payload, valid signature)",
		   token_signed(es_hdr, "", es), trusted, ntrusted, WITH_KEYS, JOSE_E_PAYLOAD, "object");

	/* ---- header / payload JSON ---- */
	refuse("payload is an array", token_signed(es_hdr, "[1,2]", es),
		   trusted, ntrusted, WITH_KEYS, JOSE_E_PAYLOAD, "object");
	refuse("payload is a string", token_signed(es_hdr, "\"sub\"", es),
		   trusted, ntrusted, WITH_KEYS, JOSE_E_PAYLOAD, "object");
	refuse("payload is a number", token_signed(es_hdr, "1700000000", es),
		   trusted, ntrusted, WITH_KEYS, JOSE_E_PAYLOAD, "object");
	refuse("payload is not JSON", token_signed(es_hdr, "{exp:1}", es),
		   trusted, ntrusted, WITH_KEYS, JOSE_E_PAYLOAD, "JSON");
	refuse("header is an array", token_signed("[\"ES256\"]", good, es),
		   trusted, ntrusted, WITH_KEYS, JOSE_E_HEADER, "object");
	refuse("header is a string", token_signed("\"ES256\"", good, es),
		   trusted, ntrusted, WITH_KEYS, JOSE_E_HEADER, "header");
	refuse("header is not JSON", token_signed("{alg:ES256}", good, es),
		   trusted, ntrusted, WITH_KEYS, JOSE_E_HEADER, "JSON");
	refuse("duplicate \"alg\" in the header",
		   token_signed("{\"alg\":\"ES256\",\"kid\":\"k-es\",\"alg\":\"none\"}", good, es),
		   trusted, ntrusted, WITH_KEYS, JOSE_E_HEADER, "duplicate");
	refuse("alg with an embedded NUL (\"ES256\\u0000x\")",
		   token_signed("{\"alg\":\"ES256\\u0000x\",\"kid\":\"k-es\"}", good, es),
		   trusted, ntrusted, WITH_KEYS, JOSE_E_HEADER, "JSON");
	refuse("kid is not a string", token_signed("{\"alg\":\"ES256\",\"kid\":7}", good, es),
		   trusted, ntrusted, WITH_KEYS, JOSE_E_HEADER, "kid");
	{
		char		dup[512];

		snprintf(dup, sizeof(dup), "{\"sub\":\"alice\",\"aud\":\"tokex\",\"exp\":%d,\"sub\":\"admin\"}",
				 NOW + 600);
		refuse("duplicate claim \"sub\"", token_signed(es_hdr, dup, es),
			   trusted, ntrusted, WITH_KEYS, JOSE_E_PAYLOAD, "duplicate");
	}
	{
		char	   *deep = nested_payload(100);

		refuse("payload nested 100 deep", token_signed(es_hdr, deep, es),
			   trusted, ntrusted, WITH_KEYS, JOSE_E_JSON_DEPTH, "nested");
		free(deep);
		snprintf(hdr, sizeof(hdr), "{\"alg\":\"ES256\",\"x\":");
		for (int i = 0; i < 100; i++)
			strcat(hdr, "[");
		for (int i = 0; i < 100; i++)
			strcat(hdr, "]");
		strcat(hdr, "}");
		refuse("header nested 100 deep", token_signed(hdr, good, es),
			   trusted, ntrusted, WITH_KEYS, JOSE_E_JSON_DEPTH, "nested");
	}
	{
		/* exactly at the limit (not TOO_LONG) and one byte over it */
		char	   *h = b64s(es_hdr);
		char	   *t = malloc(JOSE_MAX_TOKEN_LEN + 2);
		size_t		hl = strlen(h);
		jose_error	e = noerr();
		int			rc;

		memcpy(t, h, hl);
		t[hl] = '.';
		memset(t + hl + 1, 'A', JOSE_MAX_TOKEN_LEN - hl - 1);
		t[JOSE_MAX_TOKEN_LEN - 87] = '.';	/* then an 86-char (64-byte) signature */
		t[JOSE_MAX_TOKEN_LEN] = 'A';
		t[JOSE_MAX_TOKEN_LEN + 1] = '\0';
		rc = verify_token(t, JOSE_MAX_TOKEN_LEN, trusted, ntrusted, WITH_KEYS, &e);
		tap_ok(rc < 0 && e.code != JOSE_E_TOO_LONG,
			   "token of exactly JOSE_MAX_TOKEN_LEN bytes is not refused as TOO_LONG (%s)",
			   errname(e.code));
		refuse_len("token of JOSE_MAX_TOKEN_LEN + 1 bytes", t, JOSE_MAX_TOKEN_LEN + 1,
				   trusted, ntrusted, WITH_KEYS, JOSE_E_TOO_LONG, "long");
		free(t);
		free(h);
	}
	{
		/* a real, validly signed token far over the limit */
		size_t		pad = JOSE_MAX_TOKEN_LEN;
		char	   *big = malloc(pad + 128);
		int			n = snprintf(big, 128, "{\"aud\":\"tokex\",\"exp\":%d,\"pad\":\"", NOW + 600);

		memset(big + n, 'a', pad);
		strcpy(big + n + pad, "\"}");
		refuse("validly signed token longer than JOSE_MAX_TOKEN_LEN", token_signed(es_hdr, big, es),
			   trusted, ntrusted, WITH_KEYS, JOSE_E_TOO_LONG, "long");
		free(big);
	}

	{
		/* a header bigger than any sane JOSE header (> 8 KiB decoded) */
		char	   *big = malloc(10000);

		strcpy(big, "{\"alg\":\"ES256\",\"x\":\"");
		memset(big + strlen(big), 'x', 9000);
		strcpy(big + strlen("{\"alg\":\"ES256\",\"x\":\"") + 9000, "\"}");
		refuse("9 KB header", token_signed(big, good, es), trusted, ntrusted, WITH_KEYS,
			   JOSE_E_TOO_LONG, "header");
		free(big);
	}

	/* ---- claims ---- */
	{
		static const struct
		{
			const char *name;
			const char *fmt;
			int			t;
			jose_errcode want;
			const char *phrase;
		}			claims[] = {
			{"exp in the past", "{\"aud\":\"tokex\",\"exp\":%d}", NOW - 1, JOSE_E_EXPIRED, "expired"},
			{"exp exactly now (skew 0)", "{\"aud\":\"tokex\",\"exp\":%d}", NOW, JOSE_E_EXPIRED, "expired"},
			{"nbf in the future", "{\"aud\":\"tokex\",\"exp\":1800000000,\"nbf\":%d}", NOW + 1,
			JOSE_E_NOT_YET_VALID, "not yet"},
			{"iat in the future", "{\"aud\":\"tokex\",\"exp\":1800000000,\"iat\":%d}", NOW + 1,
			JOSE_E_IAT_FUTURE, "future"},
			{"exp as string \"123\"", "{\"aud\":\"tokex\",\"exp\":\"123\",\"n\":%d}", 0,
			JOSE_E_CLAIM_TYPE, "exp"},
			{"exp missing", "{\"aud\":\"tokex\",\"iat\":%d}", NOW, JOSE_E_CLAIM_TYPE, "exp"},
			{"wrong aud", "{\"aud\":\"other\",\"exp\":%d}", NOW + 600, JOSE_E_AUDIENCE, "audience"},
			{"aud array without the audience", "{\"aud\":[\"a\",\"b\"],\"exp\":%d}", NOW + 600,
			JOSE_E_AUDIENCE, "audience"},
			{"aud missing", "{\"exp\":%d}", NOW + 600, JOSE_E_AUDIENCE, "aud"},
			{"aud of the wrong type", "{\"aud\":{\"tokex\":true},\"exp\":%d}", NOW + 600,
			JOSE_E_CLAIM_TYPE, "aud"},
		};

		for (size_t i = 0; i < sizeof(claims) / sizeof(claims[0]); i++)
		{
			char		p[256];

			snprintf(p, sizeof(p), claims[i].fmt, claims[i].t);
			refuse(claims[i].name, token_signed(es_hdr, p, es), trusted, ntrusted, WITH_KEYS,
				   claims[i].want, claims[i].phrase);
		}
	}

	/* ---- crit ---- */
	refuse("crit [\"foo\"]",
		   token_signed("{\"alg\":\"ES256\",\"kid\":\"k-es\",\"crit\":[\"foo\"],\"foo\":1}", good, es),
		   trusted, ntrusted, WITH_KEYS, JOSE_E_CRIT, "crit");
	refuse("crit []", token_signed("{\"alg\":\"ES256\",\"kid\":\"k-es\",\"crit\":[]}", good, es),
		   trusted, ntrusted, WITH_KEYS, JOSE_E_CRIT, "crit");
	refuse("crit not an array", token_signed("{\"alg\":\"ES256\",\"kid\":\"k-es\",\"crit\":\"foo\"}", good, es),
		   trusted, ntrusted, WITH_KEYS, JOSE_E_CRIT, "crit");
	refuse("crit [\"b64\"] (RFC 7797 not supported)",
		   token_signed("{\"alg\":\"ES256\",\"kid\":\"k-es\",\"b64\":false,\"crit\":[\"b64\"]}", good, es),
		   trusted, ntrusted, WITH_KEYS, JOSE_E_CRIT, "crit");

	/* ---- keys named by the token are never followed ---- */
	{
		json_t	   *ajwk = jose_jwk_public(attacker, &err);
		char	   *ajs = json_dumps(ajwk, JSON_COMPACT);

		snprintf(hdr, sizeof(hdr), "{\"alg\":\"ES256\",\"jwk\":%s}", ajs);
		refuse("embedded jwk header with the attacker's key, no kid",
			   token_signed(hdr, good, attacker), trusted, ntrusted, WITH_KEYS,
			   JOSE_E_SIGNATURE, "verify");
		snprintf(hdr, sizeof(hdr), "{\"alg\":\"ES256\",\"kid\":\"%s\",\"jwk\":%s}",
				 attacker->kid, ajs);
		refuse("embedded jwk header with the attacker's key and its kid",
			   token_signed(hdr, good, attacker), trusted, ntrusted, WITH_KEYS,
			   JOSE_E_NO_KEY, "kid");
		refuse("embedded jwk header, jose_jws_verify against the trusted key",
			   token_signed(hdr, good, attacker), only_es, 1, ONE_KEY,
			   JOSE_E_SIGNATURE, "verify");
		refuse("jku header pointing at the attacker",
			   token_signed("{\"alg\":\"ES256\",\"jku\":\"https://evil.example/jwks\"}", good, attacker),
			   trusted, ntrusted, WITH_KEYS, JOSE_E_SIGNATURE, "verify");
		free(ajs);
		json_decref(ajwk);
	}
	refuse("kid that matches no key", token_signed("{\"alg\":\"ES256\",\"kid\":\"nope\"}", good, es),
		   trusted, ntrusted, WITH_KEYS, JOSE_E_NO_KEY, "kid");
	refuse("signature by another key under our kid", token_signed(es_hdr, good, attacker),
		   trusted, ntrusted, WITH_KEYS, JOSE_E_SIGNATURE, "verify");
	{
		/* header changed after signing (kid swapped), signature left as is */
		char	   *a = token_signed(es_hdr, good, es);
		char	   *h2 = b64s("{\"alg\":\"ES256\",\"kid\":\"k-es\",\"x\":1}");
		char	   *t = join(h2, NULL, strchr(a, '.'));

		refuse("header modified after signing", t, trusted, ntrusted, WITH_KEYS,
			   JOSE_E_SIGNATURE, "verify");
		free(a);
		free(h2);
	}

	/* ---- key_ops (RFC 7517 §4.3) and use (§4.2): a key does only what its JWK says ---- */
	refuse_jwk("RSA JWK without alg or use, key_ops [\"encrypt\"] (Wycheproof JWS tc355)",
			   jwk_edited(rs, "{\"key_ops\":[\"encrypt\"]}", true, true), JOSE_ALG_RS256,
			   JOSE_E_JWK, "key_ops");
	refuse_jwk("EC JWK without alg or use, key_ops [\"encrypt\"] (Wycheproof JWS tc356)",
			   jwk_edited(es, "{\"key_ops\":[\"encrypt\"]}", true, true), JOSE_ALG_UNKNOWN,
			   JOSE_E_JWK, "key_ops");
	refuse_jwk("RSA JWK use enc (Wycheproof JWS tc353)",
			   jwk_edited(rs, "{\"use\":\"enc\"}", true, false), JOSE_ALG_RS256, JOSE_E_JWK, "use");
	refuse_jwk("EC JWK with key_ops \"verify\" (a string, not an array)",
			   jwk_edited(es, "{\"key_ops\":\"verify\"}", false, true), JOSE_ALG_UNKNOWN,
			   JOSE_E_JWK, "key_ops");
	refuse_jwk("EC JWK with key_ops [\"verify\",\"verify\"]",
			   jwk_edited(es, "{\"key_ops\":[\"verify\",\"verify\"]}", false, true),
			   JOSE_ALG_UNKNOWN, JOSE_E_JWK, "key_ops");
	refuse_jwk("EC JWK use sig with key_ops [\"verify\",\"encrypt\"] (use and key_ops disagree)",
			   jwk_edited(es, "{\"key_ops\":[\"verify\",\"encrypt\"]}", false, false),
			   JOSE_ALG_UNKNOWN, JOSE_E_JWK, "key_ops");
	{
		json_t	   *j = jwk_edited(es, "{\"kid\":\"k-es\",\"key_ops\":[\"sign\"]}", false, true);
		jose_key   *signonly = jose_jwk_parse(j, JOSE_ALG_UNKNOWN, false, &err);
		jose_key  **keys;
		size_t		n = 0;

		json_decref(j);
		if (signonly == NULL)
			abort();
		refuse("valid ES256 token, jose_jws_verify on a key_ops [\"sign\"] key",
			   token_signed(es_hdr, good, es), &signonly, 1, ONE_KEY, JOSE_E_KEY_OPS, "verify");
		refuse("valid ES256 token naming a key_ops [\"sign\"] key by kid",
			   token_signed(es_hdr, good, es), &signonly, 1, WITH_KEYS, JOSE_E_KEY_OPS, "verify");
		refuse("valid ES256 token without kid, only a key_ops [\"sign\"] key",
			   token_signed("{\"alg\":\"ES256\"}", good, es), &signonly, 1, WITH_KEYS,
			   JOSE_E_NO_KEY, "no key");
		jose_key_free(signonly);

		/* a trusted issuer's JWKS: the encrypt-only RSA key is not a verification key */
		keys = jwks_keys(json_pack("{s:[o,o]}", "keys",
								   jwk_edited(es, "{\"kid\":\"k-es\"}", false, false),
								   jwk_edited(rs, "{\"kid\":\"rsa\",\"key_ops\":[\"encrypt\"]}",
											  true, true)), &n);
		tap_ok(n == 1, "JWKS: the key_ops [\"encrypt\"] key is skipped (%zu key left)", n);
		refuse("valid RS256 token naming a JWKS key whose key_ops is [\"encrypt\"]",
			   token_signed("{\"alg\":\"RS256\",\"kid\":\"rsa\"}", good, rs), keys, n,
			   WITH_KEYS, JOSE_E_NO_KEY, "kid");
		jose_keys_free(keys, n);
	}

	/* ---- a JWKS is either shared secrets or public keys, never both ---- */
	{
		static const char oct_jwk[] =
			"{\"kty\":\"oct\",\"alg\":\"HS256\",\"use\":\"sig\",\"kid\":\"h\","
			"\"k\":\"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY\"}";
		static const char oct_enc[] =
			"{\"kty\":\"oct\",\"use\":\"enc\",\"kid\":\"wrap\","
			"\"k\":\"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY\"}";
		struct
		{
			const char *name;
			json_t	   *jwks;
		}			mixed[] = {
			{"JWKS with an HS256 key and an ES256 key (Wycheproof JWK tc1)",
			json_pack("{s:[o,o]}", "keys", json_fixture(oct_jwk), jwk_edited(es, NULL, false, false))},
			{"JWKS with an RS256 key then an HS256 key",
			json_pack("{s:[o,o]}", "keys", jwk_edited(rs, NULL, false, false), json_fixture(oct_jwk))},
			{"JWKS with an EdDSA key and an oct key marked use enc",
			json_pack("{s:[o,o]}", "keys", jwk_edited(ed, NULL, false, false), json_fixture(oct_enc))},
		};

		for (size_t i = 0; i < sizeof(mixed) / sizeof(mixed[0]); i++)
		{
			jose_key  **keys = NULL;
			size_t		n = 0;
			jose_error	e = noerr();
			int			rc = jose_jwks_parse(mixed[i].jwks, &keys, &n, &e);
			bool		ok = rc < 0 && keys == NULL && n == 0 && e.code == JOSE_E_JWKS &&
				contains(e.detail, "symmetric") && contains(e.detail, "asymmetric");

			tap_ok(ok, "%s -> JWKS", mixed[i].name);
			if (!ok)
				tap_diag("  got rc=%d %s \"%s\"", rc, errname(e.code), e.detail);
			jose_keys_free(keys, n);
			json_decref(mixed[i].jwks);
		}
	}

	/* ---- weak keys ---- */
	refuse_jwk("RSA 1024-bit JWK", rsa_jwk_of_bits(1024), JOSE_ALG_RS256,
			   JOSE_E_KEY_TOO_WEAK, "2048");
	refuse_jwk("HS256 oct key of 16 bytes",
			   json_pack("{s:s,s:s,s:s}", "kty", "oct", "alg", "HS256", "k", "AAECAwQFBgcICQoLDA0ODw"),
			   JOSE_ALG_UNKNOWN, JOSE_E_KEY_TOO_WEAK, "32");
	refuse_jwk("HS512 oct key of 32 bytes",
			   json_pack("{s:s,s:s}", "kty", "oct", "k", "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8"),
			   JOSE_ALG_HS512, JOSE_E_KEY_TOO_WEAK, "64");
	{
		json_t	   *jwks = json_pack("{s:[o]}", "keys", rsa_jwk_of_bits(1024));
		jose_key  **keys = NULL;
		size_t		n = 0;
		jose_error	e = noerr();
		int			rc = jose_jwks_parse(jwks, &keys, &n, &e);

		tap_ok(rc < 0 && keys == NULL && (e.code == JOSE_E_KEY_TOO_WEAK || e.code == JOSE_E_JWKS) &&
			   contains(e.detail, "2048"),
			   "JWKS with an RSA 1024-bit key -> refused (%s \"%s\")", errname(e.code), e.detail);
		jose_keys_free(keys, n);
		json_decref(jwks);
	}

	/* ---- ROCA (CVE-2017-15361): factorable moduli with a public fingerprint ---- */
	{
		json_t	   *priv = NULL,
				   *pub = roca_rsa_jwk(&priv),
				   *jwks;
		jose_key   *k;
		jose_key  **keys = NULL;
		size_t		n = 0;
		jose_error	e = noerr();
		int			rc;

		refuse_jwk("RSA-2048 public JWK with RSALib's prime structure (ROCA)", json_incref(pub),
				   JOSE_ALG_RS256, JOSE_E_KEY_TOO_WEAK, "ROCA");
		k = jose_jwk_parse(priv, JOSE_ALG_RS256, true, &e);
		tap_ok(k == NULL && e.code == JOSE_E_KEY_TOO_WEAK && contains(e.detail, "ROCA"),
			   "the same key as a private JWK (a valid key pair) -> KEY_TOO_WEAK (got %s \"%s\")",
			   k ? "a key" : errname(e.code), e.detail);
		jose_key_free(k);
		jwks = json_pack("{s:[o,O]}", "keys", jwk_edited(es, NULL, false, false), pub);
		e = noerr();
		rc = jose_jwks_parse(jwks, &keys, &n, &e);
		tap_ok(rc < 0 && keys == NULL && e.code == JOSE_E_KEY_TOO_WEAK &&
			   contains(e.detail, "key 1") && contains(e.detail, "CVE-2017-15361"),
			   "JWKS with an ES256 key and the ROCA key -> refused whole (got %s \"%s\")",
			   errname(e.code), e.detail);
		jose_keys_free(keys, n);
		json_decref(jwks);
		json_decref(pub);
		json_decref(priv);
	}

	jose_key_free(es_pub);
	jose_key_free(es_shared);
	jose_key_free(ed_shared);
	jose_key_free(rs_pub);
	jose_key_free(ps_pub);
	jose_key_free(es);
	jose_key_free(ed);
	jose_key_free(rs);
	jose_key_free(ps);
	jose_key_free(attacker);
	jose_key_free(ps_as_rs);
	return tap_done();
}
