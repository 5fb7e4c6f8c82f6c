/*
 * translate.c — credentials that are not JWTs, made into the claims the
 * exchange decides on, so that the decision, the act chain, the audience
 * binding and the audit row are the same whatever the caller presented:
 *
 *   urn:tokex:token-type:api_key   an agent's or service's API key
 *                                  (tokex.api_key, found by its SHA-256)
 *   a registered token type        an administrator's verifier function
 *                                  (tokex.token_type), run as its registrant
 *   tkx_at_... reference token     tokex's own opaque access token, resolved
 *                                  from its audit row (by SHA-256)
 *
 * The opaque format itself (tkx_<kind>_ + 43 base62 characters + a base62
 * CRC-32, so that a secret scanner can recognise a leaked one offline) is
 * in the PostgreSQL-free core, src/jose/opaque.c, where it is fuzzed.
 */
#include "issue.h"

#include "access/xact.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/resowner.h"
#include "utils/syscache.h"


/* A new opaque credential of kind ("ak", "at"): palloc'd (the format: src/jose/opaque.c). */
char *
tokex_opaque_new(const char *kind)
{
	jose_error	err;
	char	   *m = jose_opaque_new(kind, pg_strong_random, &err);
	char	   *s;

	if (m == NULL)
	{
		if (strcmp(err.detail, "out of memory") == 0)
			ereport(ERROR, (errcode(ERRCODE_OUT_OF_MEMORY), errmsg("out of memory")));
		ereport(ERROR, (errcode(ERRCODE_INTERNAL_ERROR), errmsg("no random bytes for a credential")));
	}
	/* copied without raising, so the malloc'd secret is wiped and freed whatever happens */
	s = MemoryContextAllocExtended(CurrentMemoryContext, strlen(m) + 1, MCXT_ALLOC_NO_OOM);
	if (s)
		strcpy(s, m);
	explicit_bzero(m, strlen(m));
	free(m);
	if (s == NULL)
		ereport(ERROR, (errcode(ERRCODE_OUT_OF_MEMORY), errmsg("out of memory")));
	return s;
}

/* Is s (len bytes) a well-formed opaque credential of kind, checksum included? */
bool
tokex_opaque_ok(const char *s, size_t len, const char *kind)
{
	return jose_opaque_ok(s, len, kind);
}

PG_FUNCTION_INFO_V1(tokex_opaque_new_sql);
Datum
tokex_opaque_new_sql(PG_FUNCTION_ARGS)
{
	char	   *kind = text_to_cstring(PG_GETARG_TEXT_PP(0));

	if (strcmp(kind, "ak") != 0 && strcmp(kind, "at") != 0)
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						errmsg("unknown opaque credential kind \"%s\"", kind)));
	PG_RETURN_TEXT_P(cstring_to_text(tokex_opaque_new(kind)));
}

static Datum
bytea_datum(const uint8 *p, int n)
{
	bytea	   *b = palloc(VARHDRSZ + n);

	SET_VARSIZE(b, VARHDRSZ + n);
	memcpy(VARDATA(b), p, n);
	return PointerGetDatum(b);
}

static int64
epoch(TimestampTz t)
{
	return (int64) timestamptz_to_time_t(t);
}

/* A token made of claims tokex vouches for (not a JWT it verified). */
static TokexToken *
claims_token(json_t *payload, bool own, const char *typ)
{
	TokexToken *t = palloc0(sizeof(TokexToken));

	t->payload = tokex_json_track(payload);
	if (t->payload == NULL)
		ereport(ERROR, (errcode(ERRCODE_OUT_OF_MEMORY), errmsg("out of memory")));
	t->own = own;
	t->iss = json_string_value(json_object_get(payload, "iss"));
	t->sub = json_string_value(json_object_get(payload, "sub"));
	t->typ = typ;
	t->payload_text = tokex_adopt(json_dumps(payload, JSON_COMPACT));
	return t;
}

