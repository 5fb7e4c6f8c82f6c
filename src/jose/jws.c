/*
 * jws.c — JWS compact serialization (RFC 7515) with the JWA algorithms of
 * RFC 7518 and EdDSA (RFC 8037): raw sign/verify and parsing (which key of
 * a set verifies a JWS is jwks.c).
 *
 * The algorithm always comes from the key (RFC 8725 §3.1); the header's alg
 * only has to agree with it.  ECDSA signatures are the fixed-length r||s of
 * JWS, converted to and from DER for OpenSSL.
 */
#include "jose.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/ec.h>
#include <openssl/hmac.h>
#include <openssl/rsa.h>

#define JOSE_MAX_HEADER_LEN		8192
#define JOSE_MAX_SIG_LEN		1024

/*
 * Digests are fetched once per process: an implicit fetch on every
 * EVP_DigestVerifyInit costs a provider lookup on the hot path.
 */
static const EVP_MD *
alg_md(jose_alg alg)
{
	static EVP_MD *md[3];
	int			i;
	static const char *const names[3] = {"SHA256", "SHA384", "SHA512"};

	switch (alg)
	{
		case JOSE_ALG_HS256:
		case JOSE_ALG_RS256:
		case JOSE_ALG_PS256:
		case JOSE_ALG_ES256:
			i = 0;
			break;
		case JOSE_ALG_HS384:
		case JOSE_ALG_RS384:
		case JOSE_ALG_PS384:
		case JOSE_ALG_ES384:
			i = 1;
			break;
		case JOSE_ALG_HS512:
		case JOSE_ALG_RS512:
		case JOSE_ALG_PS512:
		case JOSE_ALG_ES512:
			i = 2;
			break;
		default:
			return NULL;		/* EdDSA hashes internally */
	}
	if (md[i] == NULL)
		md[i] = EVP_MD_fetch(NULL, names[i], NULL);
	return md[i];
}

static bool
alg_is_pss(jose_alg alg)
{
	return alg == JOSE_ALG_PS256 || alg == JOSE_ALG_PS384 || alg == JOSE_ALG_PS512;
}

/* bytes in each of r and s for an ES* key */
static size_t
ec_half(jose_alg alg)
{
	return alg == JOSE_ALG_ES256 ? 32 : alg == JOSE_ALG_ES384 ? 48 : 66;
}

/* Key and algorithm must agree, and the key must be strong enough for it. */
static int
check_binding(const jose_key *key, jose_alg alg, jose_error *err)
{
	if (alg == JOSE_ALG_UNKNOWN || key->alg != alg)
		return jose_seterr(err, JOSE_E_ALG_KEY_MISMATCH, "alg %s does not match the key (%s)",
						   jose_alg_name(alg) ? jose_alg_name(alg) : "?",
						   jose_alg_name(key->alg) ? jose_alg_name(key->alg) : "?");
	if (key->kty == JOSE_KTY_OCT ? key->secret == NULL : key->pkey == NULL)
		return jose_seterr(err, JOSE_E_INTERNAL, "key has no material");
	return 0;
}

static int
setup_ctx(EVP_MD_CTX *ctx, const jose_key *key, jose_alg alg, bool sign)
{
	EVP_PKEY_CTX *pctx = NULL;
	int			rc;

	if (sign)
		rc = EVP_DigestSignInit(ctx, &pctx, alg_md(alg), NULL, key->pkey);
	else
		rc = EVP_DigestVerifyInit(ctx, &pctx, alg_md(alg), NULL, key->pkey);
	if (rc != 1)
		return -1;
	if (alg_is_pss(alg))
	{
		/* RFC 7518 §3.5: MGF1 with the same hash, salt as long as the hash */
		if (EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) != 1 ||
			EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST) != 1 ||
			EVP_PKEY_CTX_set_rsa_mgf1_md(pctx, alg_md(alg)) != 1)
			return -1;
	}
	else if (key->kty == JOSE_KTY_RSA)
	{
		if (EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PADDING) != 1)
			return -1;
	}
	return 0;
}

/*
 * EC: the key's context for signing (verifying) digests with its one
 * algorithm, set up on first use and kept with the key.  The key is const
 * to its callers: the context is a cache, not part of its value.
 */
