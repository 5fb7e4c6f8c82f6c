/*
 * jwk.c — one JSON Web Key (RFC 7517/7518, RFC 8037 for OKP) to and from a
 * key: reading a JWK's members into an EVP_PKEY with every check the
 * members call for (point on the curve, private half matching the public
 * half, "use" and "key_ops"), writing a key's public JWK, and its RFC 7638
 * thumbprint.
 *
 * The algorithm a JWK is bound to is decided here (its "alg", else its
 * curve or the caller's default) and enforced by key.c; a set of JWKs is
 * jwks.c.
 */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/err.h>

/* Decode a base64url string member; missing -> 1 (not an error by itself). */
static int
get_b64(json_t *jwk, const char *name, uint8_t **out, size_t *len, jose_error *err)
{
	json_t	   *v = json_object_get(jwk, name);

	*out = NULL;
	*len = 0;
	if (v == NULL)
		return 1;
	if (!json_is_string(v))
		return jose_seterr(err, JOSE_E_JWK, "JWK member \"%s\" is not a string", name);
	if (jose_b64url_decode(json_string_value(v), json_string_length(v), 16384,
						   out, len, err) < 0)
		return jose_seterr(err, JOSE_E_JWK, "JWK member \"%s\" is not base64url", name);
	return 0;
}

static EVP_PKEY *
parse_ec(json_t *jwk, const jose_curve *ci, bool allow_private, bool *has_private,
		 jose_error *err)
{
	uint8_t    *x = NULL,
			   *y = NULL,
			   *d = NULL;
	size_t		xl,
				yl,
				dl = 0;
	uint8_t		point[1 + 2 * 66];
	OSSL_PARAM_BLD *bld = NULL;
	BIGNUM	   *bd = NULL;
	EVP_PKEY   *pkey = NULL;
	int			rc;

	if ((rc = get_b64(jwk, "x", &x, &xl, err)) != 0 ||
		(rc = get_b64(jwk, "y", &y, &yl, err)) != 0)
	{
		/* rc < 0: get_b64 said what is wrong; rc > 0: a member is missing */
		if (rc > 0)
			jose_seterr(err, JOSE_E_JWK, "EC JWK needs \"x\" and \"y\"");
		goto done;
	}
	if (xl != ci->size || yl != ci->size)
	{
		jose_seterr(err, JOSE_E_JWK, "EC JWK coordinates must be %zu bytes for %s", ci->size, ci->crv);
		goto done;
	}
	if (allow_private && get_b64(jwk, "d", &d, &dl, err) < 0)
		goto done;
	if (d && dl != ci->size)
	{
		jose_seterr(err, JOSE_E_JWK, "EC JWK \"d\" must be %zu bytes for %s", ci->size, ci->crv);
		goto done;
	}
	point[0] = 0x04;
	memcpy(point + 1, x, ci->size);
	memcpy(point + 1 + ci->size, y, ci->size);
	bld = OSSL_PARAM_BLD_new();
	if (bld == NULL ||
		!OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, ci->group, 0) ||
		!OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, point, 1 + 2 * ci->size))
	{
		jose_seterr(err, JOSE_E_INTERNAL, NULL);
		goto done;
	}
	if (d)
	{
		bd = BN_secure_new();
		if (bd == NULL || BN_bin2bn(d, (int) dl, bd) == NULL ||
			!OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_PRIV_KEY, bd))
		{
			jose_seterr(err, JOSE_E_INTERNAL, NULL);
			goto done;
		}
	}
	pkey = jose_pkey_fromdata("EC", bld, d != NULL);
	if (pkey == NULL || !jose_pkey_check(pkey, false) || (d && !jose_pkey_check(pkey, true)))
	{
		EVP_PKEY_free(pkey);
		pkey = NULL;
		jose_seterr(err, JOSE_E_JWK, "EC JWK is not a valid %s point", ci->crv);
		goto done;
	}
	*has_private = d != NULL;
