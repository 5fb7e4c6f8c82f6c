/*
 * standby.c — tokex on hot standbys (streaming replication).
 *
 * Verification, introspection and the JWKS only read, so a hot standby can
 * serve them; exchanges, token requests and revocations stay on the
 * primary.  What a standby knows is only as recent as the WAL it has
 * replayed, so:
 *
 * - The primary writes a heartbeat row (tokex.heartbeat(), called every
 *   tokex.heartbeat_interval by a background worker in each database that
 *   tokex.heartbeat_database names).  A standby whose last replayed
 *   heartbeat is older than tokex.max_replica_lag fails closed:
 *   introspection answers inactive, verification raises.  The heartbeat,
 *   not pg_last_xact_replay_timestamp(), because an idle primary commits
 *   nothing: a standby could not tell "nothing happened" from "I am cut off".
 * - tokex.revocation_sync makes every revocation commit wait until the
 *   synchronous standbys (synchronous_standby_names) have applied it
 *   (synchronous_commit = remote_apply for that transaction), so when a
 *   revocation returns, those standbys refuse.
 * - A standby cannot write an audit row.  What would be audited there is
 *   decided in tokex_audit_standby (below).
 */
#include "tokex.h"

#include "access/xact.h"
#include "access/xlog.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "tcop/tcopprot.h"
#include "commands/dbcommands.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
#include "utils/varlena.h"

#define MAX_HEARTBEAT_DBS	8

static int	max_replica_lag = 0;	/* ms; 0 = no check */
static bool revocation_sync = false;
static int	heartbeat_interval = 1000;	/* ms; 0 = the worker writes nothing */
static char *heartbeat_database = NULL;

/* the newest heartbeat this backend has read on a standby; it only moves forward */
static TimestampTz heartbeat_seen = 0;

PGDLLEXPORT void tokex_heartbeat_main(Datum arg);

/* tokex.heartbeat_database: a comma-separated list of database names */
static bool
check_heartbeat_database(char **newval, void **extra, GucSource source)
{
	char	   *copy;
	List	   *names;
	bool		ok;

	if (*newval == NULL || (*newval)[0] == '\0')
		return true;
	copy = pstrdup(*newval);
	ok = SplitIdentifierString(copy, ',', &names);
	if (!ok)
		GUC_check_errdetail("List syntax is invalid.");
	else if (list_length(names) > MAX_HEARTBEAT_DBS)
	{
		GUC_check_errdetail("At most %d databases may be named.", MAX_HEARTBEAT_DBS);
		ok = false;
	}
	list_free(names);
	pfree(copy);
	return ok;
}

static void
register_heartbeat_workers(void)
{
	char	   *copy;
	List	   *names;
	ListCell   *lc;

	if (heartbeat_database == NULL || heartbeat_database[0] == '\0')
		return;
	copy = pstrdup(heartbeat_database);
	if (!SplitIdentifierString(copy, ',', &names))
		return;					/* the check hook refused it already */
	foreach(lc, names)
	{
		BackgroundWorker w;
		const char *db = (const char *) lfirst(lc);

		memset(&w, 0, sizeof(w));
		w.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
		/* never on a standby: it starts when (and if) the server is promoted */
		w.bgw_start_time = BgWorkerStart_RecoveryFinished;
		w.bgw_restart_time = 10;
		snprintf(w.bgw_library_name, BGW_MAXLEN, "tokex");
		snprintf(w.bgw_function_name, BGW_MAXLEN, "tokex_heartbeat_main");
		snprintf(w.bgw_name, BGW_MAXLEN, "tokex heartbeat for database %s", db);
		snprintf(w.bgw_type, BGW_MAXLEN, "tokex heartbeat");
		strlcpy(w.bgw_extra, db, BGW_EXTRALEN);
		RegisterBackgroundWorker(&w);
	}
}