static EVP_PKEY_CTX *
ec_ctx(const jose_key *key, bool sign)
{
	EVP_PKEY_CTX **slot = sign ? &((jose_key *) (uintptr_t) key)->sign_ctx
		: &((jose_key *) (uintptr_t) key)->verify_ctx;

	if (*slot == NULL)
	{
		EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_pkey(NULL, key->pkey, NULL);

		if (ctx == NULL ||
			(sign ? EVP_PKEY_sign_init(ctx) : EVP_PKEY_verify_init(ctx)) != 1 ||
			EVP_PKEY_CTX_set_signature_md(ctx, alg_md(key->alg)) != 1)
		{
			EVP_PKEY_CTX_free(ctx);
			return NULL;
		}
		*slot = ctx;
	}
	return *slot;
}

/* EC: msg's digest under key's algorithm; its length, or 0 on failure */
static unsigned int
ec_digest(const jose_key *key, const uint8_t *msg, size_t msglen, uint8_t out[EVP_MAX_MD_SIZE])
{
	unsigned int len = 0;

	return EVP_Digest(msg, msglen, out, &len, alg_md(key->alg), NULL) == 1 ? len : 0;
}

static int
hmac(const jose_key *key, jose_alg alg, const uint8_t *msg, size_t msglen,
	 uint8_t *out, unsigned int *outlen)
{
	return HMAC(alg_md(alg), key->secret, (int) key->secret_len, msg, msglen,
				out, outlen) != NULL ? 0 : -1;
}

int
jose_sign_raw(const jose_key *key, const uint8_t *msg, size_t msglen,
			  uint8_t **sig, size_t *siglen, jose_error *err)
{
	EVP_MD_CTX *ctx = NULL;
	uint8_t    *der = NULL;
	size_t		derlen = 0;
	ECDSA_SIG  *es = NULL;
	int			rc = -1;

	*sig = NULL;
	*siglen = 0;
	if (check_binding(key, key->alg, err) < 0)
		return -1;
	if (!(key->ops & JOSE_OP_SIGN))
		return jose_seterr(err, JOSE_E_KEY_OPS, "the key's \"key_ops\" do not include \"sign\"");
	if (key->kty == JOSE_KTY_OCT)
	{
		unsigned int len = 0;

		*sig = malloc(EVP_MAX_MD_SIZE);
		if (*sig == NULL || hmac(key, key->alg, msg, msglen, *sig, &len) < 0)
		{
			free(*sig);
			*sig = NULL;
			return jose_seterr(err, JOSE_E_INTERNAL, "HMAC failed");
		}
		*siglen = len;
		return 0;
	}
	if (!key->has_private)
		return jose_seterr(err, JOSE_E_JWK, "key has no private part");

	if (key->kty == JOSE_KTY_EC)
	{
		uint8_t		dgst[EVP_MAX_MD_SIZE];
		unsigned int dlen = ec_digest(key, msg, msglen, dgst);
		EVP_PKEY_CTX *pctx = ec_ctx(key, true);

		if (dlen == 0 || pctx == NULL ||
			EVP_PKEY_sign(pctx, NULL, &derlen, dgst, dlen) != 1 ||
			(der = malloc(derlen)) == NULL ||
			EVP_PKEY_sign(pctx, der, &derlen, dgst, dlen) != 1)
		{
			jose_seterr(err, JOSE_E_INTERNAL, "signing failed");
			goto done;
		}
	}
	else
	{
		ctx = EVP_MD_CTX_new();
		if (ctx == NULL || setup_ctx(ctx, key, key->alg, true) < 0 ||
			EVP_DigestSign(ctx, NULL, &derlen, msg, msglen) != 1 ||
			(der = malloc(derlen)) == NULL ||
			EVP_DigestSign(ctx, der, &derlen, msg, msglen) != 1)
		{
			jose_seterr(err, JOSE_E_INTERNAL, "signing failed");
			goto done;
		}
	}
	if (key->kty == JOSE_KTY_EC)
	{
		const unsigned char *p = der;
		const BIGNUM *r,
				   *s;
		size_t		half = ec_half(key->alg);

		es = d2i_ECDSA_SIG(NULL, &p, (long) derlen);
		if (es == NULL || (*sig = malloc(2 * half)) == NULL)
		{
			jose_seterr(err, JOSE_E_INTERNAL, "signing failed");
			goto done;
		}
		ECDSA_SIG_get0(es, &r, &s);
		if (BN_bn2binpad(r, *sig, (int) half) < 0 ||
			BN_bn2binpad(s, *sig + half, (int) half) < 0)
		{
			free(*sig);
			*sig = NULL;
			jose_seterr(err, JOSE_E_INTERNAL, "signing failed");
			goto done;
		}
		*siglen = 2 * half;
	}
	else
	{
		*sig = der;
		*siglen = derlen;
		der = NULL;
	}
	rc = 0;
done:
	ECDSA_SIG_free(es);
	free(der);
	EVP_MD_CTX_free(ctx);
	ERR_clear_error();
	return rc;
}