done:
	free(x);
	free(y);
	jose_secret_free(d, dl);
	BN_clear_free(bd);
	OSSL_PARAM_BLD_free(bld);
	ERR_clear_error();
	return pkey;
}

static EVP_PKEY *
parse_okp(json_t *jwk, bool allow_private, bool *has_private, jose_error *err)
{
	json_t	   *crv = json_object_get(jwk, "crv");
	uint8_t    *x = NULL,
			   *d = NULL;
	size_t		xl = 0,
				dl = 0;
	EVP_PKEY   *pkey = NULL;

	if (!json_is_string(crv) || strcmp(json_string_value(crv), "Ed25519") != 0)
	{
		jose_seterr(err, JOSE_E_JWK, "OKP JWK curve must be Ed25519");
		return NULL;
	}
	if (get_b64(jwk, "x", &x, &xl, err) != 0 || xl != 32)
	{
		jose_seterr(err, JOSE_E_JWK, "Ed25519 JWK \"x\" must be 32 bytes");
		goto done;
	}
	if (allow_private && get_b64(jwk, "d", &d, &dl, err) < 0)
		goto done;
	if (d)
	{
		uint8_t		pub[32];
		size_t		publen = sizeof(pub);

		if (dl != 32)
		{
			jose_seterr(err, JOSE_E_JWK, "Ed25519 JWK \"d\" must be 32 bytes");
			goto done;
		}
		pkey = EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, NULL, d, dl);
		/* a private key whose public half is not "x" would sign under a lie */
		if (pkey && (!EVP_PKEY_get_raw_public_key(pkey, pub, &publen) ||
					 CRYPTO_memcmp(pub, x, 32) != 0))
		{
			EVP_PKEY_free(pkey);
			pkey = NULL;
		}
	}
	else
		pkey = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, x, xl);
	if (pkey == NULL)
		jose_seterr(err, JOSE_E_JWK, "Ed25519 JWK is not a valid key");
	else
		*has_private = d != NULL;
done:
	free(x);
	jose_secret_free(d, dl);
	ERR_clear_error();
	return pkey;
}