void
tokex_standby_init(void)
{
	DefineCustomIntVariable("tokex.max_replica_lag",
							"On a hot standby, the oldest replayed tokex heartbeat that still lets it judge tokens.",
							"Older: introspection answers inactive and verification raises. 0 (the default): no check.",
							&max_replica_lag, 0, 0, INT_MAX,
							PGC_SUSET, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomBoolVariable("tokex.revocation_sync",
							 "Revocations commit with synchronous_commit = remote_apply.",
							 "A revocation then returns only once the synchronous standbys "
							 "(synchronous_standby_names) have applied it.",
							 &revocation_sync, false, PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("tokex.heartbeat_interval",
							"How often the heartbeat worker calls tokex.heartbeat() on the primary.",
							"0: the worker writes no heartbeat.",
							&heartbeat_interval, 1000, 0, 3600 * 1000,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);
	/* a PGC_POSTMASTER setting exists only when preloaded (loaded later, PostgreSQL refuses it) */
	if (process_shared_preload_libraries_in_progress)
	{
		DefineCustomStringVariable("tokex.heartbeat_database",
								   "Databases (comma-separated) in which a background worker calls tokex.heartbeat().",
								   "Empty (the default): no heartbeat worker.",
								   &heartbeat_database, "", PGC_POSTMASTER, 0,
								   check_heartbeat_database, NULL, NULL);
		register_heartbeat_workers();
	}
}

/* ---------------- fail closed on a standby that fell behind ---------------- */

/* The last replayed heartbeat (0: none), as of the latest snapshot, like every decision. */
static TimestampTz
read_heartbeat(void)
{
	TimestampTz at = 0;
	SPIPlanPtr	plan;
	int			rc;

	tokex_check_version();
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "tokex: SPI_connect failed");
	plan = SPI_prepare("SELECT at FROM tokex.heartbeat", 0, NULL);
	if (plan == NULL)
		elog(ERROR, "tokex: cannot read tokex.heartbeat: %s", SPI_result_code_string(SPI_result));
	rc = SPI_execute_snapshot(plan, NULL, NULL, GetLatestSnapshot(), InvalidSnapshot, true, false, 1);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "tokex: cannot read tokex.heartbeat: %s", SPI_result_code_string(rc));
	if (SPI_processed == 1)
	{
		bool		isnull;
		Datum		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);

		if (!isnull)
			at = DatumGetTimestampTz(d);
	}
	SPI_finish();
	return at;
}

/*
 * Is this server a standby that has not replayed a heartbeat within
 * tokex.max_replica_lag?  A heartbeat already seen that is young enough
 * settles it without a query: a remembered heartbeat is trusted only while it is not ahead of this clock.
 */
bool
tokex_replica_behind(void)
{
	TimestampTz now;

	if (max_replica_lag <= 0 || !RecoveryInProgress())
		return false;
	now = GetCurrentTimestamp();
	/* a remembered heartbeat ahead of this clock (the primary's jumped) settles nothing */
	if (heartbeat_seen != 0 && heartbeat_seen <= now &&
		!TimestampDifferenceExceeds(heartbeat_seen, now, max_replica_lag))
		return false;
	{
		TimestampTz at = read_heartbeat();

		/* what was replayed, even if older than what was remembered: the primary's clock may go back */
		heartbeat_seen = at;
	}
	return heartbeat_seen == 0 || TimestampDifferenceExceeds(heartbeat_seen, now, max_replica_lag);
}

/* Verification on a standby that fell behind: a clear error, not a verdict on the token. */
void
tokex_replica_check(void)
{
	if (!tokex_replica_behind())
		return;
	if (heartbeat_seen == 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("this standby is too far behind the primary to judge tokens"),
				 errdetail("It has replayed no tokex heartbeat, and tokex.max_replica_lag is %d ms.",
						   max_replica_lag),
				 errhint("Run the heartbeat on the primary (tokex.heartbeat_database, or tokex.heartbeat() "
						 "from a scheduler), or ask the primary or another standby.")));
	ereport(ERROR,
			(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
			 errmsg("this standby is too far behind the primary to judge tokens"),
			 errdetail("Its last replayed tokex heartbeat is from %s, older than tokex.max_replica_lag (%d ms).",
					   timestamptz_to_str(heartbeat_seen), max_replica_lag),
			 errhint("Ask the primary or another standby; check replication (pg_stat_replication, "
					 "pg_is_wal_replay_paused()) and the heartbeat on the primary.")));
}

/* ---------------- revocations that wait for the standbys ---------------- */

/*
 * tokex._revocation_sync(): called by the revocation trigger.  With
 * tokex.revocation_sync on, the revoking transaction commits with
 * synchronous_commit = remote_apply (a SET LOCAL: it outlives the trigger's
 * own settings and ends with the transaction).
 */
PG_FUNCTION_INFO_V1(tokex_revocation_sync);
Datum
tokex_revocation_sync(PG_FUNCTION_ARGS)
{
	if (revocation_sync)
		(void) set_config_option("synchronous_commit", "remote_apply", PGC_USERSET, PGC_S_SESSION,
								 GUC_ACTION_LOCAL, true, 0, false);
	PG_RETURN_BOOL(revocation_sync);
}

/* ---------------- what would be audited on a standby ---------------- */