/* DER INTEGER of the unsigned big-endian p[0..n), n > 0: minimal, a 0 byte before a high bit */
static size_t
der_uint(uint8_t *out, const uint8_t *p, size_t n)
{
	size_t		skip = 0,
				len;
	bool		pad;

	while (skip < n - 1 && p[skip] == 0)
		skip++;
	len = n - skip;
	pad = (p[skip] & 0x80) != 0;
	out[0] = 0x02;
	out[1] = (uint8_t) (len + pad);	/* at most 67: the short form */
	out[2] = 0;
	memcpy(out + 2 + pad, p + skip, len);
	return 2 + pad + len;
}

/*
 * r||s -> DER ECDSA-Sig-Value (RFC 3279 §2.2.3) in der (EC_DER_MAX bytes),
 * written here: as i2d_ECDSA_SIG writes it, without a BIGNUM per half.
 * -1 when the length is not exactly 2 * half.
 */
#define EC_DER_MAX	(3 + 2 * (3 + 66))

static int
ec_raw_to_der(jose_alg alg, const uint8_t *sig, size_t siglen, uint8_t der[EC_DER_MAX], int *derlen)
{
	size_t		half = ec_half(alg);
	uint8_t		body[2 * (3 + 66)];
	size_t		n;
	int			h;

	if (half == 0 || half > 66 || siglen != 2 * half)
		return -1;
	n = der_uint(body, sig, half);
	n += der_uint(body + n, sig + half, half);
	der[0] = 0x30;
	if (n < 0x80)
	{
		der[1] = (uint8_t) n;
		h = 2;
	}
	else
	{
		der[1] = 0x81;			/* P-521: up to 138 */
		der[2] = (uint8_t) n;
		h = 3;
	}
	memcpy(der + h, body, n);
	*derlen = h + (int) n;
	return 0;
}