/* One row (or none) of a query, run as of now. */
static bool
one_row(SPIPlanPtr plan, Datum *values)
{
	int			rc = execute_now(plan, values, NULL, true, 1);

	if (rc != SPI_OK_SELECT)
		elog(ERROR, "tokex: translation query failed: %s", SPI_result_code_string(rc));
	return SPI_processed == 1;
}

static bool
col_null(const char *name)
{
	bool		isnull;

	(void) SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, spi_column(name), &isnull);
	return isnull;
}

static TimestampTz
col_tstz(const char *name)
{
	bool		isnull;

	return DatumGetTimestampTz(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc,
											 spi_column(name), &isnull));
}

static char *
col_text(const char *name, MemoryContext cxt)
{
	MemoryContext old = MemoryContextSwitchTo(cxt);
	char	   *v = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, spi_column(name));

	MemoryContextSwitchTo(old);
	return v;
}


/* ---------------------------------------------------------------------
 * API keys
 * ---------------------------------------------------------------------
 */
static SPIPlanPtr api_key_plan = NULL;

/*
 * A presented API key: its identity, as the claims {iss: tokex, sub: the
 * identity, iat: when the key was made, exp: when it expires}; iat lets an
 * identity's tokens_valid_after retire every key made before it.  NULL
 * (and refused) when the key is malformed, unknown, revoked or expired.
 */
TokexToken *
translate_api_key(Issuance *x, text *token, const char *which)
{
	const char *s = VARDATA_ANY(token);
	size_t		n = VARSIZE_ANY_EXHDR(token);
	uint8		h[32];
	Datum		v[1];
	TokexToken *t = NULL;
	json_t	   *claims;

	if (!tokex_opaque_ok(s, n, "ak"))
	{
		deny(x, "invalid_grant", "%s: not a well-formed tokex API key", which);
		return NULL;
	}
	tokex_sha256(s, n, h);
	v[0] = bytea_datum(h, 32);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "tokex: SPI_connect failed");
	tokex_keep_plan(&api_key_plan,
			  "SELECT k.identity, k.created_at, k.expires_at, k.revoked_at, i.kind "
			  "  FROM tokex.api_key k JOIN tokex.identity i ON i.id OPERATOR(pg_catalog.=) k.identity "
			  " WHERE k.key_sha256 OPERATOR(pg_catalog.=) $1", 1, (Oid[]) {BYTEAOID});
	if (!one_row(api_key_plan, v))
		deny(x, "invalid_grant", "%s: unknown API key", which);
	else if (strcmp(col_text("kind", CurrentMemoryContext), "human") == 0)
		deny(x, "invalid_grant", "%s: API keys are for agents and services, and this one's identity is a person", which);
	else if (!col_null("revoked_at"))
		deny(x, "invalid_grant", "%s: the API key has been revoked", which);
	else if (!col_null("expires_at") && col_tstz("expires_at") <= x->at)
		deny(x, "invalid_grant", "%s: the API key has expired", which);
	else
	{
		MemoryContext old = MemoryContextSwitchTo(x->cxt);

		claims = json_pack("{s:s,s:s,s:I}", "iss", tokex_issuer, "sub", col_text("identity", x->cxt),
						   "iat", (json_int_t) epoch(col_tstz("created_at")));
		if (claims && !col_null("expires_at"))
			json_object_set_new(claims, "exp", json_integer((json_int_t) epoch(col_tstz("expires_at"))));
		t = claims_token(claims, false, NULL);
		MemoryContextSwitchTo(old);
	}
	SPI_finish();
	return t;
}


/* ---------------------------------------------------------------------
 * Token types with a registered verifier
 * ---------------------------------------------------------------------
 */
static SPIPlanPtr token_type_plan = NULL;

/* The verifier of a registered token type and its registrant; false if none. */
static bool
registered_verifier(const char *type, Oid *fn, Oid *role)
{
	Datum		v[1] = {CStringGetTextDatum(type)};
	bool		found;
	bool		isnull;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "tokex: SPI_connect failed");
	tokex_keep_plan(&token_type_plan,
			  "SELECT verifier::pg_catalog.oid AS fn, registered_by::pg_catalog.oid AS role "
			  "  FROM tokex.token_type WHERE token_type OPERATOR(pg_catalog.=) $1", 1, (Oid[]) {TEXTOID});
	found = one_row(token_type_plan, v);
	if (found)
	{
		*fn = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc,
											 spi_column("fn"), &isnull));
		*role = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc,
											   spi_column("role"), &isnull));
	}
	SPI_finish();
	return found;
}

