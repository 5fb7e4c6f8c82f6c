/*
 * tokex.c — module entry point: GUCs and small helpers shared by every file.
 */
#include "tokex.h"

#include "fmgr.h"
#include "utils/guc.h"
#include "utils/timestamp.h"

PG_MODULE_MAGIC;

char	   *tokex_issuer = NULL;
int			tokex_clock_skew = 60;
int			tokex_default_ttl = 300;
int			tokex_max_ttl = 3600;
int			tokex_max_chain_depth = 4;
char	   *tokex_base_url = NULL;
int			tokex_endpoint_style = TOKEX_ENDPOINTS_RPC;

/*
 * Where the HTTP endpoints are: PostgREST serves /rpc/<function>; a reverse
 * proxy (contrib/nginx) serves the same functions at /token, /introspect,
 * /revoke, /jwks and /.well-known/oauth-authorization-server.
 */
static const struct config_enum_entry endpoint_style_options[] = {
	{"rpc", TOKEX_ENDPOINTS_RPC, false},
	{"plain", TOKEX_ENDPOINTS_PLAIN, false},
	{NULL, 0, false}
};

/* An issuer identifier is a URL-like string: printable ASCII, no spaces. */
static bool
check_issuer(char **newval, void **extra, GucSource source)
{
	const char *s = *newval;

	if (s == NULL || *s == '\0')
		return true;
	if (strlen(s) > 1024)
	{
		GUC_check_errdetail("The issuer must be at most 1024 bytes.");
		return false;
	}
	for (; *s; s++)
		if (*s <= ' ' || *s > '~')
		{
			GUC_check_errdetail("The issuer must be printable ASCII without spaces.");
			return false;
		}
	return true;
}

void		_PG_init(void);

void
_PG_init(void)
{
	DefineCustomStringVariable("tokex.issuer",
							   "Issuer identifier (iss) of the tokens tokex mints.",
							   "Required to mint tokens; an https URL is expected.",
							   &tokex_issuer, "", PGC_SUSET, 0,
							   check_issuer, NULL, NULL);
	DefineCustomIntVariable("tokex.clock_skew",
							"Tolerance for exp, nbf and iat checks.",
							NULL, &tokex_clock_skew, 60, 0, 600,
							PGC_SUSET, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomIntVariable("tokex.default_ttl",
							"Lifetime of minted access tokens when the resource sets none.",
							NULL, &tokex_default_ttl, 300, 1, 86400,
							PGC_SUSET, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomIntVariable("tokex.max_ttl",
							"Upper bound on the lifetime of any token tokex mints.",
							NULL, &tokex_max_ttl, 3600, 1, 7 * 86400,
							PGC_SUSET, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomIntVariable("tokex.max_chain_depth",
							"Most actors an act chain may hold.",
							NULL, &tokex_max_chain_depth, 4, 1, 16,
							PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomStringVariable("tokex.base_url",
							   "Public base URL of the HTTP face (PostgREST), for RFC 8414 metadata.",
							   "Endpoints are <base_url>/rpc/token and so on (see tokex.endpoint_style); defaults to tokex.issuer.",
							   &tokex_base_url, "", PGC_SUSET, 0,
							   check_issuer, NULL, NULL);
	DefineCustomEnumVariable("tokex.endpoint_style",
							 "Paths of the HTTP endpoints under tokex.base_url, for RFC 8414 metadata.",
							 "rpc: /rpc/token, /rpc/introspect, /rpc/revoke, /rpc/jwks, as PostgREST serves them; "
							 "plain: /token, /introspect, /revoke, /jwks, as the reverse proxy of contrib/nginx serves them.",
							 &tokex_endpoint_style, TOKEX_ENDPOINTS_RPC, endpoint_style_options,
							 PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("tokex.secret_hash_iterations",
							"PBKDF2-HMAC-SHA256 iterations for newly hashed client secrets.",
							NULL, &tokex_secret_iterations, 600000, 100000, 10000000,
							PGC_SUSET, 0, NULL, NULL, NULL);
#if PG_VERSION_NUM >= 150000
	MarkGUCPrefixReserved("tokex");
#else
	EmitWarningsOnPlaceholders("tokex");
#endif
}

int64
tokex_now(void)
{
	return (int64) timestamptz_to_time_t(GetCurrentTimestamp());
}

char *
tokex_adopt(char *s)
{
	char	   *copy = NULL;

	if (s != NULL)
	{
		size_t		len = strlen(s);

		copy = palloc_extended(len + 1, MCXT_ALLOC_NO_OOM);
		if (copy)
			memcpy(copy, s, len + 1);
		free(s);
	}
	if (copy == NULL)
		ereport(ERROR, (errcode(ERRCODE_OUT_OF_MEMORY), errmsg("out of memory")));
	return copy;
}

void
tokex_invalid_token(const jose_error *err)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION),
			 errmsg("invalid token"),
			 errdetail("%s", err->detail[0] ? err->detail : jose_strerror(err->code))));
}