/*
 * A standby's tables are read-only, so no audit row can be written there,
 * by the caller's transaction or by an audit writer (which never starts
 * during recovery).  Called by tokex_audit_write instead of writing:
 *
 * - a refusal at the introspection endpoint (a client that did not
 *   authenticate, a GET, a missing token) is answered, and its row goes to
 *   the standby's server log instead of tokex.audit: introspection is what
 *   standbys are for, and refusing to answer would not make the refusal
 *   auditable either;
 * - anything else (a token, an exchange's or token endpoint's verdict, a
 *   refused revocation) belongs on the primary: it raises, so nothing is
 *   handed out or decided without its row.
 */
void
tokex_audit_standby(json_t *row, bool granted)
{
	const char *op = json_string_value(json_object_get(row, "operation"));
	char	   *s;

	if (!granted && op && strcmp(op, "introspect") == 0)
	{
		s = tokex_adopt(json_dumps(row, JSON_COMPACT));
		ereport(LOG,
				(errmsg("tokex: refusal at the introspection endpoint logged, not audited: this server is a standby"),
				 errdetail_log("%s", s)));
		return;
	}
	ereport(ERROR,
			(errcode(ERRCODE_READ_ONLY_SQL_TRANSACTION),
			 errmsg("tokex decides and issues tokens only on the primary"),
			 errdetail("This server is a hot standby: the audit row of this %s cannot be written here, "
					   "so %s.", op ? op : "call", granted ? "no token is issued" : "it is not answered"),
			 errhint("Send exchanges, token requests and revocations to the read-write endpoint "
					 "(libpq target_session_attrs=read-write).")));
}

/* ---------------- the heartbeat worker ---------------- */

/* One heartbeat, if this database has a tokex that has tokex.heartbeat(). */
static void
beat(bool *warned)
{
	int			rc;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "tokex: SPI_connect failed");
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, "tokex heartbeat");
	/*
	 * The worker runs as the bootstrap superuser: call only the heartbeat()
	 * of the tokex extension (a member of it, which only a superuser can
	 * make), never a function of that name someone put in a schema of that
	 * name, and with a search_path nobody else chose.
	 */
	rc = SPI_execute("SELECT pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true) IS NULL "
					 "    OR EXISTS (SELECT 1 FROM pg_catalog.pg_depend d "
					 "                 JOIN pg_catalog.pg_extension e ON e.oid OPERATOR(pg_catalog.=) d.refobjid "
					 "                WHERE e.extname OPERATOR(pg_catalog.=) 'tokex' "
					 "                  AND d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_proc'::pg_catalog.regclass "
					 "                  AND d.deptype OPERATOR(pg_catalog.=) 'e' "
					 "                  AND d.objid OPERATOR(pg_catalog.=) "
					 "                      pg_catalog.to_regprocedure('tokex.heartbeat()')::pg_catalog.oid)",
					 false, 1);
	if (rc != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "tokex: heartbeat lookup failed: %s", SPI_result_code_string(rc));
	if (strcmp(SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1), "t") == 0)
	{
		rc = SPI_execute("SELECT tokex.heartbeat()", false, 1);
		if (rc != SPI_OK_SELECT)
			elog(ERROR, "tokex: heartbeat failed: %s", SPI_result_code_string(rc));
		*warned = false;
	}
	else if (!*warned)
	{
		ereport(LOG,
				(errmsg("tokex heartbeat: database \"%s\" has no tokex.heartbeat(); waiting",
						get_database_name(MyDatabaseId)),
				 errhint("CREATE EXTENSION tokex (or ALTER EXTENSION tokex UPDATE) in it.")));
		*warned = true;
	}
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	pgstat_report_activity(STATE_IDLE, NULL);
}

void
tokex_heartbeat_main(Datum arg)
{
	char		db[BGW_EXTRALEN];
	bool		warned = false;

	strlcpy(db, MyBgworkerEntry->bgw_extra, sizeof(db));
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnection(db, NULL, 0);
	pgstat_report_appname("tokex heartbeat");
	/*
	 * A heartbeat must never wait for a standby: with synchronous_commit =
	 * remote_apply and a paused standby it would stop, and every other
	 * standby would then fail closed too.
	 */
	SetConfigOption("synchronous_commit", "local", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("search_path", "pg_catalog, pg_temp", PGC_SUSET, PGC_S_OVERRIDE);

	for (;;)
	{
		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		if (heartbeat_interval > 0)
			beat(&warned);
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 heartbeat_interval > 0 ? heartbeat_interval : 10000, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}