static EVP_PKEY *
parse_rsa(json_t *jwk, bool allow_private, bool *has_private, jose_error *err)
{
	static const char *const privnames[] = {"d", "p", "q", "dp", "dq", "qi"};
	static const char *const privparams[] = {
		OSSL_PKEY_PARAM_RSA_D, OSSL_PKEY_PARAM_RSA_FACTOR1, OSSL_PKEY_PARAM_RSA_FACTOR2,
		OSSL_PKEY_PARAM_RSA_EXPONENT1, OSSL_PKEY_PARAM_RSA_EXPONENT2,
	OSSL_PKEY_PARAM_RSA_COEFFICIENT1};
	uint8_t    *n = NULL,
			   *e = NULL;
	size_t		nl = 0,
				el = 0;
	BIGNUM	   *bn = NULL,
			   *be = NULL,
			   *bp[6] = {0};
	OSSL_PARAM_BLD *bld = NULL;
	EVP_PKEY   *pkey = NULL;
	bool		priv = false;

	if (get_b64(jwk, "n", &n, &nl, err) != 0 || get_b64(jwk, "e", &e, &el, err) != 0)
	{
		jose_seterr(err, JOSE_E_JWK, "RSA JWK needs \"n\" and \"e\"");
		goto done;
	}
	bn = BN_bin2bn(n, (int) nl, NULL);
	be = BN_bin2bn(e, (int) el, NULL);
	if (bn == NULL || be == NULL)
	{
		jose_seterr(err, JOSE_E_INTERNAL, NULL);
		goto done;
	}
	if (BN_num_bits(bn) < JOSE_MIN_RSA_BITS)
	{
		jose_seterr(err, JOSE_E_KEY_TOO_WEAK, "RSA modulus of %d bits is shorter than %d",
					BN_num_bits(bn), JOSE_MIN_RSA_BITS);
		goto done;
	}
	/* longer keys could never verify: their signatures exceed the JWS limit */
	if (BN_num_bits(bn) > JOSE_MAX_RSA_BITS)
	{
		jose_seterr(err, JOSE_E_JWK, "RSA modulus of %d bits is longer than %d",
					BN_num_bits(bn), JOSE_MAX_RSA_BITS);
		goto done;
	}
	if (!BN_is_odd(be) || BN_is_one(be) || BN_num_bits(be) > 64)
	{
		jose_seterr(err, JOSE_E_JWK, "RSA JWK has an invalid public exponent");
		goto done;
	}
	switch (jose_rsa_roca_fingerprint(bn))
	{
		case 0:
			break;
		case 1:
			jose_seterr(err, JOSE_E_KEY_TOO_WEAK, "RSA modulus has the ROCA fingerprint "
						"(CVE-2017-15361): its factors can be computed");
			goto done;
		default:
			jose_seterr(err, JOSE_E_INTERNAL, NULL);
			goto done;
	}
	bld = OSSL_PARAM_BLD_new();
	if (bld == NULL || !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, bn) ||
		!OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, be))
	{
		jose_seterr(err, JOSE_E_INTERNAL, NULL);
		goto done;
	}
	if (allow_private && json_object_get(jwk, "d") != NULL)
	{
		for (int i = 0; i < 6; i++)
		{
			uint8_t    *b = NULL;
			size_t		bl = 0;

			if (get_b64(jwk, privnames[i], &b, &bl, err) != 0)
			{
				jose_seterr(err, JOSE_E_JWK, "RSA private JWK needs d, p, q, dp, dq and qi");
				goto done;
			}
			bp[i] = BN_secure_new();
			if (bp[i] == NULL || BN_bin2bn(b, (int) bl, bp[i]) == NULL ||
				!OSSL_PARAM_BLD_push_BN(bld, privparams[i], bp[i]))
			{
				jose_secret_free(b, bl);
				jose_seterr(err, JOSE_E_INTERNAL, NULL);
				goto done;
			}
			jose_secret_free(b, bl);
		}
		priv = true;
	}
	pkey = jose_pkey_fromdata("RSA", bld, priv);
	if (pkey && priv && !jose_pkey_check(pkey, true))
	{
		EVP_PKEY_free(pkey);
		pkey = NULL;
	}
	if (pkey == NULL)
		jose_seterr(err, JOSE_E_JWK, "RSA JWK is not a valid key");
	else
		*has_private = priv;
done:
	free(n);
	free(e);
	BN_free(bn);
	BN_free(be);
	for (int i = 0; i < 6; i++)
		BN_clear_free(bp[i]);
	OSSL_PARAM_BLD_free(bld);
	ERR_clear_error();
	return pkey;
}

/* A JSON string equal to lit (length-checked, so an embedded NUL cannot match). */
static bool
json_str_is(json_t *v, const char *lit)
{
	return json_is_string(v) && json_string_length(v) == strlen(lit) &&
		memcmp(json_string_value(v), lit, strlen(lit)) == 0;
}

/*
 * RFC 7517 §4.3 "key_ops": absent means the key may sign and verify; present,
 * it must be an array of distinct strings and the key may do only the
 * signature operations it names (*ops).  *other tells whether it names
 * operations tokex does not do (encrypt, wrapKey, ...), which §4.3 allows but
 * which contradict a "use" of "sig".
 */