int
jose_verify_raw(const jose_key *key, jose_alg alg, const uint8_t *msg, size_t msglen,
				const uint8_t *sig, size_t siglen, jose_error *err)
{
	EVP_MD_CTX *ctx;
	int			rc;

	if (check_binding(key, alg, err) < 0)
		return -1;
	if (!(key->ops & JOSE_OP_VERIFY))
		return jose_seterr(err, JOSE_E_KEY_OPS, "the key's \"key_ops\" do not include \"verify\"");
	switch (key->kty)
	{
		case JOSE_KTY_OCT:
			{
				uint8_t		mac[EVP_MAX_MD_SIZE];
				unsigned int len = 0;

				if (hmac(key, alg, msg, msglen, mac, &len) < 0)
					return jose_seterr(err, JOSE_E_INTERNAL, "HMAC failed");
				if (siglen != len)
					return jose_seterr(err, JOSE_E_SIG_LENGTH, NULL);
				rc = CRYPTO_memcmp(mac, sig, len) == 0;
				OPENSSL_cleanse(mac, sizeof(mac));
				return rc ? 0 : jose_seterr(err, JOSE_E_SIGNATURE, NULL);
			}
		case JOSE_KTY_EC:
			{
				uint8_t		ecder[EC_DER_MAX];
				int			derlen = 0;
				uint8_t		dgst[EVP_MAX_MD_SIZE];
				unsigned int dlen;
				EVP_PKEY_CTX *pctx;

				if (ec_raw_to_der(alg, sig, siglen, ecder, &derlen) < 0)
					return jose_seterr(err, JOSE_E_SIG_LENGTH, NULL);
				dlen = ec_digest(key, msg, msglen, dgst);
				pctx = ec_ctx(key, false);
				if (dlen == 0 || pctx == NULL)
				{
					ERR_clear_error();
					return jose_seterr(err, JOSE_E_INTERNAL, "cannot set up verification");
				}
				rc = EVP_PKEY_verify(pctx, ecder, (size_t) derlen, dgst, dlen);
				ERR_clear_error();
				return rc == 1 ? 0 : jose_seterr(err, JOSE_E_SIGNATURE, NULL);
			}
		case JOSE_KTY_OKP:
			if (siglen != 64)
				return jose_seterr(err, JOSE_E_SIG_LENGTH, NULL);
			break;
		case JOSE_KTY_RSA:
			if (siglen != (size_t) EVP_PKEY_get_size(key->pkey))
				return jose_seterr(err, JOSE_E_SIG_LENGTH, NULL);
			break;
	}
	ctx = EVP_MD_CTX_new();
	if (ctx == NULL || setup_ctx(ctx, key, alg, false) < 0)
	{
		EVP_MD_CTX_free(ctx);
		ERR_clear_error();
		return jose_seterr(err, JOSE_E_INTERNAL, "cannot set up verification");
	}
	rc = EVP_DigestVerify(ctx, sig, siglen, msg, msglen);
	EVP_MD_CTX_free(ctx);
	ERR_clear_error();
	return rc == 1 ? 0 : jose_seterr(err, JOSE_E_SIGNATURE, NULL);
}

char *
jose_jws_sign(const jose_key *key, const char *header_json, size_t header_len,
			  const char *payload_json, size_t payload_len, jose_error *err)
{
	char	   *h = NULL,
			   *p = NULL,
			   *s = NULL,
			   *out = NULL;
	size_t		hl,
				pl,
				sl,
				siglen;
	uint8_t    *sig = NULL;

	h = jose_b64url_encode((const uint8_t *) header_json, header_len, &hl);
	p = jose_b64url_encode((const uint8_t *) payload_json, payload_len, &pl);
	if (h == NULL || p == NULL || (out = malloc(hl + pl + 2)) == NULL)
	{
		jose_seterr(err, JOSE_E_INTERNAL, "out of memory");
		goto done;
	}
	memcpy(out, h, hl);
	out[hl] = '.';
	memcpy(out + hl + 1, p, pl + 1);
	if (jose_sign_raw(key, (uint8_t *) out, hl + pl + 1, &sig, &siglen, err) < 0 ||
		(s = jose_b64url_encode(sig, siglen, &sl)) == NULL)
	{
		if (sig && !s)
			jose_seterr(err, JOSE_E_INTERNAL, "out of memory");
		free(out);
		out = NULL;
		goto done;
	}
	{
		char	   *full = realloc(out, hl + pl + sl + 3);

		if (full == NULL)
		{
			free(out);
			out = NULL;
			jose_seterr(err, JOSE_E_INTERNAL, "out of memory");
			goto done;
		}
		out = full;
		out[hl + pl + 1] = '.';
		memcpy(out + hl + pl + 2, s, sl + 1);
	}
done:
	free(h);
	free(p);
	free(s);
	free(sig);
	return out;
}

void
jose_jws_clear(jose_jws *jws)
{
	json_decref(jws->header);
	free(jws->payload);
	free(jws->sig);
	memset(jws, 0, sizeof(*jws));
}

/* Optional string member of the header; -1 when present but not a string. */
static int
header_str(json_t *h, const char *name, const char **out)
{
	json_t	   *v = json_object_get(h, name);

	*out = NULL;
	if (v == NULL)
		return 0;
	if (!json_is_string(v))
		return -1;
	*out = json_string_value(v);
	return 0;
}

