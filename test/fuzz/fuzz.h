/*
 * fuzz.h — what every libFuzzer harness of the JOSE core shares: the
 * invariants a refusal must keep (a known code, a non-empty detail that is
 * a C string), an assertion that aborts (so libFuzzer keeps the input as a
 * crash), and the keys the harnesses verify against.
 *
 * Harnesses are fuzz_<name>.c next to this file; see README.md for how to
 * add one (TEMPLATE.c).
 */
#ifndef TOKEX_FUZZ_H
#define TOKEX_FUZZ_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jose.h"

/* An oracle failed: report it and abort, which libFuzzer records as a crash. */
#define FUZZ_ASSERT(cond, ...) \
	do { \
		if (!(cond)) \
		{ \
			fprintf(stderr, "fuzz assertion failed at %s:%d: %s: ", __FILE__, __LINE__, #cond); \
			fprintf(stderr, __VA_ARGS__); \
			fputc('\n', stderr); \
			abort(); \
		} \
	} while (0)

/*
 * A refusal says why: a code of the list (never OK, never out of range),
 * and a detail that is a non-empty, NUL-terminated string.  The detail of
 * a bounded-length error record is what jwt_verify puts in DETAIL, so it
 * must not run past its buffer.
 */
static inline void
fuzz_check_refusal(const jose_error *err, const char *what)
{
	FUZZ_ASSERT(err->code > JOSE_OK && err->code < JOSE_E_COUNT_,
				"%s: error code %d out of range", what, (int) err->code);
	FUZZ_ASSERT(memchr(err->detail, '\0', sizeof(err->detail)) != NULL,
				"%s: detail not NUL-terminated", what);
	FUZZ_ASSERT(err->detail[0] != '\0', "%s: empty detail (%s)", what,
				jose_errcode_name(err->code));
	FUZZ_ASSERT(strcmp(jose_errcode_name(err->code), "?") != 0, "%s: unnamed code", what);
}

/* A fresh error record, filled with garbage so a path that forgets to set it shows. */
static inline jose_error
fuzz_err(void)
{
	jose_error	e;

	memset(&e, 0xa5, sizeof(e));
	return e;
}

/*
 * The input as a private copy without a terminator: the core takes
 * (pointer, length), and ASan then sees any read past the length.
 */
static inline char *
fuzz_copy(const uint8_t *data, size_t size)
{
	char	   *s = malloc(size ? size : 1);

	if (s == NULL)
		abort();
	memcpy(s, data, size);
	return s;
}

/*
 * Keys every harness that verifies can use, made once per process: one of
 * each key type the core verifies with (EC, OKP, RSA, oct).  Generated keys
 * differ per run, which changes no verdict on fuzzed input: a signature the
 * fuzzer did not make with the key never verifies.  The HMAC key is fixed,
 * so a harness that signs with it is deterministic.
 */
#define FUZZ_NKEYS 5
static const char fuzz_hs256_jwk[] =
	"{\"kty\":\"oct\",\"alg\":\"HS256\",\"kid\":\"hs\","
	"\"k\":\"AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow\"}";

static inline jose_key *
fuzz_jwk_from_text(const char *text, jose_alg dflt)
{
	jose_error	err = fuzz_err();
	json_t	   *j = json_loads(text, 0, NULL);
	jose_key   *k = j ? jose_jwk_parse(j, dflt, true, &err) : NULL;

	json_decref(j);
	if (k == NULL)
	{
		fprintf(stderr, "fuzz fixture: %s\n", err.detail);
		abort();
	}
	return k;
}

static inline jose_key **
fuzz_keys(void)
{
	static jose_key *keys[FUZZ_NKEYS];

	if (keys[0] == NULL)
	{
		static const jose_alg algs[] = {JOSE_ALG_ES256, JOSE_ALG_EDDSA, JOSE_ALG_RS256,
		JOSE_ALG_ES384};
		static const char *const kids[] = {"es", "ed", "rs", "es384"};
		jose_error	err = fuzz_err();

		for (size_t i = 0; i < 4; i++)
		{
			if ((keys[i] = jose_key_generate(algs[i], &err)) == NULL)
			{
				fprintf(stderr, "fuzz fixture: key generation: %s\n", err.detail);
				abort();
			}
			/* short kids the corpus can name */
			free(keys[i]->kid);
			if ((keys[i]->kid = strdup(kids[i])) == NULL)
				abort();
		}
		keys[4] = fuzz_jwk_from_text(fuzz_hs256_jwk, JOSE_ALG_HS256);
	}
	return keys;
}

#endif							/* TOKEX_FUZZ_H */
