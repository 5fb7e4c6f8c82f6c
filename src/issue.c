/*
 * issue.c — what every issuance shares: a new issuance and its id, refusing
 * (deny), reading the presented tokens (the act chain, revocation keys),
 * and the SPI and array helpers of the steps.
 */
#include "issue.h"

#include "catalog/pg_type.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/snapmgr.h"

/*
 * A UUID version 7 (RFC 9562 §5.7): the time in milliseconds, then 74
 * random bits.  The exchange id is the token's jti and the audit row's key:
 * ordered by time, the rows of a partition go into the right-hand pages of
 * its unique indexes, and the rows of recent tokens, the ones presented and
 * introspected, share a few hot pages, where random (version 4) ids spread
 * both over the whole index, most of it out of shared_buffers once the
 * history is large.  The time a v7 id tells is the token's iat.
 */
void
tokex_uuid7(pg_uuid_t *u, TimestampTz at)
{
	int64		unix_us = at + (int64) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * SECS_PER_DAY * USECS_PER_SEC;
	uint64		ms = (uint64) Max(unix_us, 0) / 1000;

	/*
	 * Random bytes are drawn for 64 ids at a time: one call of the
	 * generator costs as much for 640 bytes as for 10, and the id is no
	 * secret (it is the token's jti), only unpredictable.
	 */
	static uint8 pool[64 * (UUID_LEN - 6)];
	static int	used = lengthof(pool);

	if (used == lengthof(pool))
	{
		if (!pg_strong_random(pool, sizeof(pool)))
			ereport(ERROR, (errcode(ERRCODE_INTERNAL_ERROR), errmsg("no random bytes for the exchange id")));
		used = 0;
	}
	memcpy(u->data + 6, pool + used, UUID_LEN - 6);
	used += UUID_LEN - 6;
	for (int i = 0; i < 6; i++)
		u->data[i] = (uint8) (ms >> (8 * (5 - i)));
	u->data[6] = (u->data[6] & 0x0f) | 0x70;	/* version 7 */
	u->data[8] = (u->data[8] & 0x3f) | 0x80;	/* the RFC 9562 variant */
}

Issuance *
issuance_new(IssueOp op)
{
	Issuance   *x;

	tokex_check_version();
	x = palloc0(sizeof(Issuance));
	x->cxt = CurrentMemoryContext;
	x->op = op;
	x->at = GetCurrentTimestamp();
	tokex_uuid7(&x->exchange_id, x->at);
	return x;
}

void
deny(Issuance *x, const char *error, const char *fmt,...)
{
	StringInfoData buf;
	MemoryContext old;

	if (x->error)
		return;					/* the first reason stands */
	/* the reason is read after SPI_finish, so not in SPI's context */
	old = MemoryContextSwitchTo(x->cxt);
	initStringInfo(&buf);
	for (;;)
	{
		va_list		args;
		int			needed;

		va_start(args, fmt);
		needed = appendStringInfoVA(&buf, fmt, args);
		va_end(args);
		if (needed == 0)
			break;
		enlargeStringInfo(&buf, needed);
	}
	MemoryContextSwitchTo(old);
	x->error = error;
	x->reason = buf.data;
}

/*
 * The decision and token-state queries are inlined SQL functions: planning
 * them costs more than running them, so they always use one generic plan,
 * made once per backend (parameters only ever select rows by key).
 */
SPIPlanPtr
tokex_prepare(const char *sql, int nargs, Oid *types)
{
	return SPI_prepare_cursor(sql, nargs, types, CURSOR_OPT_GENERIC_PLAN);
}

/* *slot, prepared (tokex_prepare) and kept for the backend's life on first use. */
SPIPlanPtr
tokex_keep_plan(SPIPlanPtr *slot, const char *sql, int nargs, Oid *types)
{
	if (*slot == NULL)
	{
		SPIPlanPtr	p = tokex_prepare(sql, nargs, types);

		if (p == NULL || SPI_keepplan(p) != 0)
			elog(ERROR, "tokex: cannot prepare a query: %s", SPI_result_code_string(SPI_result));
		*slot = p;
	}
	return *slot;
}

