/*
 * exchange.c — tokex.exchange: RFC 8693 token exchange for agents.
 *
 * The pipeline, one named step each (exchange() below calls them in order):
 *
 *   parse_request -> check_params -> verify_subject -> verify_actor
 *   -> build_chain -> read_may_act -> resolve_sql_client -> check_dpop
 *   -> decide -> check_may_act -> the verdict -> check_rebinding
 *   -> require_dpop -> choose_format -> mint -> audit -> respond
 *
 * A client's mistake or a denial is returned as RFC 8693 §2.2.2 JSON, never
 * raised; its audit row is committed like a grant's.
 */
#include "issue.h"

#include "catalog/pg_type.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"


static char *
arg_cstring(FunctionCallInfo fcinfo, int n)
{
	return PG_ARGISNULL(n) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(n));
}

static void
sha256(const text *t, uint8 out[32])
{
	tokex_sha256(VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t), out);
}

static bool
jwt_type(const char *t)
{
	return strcmp(t, TT_JWT) == 0 || strcmp(t, TT_ACCESS) == 0 || strcmp(t, TT_ID) == 0;
}

/* A token type URI: tokex's, or one an administrator registered (looked up when verifying). */
static bool
token_type_ok(const char *t)
{
	return jwt_type(t) || strcmp(t, TT_API_KEY) == 0 || strchr(t, ':') != NULL;
}

/* An access or transaction token minted for a resource (not a credential of anyone's). */
static bool
resource_token(const TokexToken *t)
{
	return t->own && t->typ && (strcmp(t->typ, "at+jwt") == 0 || strcmp(t->typ, "txntoken+jwt") == 0);
}


/* Step 1: parameters (RFC 8693 §2.1). */
static void
check_params(Issuance *x)
{
	if (x->subject_token == NULL || VARSIZE_ANY_EXHDR(x->subject_token) == 0)
	{
		deny(x, "invalid_request", "subject_token is required");
		return;
	}
	if (x->subject_token_type == NULL)
	{
		deny(x, "invalid_request", "subject_token_type is required");
		return;
	}
	if (!token_type_ok(x->subject_token_type))
	{
		deny(x, "invalid_request", "unsupported subject_token_type");
		return;
	}
	if ((x->actor_token != NULL) != (x->actor_token_type != NULL))
	{
		deny(x, "invalid_request", "actor_token and actor_token_type go together");
		return;
	}
	if (x->actor_token_type && !token_type_ok(x->actor_token_type))
	{
		deny(x, "invalid_request", "unsupported actor_token_type");
		return;
	}
	/* what is issued depends on the resource too (choose_format, after the decision) */
	if (x->requested_token_type && strcmp(x->requested_token_type, TT_ACCESS) != 0 &&
		strcmp(x->requested_token_type, TT_JWT) != 0 && strcmp(x->requested_token_type, TT_TXN) != 0 &&
		strcmp(x->requested_token_type, TT_CREDENTIAL) != 0)
	{
		deny(x, "invalid_request", "unsupported requested_token_type");
		return;
	}
	if (x->scope && !split_scope(x->scope, x->requested, &x->nrequested))
	{
		deny(x, "invalid_request", "scope is not a list of scope tokens");
		return;
	}
	if (x->audience == NULL && x->resource == NULL)
	{
		deny(x, "invalid_request", "audience or resource is required");
		return;
	}
	if (x->resource && strchr(x->resource, ':') == NULL)
	{
		deny(x, "invalid_request", "resource must be an absolute URI");
		return;
	}
}

/*
 * may_act (RFC 8693 §4.4): an object or an array of objects naming who may
 * act.  Read here; tokex.decide resolves each entry to an identity, and
 * check_may_act compares identities, so an agent known under several
 * issuers is admitted whichever credential it presents.
 */