/*
 * Run fn(token) as role, in a subtransaction that is always rolled back
 * once the claims are copied out: whatever the verifier did — a setting
 * changed even for the session (search_path, statement_timeout, read-only),
 * a row written, a NOTIFY, a lock taken in the transaction — is undone, and
 * an error it raised becomes a refusal, not the caller's error (whatever
 * its SQLSTATE: a verifier's own 57014 is no reason to skip the audit row).
 * SECURITY_RESTRICTED_OPERATION: it cannot SET ROLE or create temporary
 * objects either.  Returns the claims' JSON text, or NULL with why.
 */
static char *
run_verifier(Oid fn, Oid role, text *token, char **why, int *sqlstate)
{
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	Oid			save_user;
	int			save_sec;
	char	   *volatile out = NULL;
	volatile bool interrupted = false;
	char		message[256];

	*why = NULL;
	*sqlstate = 0;
	GetUserIdAndSecContext(&save_user, &save_sec);
	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(cxt);
	PG_TRY();
	{
		LOCAL_FCINFO(fcinfo, 1);
		FmgrInfo	flinfo;
		Datum		r;

		SetUserIdAndSecContext(role, save_sec | SECURITY_LOCAL_USERID_CHANGE |
							   SECURITY_RESTRICTED_OPERATION);
		fmgr_info(fn, &flinfo);
		InitFunctionCallInfoData(*fcinfo, &flinfo, 1, InvalidOid, NULL, NULL);
		fcinfo->args[0].value = PointerGetDatum(token);
		fcinfo->args[0].isnull = false;
		r = FunctionCallInvoke(fcinfo);
		SetUserIdAndSecContext(save_user, save_sec);
		if (!fcinfo->isnull)
		{
			Jsonb	   *jb = DatumGetJsonbP(r);

			MemoryContextSwitchTo(cxt);
			out = JsonbToCString(NULL, &jb->root, VARSIZE(jb));
		}
		else
			*why = "the verifier returned NULL";
	}
	PG_CATCH();
	{
		ErrorData  *e;

		SetUserIdAndSecContext(save_user, save_sec);
		MemoryContextSwitchTo(cxt);
		e = CopyErrorData();
		FlushErrorState();
		/* its message is not repeated: it may quote the credential */
		*why = "the verifier raised an error";
		*sqlstate = e->sqlerrcode;
		/*
		 * ... but the caller's statement_timeout or a cancel request that
		 * fired while it ran (raised by ProcessInterrupts, not by the
		 * verifier) cancels the statement, as it would anywhere else: it is
		 * no answer about the credential, and swallowing it would let the
		 * statement run on with its timeout spent.
		 */
		interrupted = e->sqlerrcode == ERRCODE_QUERY_CANCELED && e->funcname != NULL &&
			strcmp(e->funcname, "ProcessInterrupts") == 0;
		if (interrupted)
			strlcpy(message, e->message ? e->message : "canceling statement", sizeof(message));
		FreeErrorData(e);
		out = NULL;
	}
	PG_END_TRY();
	RollbackAndReleaseCurrentSubTransaction();
	MemoryContextSwitchTo(cxt);
	CurrentResourceOwner = owner;
	if (interrupted)
		ereport(ERROR, (errcode(ERRCODE_QUERY_CANCELED), errmsg("%s", message)));
	return out;
}

/* Whom fn runs as: false unless role owns it and it is not SECURITY DEFINER. */
static bool
runs_as(Oid fn, Oid role)
{
	HeapTuple	tup = SearchSysCache1(PROCOID, ObjectIdGetDatum(fn));
	bool		ok;

	if (!HeapTupleIsValid(tup))
		return false;
	ok = ((Form_pg_proc) GETSTRUCT(tup))->proowner == role && !((Form_pg_proc) GETSTRUCT(tup))->prosecdef;
	ReleaseSysCache(tup);
	return ok;
}