/*
 * Decisions are judged as of the call: the latest committed state (not the
 * snapshot of a REPEATABLE READ or SERIALIZABLE transaction opened before a
 * revocation committed) and the clock (not the transaction's start).  The
 * caller's own uncommitted changes stay visible.
 */
int
execute_now(SPIPlanPtr plan, Datum *values, const char *nulls, bool read_only, long tcount)
{
	return SPI_execute_snapshot(plan, values, nulls, GetLatestSnapshot(), InvalidSnapshot,
								read_only, false, tcount);
}


/* The column of the last SPI result named name; ERROR if there is none. */
int
spi_column(const char *name)
{
	int			n = SPI_fnumber(SPI_tuptable->tupdesc, name);

	if (n <= 0)
		elog(ERROR, "tokex: query result has no column \"%s\"", name);
	return n;
}

/* RFC 6749 §3.3 scope-token: %x21 / %x23-5B / %x5D-7E, space separated */
bool
split_scope(const char *s, char **out, int *n)
{
	char	   *copy;
	char	   *tok;
	char	   *save = NULL;

	*n = 0;
	/* bounded before it is copied: at most MAX_SCOPES tokens are read anyway */
	if (strnlen(s, MAX_SCOPE_TEXT + 1) > MAX_SCOPE_TEXT)
		return false;
	copy = pstrdup(s);
	for (const char *p = s; *p; p++)
		if (*p != ' ' && (*p < 0x21 || *p > 0x7e || *p == '"' || *p == '\\'))
			return false;
	for (tok = strtok_r(copy, " ", &save); tok; tok = strtok_r(NULL, " ", &save))
	{
		if (*n >= MAX_SCOPES)
			return false;
		out[(*n)++] = tok;
	}
	return *n > 0;
}


Datum
text_array(char **items, int n)
{
	Datum	   *d = palloc(sizeof(Datum) * (n ? n : 1));

	for (int i = 0; i < n; i++)
		d[i] = CStringGetTextDatum(items[i]);
	return PointerGetDatum(construct_array(d, n, TEXTOID, -1, false, TYPALIGN_INT));
}