static void
read_may_act(Issuance *x)
{
	json_t	   *m = json_object_get(x->subj->payload, "may_act");
	size_t		n;

	if (m == NULL)
		return;
	if (json_is_object(m))
		n = 1;
	else if (json_is_array(m) && json_array_size(m) > 0 && json_array_size(m) <= 64)
		n = json_array_size(m);
	else
	{
		deny(x, "invalid_grant", "subject token may_act claim is malformed");
		return;
	}
	x->may_iss = palloc(sizeof(char *) * n);
	x->may_sub = palloc(sizeof(char *) * n);
	for (size_t i = 0; i < n; i++)
	{
		json_t	   *e = json_is_object(m) ? m : json_array_get(m, i);
		json_t	   *sub = json_object_get(e, "sub");
		json_t	   *iss = json_object_get(e, "iss");

		if (!json_is_object(e) || !json_is_string(sub) || (iss && !json_is_string(iss)))
		{
			deny(x, "invalid_grant", "subject token may_act claim is malformed");
			return;
		}
		/* without iss, may_act names an identity of the subject token's issuer */
		x->may_iss[i] = pstrdup(iss ? json_string_value(iss) : x->subj->iss);
		x->may_sub[i] = pstrdup(json_string_value(sub));
	}
	x->nmay = (int) n;
}

static void
check_may_act(Issuance *x)
{
	const char *actor_id;

	if (json_object_get(x->subj->payload, "may_act") == NULL)
		return;
	if (x->act == NULL)
	{
		/* a delegated chain re-exchanged without a new actor adds no one */
		if (x->nchain > 1)
			return;
		deny(x, "invalid_request", "the subject token names who may act (may_act): an actor_token is required");
		return;
	}
	actor_id = x->chain_id[x->nchain - 1];
	for (int i = 0; i < x->nmay; i++)
	{
		/* the same identity, whichever issuer names it */
		if (x->may_id && x->may_id[i] && actor_id && strcmp(x->may_id[i], actor_id) == 0)
			return;
		/* an entry that names no known identity matches only its exact pair */
		if ((x->may_id == NULL || x->may_id[i] == NULL) &&
			strcmp(x->may_sub[i], x->act->sub) == 0 && strcmp(x->may_iss[i], x->act->iss) == 0)
			return;
	}
	deny(x, "invalid_grant", "actor \"%s\" is not admitted by the subject token's may_act", x->act->sub);
}

/*
 * A token bound to a key (RFC 7800 cnf) is exchanged only by whoever holds
 * that key: one bound to a DPoP key (cnf.jkt) with a proof signed by it
 * (RFC 9449 §7: token exchange too), and the token minted from it is bound
 * to the same key, hop after hop; one bound any other way never.
 */
static void
check_binding(Issuance *x, TokexToken *t, const char *which)
{
	bool		other;
	const char *jkt = t ? dpop_bound_jkt(t, &other) : NULL;

	if (t == NULL || x->error)
		return;
	if (other)
		deny(x, "invalid_grant", "%s: a token bound by cnf to something other than a DPoP key "
			 "is exchanged only with proof of possession tokex does not verify", which);
	else if (jkt && x->dpop.jkt[0] == '\0')
		deny(x, "invalid_grant", "%s is bound to a DPoP key: exchange it with a DPoP proof signed by that key", which);
	else if (jkt && strcmp(jkt, x->dpop.jkt) != 0)
		deny(x, "invalid_grant", "%s is bound to another DPoP key than the proof's", which);
}

/*
 * Step: the DPoP proof, if any (RFC 9449 §4.3): for POST to the token
 * endpoint the metadata advertises, not replayed; then every presented
 * token bound to a key must be bound to the proof's.  Inside SPI: the
 * proof's jti is remembered in the caller's transaction.
 */
static void
check_dpop(Issuance *x)
{
	if (x->dpop_proof)
	{
		const char *why = dpop_check(VARDATA_ANY(x->dpop_proof), VARSIZE_ANY_EXHDR(x->dpop_proof),
									 "POST", dpop_token_endpoint(), NULL, 0, &x->dpop);

		if (why)
		{
			x->dpop.jkt[0] = '\0';
			deny(x, "invalid_dpop_proof", "%s", why);
			return;
		}
		if (tokex_dpop_nonce)
		{
			/* a fresh nonce for every answer to a DPoP request (RFC 9449 §8.2) */
			MemoryContext old = MemoryContextSwitchTo(x->cxt);

			x->dpop_nonce = dpop_nonce_new();
			MemoryContextSwitchTo(old);
			if (!dpop_nonce_ok(x->dpop.nonce))
			{
				x->dpop.jkt[0] = '\0';
				deny(x, "use_dpop_nonce", "the DPoP proof must carry the server's nonce (dpop_nonce, DPoP-Nonce)");
				return;
			}
		}
		if (!dpop_remember(&x->dpop))
		{
			x->dpop.jkt[0] = '\0';
			deny(x, "invalid_dpop_proof", "the proof's jti was already used");
			return;
		}
	}
	check_binding(x, x->subj, "subject_token");
	check_binding(x, x->act, "actor_token");
}