/*
 * A credential of a registered token type: the claims its verifier maps it
 * to.  The verifier chooses nothing but the claims: iss (not tokex's own),
 * sub and exp are required; iat, jti, scope and may_act are kept; anything
 * else (act, cnf, sid, ...) is dropped, so the chain, the key binding and
 * the session come only from tokex's own checks.  NULL and refused when the
 * type is unknown or the verifier refuses, raises or answers garbage.
 */
TokexToken *
translate_registered(Issuance *x, text *token, const char *type, const char *which)
{
	static const char *const kept[] = {"iss", "sub", "exp", "iat", "jti", "scope", "may_act"};
	Oid			fn;
	Oid			role;
	char	   *why;
	int			sqlstate;
	char	   *text_claims;
	json_t	   *got;
	json_t	   *claims;
	jose_error	err;
	json_t	   *exp;

	if (!registered_verifier(type, &fn, &role))
	{
		deny(x, "invalid_request", "unsupported %s_type", which);
		return NULL;
	}
	/*
	 * The verifier runs as its registrant, who must still own it (so nobody
	 * else can change what it does) and may still run it; a SECURITY
	 * DEFINER function would run as its owner whatever this says.
	 */
	if (!runs_as(fn, role) || pg_proc_aclcheck(fn, role, ACL_EXECUTE) != ACLCHECK_OK)
	{
		deny(x, "invalid_grant", "%s: the verifier of %s is no longer a function its registrant owns and may run "
			 "(not SECURITY DEFINER)", which, type);
		return NULL;
	}
	text_claims = run_verifier(fn, role, token, &why, &sqlstate);
	if (text_claims == NULL)
	{
		if (sqlstate)
			deny(x, "invalid_grant", "%s: %s (SQLSTATE %s)", which, why, unpack_sql_state(sqlstate));
		else
			deny(x, "invalid_grant", "%s: %s", which, why);
		return NULL;
	}
	got = tokex_json_track(jose_json_parse(text_claims, strlen(text_claims), JOSE_E_PAYLOAD, &err));
	if (!json_is_object(got))
	{
		deny(x, "invalid_grant", "%s: the verifier's answer is not a JSON object of claims", which);
		return NULL;
	}
	exp = json_object_get(got, "exp");
	if (!json_is_string(json_object_get(got, "iss")) || !json_is_string(json_object_get(got, "sub")) ||
		!json_is_number(exp))
	{
		deny(x, "invalid_grant", "%s: the verifier's claims lack iss, sub or exp", which);
		return NULL;
	}
	if (tokex_issuer && strcmp(json_string_value(json_object_get(got, "iss")), tokex_issuer) == 0)
	{
		deny(x, "invalid_grant", "%s: a verifier may not vouch for tokex's own issuer", which);
		return NULL;
	}
	/* exp, nbf and iat as a JWT's: an iat in the future would outrun tokens_valid_after */
	if (jose_jwt_check_claims(got, tokex_now(), tokex_clock_skew, NULL, true, &err) < 0)
	{
		deny(x, "invalid_grant", "%s: %s", which,
			 err.code == JOSE_E_EXPIRED ? "the credential has expired" : err.detail);
		return NULL;
	}
	claims = json_pack("{}");
	for (size_t i = 0; claims && i < lengthof(kept); i++)
	{
		json_t	   *v = json_object_get(got, kept[i]);

		if (v)
			json_object_set(claims, kept[i], v);
	}
	if (claims == NULL)
		ereport(ERROR, (errcode(ERRCODE_OUT_OF_MEMORY), errmsg("out of memory")));
	return claims_token(claims, false, NULL);
}


/* ---------------------------------------------------------------------
 * Reference tokens: the claims a JWT would carry, read from the audit row
 * ---------------------------------------------------------------------
 */