Datum
tstz_array(TimestampTz *items, int n)
{
	Datum	   *d = palloc(sizeof(Datum) * (n ? n : 1));

	for (int i = 0; i < n; i++)
		d[i] = TimestampTzGetDatum(items[i]);
	return PointerGetDatum(construct_array(d, n, TIMESTAMPTZOID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
}

/* text[] from a datum into C strings in the current context */
int
untext_array(Datum arr, char ***out)
{
	Datum	   *elems;
	bool	   *nulls;
	int			n;

	deconstruct_array(DatumGetArrayTypeP(arr), TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, &n);
	*out = palloc(sizeof(char *) * (n ? n : 1));
	for (int i = 0; i < n; i++)
		(*out)[i] = nulls[i] ? NULL : TextDatumGetCString(elems[i]);
	return n;
}

char *
scope_string(char **scopes, int n)
{
	StringInfoData buf;

	initStringInfo(&buf);
	for (int i = 0; i < n; i++)
		appendStringInfo(&buf, "%s%s", i ? " " : "", scopes[i]);
	return buf.data;
}


static TimestampTz
claim_time(json_t *payload, const char *name)
{
	json_t	   *v = json_object_get(payload, name);

	/* a token without iat counts as older than any revocation */
	if (!json_is_number(v))
		return DT_NOBEGIN;
	return time_t_to_timestamptz((pg_time_t) json_number_value(v));
}


/*
 * The chain comes from the tokens, never from which parameters were sent: a
 * subject token carrying act is already delegated, and its actors stay in
 * the chain whether or not a new actor_token is added.
 */
void
build_chain(Issuance *x)
{
	json_t	   *a;
	int			nprior = 0;
	char	   *prior_iss[MAX_CHAIN];
	char	   *prior_sub[MAX_CHAIN];
	TimestampTz iat = claim_time(x->subj->payload, "iat");

	if (x->subj->sub == NULL)
	{
		deny(x, "invalid_grant", "subject token has no sub");
		return;
	}
	if (x->subj->own && json_object_get(x->subj->payload, "sid"))
	{
		json_t	   *sid = json_object_get(x->subj->payload, "sid");

		if (!json_is_string(sid) || !tokex_parse_uuid(json_string_value(sid), &x->sid))
		{
			deny(x, "invalid_grant", "subject token sid is malformed");
			return;
		}
		x->has_sid = true;
	}
	x->chain_iss[0] = pstrdup(x->subj->iss);
	x->chain_sub[0] = pstrdup(x->subj->sub);
	x->chain_iat[0] = iat;
	x->nchain = 1;

	/* act nests the current actor outermost (RFC 8693 §4.1) */
	for (a = json_object_get(x->subj->payload, "act"); a; a = json_object_get(a, "act"))
	{
		json_t	   *sub = json_object_get(a, "sub");
		json_t	   *iss = json_object_get(a, "iss");

		if (!json_is_object(a) || !json_is_string(sub) || (iss && !json_is_string(iss)))
		{
			deny(x, "invalid_grant", "subject token act claim is malformed");
			return;
		}
		if (nprior + 2 >= MAX_CHAIN)
		{
			deny(x, "invalid_grant", "actor chain longer than tokex.max_chain_depth (%d)",
				 tokex_max_chain_depth);
			return;
		}
		/* an issuer vouches only for its own namespace */
		if (iss && strcmp(json_string_value(iss), x->subj->iss) != 0)
		{
			deny(x, "invalid_grant", "subject token act names an identity of another issuer");
			return;
		}
		prior_iss[nprior] = pstrdup(x->subj->iss);
		prior_sub[nprior] = pstrdup(json_string_value(sub));
		nprior++;
	}
	for (int i = nprior - 1; i >= 0; i--)
	{
		x->chain_iss[x->nchain] = prior_iss[i];
		x->chain_sub[x->nchain] = prior_sub[i];
		x->chain_iat[x->nchain] = iat;
		x->nchain++;
	}
	if (x->act)
	{
		if (x->act->sub == NULL)
		{
			deny(x, "invalid_grant", "actor token has no sub");
			return;
		}
		x->chain_iss[x->nchain] = pstrdup(x->act->iss);
		x->chain_sub[x->nchain] = pstrdup(x->act->sub);
		x->chain_iat[x->nchain] = claim_time(x->act->payload, "iat");
		x->nchain++;
	}
	/* checked on the whole chain, so the audit row names the refused actor */
	if (x->nchain - 1 > tokex_max_chain_depth)
		deny(x, "invalid_grant", "actor chain longer than tokex.max_chain_depth (%d)",
			 tokex_max_chain_depth);
}


/*
 * What revocation needs of a presented token: its key (issuer, jti), and
 * for a token of ours, the jti that names its audit row.  A token of ours
 * whose jti is no UUID has no audit row, so it was never issued.
 */
bool
note_presented(Issuance *x, TokexToken *t, const char *which)
{
	json_t	   *jti = json_object_get(t->payload, "jti");
	char	   *text = NULL;

	if (jti)
	{
		bytea	   *k;

		text = tokex_jti_text(jti);
		if (text == NULL)
		{
			deny(x, "invalid_grant", "%s: jti is neither a string nor a number", which);
			return false;
		}
		k = palloc(VARHDRSZ + 32);
		SET_VARSIZE(k, VARHDRSZ + 32);
		tokex_jti_key(t->iss, text, (uint8 *) VARDATA(k));
		x->revkeys[x->nrevkeys++] = k;
	}
	if (t->own)
	{
		if (text == NULL || !tokex_parse_uuid(text, &x->own_jti[x->nown]))
		{
			deny(x, "invalid_grant", "%s: a token of tokex's without its audit row was never issued", which);
			return false;
		}
		x->nown++;
	}
	return true;
}

/*
 * The last steps of every issuance: mint the token (if nothing refused it,
 * and only once its row can be made durable), write the audit row, granted
 * or denied, and answer.  Called inside SPI, which it closes.
 */
Datum
issue_finish(Issuance *x)
{
	if (!x->error)
	{
		/* refuse before signing anything whose row could not be made durable */
		tokex_audit_require_durable();
		mint(x);
	}
	audit(x);
	SPI_finish();
	return respond(x);
}
