/*
 * jwk.c — JSON Web Keys (RFC 7517/7518) to and from OpenSSL EVP_PKEYs,
 * RFC 7638 thumbprints, key generation and PKCS#8 storage.
 *
 * Every key is bound to exactly one algorithm here (RFC 8725 §3.1): the JWS
 * layer refuses a token whose header alg is not the key's.
 */
#include "jose.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/param_build.h>
#include <openssl/x509.h>

typedef struct curve_info
{
	const char *crv;			/* JWK name */
	const char *group;			/* OpenSSL group name */
	size_t		size;			/* field size in bytes */
	jose_alg	alg;
} curve_info;

static const curve_info curves[] = {
	{"P-256", "prime256v1", 32, JOSE_ALG_ES256},
	{"P-384", "secp384r1", 48, JOSE_ALG_ES384},
	{"P-521", "secp521r1", 66, JOSE_ALG_ES512},
};

static const curve_info *
curve_by_crv(const char *crv)
{
	for (size_t i = 0; i < sizeof(curves) / sizeof(curves[0]); i++)
		if (strcmp(curves[i].crv, crv) == 0)
			return &curves[i];
	return NULL;
}

static const curve_info *
curve_by_alg(jose_alg alg)
{
	for (size_t i = 0; i < sizeof(curves) / sizeof(curves[0]); i++)
		if (curves[i].alg == alg)
			return &curves[i];
	return NULL;
}

static const curve_info *
curve_of_pkey(const EVP_PKEY *pkey)
{
	char		group[64];

	if (!EVP_PKEY_get_utf8_string_param(pkey, OSSL_PKEY_PARAM_GROUP_NAME,
										group, sizeof(group), NULL))
		return NULL;
	for (size_t i = 0; i < sizeof(curves) / sizeof(curves[0]); i++)
		if (strcmp(curves[i].group, group) == 0)
			return &curves[i];
	return NULL;
}

/* Minimum HMAC key length: RFC 7518 §3.2, a key at least the hash size. */
static size_t
hmac_min_len(jose_alg alg)
{
	return alg == JOSE_ALG_HS512 ? 64 : alg == JOSE_ALG_HS384 ? 48 : 32;
}

void
jose_key_free(jose_key *key)
{
	if (key == NULL)
		return;
	EVP_PKEY_free(key->pkey);
	if (key->secret)
	{
		OPENSSL_cleanse(key->secret, key->secret_len);
		free(key->secret);
	}
	free(key->kid);
	free(key);
}

void
jose_keys_free(jose_key **keys, size_t nkeys)
{
	if (keys == NULL)
		return;
	for (size_t i = 0; i < nkeys; i++)
		jose_key_free(keys[i]);
	free(keys);
}

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

static void
free_secret(uint8_t *p, size_t len)
{
	if (p)
	{
		OPENSSL_cleanse(p, len);
		free(p);
	}
}

static EVP_PKEY *
pkey_fromdata(const char *type, OSSL_PARAM_BLD *bld, bool private)
{
	OSSL_PARAM *params = OSSL_PARAM_BLD_to_param(bld);
	EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, type, NULL);
	EVP_PKEY   *pkey = NULL;

	if (params == NULL || ctx == NULL || EVP_PKEY_fromdata_init(ctx) <= 0 ||
		EVP_PKEY_fromdata(ctx, &pkey, private ? EVP_PKEY_KEYPAIR : EVP_PKEY_PUBLIC_KEY,
						  params) <= 0)
		pkey = NULL;
	EVP_PKEY_CTX_free(ctx);
	OSSL_PARAM_free(params);
	return pkey;
}

/*
 * EVP_PKEY_fromdata validates nothing: check an EC point is on its curve,
 * and that a private half belongs to the public half we were given (else
 * the key would sign under a kid that names another key).
 */
static bool
pkey_check(EVP_PKEY *pkey, bool private)
{
	EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_pkey(NULL, pkey, NULL);
	bool		ok = ctx != NULL &&
		(private ? EVP_PKEY_pairwise_check(ctx) == 1 : EVP_PKEY_public_check(ctx) == 1);

	EVP_PKEY_CTX_free(ctx);
	ERR_clear_error();
	return ok;
}