int
jose_jwk_key_ops(json_t *jwk, unsigned *ops, bool *other, jose_error *err)
{
	json_t	   *arr = json_object_get(jwk, "key_ops");
	json_t	   *op;
	size_t		i;

	*ops = JOSE_OP_SIGN | JOSE_OP_VERIFY;
	*other = false;
	if (arr == NULL)
		return 0;
	/* eight values are registered; a longer list is not a key_ops */
	if (!json_is_array(arr) || json_array_size(arr) > 16)
		return jose_seterr(err, JOSE_E_JWK, "JWK \"key_ops\" must be an array of at most 16 strings");
	*ops = 0;
	json_array_foreach(arr, i, op)
	{
		if (!json_is_string(op))
			return jose_seterr(err, JOSE_E_JWK, "JWK \"key_ops\" must be an array of at most 16 strings");
		for (size_t j = 0; j < i; j++)
			if (json_equal(op, json_array_get(arr, j)))
				return jose_seterr(err, JOSE_E_JWK, "JWK \"key_ops\" values must be distinct");
		if (json_str_is(op, "sign"))
			*ops |= JOSE_OP_SIGN;
		else if (json_str_is(op, "verify"))
			*ops |= JOSE_OP_VERIFY;
		else
			*other = true;
	}
	return 0;
}

jose_key *
jose_jwk_parse(json_t *jwk, jose_alg default_alg, bool allow_private, jose_error *err)
{
	json_t	   *jkty,
			   *jalg,
			   *juse,
			   *jkid;
	const char *kty;
	jose_key   *key;
	jose_alg	alg = JOSE_ALG_UNKNOWN;
	unsigned	ops;
	bool		other_ops;

	if (!json_is_object(jwk))
	{
		jose_seterr(err, JOSE_E_JWK, "JWK is not a JSON object");
		return NULL;
	}
	jkty = json_object_get(jwk, "kty");
	jalg = json_object_get(jwk, "alg");
	juse = json_object_get(jwk, "use");
	jkid = json_object_get(jwk, "kid");
	if (!json_is_string(jkty))
	{
		jose_seterr(err, JOSE_E_JWK, "JWK has no \"kty\"");
		return NULL;
	}
	if (juse && !(json_is_string(juse) && strcmp(json_string_value(juse), "sig") == 0))
	{
		jose_seterr(err, JOSE_E_JWK, "JWK \"use\" is not \"sig\"");
		return NULL;
	}
	if (jose_jwk_key_ops(jwk, &ops, &other_ops, err) < 0)
		return NULL;
	/* like a "use" other than "sig": not a signature key at all */
	if (ops == 0)
	{
		jose_seterr(err, JOSE_E_JWK, "JWK \"key_ops\" has neither \"sign\" nor \"verify\"");
		return NULL;
	}
	if (juse && other_ops)
	{
		jose_seterr(err, JOSE_E_JWK, "JWK \"key_ops\" names operations other than "
					"\"sign\" and \"verify\", contradicting \"use\": \"sig\"");
		return NULL;
	}
	if (jkid && (!json_is_string(jkid) || json_string_length(jkid) == 0 ||
				 json_string_length(jkid) > 256))
	{
		jose_seterr(err, JOSE_E_JWK, "JWK \"kid\" must be a non-empty string of at most 256 bytes");
		return NULL;
	}
	if (jalg)
	{
		if (!json_is_string(jalg) ||
			(alg = jose_alg_from_name(json_string_value(jalg))) == JOSE_ALG_UNKNOWN)
		{
			jose_seterr(err, JOSE_E_ALG_UNSUPPORTED, "JWK \"alg\" is not a supported algorithm");
			return NULL;
		}
	}

	key = calloc(1, sizeof(*key));
	if (key == NULL)
	{
		jose_seterr(err, JOSE_E_INTERNAL, "out of memory");
		return NULL;
	}
	kty = json_string_value(jkty);
	if (strcmp(kty, "EC") == 0)
	{
		json_t	   *crv = json_object_get(jwk, "crv");
		const jose_curve *ci = json_is_string(crv) ? jose_curve_by_crv(json_string_value(crv)) : NULL;

		key->kty = JOSE_KTY_EC;
		if (ci == NULL)
		{
			jose_seterr(err, JOSE_E_JWK, "EC JWK curve must be P-256, P-384 or P-521");
			goto fail;
		}
		if (alg == JOSE_ALG_UNKNOWN)
			alg = ci->alg;
		else if (alg != ci->alg)
		{
			jose_seterr(err, JOSE_E_ALG_KEY_MISMATCH, "JWK alg %s does not fit curve %s",
						jose_alg_name(alg), ci->crv);
			goto fail;
		}
		key->pkey = parse_ec(jwk, ci, allow_private, &key->has_private, err);
	}
	else if (strcmp(kty, "OKP") == 0)
	{
		key->kty = JOSE_KTY_OKP;
		if (alg == JOSE_ALG_UNKNOWN)
			alg = JOSE_ALG_EDDSA;
		key->pkey = parse_okp(jwk, allow_private, &key->has_private, err);
	}
	else if (strcmp(kty, "RSA") == 0)
	{
		key->kty = JOSE_KTY_RSA;
		if (alg == JOSE_ALG_UNKNOWN)
			alg = default_alg;
		key->pkey = parse_rsa(jwk, allow_private, &key->has_private, err);
	}
	else if (strcmp(kty, "oct") == 0)
	{
		key->kty = JOSE_KTY_OCT;
		if (alg == JOSE_ALG_UNKNOWN)
			alg = default_alg;
		if (get_b64(jwk, "k", &key->secret, &key->secret_len, err) != 0)
		{
			jose_seterr(err, JOSE_E_JWK, "oct JWK needs \"k\"");
			goto fail;
		}
		key->has_private = true;
	}
	else
	{
		jose_seterr(err, JOSE_E_JWK, "unsupported JWK kty");
		goto fail;
	}
	if (key->kty != JOSE_KTY_OCT && key->pkey == NULL)
		goto fail;
	if (jose_key_bind(key, alg, err) < 0)
		goto fail;
	key->ops = ops;
	if (jose_key_finish(key, jkid ? json_string_value(jkid) : NULL, err) < 0)
		goto fail;
	return key;

fail:
	jose_key_free(key);
	return NULL;
}

