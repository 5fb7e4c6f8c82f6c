/*
 * test_credentials.c — unit tests of the credentials tokex reads that are
 * not JWTs, in the PostgreSQL-free core: the opaque tkx_ak_ / tkx_at_
 * format (opaque.c) and DPoP proofs and server nonces (dpop.c).  Known
 * answers come from zlib's CRC-32 (python3 -c 'import zlib; ...'), not from
 * the code under test.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/rand.h>

#include "jose.h"
#include "tap.h"
#include "util.h"

/* ---------------- opaque credentials ---------------- */

static bool
fill_random(void *buf, size_t len)
{
	return RAND_bytes(buf, (int) len) == 1;
}

static bool
fill_fails(void *buf, size_t len)
{
	(void) buf;
	(void) len;
	return false;
}

/* 255 (drawn again), then 1, 255, 1, ...: every body character is '1' */
static bool
fill_ones(void *buf, size_t len)
{
	for (size_t i = 0; i < len; i++)
		((uint8_t *) buf)[i] = i % 2 ? 1 : 255;
	return true;
}

static bool
fill_zeros(void *buf, size_t len)
{
	memset(buf, 0, len);
	return true;
}

static void
test_opaque(void)
{
	static const char b62[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
	jose_error	e = noerr();
	char	   *s;
	char	   *t;
	bool		ok = true;
	int			changed = 0;

	tap_ok(jose_crc32("123456789", 9) == 0xCBF43926u, "CRC-32 check value of \"123456789\" is CBF43926");
	tap_ok(jose_opaque_len("ak") == 56 && jose_opaque_len("at") == 56, "an ak/at credential is 56 characters");

	/* known answers, made with zlib.crc32 */
	s = jose_opaque_new("ak", fill_zeros, &e);
	tap_ok(s && strcmp(s, "tkx_ak_00000000000000000000000000000000000000000001apzkW") == 0,
		   "all-zero randomness -> the credential zlib's CRC-32 gives (%s)", s ? s : e.detail);
	free(s);
	s = jose_opaque_new("at", fill_ones, &e);
	tap_ok(s && strcmp(s, "tkx_at_11111111111111111111111111111111111111111112KF6A5") == 0,
		   "bytes >= 248 are drawn again (%s)", s ? s : e.detail);
	tap_ok(jose_opaque_ok("tkx_at_11111111111111111111111111111111111111111112KF6A5", 56, "at") &&
		   !jose_opaque_ok("tkx_at_11111111111111111111111111111111111111111112KF6A5", 56, "ak"),
		   "the known reference token passes as at, not as ak");
	free(s);

	e = noerr();
	s = jose_opaque_new("ak", fill_fails, &e);
	tap_ok(s == NULL && e.code == JOSE_E_INTERNAL && strcmp(e.detail, "no random bytes for a credential") == 0,
		   "no randomness -> NULL, INTERNAL (%s)", e.detail);

	s = jose_opaque_new("ak", fill_random, &e);
	tap_ok(s && strlen(s) == 56 && strncmp(s, "tkx_ak_", 7) == 0 && strspn(s + 7, b62) == 49 &&
		   jose_opaque_ok(s, 56, "ak") && !jose_opaque_ok(s, 56, "at"),
		   "a fresh API key has its shape and passes as ak only");
	/* every one-character change fails: any other base62 digit, '_', NUL, a high byte */
	t = strdup(s);
	for (size_t i = 0; i < 56; i++)
	{
		const char	repl[] = {'0', 'z', 'Q', '_', '\0', (char) 0xC3};

		for (size_t r = 0; r < sizeof(repl); r++)
		{
			if (repl[r] == s[i])
				continue;
			memcpy(t, s, 57);
			t[i] = repl[r];
			changed++;
			if (jose_opaque_ok(t, 56, "ak"))
			{
				ok = false;
				tap_diag("accepted with position %zu changed to 0x%02x", i, (unsigned char) repl[r]);
			}
		}
	}
	tap_ok(ok && changed > 300, "each of %d one-character changes of it fails", changed);
	tap_ok(!jose_opaque_ok(s, 55, "ak") && !jose_opaque_ok(s, 0, "ak"), "a shorter one fails");
	memcpy(t, s, 57);
	t = realloc(t, 58);
	t[56] = '0';
	tap_ok(!jose_opaque_ok(t, 57, "ak"), "a longer one fails");
	free(t);
	free(s);
}

/* ---------------- DPoP proofs ---------------- */

#define NOW 1700000000

static jose_key *es;			/* the client's key */
static char *es_jwk;			/* its public JWK */

/* A proof signed with key, with this header and these claims (JSON text). */
static char *
proof(const jose_key *key, const char *header, const char *claims)
{
	jose_error	e = noerr();
	char	   *p = jose_jws_sign(key, header, strlen(header), claims, strlen(claims), &e);

	if (p == NULL)
	{
		tap_diag("jose_jws_sign: %s", e.detail);
		abort();
	}
	return p;
}

/* printf into a string that lives until fmt_free() */
static char *made[64];
static int	nmade;

static void
fmt_free(void)
{
	while (nmade > 0)
		free(made[--nmade]);
}

static char *
fmt(const char *f,...) __attribute__((format(printf, 1, 2)));
static char *
fmt(const char *f,...)
{
	va_list		ap;
	char	   *s;
	int			n;

	va_start(ap, f);
	n = vsnprintf(NULL, 0, f, ap);
	va_end(ap);
	if (n < 0 || (s = malloc((size_t) n + 1)) == NULL)
		abort();
	va_start(ap, f);
	vsnprintf(s, (size_t) n + 1, f, ap);
	va_end(ap);
	if (nmade == (int) (sizeof(made) / sizeof(made[0])))
		abort();
	made[nmade++] = s;
	return s;
}

static char *
es_header(void)
{
	return fmt("{\"typ\":\"dpop+jwt\",\"alg\":\"ES256\",\"jwk\":%s}", es_jwk);
}

static jose_dpop_rules
rules(void)
{
	jose_dpop_rules r = {.htm = "POST", .htu = "https://as.example/rpc/token", .now = NOW,
	.skew = 60, .max_age = 60};

	return r;
}

/* check p against r: the fault (JOSE_DPOP_OK when it held) */
static jose_dpop_fault
check(const char *p, const jose_dpop_rules *r, jose_dpop *out, jose_error *e)
{
	jose_dpop_fault f = (jose_dpop_fault) 99;

	*e = noerr();
	if (jose_dpop_check(p, strlen(p), r, out, &f, e) == 0)
		return f == JOSE_DPOP_OK ? JOSE_DPOP_OK : (jose_dpop_fault) 98;
	if (out->jti || out->nonce || f == JOSE_DPOP_OK || e->detail[0] == 0)
		return (jose_dpop_fault) 97;	/* a refusal must be empty-handed and say why */
	return f;
}

static void
refused(const char *what, const char *header, const char *claims, const jose_dpop_rules *r,
		jose_dpop_fault want, const char *detail)
{
	char	   *p = proof(es, header, claims);
	jose_dpop	out;
	jose_error	e;
	jose_dpop_fault f = check(p, r, &out, &e);

	tap_ok(f == want && (detail == NULL || strcmp(e.detail, detail) == 0),
		   "dpop: %s -> fault %d (got %d, \"%s\")", what, (int) want, (int) f, e.detail);
	jose_dpop_clear(&out);
	free(p);
}

static void
test_dpop(void)
{
	jose_error	e = noerr();
	jose_dpop_rules r = rules();
	jose_dpop	out;
	json_t	   *pub;
	char	   *h;
	char	   *c;
	char	   *p;
	char		jkt[44];
	char	   *ath;
	uint8_t		hash[32];

	es = jose_key_generate(JOSE_ALG_ES256, &e);
	pub = es ? jose_jwk_public(es, &e) : NULL;
	if (pub == NULL || jose_jwk_thumbprint(es, jkt, &e) < 0)
	{
		tap_ok(false, "a client key for the DPoP tests: %s", e.detail);
		return;
	}
	es_jwk = json_dumps(pub, JSON_COMPACT);
	json_decref(pub);
	h = es_header();

	c = fmt("{\"jti\":\"j1\",\"htm\":\"POST\",\"htu\":\"https://as.example/rpc/token\",\"iat\":%d}", NOW - 30);
	p = proof(es, h, c);
	tap_ok(check(p, &r, &out, &e) == JOSE_DPOP_OK && strcmp(out.jkt, jkt) == 0 &&
		   strcmp(out.jti, "j1") == 0 && out.nonce == NULL && out.expires == NOW - 30 + 60 + 60 + 1,
		   "dpop: a valid proof holds: jkt is its key's thumbprint, jti, no nonce, expires (%s)", e.detail);
	jose_dpop_clear(&out);
	free(p);

	/* query and fragment are not compared; a nonce is handed back */
	c = fmt("{\"jti\":\"j2\",\"htm\":\"GET\",\"htu\":\"https://rs.example/x?a=1\",\"iat\":%d,\"nonce\":\"n1\"}", NOW);
	p = proof(es, h, c);
	r.htm = "GET";
	r.htu = "https://rs.example/x#frag";
	tap_ok(check(p, &r, &out, &e) == JOSE_DPOP_OK && out.nonce && strcmp(out.nonce, "n1") == 0,
		   "dpop: htu compared without query and fragment; nonce handed back (%s)", e.detail);
	jose_dpop_clear(&out);
	r.htu = "https://rs.example/y";
	tap_ok(check(p, &r, &out, &e) == JOSE_DPOP_HTU && e.code == JOSE_E_DPOP &&
		   strcmp(e.detail, "the proof's htu is not https://rs.example/y") == 0,
		   "dpop: another path -> HTU, the request's URL in the detail (%s)", e.detail);
	r = rules();
	r.htu = "https://rs.example/x";
	r.htm = "get";
	tap_ok(check(p, &r, &out, &e) == JOSE_DPOP_HTM && strcmp(e.detail, "the proof's htm is not get") == 0,
		   "dpop: htm is compared exactly (%s)", e.detail);
	free(p);

	/* ath */
	r = rules();
	r.access_token = "tok";
	r.at_len = 3;
	EVP_Digest("tok", 3, hash, NULL, EVP_sha256(), NULL);
	ath = b64(hash, 32);
	c = fmt("{\"jti\":\"j\",\"htm\":\"POST\",\"htu\":\"https://as.example/rpc/token\",\"iat\":%d,\"ath\":\"%s\"}",
			NOW, ath);
	p = proof(es, h, c);
	tap_ok(check(p, &r, &out, &e) == JOSE_DPOP_OK, "dpop: ath of the access token -> holds (%s)", e.detail);
	jose_dpop_clear(&out);
	r.access_token = "toK";
	tap_ok(check(p, &r, &out, &e) == JOSE_DPOP_ATH, "dpop: ath of another token -> ATH (%s)", e.detail);
	free(p);
	free(ath);

	/* the rules, one at a time */
	r = rules();
	c = fmt("{\"jti\":\"j\",\"htm\":\"POST\",\"htu\":\"https://as.example/rpc/token\",\"iat\":%d}", NOW);
	refused("typ JWT", fmt("{\"typ\":\"JWT\",\"alg\":\"ES256\",\"jwk\":%s}", es_jwk), c, &r,
			JOSE_DPOP_TYP, "the proof's typ is not dpop+jwt");
	refused("no jwk", "{\"typ\":\"dpop+jwt\",\"alg\":\"ES256\"}", c, &r,
			JOSE_DPOP_NO_JWK, "the proof has no jwk header");
	refused("jwk with d", fmt("{\"typ\":\"dpop+jwt\",\"alg\":\"ES256\",\"jwk\":{\"d\":\"AA\",%s}", es_jwk + 1), c, &r,
			JOSE_DPOP_PRIVATE_JWK, "the proof's jwk holds a private key");
	refused("jwk a string", "{\"typ\":\"dpop+jwt\",\"alg\":\"ES256\",\"jwk\":\"x\"}", c, &r,
			JOSE_DPOP_NO_JWK, NULL);
	refused("alg ES384 with a P-256 jwk", fmt("{\"typ\":\"dpop+jwt\",\"alg\":\"ES384\",\"jwk\":%s}", es_jwk), c, &r,
			JOSE_DPOP_SIGNATURE, "the proof's signature: alg ES384 does not match the key (ES256)");
	refused("a point off the curve", "{\"typ\":\"dpop+jwt\",\"alg\":\"ES256\",\"jwk\":{\"kty\":\"EC\",\"crv\":\"P-256\","
			"\"x\":\"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\",\"y\":\"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\"}}",
			c, &r, JOSE_DPOP_JWK, NULL);
	refused("jti of 257 bytes", h,
			fmt("{\"jti\":\"%0257d\",\"htm\":\"POST\",\"htu\":\"https://as.example/rpc/token\",\"iat\":%d}", 0, NOW),
			&r, JOSE_DPOP_JTI, NULL);
	refused("empty jti", h, fmt("{\"jti\":\"\",\"htm\":\"POST\",\"htu\":\"https://as.example/rpc/token\",\"iat\":%d}", NOW),
			&r, JOSE_DPOP_JTI, NULL);
	refused("htu without a scheme", h, fmt("{\"jti\":\"j\",\"htm\":\"POST\",\"htu\":\"as.example/rpc/token\",\"iat\":%d}", NOW),
			&(jose_dpop_rules) {.htm = "POST", .htu = "as.example/rpc/token", .now = NOW, .skew = 60, .max_age = 60},
			JOSE_DPOP_HTU, NULL);
	refused("iat a string", h, "{\"jti\":\"j\",\"htm\":\"POST\",\"htu\":\"https://as.example/rpc/token\",\"iat\":\"1\"}",
			&r, JOSE_DPOP_IAT, "the proof has no iat");
	refused("iat 61 s ahead", h, fmt("{\"jti\":\"j\",\"htm\":\"POST\",\"htu\":\"https://as.example/rpc/token\",\"iat\":%d}", NOW + 61),
			&r, JOSE_DPOP_IAT_FUTURE, "the proof's iat is in the future");
	refused("iat 121 s old", h, fmt("{\"jti\":\"j\",\"htm\":\"POST\",\"htu\":\"https://as.example/rpc/token\",\"iat\":%d}", NOW - 121),
			&r, JOSE_DPOP_TOO_OLD, "the proof is too old (tokex.dpop_max_age)");
	refused("iat 1e300, clock at its end", h, "{\"jti\":\"j\",\"htm\":\"POST\",\"htu\":\"https://as.example/rpc/token\",\"iat\":1e300}",
			&(jose_dpop_rules) {.htm = "POST", .htu = "https://as.example/rpc/token", .now = INT64_MAX, .skew = 60, .max_age = 60},
			JOSE_DPOP_IAT_FUTURE, NULL);

	/* at the window's edges */
	p = proof(es, h, fmt("{\"jti\":\"j\",\"htm\":\"POST\",\"htu\":\"https://as.example/rpc/token\",\"iat\":%d}", NOW + 60));
	tap_ok(check(p, &r, &out, &e) == JOSE_DPOP_OK, "dpop: iat = now + skew holds");
	jose_dpop_clear(&out);
	free(p);
	p = proof(es, h, fmt("{\"jti\":\"j\",\"htm\":\"POST\",\"htu\":\"https://as.example/rpc/token\",\"iat\":%d}", NOW - 120));
	tap_ok(check(p, &r, &out, &e) == JOSE_DPOP_OK, "dpop: iat = now - max_age - skew holds");
	jose_dpop_clear(&out);

	/* a signature changed in one bit */
	{
		size_t		n = strlen(p);

		p[n - 3] = p[n - 3] == 'A' ? 'B' : 'A';
		tap_ok(check(p, &r, &out, &e) == JOSE_DPOP_SIGNATURE && e.code == JOSE_E_SIGNATURE &&
			   strncmp(e.detail, "the proof's signature: ", 23) == 0,
			   "dpop: an altered signature -> SIGNATURE (%s)", e.detail);
	}
	free(p);
	tap_ok(check("a.b", &r, &out, &e) == JOSE_DPOP_NOT_JWS && e.code == JOSE_E_FORMAT &&
		   strncmp(e.detail, "the proof is not a JWS: ", 24) == 0, "dpop: not a JWS (%s)", e.detail);

	/* a symmetric alg: the harness's HMAC key signs it, the header has a public jwk */
	{
		json_t	   *j = json_pack("{s:s,s:s,s:s}", "kty", "oct", "alg", "HS256",
								  "k", "AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow");
		jose_key   *hs = jose_jwk_parse(j, JOSE_ALG_HS256, true, &e);

		p = proof(hs, fmt("{\"typ\":\"dpop+jwt\",\"alg\":\"HS256\",\"jwk\":%s}", es_jwk), c);
		tap_ok(check(p, &r, &out, &e) == JOSE_DPOP_SYMMETRIC, "dpop: HS256 -> SYMMETRIC (%s)", e.detail);
		free(p);
		jose_key_free(hs);
		json_decref(j);
	}
	free(es_jwk);
	jose_key_free(es);
}

/* ---------------- server nonces ---------------- */

static void
test_nonce(void)
{
	static const uint8_t secret[32] = "0123456789abcdef0123456789abcdef";
	static const uint8_t other[32] = "0123456789abcdef0123456789abcdeF";
	jose_error	e = noerr();
	char	   *n = jose_dpop_nonce_new(secret, sizeof(secret), NOW, &e);
	int64_t		t = 0;

	tap_ok(n && strlen(n) == JOSE_DPOP_NONCE_LEN, "nonce: %d characters", JOSE_DPOP_NONCE_LEN);
	if (n == NULL)
		return;
	tap_ok(jose_dpop_nonce_time(n, strlen(n), &t, &e) == 0 && t == NOW, "nonce: names its time");
	tap_ok(jose_dpop_nonce_ok(n, strlen(n), secret, sizeof(secret), NOW, 60, 300, &e) == 1 &&
		   jose_dpop_nonce_ok(n, strlen(n), secret, sizeof(secret), NOW + 300, 60, 300, &e) == 1 &&
		   jose_dpop_nonce_ok(n, strlen(n), secret, sizeof(secret), NOW - 60, 60, 300, &e) == 1,
		   "nonce: holds from now - skew to now + lifetime");
	tap_ok(jose_dpop_nonce_ok(n, strlen(n), secret, sizeof(secret), NOW + 301, 60, 300, &e) == 0 &&
		   jose_dpop_nonce_ok(n, strlen(n), secret, sizeof(secret), NOW - 61, 60, 300, &e) == 0,
		   "nonce: refused past its lifetime and before its time - skew");
	tap_ok(jose_dpop_nonce_ok(n, strlen(n), other, sizeof(other), NOW, 60, 300, &e) == 0,
		   "nonce: refused under another secret");
	n[5] = n[5] == 'A' ? 'B' : 'A';
	tap_ok(jose_dpop_nonce_ok(n, strlen(n), secret, sizeof(secret), NOW, 60, 300, &e) == 0,
		   "nonce: refused with one character changed");
	tap_ok(jose_dpop_nonce_time("AAAA", 4, &t, &e) < 0 && e.code == JOSE_E_FORMAT &&
		   jose_dpop_nonce_time("A=", 2, &t, &e) < 0 && e.code == JOSE_E_BASE64 &&
		   jose_dpop_nonce_ok("AAAA", 4, secret, sizeof(secret), NOW, 60, 300, &e) == 0,
		   "nonce: a short or non-base64url one has no time and is refused");
	free(n);
}

int
main(void)
{
	test_opaque();
	test_dpop();
	test_nonce();
	fmt_free();
	return tap_done();
}
