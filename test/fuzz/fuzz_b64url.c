/*
 * fuzz_b64url.c — strict base64url (RFC 4648 §5, no padding): every
 * segment of every token and every JWK member goes through it.
 *
 * Oracles: a decode that succeeds re-encodes to exactly its input (the
 * decoder is strict, so it accepts one spelling per value); what it
 * returns is within maxlen and NUL-terminated; encoding the input and
 * decoding it back gives the input.
 */
#include "fuzz.h"

int			LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* the decoder reads exactly inlen bytes: give it no terminator to lean on */
	char	   *in = fuzz_copy(data, size);
	size_t		maxlen = size % 7 == 0 ? size / 2 : size;	/* sometimes too small */
	uint8_t    *out = NULL;
	size_t		outlen = 0;
	jose_error	err = fuzz_err();
	char	   *enc;
	size_t		enclen = 0;

	if (jose_b64url_decode(in, size, maxlen, &out, &outlen, &err) == 0)
	{
		char	   *again = jose_b64url_encode(out, outlen, &enclen);

		FUZZ_ASSERT(out != NULL && outlen <= maxlen, "decoded %zu > maxlen %zu", outlen, maxlen);
		FUZZ_ASSERT(out[outlen] == 0, "decoded value not NUL-terminated");
		FUZZ_ASSERT(again != NULL && enclen == size && memcmp(again, in, size) == 0,
					"decode accepted a non-canonical spelling");
		free(again);
	}
	else
	{
		fuzz_check_refusal(&err, "b64url_decode");
		FUZZ_ASSERT(err.code == JOSE_E_BASE64 || err.code == JOSE_E_TOO_LONG,
					"unexpected code %s", jose_errcode_name(err.code));
		FUZZ_ASSERT(out == NULL && outlen == 0, "refusal left output behind");
	}
	free(out);

	/* any bytes round-trip */
	enc = jose_b64url_encode(data, size, &enclen);
	FUZZ_ASSERT(enc != NULL && strlen(enc) == enclen, "encode");
	err = fuzz_err();
	FUZZ_ASSERT(jose_b64url_decode(enc, enclen, size, &out, &outlen, &err) == 0,
				"own encoding refused: %s", err.detail);
	FUZZ_ASSERT(outlen == size && memcmp(out, data, size) == 0, "round trip changed the bytes");
	free(out);
	free(enc);
	free(in);
	return 0;
}