/*
 * request_details / request_context: a JSON object of at most
 * REQUEST_OBJECT_MAX bytes (it is copied into the transaction token), else
 * the client's mistake: refused (invalid_request) and audited, not raised.
 */
#define REQUEST_OBJECT_MAX 8192

static json_t *
request_object(Issuance *x, FunctionCallInfo fcinfo, int arg, const char *name)
{
	Jsonb	   *jb;
	char	   *s;
	jose_error	err;
	json_t	   *j;

	if (PG_ARGISNULL(arg))
		return NULL;
	jb = PG_GETARG_JSONB_P(arg);
	s = JB_ROOT_IS_OBJECT(jb) ? JsonbToCString(NULL, &jb->root, VARSIZE(jb)) : NULL;
	if (s == NULL || strlen(s) > REQUEST_OBJECT_MAX)
	{
		deny(x, "invalid_request", "%s must be a JSON object of at most %d bytes", name, REQUEST_OBJECT_MAX);
		return NULL;
	}
	j = tokex_json_track(jose_json_parse(s, strlen(s), JOSE_E_PAYLOAD, &err));
	if (j == NULL)
		deny(x, "invalid_request", "%s cannot be read (%s)", name, jose_json_reason_text(err.json_reason));
	return j;
}

/* Step: the request, as RFC 8693 §2.1 names its parameters. */
static void
parse_request(Issuance *x, FunctionCallInfo fcinfo)
{
	x->subject_token = PG_ARGISNULL(0) ? NULL : PG_GETARG_TEXT_PP(0);
	x->subject_token_type = arg_cstring(fcinfo, 1);
	x->actor_token = PG_ARGISNULL(2) ? NULL : PG_GETARG_TEXT_PP(2);
	x->actor_token_type = arg_cstring(fcinfo, 3);
	x->audience = arg_cstring(fcinfo, 4);
	x->resource = arg_cstring(fcinfo, 5);
	x->scope = arg_cstring(fcinfo, 6);
	x->requested_token_type = arg_cstring(fcinfo, 7);
	x->client_id = arg_cstring(fcinfo, 8);
	x->dpop_proof = PG_ARGISNULL(11) ? NULL : PG_GETARG_TEXT_PP(11);
	x->request_details = request_object(x, fcinfo, 9, "request_details");
	x->request_context = request_object(x, fcinfo, 10, "request_context");
	if (x->subject_token)
		sha256(x->subject_token, x->subject_hash);
	if (x->actor_token)
		sha256(x->actor_token, x->actor_hash);
	if (tokex_issuer == NULL || tokex_issuer[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("tokex.issuer is not set"),
				 errhint("Set it with ALTER DATABASE ... SET tokex.issuer = 'https://...'.")));
}

/*
 * A presented credential as the claims it stands for; NULL (and refused)
 * when it does not verify.  A JWT is verified (or, given as an access token,
 * a tokex reference token is resolved); an API key or a registered token
 * type is translated (src/translate.c).
 */
static TokexToken *
verify_presented(Issuance *x, text *token, const char *type, const char *which)
{
	const char *s = VARDATA_ANY(token);
	size_t		n = VARSIZE_ANY_EXHDR(token);
	jose_error	err;
	TokexToken *t;

	if (strcmp(type, TT_API_KEY) == 0)
		return translate_api_key(x, token, which);
	if (!jwt_type(type))
		return translate_registered(x, token, type, which);
	if (strcmp(type, TT_ACCESS) == 0 && n > 7 && strncmp(s, "tkx_at_", 7) == 0)
	{
		t = translate_reference(s, n);
		if (t == NULL)
			deny(x, "invalid_grant", "%s: not a live tokex reference token", which);
		return t;
	}
	t = tokex_verify(s, n, NULL, &err);
	if (t == NULL)
		deny(x, "invalid_grant", "%s: %s", which, err.detail);
	return t;
}

/* Step: the subject token verifies, is not revoked by jti, and is not key-bound. */
static void
verify_subject(Issuance *x)
{
	x->subj = verify_presented(x, x->subject_token, x->subject_token_type, "subject_token");
	/*
	 * A transaction token records a call (and rides beside a released
	 * credential into the downstream's logs): it is exchanged for nothing.
	 */
	if (x->subj && x->subj->own && x->subj->typ && strcmp(x->subj->typ, "txntoken+jwt") == 0)
		deny(x, "invalid_grant", "subject_token: a transaction token is not exchanged again");
	else if (x->subj)
		note_presented(x, x->subj, "subject_token");
}

