/*
 * fuzz_dpop.c — a DPoP proof as a client sends it with a token request
 * (tokex.exchange, the DPoP header) or a resource call (tokex.authenticate):
 * jose_dpop_check, then tokex's server nonces (jose_dpop_nonce_time,
 * jose_dpop_nonce_ok) on a nonce the input carries.
 *
 * A fuzzer cannot forge signatures, so most inputs are signed here: four
 * option bytes, then a JOSE header text, a newline, the claims text, and
 * optionally a newline and the access token the proof comes with.  Option
 * byte 0 picks the signing key (ES256, EdDSA, ES384, or HS256: symmetric)
 * or "raw" (the rest is a compact proof, as sent); byte 3's bits put the
 * key's public jwk, its alg and typ dpop+jwt into the header (when it is a
 * JSON object), corrupt the signature, and build a second, valid proof.
 * The request's method, URL and clock come from bytes 1-3 and the claims
 * (so they match often): htm/htu the claims' or near them (a query
 * added, a character more or less), now = the claims' iat moved by byte 2,
 * skew and max_age from byte 3.
 *
 * Oracles: an accepted proof, re-read here step by step, has typ
 * dpop+jwt, an asymmetric alg, a jwk without private members whose
 * thumbprint is the reported jkt and whose key verifies the signature,
 * jti of 1..256 bytes as reported, htm and htu (query and fragment aside)
 * the request's, iat in [now - max_age - skew, now + skew], expires =
 * iat + max_age + skew + 1, the access token's ath, the nonce as
 * reported; a proof whose signature was changed after signing, or a raw
 * proof that held with one signature bit flipped, never verifies; a valid
 * proof the harness makes from the input (any of its keys, its jti, the
 * request, an iat in the window) always holds, with its key's thumbprint;
 * a nonce is accepted only if it is the one the secret makes for its time,
 * within the window, and a fresh one always is; every refusal has a
 * known code, a detail, a fault that fits its code, and hands nothing back.
 */
#include "fuzz.h"

#include <math.h>

int			LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define NOW 1700000000
#define OPT 4

/* keys[] of fuzz.h the harness signs with (RSA signing is too slow to fuzz) */
static const int signers[4] = {0, 1, 3, 4};	/* ES256, EdDSA, ES384, HS256 */
static const char *const private_members[] = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"};
static const uint8_t nonce_secret[32] = "tokex fuzz dpop nonce secret 32b";

/* the public JWK of keys[i] (an oct key has none: ES256's stands in) */
static json_t *
public_jwk(int i)
{
	static json_t *pub[FUZZ_NKEYS];

	if (pub[i] == NULL)
	{
		jose_error	err = fuzz_err();

		pub[i] = jose_jwk_public(fuzz_keys()[fuzz_keys()[i]->kty == JOSE_KTY_OCT ? 0 : i], &err);
		FUZZ_ASSERT(pub[i] != NULL, "public jwk: %s", err.detail);
	}
	return pub[i];
}

static char *
sign(const jose_key *key, const char *header, size_t hlen, const char *claims, size_t clen)
{
	jose_error	err = fuzz_err();
	char	   *p = jose_jws_sign(key, header, hlen, claims, clen, &err);

	FUZZ_ASSERT(p != NULL, "jose_jws_sign: %s", err.detail);
	return p;
}

/* p (len bytes, a compact JWS) with one bit of its signature flipped, as the input says */
static char *
flip_signature(const char *p, size_t len, uint8_t which)
{
	const char *dot = NULL;
	const char *end = p + len;
	uint8_t    *sig = NULL;
	size_t		n = 0;
	char	   *s64;
	char	   *out;
	jose_error	err = fuzz_err();

	for (size_t i = len; i > 0 && dot == NULL; i--)
		if (p[i - 1] == '.')
			dot = p + i - 1;
	FUZZ_ASSERT(dot != NULL, "no signature segment");
	FUZZ_ASSERT(jose_b64url_decode(dot + 1, (size_t) (end - dot - 1), 2048, &sig, &n, &err) == 0 && n > 0,
				"signature of an accepted proof: %s", err.detail);
	sig[which % n] ^= (uint8_t) (1u << (which % 8));
	s64 = jose_b64url_encode(sig, n, NULL);
	out = malloc((size_t) (dot - p) + 1 + strlen(s64) + 1);
	FUZZ_ASSERT(s64 && out, "out of memory");
	memcpy(out, p, (size_t) (dot - p) + 1);
	strcpy(out + (dot - p) + 1, s64);
	free(sig);
	free(s64);
	return out;
}