/* ---------------- export ---------------- */

/* base64url of a BIGNUM, left-padded to pad bytes when pad > 0 */
static char *
bn_b64(const EVP_PKEY *pkey, const char *param, int pad)
{
	BIGNUM	   *bn = NULL;
	uint8_t		buf[1024];
	int			len;
	char	   *out = NULL;

	if (!EVP_PKEY_get_bn_param(pkey, param, &bn))
		return NULL;
	len = pad > 0 ? pad : BN_num_bytes(bn);
	if (len <= (int) sizeof(buf) && BN_bn2binpad(bn, buf, len) == len)
		out = jose_b64url_encode(buf, (size_t) len, NULL);
	BN_free(bn);
	return out;
}

typedef struct pubparts
{
	const char *kty;
	const char *crv;
	char	   *x,
			   *y,
			   *n,
			   *e,
			   *k;
} pubparts;

static void
pubparts_free(pubparts *pp)
{
	free(pp->x);
	free(pp->y);
	free(pp->n);
	free(pp->e);
	if (pp->k)
	{
		OPENSSL_cleanse(pp->k, strlen(pp->k));
		free(pp->k);
	}
}

static int
get_pubparts(const jose_key *key, pubparts *pp, jose_error *err)
{
	memset(pp, 0, sizeof(*pp));
	switch (key->kty)
	{
		case JOSE_KTY_EC:
			{
				const jose_curve *ci = jose_curve_of_pkey(key->pkey);

				pp->kty = "EC";
				if (ci == NULL)
					break;
				pp->crv = ci->crv;
				pp->x = bn_b64(key->pkey, OSSL_PKEY_PARAM_EC_PUB_X, (int) ci->size);
				pp->y = bn_b64(key->pkey, OSSL_PKEY_PARAM_EC_PUB_Y, (int) ci->size);
				if (pp->x && pp->y)
					return 0;
				break;
			}
		case JOSE_KTY_OKP:
			{
				uint8_t		pub[32];
				size_t		len = sizeof(pub);

				pp->kty = "OKP";
				pp->crv = "Ed25519";
				if (EVP_PKEY_get_raw_public_key(key->pkey, pub, &len) && len == 32 &&
					(pp->x = jose_b64url_encode(pub, 32, NULL)) != NULL)
					return 0;
				break;
			}
		case JOSE_KTY_RSA:
			pp->kty = "RSA";
			pp->n = bn_b64(key->pkey, OSSL_PKEY_PARAM_RSA_N, 0);
			pp->e = bn_b64(key->pkey, OSSL_PKEY_PARAM_RSA_E, 0);
			if (pp->n && pp->e)
				return 0;
			break;
		case JOSE_KTY_OCT:
			pp->kty = "oct";
			if ((pp->k = jose_b64url_encode(key->secret, key->secret_len, NULL)) != NULL)
				return 0;
			break;
	}
	pubparts_free(pp);
	ERR_clear_error();
	return jose_seterr(err, JOSE_E_INTERNAL, "cannot export key parameters");
}