static SPIPlanPtr reference_plan = NULL;

/*
 * The claims of a reference token (tkx_at_...) that tokex issued, from the
 * granted exchange row that carries its hash; NULL if there is none.  The
 * liveness checks (identities, revocations, session, delegations) are the
 * caller's, as for a JWT.  Expired tokens are NULL too.
 */
TokexToken *
translate_reference(const char *s, size_t n)
{
	uint8		h[32];
	Datum		v[1];
	TokexToken *t = NULL;
	MemoryContext cxt = CurrentMemoryContext;

	if (!tokex_opaque_ok(s, n, "at"))
		return NULL;
	tokex_sha256(s, n, h);
	v[0] = bytea_datum(h, 32);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "tokex: SPI_connect failed");
	tokex_keep_plan(&reference_plan,
			  "SELECT a.jti, a.at, a.expires_at, a.subject, a.actor_chain, a.audience, "
			  "       pg_catalog.array_to_string(a.scope, ' ') AS scope, a.client_id, "
			  "       a.subject_issuer, a.subject_sid, a.dpop_jkt, "
			  "       pg_catalog.array_to_json(a.actor_chain)::pg_catalog.text AS chain, "
			  "       COALESCE(a.actor, a.subject) AS current "
			  "  FROM tokex._audit_by_token($1) a "
			  " WHERE a.decision OPERATOR(pg_catalog.=) 'granted'", 1, (Oid[]) {BYTEAOID});
	if (one_row(reference_plan, v) && !col_null("expires_at") && col_tstz("expires_at") > GetCurrentTimestamp())
	{
		MemoryContext old = MemoryContextSwitchTo(cxt);
		json_t	   *claims = json_pack("{s:s,s:s,s:s,s:s,s:I,s:I,s:I}",
									   "iss", tokex_issuer,
									   "sub", col_text("subject", cxt),
									   "aud", col_text("audience", cxt),
									   "jti", col_text("jti", cxt),
									   "iat", (json_int_t) epoch(col_tstz("at")),
									   "nbf", (json_int_t) epoch(col_tstz("at")),
									   "exp", (json_int_t) epoch(col_tstz("expires_at")));

		if (claims == NULL)
			ereport(ERROR, (errcode(ERRCODE_OUT_OF_MEMORY), errmsg("out of memory")));
		if (!col_null("scope"))
			json_object_set_new(claims, "scope", json_string(col_text("scope", cxt)));
		/* as the JWT: the client that asked, else the current actor, else the subject */
		if (!col_null("client_id"))
			json_object_set_new(claims, "client_id", json_string(col_text("client_id", cxt)));
		else
			json_object_set_new(claims, "client_id", json_string(col_text("current", cxt)));
		if (!col_null("dpop_jkt"))
			json_object_set_new(claims, "cnf", json_pack("{s:s}", "jkt", col_text("dpop_jkt", cxt)));
		/* only a tokex session; an IdP's sid means nothing here (as in mint.c) */
		if (!col_null("subject_sid") && !col_null("subject_issuer") &&
			strcmp(col_text("subject_issuer", cxt), tokex_issuer) == 0)
			json_object_set_new(claims, "sid", json_string(col_text("subject_sid", cxt)));
		if (!col_null("chain"))
		{
			/* act nests the current actor outermost (RFC 8693 §4.1), as in the JWT */
			const char *chain = col_text("chain", cxt);
			jose_error	err;
			json_t	   *ids = tokex_json_track(jose_json_parse(chain, strlen(chain), JOSE_E_PAYLOAD, &err));
			json_t	   *act = NULL;

			for (size_t i = 0; ids && i < json_array_size(ids); i++)
			{
				json_t	   *a = json_pack("{s:O}", "sub", json_array_get(ids, i));

				if (a && act)
					json_object_set_new(a, "act", act);
				act = a;
			}
			if (act)
				json_object_set_new(claims, "act", act);
		}
		t = claims_token(claims, true, "at+jwt");
		MemoryContextSwitchTo(old);
	}
	SPI_finish();
	return t;
}
