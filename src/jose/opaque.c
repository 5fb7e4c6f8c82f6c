/*
 * opaque.c — tokex's opaque credentials: tkx_<kind>_ + 43 base62
 * characters (256 random bits) + 6 base62 characters of the CRC-32 of what
 * precedes them, so that a secret scanner can recognise a leaked one
 * offline.  Kinds: "ak" (API keys), "at" (reference tokens).  The format
 * and its check live here, without PostgreSQL, so they are unit-tested and
 * fuzzed; translate.c wraps them.
 */
#include "jose.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

static const char b62[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/* CRC-32 (ISO-HDLC, as zlib and the secret-scanning token formats use). */
uint32_t
jose_crc32(const char *p, size_t n)
{
	uint32_t	c = 0xFFFFFFFF;

	for (size_t i = 0; i < n; i++)
	{
		c ^= (unsigned char) p[i];
		for (int k = 0; k < 8; k++)
			c = (c >> 1) ^ (0xEDB88320 & (0 - (c & 1)));
	}
	return ~c;
}

void
jose_opaque_crc(const char *p, size_t n, char out[JOSE_OPAQUE_CRC])
{
	uint32_t	c = jose_crc32(p, n);

	for (int i = JOSE_OPAQUE_CRC - 1; i >= 0; i--)
	{
		out[i] = b62[c % 62];
		c /= 62;
	}
}

size_t
jose_opaque_len(const char *kind)
{
	return 4 + strlen(kind) + 1 + JOSE_OPAQUE_BODY + JOSE_OPAQUE_CRC;
}

char *
jose_opaque_new(const char *kind, bool (*fill) (void *buf, size_t len), jose_error *err)
{
	size_t		len = jose_opaque_len(kind);
	size_t		prefix = len - JOSE_OPAQUE_BODY - JOSE_OPAQUE_CRC;
	char	   *s = malloc(len + 1);
	size_t		filled = 0;

	if (s == NULL)
	{
		jose_seterr(err, JOSE_E_INTERNAL, "out of memory");
		return NULL;
	}
	memcpy(s, "tkx_", 4);
	memcpy(s + 4, kind, prefix - 5);
	s[prefix - 1] = '_';
	/* uniform base62: bytes >= 248 (4 * 62) are drawn again */
	while (filled < JOSE_OPAQUE_BODY)
	{
		unsigned char r[64];

		if (!fill(r, sizeof(r)))
		{
			OPENSSL_cleanse(s, len);
			free(s);
			jose_seterr(err, JOSE_E_INTERNAL, "no random bytes for a credential");
			return NULL;
		}
		for (size_t i = 0; i < sizeof(r) && filled < JOSE_OPAQUE_BODY; i++)
			if (r[i] < 248)
				s[prefix + filled++] = b62[r[i] % 62];
		OPENSSL_cleanse(r, sizeof(r));
	}
	jose_opaque_crc(s, prefix + JOSE_OPAQUE_BODY, s + prefix + JOSE_OPAQUE_BODY);
	s[len] = '\0';
	return s;
}

bool
jose_opaque_ok(const char *s, size_t len, const char *kind)
{
	size_t		kl = strlen(kind);
	size_t		prefix = 4 + kl + 1;
	char		crc[JOSE_OPAQUE_CRC];

	if (len != jose_opaque_len(kind) || memcmp(s, "tkx_", 4) != 0 ||
		memcmp(s + 4, kind, kl) != 0 || s[prefix - 1] != '_')
		return false;
	for (size_t i = prefix; i < len; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'A' && s[i] <= 'Z') || (s[i] >= 'a' && s[i] <= 'z')))
			return false;
	jose_opaque_crc(s, prefix + JOSE_OPAQUE_BODY, crc);
	return memcmp(crc, s + prefix + JOSE_OPAQUE_BODY, JOSE_OPAQUE_CRC) == 0;
}