static size_t
url_len(const char *u)
{
	size_t		n = 0;

	while (u[n] && u[n] != '?' && u[n] != '#')
		n++;
	return n;
}

/* run the check; on acceptance, re-read everything it promises */
static bool
check(const char *proof, size_t len, const jose_dpop_rules *r, jose_dpop *out)
{
	jose_dpop_fault fault = (jose_dpop_fault) 0x5a5a;
	jose_error	err = fuzz_err();
	jose_jws	jws;
	json_t	   *jwk,
			   *claims,
			   *v;
	jose_key   *key;
	char		jkt[44];
	double		iat;

	memset(out, 0xa5, sizeof(*out));
	if (jose_dpop_check(proof, len, r, out, &fault, &err) < 0)
	{
		fuzz_check_refusal(&err, "dpop_check");
		FUZZ_ASSERT(out->jti == NULL && out->nonce == NULL, "a refusal handed back a jti or nonce");
		FUZZ_ASSERT(fault != JOSE_DPOP_OK || err.code == JOSE_E_INTERNAL,
					"no fault with code %s", jose_errcode_name(err.code));
		/* the proof's own rules say JOSE_E_DPOP; the steps before them, their own code */
		FUZZ_ASSERT((err.code == JOSE_E_DPOP) ==
					(fault == JOSE_DPOP_TYP || fault == JOSE_DPOP_SYMMETRIC || fault == JOSE_DPOP_NO_JWK ||
					 fault == JOSE_DPOP_PRIVATE_JWK || fault >= JOSE_DPOP_JTI),
					"code %s for fault %d", jose_errcode_name(err.code), (int) fault);
		FUZZ_ASSERT(fault <= JOSE_DPOP_ATH, "fault %d out of range", (int) fault);
		return false;
	}
	FUZZ_ASSERT(fault == JOSE_DPOP_OK, "accepted with fault %d", (int) fault);

	/* the header */
	err = fuzz_err();
	FUZZ_ASSERT(jose_jws_parse(proof, len, &jws, &err) == 0, "accepted proof does not parse: %s", err.detail);
	FUZZ_ASSERT(jws.typ && strcmp(jws.typ, "dpop+jwt") == 0, "typ");
	FUZZ_ASSERT(jose_alg_kty(jws.alg) != JOSE_KTY_OCT, "accepted with symmetric alg %s", jose_alg_name(jws.alg));
	jwk = json_object_get(jws.header, "jwk");
	FUZZ_ASSERT(json_is_object(jwk), "no jwk");
	for (size_t i = 0; i < sizeof(private_members) / sizeof(private_members[0]); i++)
		FUZZ_ASSERT(json_object_get(jwk, private_members[i]) == NULL, "jwk with %s", private_members[i]);
	key = jose_jwk_parse(jwk, jws.alg, false, &err);
	FUZZ_ASSERT(key && !key->has_private && key->kty != JOSE_KTY_OCT && key->alg == jws.alg,
				"the jwk is no public key for the alg");
	FUZZ_ASSERT(jose_jwk_thumbprint(key, jkt, &err) == 0 && strcmp(jkt, out->jkt) == 0, "jkt");
	FUZZ_ASSERT(jose_jws_verify(&jws, key, &err) == 0, "the jwk does not verify it: %s", err.detail);
	jose_key_free(key);

	/* the claims */
	claims = json_loadb((const char *) jws.payload, jws.payload_len, JSON_REJECT_DUPLICATES, NULL);
	FUZZ_ASSERT(json_is_object(claims), "claims");
	v = json_object_get(claims, "jti");
	FUZZ_ASSERT(json_is_string(v) && json_string_length(v) >= 1 && json_string_length(v) <= 256 &&
				strcmp(json_string_value(v), out->jti) == 0, "jti");
	v = json_object_get(claims, "htm");
	FUZZ_ASSERT(json_is_string(v) && strcmp(json_string_value(v), r->htm) == 0, "htm");
	v = json_object_get(claims, "htu");
	FUZZ_ASSERT(json_is_string(v) && strstr(json_string_value(v), "://") &&
				url_len(json_string_value(v)) == url_len(r->htu) &&
				strncmp(json_string_value(v), r->htu, url_len(r->htu)) == 0, "htu");
	v = json_object_get(claims, "iat");
	FUZZ_ASSERT(json_is_number(v), "iat");
	iat = json_number_value(v);
	FUZZ_ASSERT(iat <= (double) (r->now + r->skew) && iat >= (double) (r->now - r->max_age - r->skew),
				"iat %.17g outside the window of %lld", iat, (long long) r->now);
	FUZZ_ASSERT(out->expires == (int64_t) iat + r->max_age + r->skew + 1, "expires");
	if (r->access_token)
	{
		uint8_t		h[32];
		char	   *ath;

		FUZZ_ASSERT(EVP_Digest(r->access_token, r->at_len, h, NULL, EVP_sha256(), NULL) == 1, "sha256");
		ath = jose_b64url_encode(h, 32, NULL);
		v = json_object_get(claims, "ath");
		FUZZ_ASSERT(json_is_string(v) && strcmp(json_string_value(v), ath) == 0, "ath");
		free(ath);
	}
	v = json_object_get(claims, "nonce");
	FUZZ_ASSERT(json_is_string(v) ? out->nonce && strcmp(out->nonce, json_string_value(v)) == 0
				: out->nonce == NULL, "nonce");
	json_decref(claims);
	jose_jws_clear(&jws);
	return true;
}