int
jose_jws_parse(const char *token, size_t len, jose_jws *out, jose_error *err)
{
	const char *d1,
			   *d2;
	uint8_t    *hbuf = NULL;
	size_t		hlen;
	json_t	   *crit;
	const char *alg;

	memset(out, 0, sizeof(*out));
	if (len > JOSE_MAX_TOKEN_LEN)
		return jose_seterr(err, JOSE_E_TOO_LONG, "token longer than %d bytes", JOSE_MAX_TOKEN_LEN);
	d1 = memchr(token, '.', len);
	d2 = d1 ? memchr(d1 + 1, '.', len - (size_t) (d1 + 1 - token)) : NULL;
	if (d1 == NULL || d2 == NULL || memchr(d2 + 1, '.', len - (size_t) (d2 + 1 - token)) != NULL)
		return jose_seterr(err, JOSE_E_FORMAT, "token must have exactly three segments");
	if (d1 == token)
		return jose_seterr(err, JOSE_E_FORMAT, "token has an empty header segment");

	if (jose_b64url_decode(token, (size_t) (d1 - token), JOSE_MAX_HEADER_LEN, &hbuf, &hlen, err) < 0)
		return jose_seterr(err, err->code, "header: %s", jose_strerror(err->code));
	out->header = jose_json_parse((const char *) hbuf, hlen, JOSE_E_HEADER, err);
	free(hbuf);
	if (out->header == NULL)
		goto fail;
	if (!json_is_object(out->header))
	{
		jose_seterr(err, JOSE_E_HEADER, "JOSE header is not a JSON object");
		goto fail;
	}
	if (header_str(out->header, "alg", &alg) < 0 || alg == NULL)
	{
		jose_seterr(err, JOSE_E_ALG_MISSING, "header has no alg string");
		goto fail;
	}
	if (strcmp(alg, "none") == 0)
	{
		jose_seterr(err, JOSE_E_ALG_NONE, NULL);
		goto fail;
	}
	out->alg = jose_alg_from_name(alg);
	if (out->alg == JOSE_ALG_UNKNOWN)
	{
		jose_seterr(err, JOSE_E_ALG_UNSUPPORTED, NULL);
		goto fail;
	}
	if (header_str(out->header, "kid", &out->kid) < 0 ||
		header_str(out->header, "typ", &out->typ) < 0)
	{
		jose_seterr(err, JOSE_E_HEADER, "header kid/typ must be strings");
		goto fail;
	}
	/* we implement no JWS extensions, so any crit entry is one we do not understand */
	crit = json_object_get(out->header, "crit");
	if (crit != NULL)
	{
		if (!json_is_array(crit) || json_array_size(crit) == 0)
			jose_seterr(err, JOSE_E_CRIT, "crit must be a non-empty array");
		else
			jose_seterr(err, JOSE_E_CRIT, "crit names an extension this server does not understand");
		goto fail;
	}

	if (jose_b64url_decode(d1 + 1, (size_t) (d2 - d1 - 1), JOSE_MAX_TOKEN_LEN,
						   &out->payload, &out->payload_len, err) < 0)
	{
		jose_seterr(err, err->code, "payload: %s", jose_strerror(err->code));
		goto fail;
	}
	if (jose_b64url_decode(d2 + 1, len - (size_t) (d2 + 1 - token), JOSE_MAX_SIG_LEN,
						   &out->sig, &out->sig_len, err) < 0)
	{
		jose_errcode code = err->code == JOSE_E_TOO_LONG ? JOSE_E_SIG_LENGTH : err->code;

		jose_seterr(err, code, "signature: %s", jose_strerror(code));
		goto fail;
	}
	out->signing_input = token;
	out->signing_input_len = (size_t) (d2 - token);
	return 0;

fail:
	jose_jws_clear(out);
	return -1;
}

int
jose_jws_verify(const jose_jws *jws, const jose_key *key, jose_error *err)
{
	return jose_verify_raw(key, jws->alg, (const uint8_t *) jws->signing_input,
						   jws->signing_input_len, jws->sig, jws->sig_len, err);
}

json_t *
jose_jws_payload_json(const jose_jws *jws, jose_error *err)
{
	json_t	   *j = jose_json_parse((const char *) jws->payload, jws->payload_len,
									JOSE_E_PAYLOAD, err);

	if (j && !json_is_object(j))
	{
		json_decref(j);
		jose_seterr(err, JOSE_E_PAYLOAD, NULL);
		return NULL;
	}
	return j;
}