/*
 * Step: the actor token verifies and is an actor credential: not an access
 * token tokex minted for a resource, not a session credential or a
 * delegated token (those name someone else), not key-bound.
 */
static void
verify_actor(Issuance *x)
{
	x->act = verify_presented(x, x->actor_token, x->actor_token_type, "actor_token");
	if (x->act == NULL)
		return;
	if (resource_token(x->act))
		deny(x, "invalid_grant", "actor_token: an access token minted for a resource is not an actor credential");
	else if (json_object_get(x->act->payload, "sid") || json_object_get(x->act->payload, "may_act") ||
			 json_object_get(x->act->payload, "act"))
		deny(x, "invalid_grant", "actor_token: a session or delegated token is not an actor credential");
	else
		note_presented(x, x->act, "actor_token");
}

/*
 * A tokex access token is a bearer credential for its audience.  Whoever
 * received it (that resource server) may re-exchange it to narrow it, but
 * reaching another audience takes a new actor with its own credential:
 * otherwise any resource server could move a person's token sideways.
 */
static void
check_rebinding(Issuance *x)
{
	json_t	   *aud;

	if (x->act || !resource_token(x->subj))
		return;
	aud = json_object_get(x->subj->payload, "aud");
	if (!json_is_string(aud) || x->target == NULL || strcmp(json_string_value(aud), x->target) != 0)
		deny(x, "invalid_target",
			 "an access token is re-exchanged without a new actor only for its own audience");
}


/*
 * Step: what to issue.  The resource decides the format (token_format);
 * requested_token_type (RFC 8693 §2.1) may ask for a JWT or a transaction
 * token where the resource takes JWTs, and for nothing else than what the
 * resource takes.
 */
static void
choose_format(Issuance *x)
{
	const char *req = x->requested_token_type;
	const char *fmt = x->token_format ? x->token_format : "jwt";

	if (strcmp(fmt, "jwt") == 0 && req && strcmp(req, TT_TXN) == 0)
		x->format = FMT_TXN, x->issued_type = TT_TXN;
	else if (strcmp(fmt, "jwt") == 0 && (req == NULL || strcmp(req, TT_ACCESS) == 0 || strcmp(req, TT_JWT) == 0))
		x->format = FMT_JWT, x->issued_type = req && strcmp(req, TT_JWT) == 0 ? TT_JWT : TT_ACCESS;
	else if (strcmp(fmt, "reference") == 0 && (req == NULL || strcmp(req, TT_ACCESS) == 0))
		x->format = FMT_REFERENCE, x->issued_type = TT_ACCESS;
	else if (strcmp(fmt, "txn_token") == 0 && (req == NULL || strcmp(req, TT_TXN) == 0 || strcmp(req, TT_ACCESS) == 0))
		x->format = FMT_TXN, x->issued_type = TT_TXN;
	else if (strcmp(fmt, "credential") == 0 && (req == NULL || strcmp(req, TT_CREDENTIAL) == 0 || strcmp(req, TT_ACCESS) == 0))
		x->format = FMT_CREDENTIAL, x->issued_type = TT_CREDENTIAL;
	else
		deny(x, "invalid_request", "resource \"%s\" takes %s tokens, not %s", x->target, fmt, req);
}

/*
 * Who the client of a SQL call is, from something the caller cannot choose:
 * its roles.  The clients it may act for are those with a db_roles entry
 * that its login (session user) or its current role is a member of — the
 * login too (unless a superuser), so SET ROLE to a role mapped to nothing
 * escapes nothing.  With one such client it is that client; with several
 * it must name one (client_id), and it may name only those.  Once any
 * client maps roles, a caller mapped to none is refused (fail closed);
 * before, every caller acts as no client.  Superusers may name any client or none.  The HTTP face
 * authenticates the client itself and calls tokex._exchange_for_client,
 * which no role may call directly.
 */
static SPIPlanPtr client_plan = NULL;