int
jose_jwk_thumbprint(const jose_key *key, char out[44], jose_error *err)
{
	pubparts	pp;
	json_t	   *j;
	char	   *canon;
	uint8_t		md[32];
	char	   *b64;

	if (get_pubparts(key, &pp, err) < 0)
		return -1;
	/* RFC 7638 §3.2: required members only, sorted, no whitespace */
	if (key->kty == JOSE_KTY_EC)
		j = json_pack("{s:s,s:s,s:s,s:s}", "crv", pp.crv, "kty", pp.kty, "x", pp.x, "y", pp.y);
	else if (key->kty == JOSE_KTY_OKP)
		j = json_pack("{s:s,s:s,s:s}", "crv", pp.crv, "kty", pp.kty, "x", pp.x);
	else if (key->kty == JOSE_KTY_RSA)
		j = json_pack("{s:s,s:s,s:s}", "e", pp.e, "kty", pp.kty, "n", pp.n);
	else
		j = json_pack("{s:s,s:s}", "k", pp.k, "kty", pp.kty);
	pubparts_free(&pp);
	canon = j ? json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
	json_decref(j);
	if (canon == NULL || EVP_Digest(canon, strlen(canon), md, NULL, EVP_sha256(), NULL) != 1)
	{
		free(canon);
		return jose_seterr(err, JOSE_E_INTERNAL, "cannot compute thumbprint");
	}
	OPENSSL_cleanse(canon, strlen(canon));
	free(canon);
	b64 = jose_b64url_encode(md, sizeof(md), NULL);
	if (b64 == NULL)
		return jose_seterr(err, JOSE_E_INTERNAL, "out of memory");
	memcpy(out, b64, 44);		/* 43 characters and the NUL */
	free(b64);
	return 0;
}

json_t *
jose_jwk_public(const jose_key *key, jose_error *err)
{
	pubparts	pp;
	json_t	   *j;

	if (key->kty == JOSE_KTY_OCT)
	{
		jose_seterr(err, JOSE_E_JWK, "a symmetric key has no public JWK");
		return NULL;
	}
	if (get_pubparts(key, &pp, err) < 0)
		return NULL;
	if (key->kty == JOSE_KTY_EC)
		j = json_pack("{s:s,s:s,s:s,s:s}", "kty", pp.kty, "crv", pp.crv, "x", pp.x, "y", pp.y);
	else if (key->kty == JOSE_KTY_OKP)
		j = json_pack("{s:s,s:s,s:s}", "kty", pp.kty, "crv", pp.crv, "x", pp.x);
	else
		j = json_pack("{s:s,s:s,s:s}", "kty", pp.kty, "n", pp.n, "e", pp.e);
	pubparts_free(&pp);
	if (j == NULL ||
		json_object_set_new(j, "kid", json_string(key->kid)) < 0 ||
		json_object_set_new(j, "alg", json_string(jose_alg_name(key->alg))) < 0 ||
		json_object_set_new(j, "use", json_string("sig")) < 0)
	{
		json_decref(j);
		jose_seterr(err, JOSE_E_INTERNAL, "out of memory");
		return NULL;
	}
	return j;
}