static EVP_PKEY *
parse_ec(json_t *jwk, const curve_info *ci, bool allow_private, bool *has_private,
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
	pkey = pkey_fromdata("EC", bld, d != NULL);
	if (pkey == NULL || !pkey_check(pkey, false) || (d && !pkey_check(pkey, true)))
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
	free_secret(d, dl);
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
	free_secret(d, dl);
	ERR_clear_error();
	return pkey;
}

/*
 * ROCA (CVE-2017-15361, Nemec et al., CCS 2017): Infineon's RSALib made
 * primes k*M + (65537^a mod M), M a primorial, and that structure lets
 * Coppersmith's method factor their moduli (RSA-2048 in CPU-years rather
 * than never).  Such a modulus is itself a power of 65537 modulo each small
 * prime; the published fingerprint tests that for the primes 3..167 and
 * refuses a modulus for which it holds for all of them.  A random modulus
 * passes by chance with probability about 2^-28 (the product, over those
 * primes, of the order of 65537 mod p divided by p - 1).
 *
 * Cost: 38 single-word divisions of the modulus and at most 166 steps of
 * word arithmetic per prime, once per parsed key.  Returns 1 for the
 * fingerprint, 0 without it, -1 on error.
 */
static int
rsa_roca_fingerprint(const BIGNUM *n)
{
	static const uint8_t primes[] = {
		3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67, 71,
		73, 79, 83, 89, 97, 101, 103, 107, 109, 113, 127, 131, 137, 139, 149,
		151, 157, 163, 167,
	};

	for (size_t i = 0; i < sizeof(primes); i++)
	{
		unsigned	p = primes[i];
		unsigned	g = 65537 % p;
		unsigned	x = 1;
		BN_ULONG	r = BN_mod_word(n, p);
		bool		in_subgroup = false;

		if (r == (BN_ULONG) -1)
			return -1;
		/* walk the subgroup generated by 65537 mod p: 1, g, g^2, ... back to 1 */
		do
		{
			if (x == r)
			{
				in_subgroup = true;
				break;
			}
			x = x * g % p;
		} while (x != 1);
		if (!in_subgroup)
			return 0;
	}
	return 1;
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
	if (!BN_is_odd(be) || BN_is_one(be) || BN_num_bits(be) > 64)
	{
		jose_seterr(err, JOSE_E_JWK, "RSA JWK has an invalid public exponent");
		goto done;
	}
	switch (rsa_roca_fingerprint(bn))
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
				free_secret(b, bl);
				jose_seterr(err, JOSE_E_INTERNAL, NULL);
				goto done;
			}
			free_secret(b, bl);
		}
		priv = true;
	}
	pkey = pkey_fromdata("RSA", bld, priv);
	if (pkey && priv && !pkey_check(pkey, true))
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
static int
jwk_key_ops(json_t *jwk, unsigned *ops, bool *other, jose_error *err)
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