/* the nonce oracles, on a candidate the input carries */
static void
check_nonce(const char *nonce, size_t len, int64_t now, uint8_t b)
{
	jose_error	err = fuzz_err();
	int64_t		t;
	int64_t		skew = b & 1 ? 0 : 60;
	int64_t		lifetime = 10 + 30 * (b >> 4);
	int			ok = jose_dpop_nonce_ok(nonce, len, nonce_secret, sizeof(nonce_secret), now, skew,
										lifetime, &err);
	char	   *want;

	FUZZ_ASSERT(ok == 0 || ok == 1, "nonce_ok %d: %s", ok, err.detail);
	err = fuzz_err();
	if (jose_dpop_nonce_time(nonce, len, &t, &err) < 0)
	{
		fuzz_check_refusal(&err, "nonce_time");
		FUZZ_ASSERT(!ok, "a nonce without a time accepted");
	}
	else
	{
		want = jose_dpop_nonce_new(nonce_secret, sizeof(nonce_secret), t, &err);
		FUZZ_ASSERT(want && len == JOSE_DPOP_NONCE_LEN, "nonce of %zu characters has a time", len);
		FUZZ_ASSERT(ok == (memcmp(want, nonce, len) == 0 && t <= now + skew && t >= now - lifetime),
					"nonce verdict %d for time %lld at %lld", ok, (long long) t, (long long) now);
		free(want);
	}

	/* a fresh one, made in the window, holds; one character changed, it does not */
	t = now - (int64_t) (b % (lifetime + 1));
	want = jose_dpop_nonce_new(nonce_secret, sizeof(nonce_secret), t, &err);
	FUZZ_ASSERT(want && strlen(want) == JOSE_DPOP_NONCE_LEN, "nonce_new: %s", err.detail);
	FUZZ_ASSERT(jose_dpop_nonce_ok(want, strlen(want), nonce_secret, sizeof(nonce_secret), now, skew,
								   lifetime, &err) == 1, "a fresh nonce refused");
	want[b % JOSE_DPOP_NONCE_LEN] = want[b % JOSE_DPOP_NONCE_LEN] == 'A' ? 'B' : 'A';
	FUZZ_ASSERT(jose_dpop_nonce_ok(want, strlen(want), nonce_secret, sizeof(nonce_secret), now, skew,
								   lifetime, &err) == 0, "a changed nonce accepted");
	free(want);
}

