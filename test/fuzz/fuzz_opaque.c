/*
 * fuzz_opaque.c — tokex's opaque credentials, tkx_ak_... (API keys, a
 * client's subject or actor token in tokex.exchange) and tkx_at_...
 * (reference tokens, presented to introspection and resources):
 * jose_opaque_ok, the check every presented one goes through before its
 * hash is looked up, and jose_opaque_new.
 *
 * The input is checked as it is, as both kinds; it also drives a fresh
 * credential (its bytes are the randomness) and a one-character change.
 *
 * Oracles: the verdict agrees, both ways, with a second implementation
 * written here (table-driven CRC-32, base62 read back as a number): an
 * accepted string is exactly tkx_<kind>_ + 43 base62 + the 6-digit base62
 * CRC-32 of the rest, and no string is accepted as both kinds; a fresh
 * credential has its body from the accepted random bytes (those < 248,
 * modulo 62) and passes as its kind only; any one-character change of a
 * valid credential fails; a source of randomness that fails gives a
 * refusal with a known code and a detail.
 */
#include "fuzz.h"

int			LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char b62[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/* CRC-32/ISO-HDLC, table-driven (the core's is bitwise) */
static uint32_t
ref_crc32(const char *p, size_t n)
{
	static uint32_t table[256];
	uint32_t	c = 0xFFFFFFFFu;

	if (table[1] == 0)
		for (uint32_t i = 0; i < 256; i++)
		{
			uint32_t	v = i;

			for (int k = 0; k < 8; k++)
				v = v & 1 ? 0xEDB88320u ^ (v >> 1) : v >> 1;
			table[i] = v;
		}
	for (size_t i = 0; i < n; i++)
		c = table[(c ^ (unsigned char) p[i]) & 0xFF] ^ (c >> 8);
	return c ^ 0xFFFFFFFFu;
}

static int
b62_digit(char c)
{
	const char *p = c ? strchr(b62, c) : NULL;

	return p ? (int) (p - b62) : -1;
}

/* the format, written again: prefix, length, alphabet, checksum read as a number */
static bool
ref_ok(const char *s, size_t len, const char *kind)
{
	size_t		prefix = 4 + strlen(kind) + 1;
	uint64_t	crc = 0;

	if (len != prefix + 43 + 6 || strncmp(s, "tkx_", 4) != 0 || strncmp(s + 4, kind, strlen(kind)) != 0 ||
		s[prefix - 1] != '_')
		return false;
	for (size_t i = prefix; i < len; i++)
		if (b62_digit(s[i]) < 0)
			return false;
	for (size_t i = prefix + 43; i < len; i++)
		crc = crc * 62 + (uint64_t) b62_digit(s[i]);
	return crc == ref_crc32(s, prefix + 43);
}

/* randomness from the input: its bytes in order, then bytes < 248 (so it ends) */
static const uint8_t *fill_data;
static size_t fill_size;
static size_t fill_pos;

static bool
fill_input(void *buf, size_t len)
{
	for (size_t i = 0; i < len; i++, fill_pos++)
		((uint8_t *) buf)[i] = fill_pos < fill_size ? fill_data[fill_pos] : (uint8_t) (fill_pos * 7 % 248);
	return true;
}

static bool
fill_fails(void *buf, size_t len)
{
	(void) buf;
	(void) len;
	return false;
}

/* one character of s (len) changed, as the input says: must fail as kind */
static void
changed_fails(const char *s, size_t len, const char *kind, const uint8_t *data, size_t size)
{
	char	   *t = fuzz_copy((const uint8_t *) s, len);
	size_t		at = size > 0 ? data[0] % len : 0;
	char		c = size > 1 ? (char) data[1] : 'x';

	if (c == s[at])
		c = s[at] == '0' ? '1' : '0';
	t[at] = c;
	FUZZ_ASSERT(!jose_opaque_ok(t, len, kind), "position %zu changed to 0x%02x still passes as %s",
				at, (unsigned char) c, kind);
	free(t);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *const kinds[] = {"ak", "at"};
	char	   *in = fuzz_copy(data, size);
	bool		ok[2];

	/* 1. the input as a presented credential */
	for (int k = 0; k < 2; k++)
	{
		ok[k] = jose_opaque_ok(in, size, kinds[k]);
		FUZZ_ASSERT(ok[k] == ref_ok(in, size, kinds[k]), "verdict %d as %s, the format says otherwise",
					ok[k], kinds[k]);
		if (ok[k])
		{
			FUZZ_ASSERT(size == jose_opaque_len(kinds[k]) && size == 56, "accepted %zu bytes", size);
			changed_fails(in, size, kinds[k], data + size - 2, 2);
		}
	}
	FUZZ_ASSERT(!(ok[0] && ok[1]), "accepted as both kinds");

	/* 2. a fresh credential, the input its randomness */
	{
		const char *kind = kinds[size % 2];
		jose_error	err = fuzz_err();
		char	   *s;
		char		body[43];
		size_t		n = 0;

		fill_data = data;
		fill_size = size;
		fill_pos = 0;
		s = jose_opaque_new(kind, fill_input, &err);
		FUZZ_ASSERT(s != NULL, "jose_opaque_new: %s", err.detail);
		/* what the body must be: the bytes < 248 in order, modulo 62 */
		for (size_t i = 0; n < 43; i++)
		{
			uint8_t		r = i < size ? data[i] : (uint8_t) (i * 7 % 248);

			if (r < 248)
				body[n++] = b62[r % 62];
		}
		FUZZ_ASSERT(strlen(s) == jose_opaque_len(kind) && strncmp(s, "tkx_", 4) == 0 &&
					strncmp(s + 4, kind, 2) == 0 && s[6] == '_' && memcmp(s + 7, body, 43) == 0,
					"fresh credential %s is not the one its randomness makes", s);
		FUZZ_ASSERT(jose_opaque_ok(s, strlen(s), kind) && ref_ok(s, strlen(s), kind),
					"fresh credential %s fails", s);
		FUZZ_ASSERT(!jose_opaque_ok(s, strlen(s), kinds[1 - size % 2]), "fresh %s passes as the other kind", s);
		changed_fails(s, strlen(s), kind, data, size);
		free(s);

		err = fuzz_err();
		FUZZ_ASSERT(jose_opaque_new(kind, fill_fails, &err) == NULL, "a credential without randomness");
		fuzz_check_refusal(&err, "opaque_new");
	}
	free(in);
	return 0;
}
