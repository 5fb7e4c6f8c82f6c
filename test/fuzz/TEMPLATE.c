/*
 * TEMPLATE.c — a new harness, to copy as fuzz_<name>.c (the Makefile and
 * run.sh pick up every fuzz_*.c; this file is not built).  Seeds go in
 * corpus/<name>/ (seed-* made by make-corpus.py, regress-* for inputs that
 * once found a defect).  See README.md.
 *
 * A parser must live in the PostgreSQL-free core (src/jose/ or a sibling
 * directory built the same way) to be fuzzed here: move its pure part there
 * and leave a thin wrapper in src/, as opaque.c and dpop.c were; a parser
 * that needs PostgreSQL is fuzzed through SQL instead (test/limits/).
 *
 * Say in the banner what the parser is, who reaches it, and the oracles:
 * what must hold of every input it accepts, and of every refusal.
 */
#include "fuzz.h"

int			LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* a private copy without a terminator: ASan sees any read past size */
	char	   *in = fuzz_copy(data, size);
	jose_error	err = fuzz_err();


	/*
	 * Example for a credential "xyz_<id>_<secret>" (fuzz_opaque.c and
	 * fuzz_dpop.c are real ones):
	 *
	 *	jose_xyz k;
	 *	if (jose_xyz_parse(in, size, &k, &err) == 0)
	 *	{
	 *		FUZZ_ASSERT(size >= 4 && memcmp(in, "xyz_", 4) == 0, "prefix");
	 *		FUZZ_ASSERT(k.id_len + k.secret_len < size, "parts inside the input");
	 *		... re-format k and compare with the input (one spelling per key) ...
	 *		jose_xyz_clear(&k);
	 *	}
	 *	else
	 *		fuzz_check_refusal(&err, "xyz_parse");
	 */
	(void) err;

	free(in);
	return 0;
}
