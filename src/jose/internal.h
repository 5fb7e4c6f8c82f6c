/*
 * internal.h — what the files of the JOSE core share with one another but
 * not with their callers: the curve table, the steps every way of making a
 * key goes through (key.c), and the "key_ops" rules that a single JWK and a
 * JWKS both apply (jwk.c).
 */
#ifndef TOKEX_JOSE_INTERNAL_H
#define TOKEX_JOSE_INTERNAL_H

#include "jose.h"

#include <openssl/bn.h>
#include <openssl/param_build.h>

typedef struct jose_curve
{
	const char *crv;			/* JWK name */
	const char *group;			/* OpenSSL group name */
	size_t		size;			/* field size in bytes */
	jose_alg	alg;			/* the one algorithm a key on this curve is for */
} jose_curve;

/* key.c */
const jose_curve *jose_curve_by_crv(const char *crv);
const jose_curve *jose_curve_by_alg(jose_alg alg);
const jose_curve *jose_curve_of_pkey(const EVP_PKEY *pkey);
EVP_PKEY   *jose_pkey_fromdata(const char *type, OSSL_PARAM_BLD *bld, bool private);
bool		jose_pkey_check(EVP_PKEY *pkey, bool private);
int			jose_rsa_roca_fingerprint(const BIGNUM *n);
void		jose_secret_free(uint8_t *p, size_t len);
int			jose_key_bind(jose_key *key, jose_alg alg, jose_error *err);
int			jose_key_finish(jose_key *key, const char *kid, jose_error *err);

/* jwk.c */
int			jose_jwk_key_ops(json_t *jwk, unsigned *ops, bool *other, jose_error *err);

#endif							/* TOKEX_JOSE_INTERNAL_H */