static void
resolve_sql_client(Issuance *x)
{
	Oid			caller = GetOuterUserId();
	Datum		v[2];
	char	  **mine = NULL;
	int			n = 0;
	bool		isnull;
	bool		any_mapping;
	bool		named_ok = false;

	if (superuser_arg(caller))
		return;
	if (client_plan == NULL)
	{
		Oid			types[2] = {OIDOID, OIDOID};
		SPIPlanPtr	p = tokex_prepare(
			"SELECT pg_catalog.array_agg(c.client_id ORDER BY c.client_id) FILTER (WHERE EXISTS ("
			"         SELECT 1 FROM pg_catalog.unnest(c.db_roles) rn "
			"           JOIN pg_catalog.pg_roles r ON r.rolname OPERATOR(pg_catalog.=) rn "
			"          WHERE pg_catalog.pg_has_role($1, r.oid, 'MEMBER') "
			"             OR pg_catalog.pg_has_role($2, r.oid, 'MEMBER'))) AS mine, "
			"       pg_catalog.count(*) OPERATOR(pg_catalog.>) 0 AS any_mapping "
			"  FROM tokex.client c WHERE c.db_roles IS NOT NULL", 2, types);

		if (p == NULL || SPI_keepplan(p) != 0)
			elog(ERROR, "tokex: cannot prepare the client query: %s", SPI_result_code_string(SPI_result));
		client_plan = p;
	}
	/* a superuser's session that SET ROLE to an app role acts as that role */
	v[0] = ObjectIdGetDatum(superuser_arg(GetSessionUserId()) ? caller : GetSessionUserId());
	v[1] = ObjectIdGetDatum(caller);
	if (execute_now(client_plan, v, NULL, true, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "tokex: client query failed");
	any_mapping = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc,
											 spi_column("any_mapping"), &isnull));
	{
		Datum		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, spi_column("mine"), &isnull);
		MemoryContext old = MemoryContextSwitchTo(x->cxt);

		if (!isnull)
			n = untext_array(d, &mine);
		MemoryContextSwitchTo(old);
	}
	for (int i = 0; i < n && x->client_id; i++)
		if (strcmp(mine[i], x->client_id) == 0)
			named_ok = true;
	if (x->client_id && !named_ok)
		deny(x, "unauthorized_client", "role \"%s\" may not act for client \"%s\"",
			 GetUserNameFromId(caller, false), x->client_id);
	else if (x->client_id == NULL && n > 1)
		deny(x, "invalid_request", "role \"%s\" acts for several clients: client_id is required",
			 GetUserNameFromId(caller, false));
	else if (x->client_id == NULL && n == 1)
		x->client_id = mine[0];
	else if (x->client_id == NULL && any_mapping)
		deny(x, "unauthorized_client", "role \"%s\" acts for no client (tokex.client.db_roles)",
			 GetUserNameFromId(caller, false));
}


static Datum
exchange(FunctionCallInfo fcinfo, bool sql_face)
{
	Issuance   *x = issuance_new(OP_EXCHANGE);

	x->sql_face = sql_face;
	parse_request(x, fcinfo);
	if (!x->error)
		check_params(x);
	if (!x->error)
		verify_subject(x);
	if (!x->error && x->actor_token)
		verify_actor(x);
	if (!x->error)
		build_chain(x);
	if (!x->error)
		read_may_act(x);
	if (!x->error && x->audience && strchr(x->audience, ' '))
		deny(x, "invalid_target", "exactly one audience may be requested");

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "tokex: SPI_connect failed");
	if (!x->error && sql_face)
		resolve_sql_client(x);
	if (!x->error)
		check_dpop(x);
	if (!x->error)
		decide(x);
	if (!x->error)
		check_may_act(x);
	if (!x->error && x->verdict_error)
		deny(x, x->verdict_error, "%s", x->verdict_reason);
	if (!x->error)
		check_rebinding(x);
	if (!x->error && x->require_dpop && x->dpop.jkt[0] == '\0')
		deny(x, "invalid_request", "resource \"%s\" takes only DPoP-bound tokens: a DPoP proof is required",
			 x->target);
	if (!x->error)
		choose_format(x);
	PG_RETURN_DATUM(issue_finish(x));
}

PG_FUNCTION_INFO_V1(tokex_exchange);
Datum
tokex_exchange(PG_FUNCTION_ARGS)
{
	return exchange(fcinfo, true);
}

/* tokex._exchange_for_client: the HTTP face, which authenticated the client. */
PG_FUNCTION_INFO_V1(tokex_exchange_for_client);
Datum
tokex_exchange_for_client(PG_FUNCTION_ARGS)
{
	return exchange(fcinfo, false);
}