/* Fill key->thumbprint and, when kid is NULL, key->kid. */
static int
finish_key(jose_key *key, const char *kid, jose_error *err)
{
	if (jose_jwk_thumbprint(key, key->thumbprint, err) < 0)
		return -1;
	key->kid = strdup(kid ? kid : key->thumbprint);
	if (key->kid == NULL)
		return jose_seterr(err, JOSE_E_INTERNAL, "out of memory");
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
	if (jwk_key_ops(jwk, &ops, &other_ops, err) < 0)
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
		const curve_info *ci = json_is_string(crv) ? curve_by_crv(json_string_value(crv)) : NULL;

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
	if (alg == JOSE_ALG_UNKNOWN)
	{
		jose_seterr(err, JOSE_E_JWK, "JWK has no \"alg\" and none is implied by its kty");
		goto fail;
	}
	if (jose_alg_kty(alg) != key->kty)
	{
		jose_seterr(err, JOSE_E_ALG_KEY_MISMATCH, "alg %s does not fit a %s key",
					jose_alg_name(alg), kty);
		goto fail;
	}
	if (key->kty == JOSE_KTY_OCT && key->secret_len < hmac_min_len(alg))
	{
		jose_seterr(err, JOSE_E_KEY_TOO_WEAK, "%s needs a key of at least %zu bytes",
					jose_alg_name(alg), hmac_min_len(alg));
		goto fail;
	}
	key->alg = alg;
	key->ops = ops;
	if (finish_key(key, jkid ? json_string_value(jkid) : NULL, err) < 0)
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
				const curve_info *ci = curve_of_pkey(key->pkey);

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

/* ---------------- generation and storage ---------------- */

jose_key *
jose_key_generate(jose_alg alg, jose_error *err)
{
	jose_key   *key;
	const curve_info *ci = curve_by_alg(alg);

	if (!jose_alg_can_sign(alg))
	{
		jose_seterr(err, JOSE_E_ALG_UNSUPPORTED, "cannot generate a signing key for this alg");
		return NULL;
	}
	key = calloc(1, sizeof(*key));
	if (key == NULL)
	{
		jose_seterr(err, JOSE_E_INTERNAL, "out of memory");
		return NULL;
	}
	key->alg = alg;
	key->kty = jose_alg_kty(alg);
	key->has_private = true;
	key->ops = JOSE_OP_SIGN | JOSE_OP_VERIFY;
	if (ci)
		key->pkey = EVP_PKEY_Q_keygen(NULL, NULL, "EC", ci->group);
	else if (alg == JOSE_ALG_EDDSA)
		key->pkey = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
	else
		key->pkey = EVP_PKEY_Q_keygen(NULL, NULL, "RSA",
									  (size_t) (alg == JOSE_ALG_RS256 || alg == JOSE_ALG_PS256 ? 2048 : 3072));
	ERR_clear_error();
	if (key->pkey == NULL)
	{
		jose_seterr(err, JOSE_E_INTERNAL, "key generation failed");
		goto fail;
	}
	if (finish_key(key, NULL, err) < 0)
		goto fail;
	return key;
fail:
	jose_key_free(key);
	return NULL;
}

int
jose_key_to_der(const jose_key *key, uint8_t **der, size_t *len, jose_error *err)
{
	PKCS8_PRIV_KEY_INFO *p8;
	int			n;
	unsigned char *buf = NULL;

	*der = NULL;
	*len = 0;
	if (key->pkey == NULL || !key->has_private)
		return jose_seterr(err, JOSE_E_JWK, "key has no private part");
	p8 = EVP_PKEY2PKCS8(key->pkey);
	n = p8 ? i2d_PKCS8_PRIV_KEY_INFO(p8, &buf) : -1;
	PKCS8_PRIV_KEY_INFO_free(p8);
	ERR_clear_error();
	if (n <= 0)
		return jose_seterr(err, JOSE_E_INTERNAL, "cannot encode private key");
	/* hand back malloc memory so callers free() it like everything else */
	*der = malloc((size_t) n);
	if (*der)
		memcpy(*der, buf, (size_t) n);
	OPENSSL_clear_free(buf, (size_t) n);
	if (*der == NULL)
		return jose_seterr(err, JOSE_E_INTERNAL, "out of memory");
	*len = (size_t) n;
	return 0;
}

jose_key *
jose_key_from_der(jose_alg alg, const uint8_t *der, size_t len, jose_error *err)
{
	const unsigned char *p = der;
	PKCS8_PRIV_KEY_INFO *p8 = d2i_PKCS8_PRIV_KEY_INFO(NULL, &p, (long) len);
	jose_key   *key;
	bool		ok;

	key = calloc(1, sizeof(*key));
	if (key == NULL)
	{
		PKCS8_PRIV_KEY_INFO_free(p8);
		jose_seterr(err, JOSE_E_INTERNAL, "out of memory");
		return NULL;
	}
	key->alg = alg;
	key->kty = jose_alg_kty(alg);
	key->has_private = true;
	key->ops = JOSE_OP_SIGN | JOSE_OP_VERIFY;
	key->pkey = p8 ? EVP_PKCS82PKEY(p8) : NULL;
	PKCS8_PRIV_KEY_INFO_free(p8);
	ERR_clear_error();
	/* the stored alg must describe the stored key, or we'd sign under a lie */
	switch (key->kty)
	{
		case JOSE_KTY_EC:
			ok = key->pkey && EVP_PKEY_is_a(key->pkey, "EC") &&
				curve_of_pkey(key->pkey) == curve_by_alg(alg);
			break;
		case JOSE_KTY_OKP:
			ok = key->pkey && EVP_PKEY_is_a(key->pkey, "ED25519");
			break;
		case JOSE_KTY_RSA:
			ok = key->pkey && EVP_PKEY_is_a(key->pkey, "RSA") &&
				EVP_PKEY_get_bits(key->pkey) >= JOSE_MIN_RSA_BITS;
			break;
		default:
			ok = false;
	}
	if (!ok)
	{
		jose_seterr(err, JOSE_E_JWK, "stored private key does not match alg %s",
					jose_alg_name(alg) ? jose_alg_name(alg) : "?");
		goto fail;
	}
	if (finish_key(key, NULL, err) < 0)
		goto fail;
	return key;
fail:
	jose_key_free(key);
	return NULL;
}

/* ---------------- JWKS ---------------- */

int
jose_jwks_parse(json_t *jwks, jose_key ***keys, size_t *nkeys, jose_error *err)
{
	json_t	   *arr = json_is_object(jwks) ? json_object_get(jwks, "keys") : NULL;
	size_t		i,
				n = 0;
	json_t	   *jwk;
	jose_key  **out;
	bool		saw_oct = false,
				saw_asym = false;

	*keys = NULL;
	*nkeys = 0;
	if (!json_is_array(arr))
		return jose_seterr(err, JOSE_E_JWKS, "JWKS must be an object with a \"keys\" array");
	if (json_array_size(arr) > JOSE_MAX_JWKS_KEYS)
		return jose_seterr(err, JOSE_E_JWKS, "JWKS has more than %d keys", JOSE_MAX_JWKS_KEYS);
	out = calloc(json_array_size(arr) + 1, sizeof(*out));
	if (out == NULL)
		return jose_seterr(err, JOSE_E_INTERNAL, "out of memory");
	json_array_foreach(arr, i, jwk)
	{
		json_t	   *kty = json_object_get(jwk, "kty");
		json_t	   *use = json_object_get(jwk, "use");
		jose_error	kerr;
		jose_alg	dflt;
		unsigned	ops;
		bool		other_ops;

		if (!json_is_object(jwk) || !json_is_string(kty))
		{
			jose_keys_free(out, n);
			return jose_seterr(err, JOSE_E_JWKS, "JWKS key %zu is not a JWK", i);
		}

		/*
		 * Shared secrets and public keys never belong in one set: a set that
		 * holds both is a private keyset published, or pasted, by mistake
		 * (Wycheproof's "MixedKeySet").  Counted over every key, skipped or
		 * not, since a secret leaks wherever the set goes.
		 */
		if (strcmp(json_string_value(kty), "oct") == 0)
			saw_oct = true;
		else
			saw_asym = true;
		if (saw_oct && saw_asym)
		{
			jose_keys_free(out, n);
			return jose_seterr(err, JOSE_E_JWKS,
							   "JWKS mixes symmetric (oct) and asymmetric keys (key %zu)", i);
		}
		/* RFC 7517 §5: skip keys for other uses, or that may not verify */
		if (use && json_is_string(use) && strcmp(json_string_value(use), "sig") != 0)
			continue;
		if (jwk_key_ops(jwk, &ops, &other_ops, &kerr) < 0)
		{
			jose_keys_free(out, n);
			return jose_seterr(err, JOSE_E_JWKS, "JWKS key %zu: %s", i, kerr.detail);
		}
		if (!(ops & JOSE_OP_VERIFY))
			continue;
		/*
		 * RSA/oct JWKs without "alg" (common in IdP JWKS) are bound to RS256
		 * and HS256: one algorithm per key, never chosen by a token header.
		 */
		dflt = strcmp(json_string_value(kty), "oct") == 0 ? JOSE_ALG_HS256 : JOSE_ALG_RS256;
		out[n] = jose_jwk_parse(jwk, dflt, false, &kerr);
		if (out[n] == NULL)
		{
			jose_keys_free(out, n);
			return jose_seterr(err, kerr.code == JOSE_E_KEY_TOO_WEAK ? JOSE_E_KEY_TOO_WEAK : JOSE_E_JWKS,
							   "JWKS key %zu: %s", i, kerr.detail);
		}
		n++;
	}
	if (n == 0)
	{
		jose_keys_free(out, n);
		return jose_seterr(err, JOSE_E_JWKS, "JWKS has no signature keys");
	}
	*keys = out;
	*nkeys = n;
	return 0;
}
