/*
 * tap.h — a tiny Test Anything Protocol producer for the JOSE unit tests.
 *
 * Each test program calls tap_ok() once per assertion, tap_diag() for
 * "# ..." comment lines, and returns tap_done() from main(): that prints the
 * plan ("1..N") at the end, which TAP allows, and yields the exit status
 * (non-zero when any assertion failed).  tap_skip() reports one test that
 * cannot run; tap_skip_all() prints "1..0 # SKIP reason" when a whole
 * program cannot run.
 */
#ifndef TOKEX_TAP_H
#define TOKEX_TAP_H

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>

static int	tap_count;
static int	tap_failed;

static inline bool tap_ok(bool cond, const char *fmt,...)
			__attribute__((format(printf, 2, 3)));
static inline void tap_diag(const char *fmt,...)
			__attribute__((format(printf, 1, 2)));

static inline bool
tap_ok(bool cond, const char *fmt,...)
{
	va_list		ap;

	tap_count++;
	if (!cond)
		tap_failed++;
	printf("%sok %d - ", cond ? "" : "not ", tap_count);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
	fflush(stdout);
	return cond;
}

static inline void
tap_diag(const char *fmt,...)
{
	va_list		ap;

	fputs("# ", stdout);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
	fflush(stdout);
}

/* One test skipped: counted as passing, with a SKIP directive and the reason. */
static inline void
tap_skip(const char *what, const char *reason)
{
	tap_count++;
	printf("ok %d - %s # SKIP %s\n", tap_count, what, reason);
	fflush(stdout);
}

/* Whole program skipped: an empty plan with a SKIP directive. */
static inline int
tap_skip_all(const char *reason)
{
	printf("1..0 # SKIP %s\n", reason);
	return 0;
}

static inline int
tap_done(void)
{
	printf("1..%d\n", tap_count);
	if (tap_failed)
		tap_diag("failed %d of %d tests", tap_failed, tap_count);
	return tap_failed ? 1 : 0;
}

#endif							/* TOKEX_TAP_H */