/* a proof the harness makes valid for r: it must hold, and not with its signature changed */
static void
valid_proof(const jose_dpop_rules *r, int signer, const char *jti, const char *nonce, uint8_t b)
{
	jose_key   *key = fuzz_keys()[signer];
	json_t	   *h = json_pack("{s:s,s:s,s:O}", "typ", "dpop+jwt", "alg", jose_alg_name(key->alg),
							  "jwk", public_jwk(signer));
	json_t	   *c = json_pack("{s:s,s:s,s:s,s:I}", "jti", jti, "htm", r->htm, "htu", r->htu,
							  "iat", (json_int_t) (r->now + r->skew - (int64_t) (b % (r->max_age + 2 * r->skew + 1))));
	char	   *hs,
			   *cs,
			   *p,
			   *bad;
	jose_dpop	out;
	jose_error	err = fuzz_err();

	FUZZ_ASSERT(h && c, "json_pack");
	if (nonce)
		json_object_set_new(c, "nonce", json_string(nonce));
	if (r->access_token)
	{
		uint8_t		d[32];
		char	   *ath;

		EVP_Digest(r->access_token, r->at_len, d, NULL, EVP_sha256(), NULL);
		ath = jose_b64url_encode(d, 32, NULL);
		json_object_set_new(c, "ath", json_string(ath));
		free(ath);
	}
	hs = json_dumps(h, JSON_COMPACT);
	cs = json_dumps(c, JSON_COMPACT);
	p = sign(key, hs, strlen(hs), cs, strlen(cs));
	FUZZ_ASSERT(check(p, strlen(p), r, &out), "a valid proof (jti \"%s\", htu \"%s\") refused", jti, r->htu);
	FUZZ_ASSERT(strcmp(out.jkt, key->thumbprint) == 0 && strcmp(out.jti, jti) == 0, "jkt or jti of a valid proof");
	jose_dpop_clear(&out);
	bad = flip_signature(p, strlen(p), b);
	FUZZ_ASSERT(!check(bad, strlen(bad), r, &out), "a valid proof verified with a bit of its signature flipped");
	(void) err;
	free(bad);
	free(p);
	free(hs);
	free(cs);
	json_decref(h);
	json_decref(c);
}

/*
 * Signing and three checks make the valid proof the costly part (OpenSSL's
 * key import under ASan): it is made for one input in eight, chosen by a
 * hash of the whole input so that the verdict on an input never changes.
 */
static bool
one_in_8(const uint8_t *data, size_t size)
{
	uint32_t	h = 2166136261u;

	for (size_t i = 0; i < size; i++)
		h = (h ^ data[i]) * 16777619u;
	return (h >> 13) % 8 == 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	jose_key  **keys = fuzz_keys();
	char	   *in;
	const char *rest,
			   *nl,
			   *nl2;
	size_t		n;
	uint8_t		o[OPT];
	bool		raw;
	int			signer;
	char	   *proof = NULL;
	size_t		plen;
	json_t	   *claims;
	json_t	   *v;
	jose_dpop_rules r;
	jose_dpop	out;
	char	   *htm = NULL,
			   *htu = NULL,
			   *at = NULL;
	char	   *cjti = NULL;
	char	   *cnonce = NULL;

	if (size < OPT)
		return 0;
	memcpy(o, data, OPT);
	in = fuzz_copy(data + OPT, size - OPT);
	n = size - OPT;
	rest = in;
	raw = (o[0] & 7) >= 4;
	signer = signers[o[0] & 3];

	/* header \n claims [\n access token]; raw: the proof itself, then [\n claims-like text \n token] */
	nl = memchr(rest, '\n', n);
	nl2 = nl ? memchr(nl + 1, '\n', n - (size_t) (nl + 1 - rest)) : NULL;
	if (nl2)
	{
		at = fuzz_copy((const uint8_t *) nl2 + 1, n - (size_t) (nl2 + 1 - rest));
		r.at_len = n - (size_t) (nl2 + 1 - rest);
	}
	{
		const char *cstart = nl ? nl + 1 : rest + n;
		size_t		clen = nl2 ? (size_t) (nl2 - cstart) : (size_t) (rest + n - cstart);

		claims = json_loadb(cstart, clen, JSON_REJECT_DUPLICATES, NULL);
		if (raw)
		{
			plen = nl ? (size_t) (nl - rest) : n;
			proof = fuzz_copy((const uint8_t *) rest, plen);
		}
		else
		{
			size_t		hlen = nl ? (size_t) (nl - rest) : n;
			json_t	   *h = json_loadb(rest, hlen, 0, NULL);
			char	   *hs = NULL;

			if (json_is_object(h))
			{
				if (o[3] & 0x01)
					json_object_set(h, "jwk", public_jwk(signer));
				if (o[3] & 0x02)
					json_object_set_new(h, "alg", json_string(jose_alg_name(keys[signer]->alg)));
				if (o[3] & 0x04)
					json_object_set_new(h, "typ", json_string("dpop+jwt"));
				hs = json_dumps(h, JSON_COMPACT);
			}
			proof = hs ? sign(keys[signer], hs, strlen(hs), cstart, clen)
				: sign(keys[signer], rest, hlen, cstart, clen);
			plen = strlen(proof);
			free(hs);
			json_decref(h);
		}
	}

	/* the request and the clock, mostly from the claims so that they can match */
	v = json_object_get(claims, "htm");
	switch (o[1] & 3)
	{
		case 0:
			htm = strdup(json_is_string(v) ? json_string_value(v) : "POST");
			break;
		case 1:
			htm = strdup("POST");
			break;
		case 2:
			htm = strdup("GET");
			break;
		default:
			htm = strdup("post");
	}
	v = json_object_get(claims, "htu");
	{
		const char *u = json_is_string(v) ? json_string_value(v) : "https://as.example/rpc/token";
		const char *suffix[] = {"", "?x=1#f", "", "/"};
		size_t		ul = strlen(u);

		/* 2: the claims' URL less its last character (not a byte: it stays UTF-8) */
		if (((o[1] >> 2) & 3) == 2 && ul > 0)
			while (--ul > 0 && ((unsigned char) u[ul] & 0xC0) == 0x80)
				;
		htu = malloc(ul + 8);
		FUZZ_ASSERT(htu, "out of memory");
		memcpy(htu, u, ul);
		strcpy(htu + ul, suffix[(o[1] >> 2) & 3]);
	}
	v = json_object_get(claims, "iat");
	r.now = NOW;
	if (json_is_number(v) && fabs(json_number_value(v)) < JOSE_MAX_NUMERIC_DATE - 10000)
		r.now = (int64_t) json_number_value(v);
	r.now += (int8_t) o[2];
	r.skew = o[3] & 0x40 ? 0 : 60;
	r.max_age = 60 * (1 + (o[3] >> 7) * 59);
	r.htm = htm;
	r.htu = htu;
	r.access_token = at;
	if (at == NULL)
		r.at_len = 0;

	/* 1. the proof (signed, then one bit of its signature flipped, when o[3] says) */
	if (!raw && (o[3] & 0x08))
	{
		char	   *bad = flip_signature(proof, plen, o[2]);

		free(proof);
		proof = bad;
		plen = strlen(bad);
	}
	if (check(proof, plen, &r, &out))
	{
		char	   *bad;

		FUZZ_ASSERT(raw || !(o[3] & 0x08), "accepted with its signature changed after signing");
		FUZZ_ASSERT(raw || keys[signer]->kty != JOSE_KTY_OCT, "accepted, signed with HMAC");
		jose_dpop_clear(&out);
		bad = flip_signature(proof, plen, o[2]);
		FUZZ_ASSERT(!check(bad, strlen(bad), &r, &out), "accepted with a bit of its signature flipped");
		free(bad);
	}

	/* 2. a valid proof for the same request */
	v = json_object_get(claims, "jti");
	if (json_is_string(v) && json_string_length(v) >= 1 && json_string_length(v) <= 256 &&
		strlen(json_string_value(v)) == json_string_length(v))
		cjti = strdup(json_string_value(v));
	v = json_object_get(claims, "nonce");
	if (json_is_string(v))
		cnonce = strdup(json_string_value(v));
	if ((o[3] & 0x10) && strstr(htu, "://") && one_in_8(data, size))
		valid_proof(&r, signers[o[0] % 3], cjti ? cjti : "fuzz-jti", cnonce, o[2]);

	/* 3. the nonce it carries (or the token text) as a server nonce */
	if (o[3] & 0x20)
	{
		if (cnonce)
			check_nonce(cnonce, strlen(cnonce), r.now, o[2]);
		else if (at)
			check_nonce(at, r.at_len, r.now, o[2]);
	}

	free(cjti);
	free(cnonce);
	json_decref(claims);
	free(proof);
	free(htm);
	free(htu);
	free(at);
	free(in);
	return 0;
}
