/*
 * audit.c — the audit writer: no token leaves tokex without a committed
 * audit row, whatever the caller's transaction does afterwards.
 *
 * A token is handed to the caller as a function result, inside the caller's
 * transaction.  If the audit row were written by that transaction, a
 * ROLLBACK (or a savepoint, or a plpgsql EXCEPTION block) after the call
 * would keep the token and lose its row.  So:
 *
 * - With tokex in shared_preload_libraries, the backend hands the row
 *   (packed, see row_pack) to a per-database background worker through
 *   shared memory and waits until the worker's own transaction that
 *   inserts it has committed.  The worker takes every row that is
 *   waiting when it wakes and commits them together (group commit): one
 *   WAL flush for many exchanges.
 *   Writers are started on demand and exit after a second idle, so that
 *   DROP DATABASE (which waits up to five seconds for other sessions) is
 *   not blocked by them.
 * - Without it, only the caller's transaction could write the row, and no
 *   form of call makes that safe: a DO block can ROLLBACK after the call, an
 *   error message or a NOTICE can carry the token out of a statement that
 *   then fails, a pipeline can abort after the result was sent.  So without
 *   the preload tokex issues no token at all.  Denials hand out nothing:
 *   their rows are written in the caller's transaction.
 */
#include "issue.h"

#include "access/table.h"
#include "access/tableam.h"
#include "access/heapam.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/pg_extension.h"
#include "catalog/pg_type.h"
#include "commands/extension.h"
#include "catalog/namespace.h"
#include "catalog/pg_trigger.h"
#include "commands/trigger.h"
#include "executor/executor.h"
#include "executor/execPartition.h"
#include "partitioning/partdesc.h"
#include "executor/spi.h"
#include "executor/tuptable.h"
#include "nodes/execnodes.h"
#include "nodes/makefuncs.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/condition_variable.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lmgr.h"
#include "storage/lwlock.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "tcop/tcopprot.h"
#include "mb/pg_wchar.h"
#include "utils/datetime.h"
#include "utils/guc.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"
#include "mb/pg_wchar.h"

#define AUDIT_SLOTS			64
#define AUDIT_SLOT_BYTES	16384	/* one row, packed or as JSON; fields are capped to fit */
#define AUDIT_MAX_DBS		32
#define WRITER_IDLE_MS		1000
#define WRITER_START_MS		10000	/* a start not seen through by then is retried */

typedef enum
{
	SLOT_FREE = 0,
	SLOT_FILLED,				/* waiting for the writer */
	SLOT_WRITING,				/* taken by the writer */
	SLOT_DONE,					/* committed */
	SLOT_FAILED					/* not written: error holds why */
} SlotState;

typedef struct AuditSlot
{
	SlotState	state;
	bool		abandoned;		/* the requester gave up (cancelled) */
	Oid			dboid;
	int			requester;		/* pgprocno of the waiting backend */
	int			len;
	char		error[256];
	char		data[AUDIT_SLOT_BYTES];
} AuditSlot;

typedef enum
{
	WRITER_NONE = 0,
	WRITER_STARTING,
	WRITER_RUNNING
} WriterState;

typedef struct AuditWriter
{
	WriterState state;
	Oid			dboid;
	int			pgprocno;
	pid_t		pid;
	TimestampTz since;			/* when it was asked to start */
} AuditWriter;

typedef struct AuditShmem
{
	LWLock	   *lock;
	ConditionVariable cv;		/* a slot was freed, or a writer changed state */
	AuditWriter writers[AUDIT_MAX_DBS];
	AuditSlot	slots[AUDIT_SLOTS];
} AuditShmem;

static AuditShmem *audit_shmem = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

#if PG_VERSION_NUM >= 150000
static shmem_request_hook_type prev_shmem_request_hook = NULL;
#endif

PGDLLEXPORT void tokex_audit_writer_main(Datum arg);

static void
audit_shmem_request(void)
{
#if PG_VERSION_NUM >= 150000
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
#endif
	RequestAddinShmemSpace(MAXALIGN(sizeof(AuditShmem)));
	RequestNamedLWLockTranche("tokex_audit", 1);
	tokex_seal_shmem_request();
}

static void
audit_shmem_startup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	audit_shmem = ShmemInitStruct("tokex audit writer", sizeof(AuditShmem), &found);
	if (!found)
	{
		memset(audit_shmem, 0, sizeof(AuditShmem));
		audit_shmem->lock = &(GetNamedLWLockTranche("tokex_audit"))->lock;
		ConditionVariableInit(&audit_shmem->cv);
	}
	tokex_seal_shmem_startup();
	LWLockRelease(AddinShmemInitLock);
}

/* Called from _PG_init while shared_preload_libraries is being processed. */
void
tokex_audit_init(void)
{
#if PG_VERSION_NUM >= 150000
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = audit_shmem_request;
#else
	audit_shmem_request();
#endif
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = audit_shmem_startup;
}

bool
tokex_audit_durable(void)
{
	return audit_shmem != NULL;
}

/* Without the writer, no token's row could be made durable before the token leaves. */
void
tokex_audit_require_durable(void)
{
	if (audit_shmem == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("tokex issues tokens only when it is in shared_preload_libraries"),
				 errdetail("Without its audit writer the audit row would commit with the caller's "
						   "transaction, which could still roll back after the token was handed out."),
				 errhint("Add tokex to shared_preload_libraries and restart the server.")));
}

/*
 * Complete a row: the time of the call and the session user, which the
 * writer (connected as the bootstrap superuser) must not supply itself.
 */
static void
complete_row(json_t *row)
{
	if (json_object_get(row, "at") == NULL)
	{
		char		buf[MAXDATELEN + 1];

		JsonEncodeDateTime(buf, TimestampTzGetDatum(GetCurrentTimestamp()), TIMESTAMPTZOID, NULL);
		json_object_set_new(row, "at", json_string(buf));
	}
	if (json_object_get(row, "db_user") == NULL)
		json_object_set_new(row, "db_user",
							json_string(GetUserNameFromId(GetSessionUserId(), false)));
}

static const char *const insert_sql =
"INSERT INTO tokex.audit_event "
"SELECT * FROM pg_catalog.jsonb_populate_recordset(NULL::tokex.audit_event, $1::pg_catalog.jsonb)";

static SPIPlanPtr insert_plan = NULL;

bool		tokex_audit_direct = true;

/* Insert rows (a JSON array text) through SPI in the current transaction. */
static void
insert_rows(const char *array_json)
{
	Oid			argtypes[1] = {TEXTOID};
	Datum		values[1];
	int			rc;

	values[0] = CStringGetTextDatum(array_json);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "tokex: SPI_connect failed");
	/* planned once per process: parsing and planning it cost as much as the insert */
	rc = SPI_execute_plan(tokex_keep_plan(&insert_plan, insert_sql, 1, argtypes), values, NULL, false, 0);
	if (rc != SPI_OK_INSERT)
		elog(ERROR, "tokex: audit insert failed: %s", SPI_result_code_string(rc));
	SPI_finish();
}

/*
 * A backend that exits while it waits (pg_terminate_backend, a closed
 * connection) runs no PG_CATCH: give up its slots here, or they would be
 * lost for every database until a restart.
 */
static bool requester_cb_registered = false;

static void
requester_exit(int code, Datum arg)
{
	if (audit_shmem == NULL || MyProc == NULL)
		return;
	LWLockAcquire(audit_shmem->lock, LW_EXCLUSIVE);
	for (int i = 0; i < AUDIT_SLOTS; i++)
	{
		AuditSlot  *s = &audit_shmem->slots[i];

		if (s->state == SLOT_FREE || s->requester != MyProc->pgprocno)
			continue;
		if (s->state == SLOT_DONE || s->state == SLOT_FAILED)
			s->state = SLOT_FREE;
		else
			s->abandoned = true;
	}
	LWLockRelease(audit_shmem->lock);
	ConditionVariableBroadcast(&audit_shmem->cv);
}

static AuditWriter *
find_writer(Oid db)
{
	for (int i = 0; i < AUDIT_MAX_DBS; i++)
		if (audit_shmem->writers[i].state != WRITER_NONE && audit_shmem->writers[i].dboid == db)
			return &audit_shmem->writers[i];
	return NULL;
}

static AuditSlot *
free_slot(void)
{
	for (int i = 0; i < AUDIT_SLOTS; i++)
		if (audit_shmem->slots[i].state == SLOT_FREE)
			return &audit_shmem->slots[i];
	return NULL;
}

static void
launch_writer(int index)
{
	BackgroundWorker w;
	BackgroundWorkerHandle *h;
	pid_t		pid;
	Oid			db = MyDatabaseId;

	memset(&w, 0, sizeof(w));
	w.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	w.bgw_start_time = BgWorkerStart_RecoveryFinished;
	w.bgw_restart_time = BGW_NEVER_RESTART;
	snprintf(w.bgw_library_name, BGW_MAXLEN, "tokex");
	snprintf(w.bgw_function_name, BGW_MAXLEN, "tokex_audit_writer_main");
	snprintf(w.bgw_name, BGW_MAXLEN, "tokex audit writer for database %u", db);
	snprintf(w.bgw_type, BGW_MAXLEN, "tokex audit writer");
	w.bgw_main_arg = Int32GetDatum(index);
	memcpy(w.bgw_extra, &db, sizeof(Oid));
	w.bgw_notify_pid = MyProcPid;

	if (!RegisterDynamicBackgroundWorker(&w, &h) ||
		WaitForBackgroundWorkerStartup(h, &pid) != BGWH_STARTED)
	{
		LWLockAcquire(audit_shmem->lock, LW_EXCLUSIVE);
		if (audit_shmem->writers[index].state == WRITER_STARTING)
			audit_shmem->writers[index].state = WRITER_NONE;
		LWLockRelease(audit_shmem->lock);
		ConditionVariableBroadcast(&audit_shmem->cv);
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_RESOURCES),
				 errmsg("could not start the tokex audit writer"),
				 errdetail("No token is issued without its committed audit row."),
				 errhint("Keep max_worker_processes above max_parallel_workers plus one per database "
						 "that issues tokens (and other extensions' workers): parallel queries may "
						 "otherwise take every slot.")));
	}
}

/*
 * Hand one row to this database's writer and wait for its commit.  Raises
 * if the row could not be committed: the caller then hands out nothing.
 */
static void
submit(const char *json, size_t len)
{
	AuditSlot  *volatile slot = NULL;
	int			launch = -1;

	if (len >= AUDIT_SLOT_BYTES)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("audit row too large"),
				 errdetail("The row takes %zu bytes; at most %d fit.", len, AUDIT_SLOT_BYTES - 1)));

	if (!requester_cb_registered)
	{
		before_shmem_exit(requester_exit, (Datum) 0);
		requester_cb_registered = true;
	}
	ConditionVariablePrepareToSleep(&audit_shmem->cv);
	for (;;)
	{
		AuditWriter *w;
		int			writer_procno = -1;

		LWLockAcquire(audit_shmem->lock, LW_EXCLUSIVE);
		w = find_writer(MyDatabaseId);
		/* a launcher that died before registering the worker leaves it STARTING */
		if (w && w->state == WRITER_STARTING &&
			TimestampDifferenceExceeds(w->since, GetCurrentTimestamp(), WRITER_START_MS))
			w->state = WRITER_NONE, w = NULL;
		if (w == NULL)
		{
			for (int i = 0; i < AUDIT_MAX_DBS; i++)
				if (audit_shmem->writers[i].state == WRITER_NONE)
				{
					w = &audit_shmem->writers[i];
					w->state = WRITER_STARTING;
					w->dboid = MyDatabaseId;
					w->since = GetCurrentTimestamp();
					launch = i;
					break;
				}
		}
		else if (w->state == WRITER_RUNNING && (slot = free_slot()) != NULL)
		{
			slot->state = SLOT_FILLED;
			slot->abandoned = false;
			slot->dboid = MyDatabaseId;
			slot->requester = MyProc->pgprocno;
			slot->len = (int) len;
			slot->error[0] = '\0';
			memcpy(slot->data, json, len);
			slot->data[len] = '\0';
			writer_procno = w->pgprocno;
		}
		LWLockRelease(audit_shmem->lock);

		if (slot)
		{
			SetLatch(&ProcGlobal->allProcs[writer_procno].procLatch);
			break;
		}
		if (w == NULL)
		{
			ConditionVariableCancelSleep();
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_RESOURCES),
					 errmsg("too many databases issue tokens at once"),
					 errdetail("tokex runs at most %d audit writers.", AUDIT_MAX_DBS)));
		}
		if (launch >= 0)
		{
			launch_writer(launch);
			launch = -1;
			continue;
		}
		/* the writer is starting, or every slot is taken: wait for either */
		ConditionVariableTimedSleep(&audit_shmem->cv, 100, PG_WAIT_EXTENSION);
	}
	ConditionVariableCancelSleep();

	PG_TRY();
	{
		for (;;)
		{
			SlotState	st;

			LWLockAcquire(audit_shmem->lock, LW_SHARED);
			st = slot->state;
			LWLockRelease(audit_shmem->lock);
			if (st == SLOT_DONE || st == SLOT_FAILED)
				break;
			(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
							 1000, PG_WAIT_EXTENSION);
			ResetLatch(MyLatch);
			CHECK_FOR_INTERRUPTS();
		}
	}
	PG_CATCH();
	{
		/* cancelled while waiting: the writer frees the slot when it is done */
		LWLockAcquire(audit_shmem->lock, LW_EXCLUSIVE);
		if (slot->state == SLOT_DONE || slot->state == SLOT_FAILED)
			slot->state = SLOT_FREE;
		else
			slot->abandoned = true;
		LWLockRelease(audit_shmem->lock);
		PG_RE_THROW();
	}
	PG_END_TRY();

	{
		bool		ok;
		char		error[sizeof(slot->error)];

		LWLockAcquire(audit_shmem->lock, LW_EXCLUSIVE);
		ok = slot->state == SLOT_DONE;
		memcpy(error, slot->error, sizeof(error));
		slot->state = SLOT_FREE;
		LWLockRelease(audit_shmem->lock);
		ConditionVariableBroadcast(&audit_shmem->cv);
		if (!ok)
			ereport(ERROR,
					(errcode(ERRCODE_IO_ERROR),
					 errmsg("could not commit the audit row"),
					 errdetail("%s", error),
					 errhint("No token was issued.")));
	}
}

/*
 * A row in a slot is JSON text (an object) or packed: ROW_PACKED, then per
 * column its name (NUL-terminated) and a value; then an empty name.  A
 * value is a tag and its text: 's' a string, 'i' an integer, 't' true, 'f'
 * false (the last two with no text), or 'a', a two-byte count and that many
 * values, 'z' for a null element.  The writer reads a packed row straight
 * into the table's columns, as it reads the JSON, without parsing JSON:
 * jansson's parse was a ninth of the writer's work.  The tags keep the JSON
 * types, so a packed row can be written back as the same JSON when the
 * batch takes the INSERT.  A row holding anything else (a real, an object,
 * a nested array, a string with a NUL) stays JSON.
 */
#define ROW_PACKED	'\x01'

/* The attribute named name (from *guess on: rows name their columns in order), or -1. */
static int
column_named(TupleDesc desc, const char *name, int *guess)
{
	for (int k = 0; k < desc->natts; k++)
	{
		int			i = (*guess + k) % desc->natts;
		Form_pg_attribute a = TupleDescAttr(desc, i);

		if (!a->attisdropped && strcmp(NameStr(a->attname), name) == 0)
		{
			*guess = i + 1;
			return i;
		}
	}
	return -1;
}

static bool
pack_value(StringInfo buf, json_t *v, bool element)
{
	switch (json_typeof(v))
	{
		case JSON_STRING:
			if (memchr(json_string_value(v), '\0', json_string_length(v)))
				return false;
			appendStringInfoChar(buf, 's');
			appendBinaryStringInfo(buf, json_string_value(v), json_string_length(v) + 1);
			return true;
		case JSON_INTEGER:
			appendStringInfo(buf, "i%lld", (long long) json_integer_value(v));
			appendStringInfoChar(buf, '\0');
			return true;
		case JSON_TRUE:
			appendStringInfoChar(buf, 't');
			return true;
		case JSON_FALSE:
			appendStringInfoChar(buf, 'f');
			return true;
		case JSON_NULL:
			appendStringInfoChar(buf, 'z');
			return element;		/* a null column is left out */
		case JSON_ARRAY:
			{
				size_t		n = json_array_size(v);

				if (element || n > 0xffff)
					return false;
				appendStringInfoChar(buf, 'a');
				appendStringInfoChar(buf, (char) (n >> 8));
				appendStringInfoChar(buf, (char) (n & 0xff));
				for (size_t i = 0; i < n; i++)
					if (!pack_value(buf, json_array_get(v, i), true))
						return false;
				return true;
			}
		default:
			return false;
	}
}

/*
 * The packed row (palloc'd, its length in *len), or NULL when it must stay
 * JSON.  With desc (the writer, reading a row that came as JSON), only the
 * keys naming a column of desc are packed, as jsonb_populate_recordset
 * reads only those: a real under a key that is no column does not keep the
 * row from the direct insert.
 */
static char *
row_pack(json_t *row, size_t *len, TupleDesc desc)
{
	StringInfoData buf;
	const char *k;
	size_t		klen;
	json_t	   *v;
	int			guess = 0;

	initStringInfo(&buf);
	appendStringInfoChar(&buf, ROW_PACKED);
	json_object_keylen_foreach(row, k, klen, v)
	{
		bool		plain = klen > 0 && strlen(k) == klen;	/* no NUL: a name packing can carry */

		if (json_is_null(v) || (desc && (!plain || column_named(desc, k, &guess) < 0)))
			continue;
		if (!plain)
			return NULL;
		appendBinaryStringInfo(&buf, k, klen + 1);
		if (!pack_value(&buf, v, false))
			return NULL;
	}
	appendStringInfoChar(&buf, '\0');
	*len = buf.len;
	return buf.data;
}

/*
 * A row, packed (when pack) or as JSON, that fits a slot.  Client-chosen
 * strings are capped when the row is built, but JSON's escaping can still
 * multiply them (a control character takes six bytes): cut every string,
 * in arrays too, shorter and shorter until the row fits, so a client's
 * mistake is still audited, not raised.
 */
static char *
row_encode(json_t *row, bool pack, size_t *len)
{
	static const int caps[] = {0, 256, 64, 16};
	/* the columns a client's request or token can fill; ids, times and hashes stay whole */
	static const char *const cuttable[] = {
		"reason", "subject", "actor", "actor_chain", "client_id", "audience",
		"requested_scope", "scope", "subject_issuer", "actor_issuer", "subject_sid",
		"subject_token_type", "actor_token_type"
	};

	for (int c = 0; c < (int) lengthof(caps); c++)
	{
		char	   *s;

		for (int k = 0; caps[c] > 0 && k < (int) lengthof(cuttable); k++)
		{
			json_t	   *v = json_object_get(row, cuttable[k]);
			json_t	   *items = json_is_array(v) ? v : NULL;
			size_t		n = items ? json_array_size(items) : 1;

			/* arrays of strings (scopes, the actor chain) keep their first 16 */
			if (v == NULL)
				continue;
			while (items && n > 16 && c == (int) lengthof(caps) - 1)
				json_array_remove(items, --n);
			for (size_t i = 0; i < n; i++)
			{
				json_t	   *e = items ? json_array_get(items, i) : v;

				if (json_is_string(e) && json_string_length(e) > (size_t) caps[c])
				{
					const char *t = json_string_value(e);

					json_string_setn(e, t, pg_mbcliplen(t, json_string_length(e), caps[c]));
				}
			}
		}
		if (pack && (s = row_pack(row, len, NULL)) != NULL && *len < AUDIT_SLOT_BYTES)
			return s;
		s = json_dumps(row, JSON_COMPACT);
		if (s == NULL)
			ereport(ERROR, (errcode(ERRCODE_OUT_OF_MEMORY), errmsg("out of memory")));
		s = tokex_adopt(s);
		if ((*len = strlen(s)) < AUDIT_SLOT_BYTES)
			return s;
	}
	ereport(ERROR,
			(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
			 errmsg("audit row too large"),
			 errdetail("Even with every string cut to 16 characters it does not fit in %d bytes.",
					   AUDIT_SLOT_BYTES)));
	return NULL;				/* keep the compiler quiet */
}

/*
 * Write one audit_event row (a JSON object of its columns).  granted: the
 * row stands for a token about to be handed out, so it must be durable
 * before the token is; a denial's row may ride on the caller's transaction
 * when there is no writer.
 */
void
tokex_audit_write(json_t *row, bool granted)
{
	char	   *s;
	size_t		len;

	complete_row(row);
	/* a hot standby writes nothing: see tokex_audit_standby (standby.c) */
	if (RecoveryInProgress())
	{
		tokex_audit_standby(row, granted);
		return;
	}
	if (granted)
		tokex_audit_require_durable();
	s = row_encode(row, audit_shmem != NULL, &len);
	if (audit_shmem == NULL)
		insert_rows(psprintf("[%s]", s));
	else
		submit(s, len);
}

/*
 * tokex._audit_write(row jsonb, granted boolean): the same for the install
 * script's functions (sessions, identity tokens, HTTP refusals).  Not
 * granted to anyone: only tokex's own SECURITY DEFINER functions call it.
 */
PG_FUNCTION_INFO_V1(tokex_audit_write_sql);
Datum
tokex_audit_write_sql(PG_FUNCTION_ARGS)
{
	Jsonb	   *jb = PG_GETARG_JSONB_P(0);
	bool		granted = PG_ARGISNULL(1) ? true : PG_GETARG_BOOL(1);
	char	   *s = JsonbToCString(NULL, &jb->root, VARSIZE(jb));
	jose_error	err;
	json_t	   *row = tokex_json_track(jose_json_parse(s, strlen(s), JOSE_E_PAYLOAD, &err));

	if (row == NULL || !json_is_object(row))
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE), errmsg("an audit row is a JSON object")));
	tokex_audit_write(row, granted);
	PG_RETURN_VOID();
}

/* A text for the audit row, capped so that client-chosen strings cannot outgrow it. */
static json_t *
jcap(const char *s, int cap)
{
	int			len = strlen(s);

	if (len > cap)
		return json_stringn(s, pg_mbcliplen(s, len, cap));
	return json_string(s);
}

static json_t *
jcap_array(char **items, int n, int cap)
{
	json_t	   *a = json_array();

	for (int i = 0; i < n; i++)
		json_array_append_new(a, jcap(items[i], cap));
	return a;
}

static json_t *
jint8_array(Datum arr)
{
	Datum	   *elems;
	bool	   *nulls;
	int			n;
	json_t	   *a = json_array();

	deconstruct_array(DatumGetArrayTypeP(arr), INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE,
					  &elems, &nulls, &n);
	for (int i = 0; i < n; i++)
		if (!nulls[i])
			json_array_append_new(a, json_integer((json_int_t) DatumGetInt64(elems[i])));
	return a;
}

static json_t *
jhex(const uint8 *p, int n)
{
	char		hex[2 + 64 + 1];

	hex[0] = '\\';
	hex[1] = 'x';
	hex_encode((const char *) p, n, hex + 2);
	hex[2 + 2 * n] = '\0';
	return json_string(hex);
}

/* audit_event.operation; a switch, so a new kind of issuance cannot go unnamed */
static const char *
operation_name(IssueOp op)
{
	switch (op)
	{
		case OP_EXCHANGE:
			return "exchange";
		case OP_CLIENT_CREDENTIALS:
			return "client_credentials";
		case OP_SESSION:
			return "session";
		case OP_IDENTITY_TOKEN:
			return "identity_token";
		case OP_JWT_SIGN:
			return "jwt_sign";
	}
	elog(ERROR, "tokex: unknown issuance %d", (int) op);
	return NULL;				/* keep the compiler quiet */
}

/*
 * Step: the issuance's audit row, granted or denied, in one place for every
 * kind of token.  A granted row is committed (by the audit writer) before
 * the token is returned.
 */
void
audit(Issuance *x)
{
	json_t	   *row = tokex_json_track(json_pack("{}"));
	char		id[UUID_LEN * 2 + 5];

#define PUT(k, v) json_object_set_new(row, (k), (v))
	snprintf(id, sizeof(id), "%s",
			 DatumGetCString(DirectFunctionCall1(uuid_out, UUIDPGetDatum(&x->exchange_id))));
	PUT("exchange_id", json_string(id));
	PUT("operation", json_string(operation_name(x->op)));
	PUT("decision", json_string(x->error ? "denied" : "granted"));
	if (x->error)
	{
		PUT("error", json_string(x->error));
		PUT("reason", jcap(x->reason, 1024));
	}
	if (x->nchain > 0)
	{
		json_t	   *chain = json_array();

		for (int i = 0; i < x->nchain; i++)
		{
			char	   *who = x->chain_id[i] ? x->chain_id[i] : x->chain_sub[i];

			if (i == 0)
				PUT("subject", jcap(who, 512));
			else
				json_array_append_new(chain, jcap(who, 512));
			if (i == x->nchain - 1 && i > 0)
				PUT("actor", jcap(who, 512));
		}
		if (x->nchain > 1)
			PUT("actor_chain", chain);
		else
			json_decref(chain);
	}
	{
		/* the client that asked, if any: not the actor that fills the claim when none did */
		const char *client = x->client_id;

		if (client)
			PUT("client_id", jcap(client, 256));
	}
	if (x->target || x->audience || x->resource)
		PUT("audience", jcap(x->target ? x->target : x->audience ? x->audience : x->resource, 1024));
	if (x->scope)
		PUT("requested_scope", jcap_array(x->requested, x->nrequested, 256));
	if (!x->error)
	{
		char		buf[MAXDATELEN + 1];

		/* only the formats that carry a scope have one */
		if (x->op == OP_EXCHANGE || x->op == OP_SESSION)
			PUT("scope", jcap_array(x->scope_out, x->nscope, 256));
		PUT("jti", json_string(id));
		if (x->exp > 0)			/* an administrator's token may have no exp */
		{
			JsonEncodeDateTime(buf, TimestampTzGetDatum(time_t_to_timestamptz((pg_time_t) x->exp)),
							   TIMESTAMPTZOID, NULL);
			PUT("expires_at", json_string(buf));
		}
		PUT("issued_token_type", json_string(x->issued_type ? x->issued_type : TT_JWT));
	}
	if (x->delegation_ids)
		PUT("delegation_ids", jint8_array(x->delegation_ids));
	if (x->policy_ids)
		PUT("policy_ids", jint8_array(x->policy_ids));
	if (x->subj)
		PUT("subject_issuer", jcap(x->subj->iss, 1024));
	if (x->act)
		PUT("actor_issuer", jcap(x->act->iss, 1024));
	if (x->subject_token)
		PUT("subject_token_sha256", jhex(x->subject_hash, 32));
	if (x->actor_token)
		PUT("actor_token_sha256", jhex(x->actor_hash, 32));
	if (x->subj && json_is_string(json_object_get(x->subj->payload, "sid")))
		PUT("subject_sid", jcap(json_string_value(json_object_get(x->subj->payload, "sid")), 64));
	else if (x->op == OP_SESSION && !x->error)
		PUT("subject_sid", json_string(DatumGetCString(DirectFunctionCall1(uuid_out, UUIDPGetDatum(&x->sid)))));
	if (x->op != OP_EXCHANGE)
		PUT("subject_issuer", json_string(tokex_issuer));
	if (x->subject_token_type)
		PUT("subject_token_type", jcap(x->subject_token_type, 512));
	if (x->actor_token_type)
		PUT("actor_token_type", jcap(x->actor_token_type, 512));
	if (x->has_issued_hash && !x->error)
		PUT("issued_token_sha256", jhex(x->issued_hash, 32));
	if (x->op == OP_EXCHANGE && x->dpop.jkt[0] && !x->error)
		PUT("dpop_jkt", json_string(x->dpop.jkt));
	if (x->credential_id && !x->error)
		PUT("credential_id", json_integer((json_int_t) x->credential_id));
#undef PUT
	tokex_audit_write(row, x->error == NULL);
}

/* ---------------------------------------------------------------------
 * The writer
 * ---------------------------------------------------------------------
 */
static int	writer_index = -1;
static Oid	writer_db = InvalidOid;

/* Whatever ends the writer: pending rows fail (their tokens are not issued). */
static void
writer_exit(int code, Datum arg)
{
	bool		wake = false;

	if (audit_shmem == NULL || writer_index < 0)
		return;
	LWLockAcquire(audit_shmem->lock, LW_EXCLUSIVE);
	if (audit_shmem->writers[writer_index].pid == MyProcPid ||
		(audit_shmem->writers[writer_index].state == WRITER_STARTING &&
		 audit_shmem->writers[writer_index].dboid == writer_db))
	{
		Oid			db = audit_shmem->writers[writer_index].dboid;

		audit_shmem->writers[writer_index].state = WRITER_NONE;
		audit_shmem->writers[writer_index].pid = 0;
		for (int i = 0; i < AUDIT_SLOTS; i++)
		{
			AuditSlot  *s = &audit_shmem->slots[i];

			if (s->dboid != db || (s->state != SLOT_FILLED && s->state != SLOT_WRITING))
				continue;
			if (s->abandoned)
				s->state = SLOT_FREE;
			else
			{
				s->state = SLOT_FAILED;
				strlcpy(s->error, "the audit writer stopped", sizeof(s->error));
				SetLatch(&ProcGlobal->allProcs[s->requester].procLatch);
			}
		}
		wake = true;
	}
	LWLockRelease(audit_shmem->lock);
	if (wake)
		ConditionVariableBroadcast(&audit_shmem->cv);
}

/*
 * In a worker's transaction, before it touches tokex's tables: hold the
 * extension itself (a share lock on its pg_extension object) until the end
 * of the transaction.  DROP EXTENSION takes that lock exclusively before it
 * locks the tables one by one, so the two queue on one lock.  Without it, a
 * sealer's round that held tokex.audit_block and wanted tokex.audit_seq
 * while a DROP held the sequence and wanted the table was a deadlock, and
 * the DROP the one cancelled (seen with the server under valgrind, where a
 * round lasts long enough to meet a DROP).  A DROP that commits while we
 * wait leaves the work to find no tokex, as it would have before.
 */
void
tokex_worker_hold_extension(void)
{
	Oid			ext = get_extension_oid("tokex", true);

	if (OidIsValid(ext))
		LockDatabaseObject(ExtensionRelationId, ext, 0, AccessShareLock);
}

/*
 * A background worker's unit of work: fn(arg) in a transaction of its own,
 * holding the extension, with a snapshot, committed; on error the
 * transaction is aborted, the message copied into why, and false returned
 * (the worker carries on).
 */
bool
tokex_worker_xact(const char *activity, void (*fn) (void *arg), void *arg, char *why, size_t whylen)
{
	MemoryContext cxt = CurrentMemoryContext;
	volatile bool ok = true;

	PG_TRY();
	{
		SetCurrentStatementStartTimestamp();
		StartTransactionCommand();
		tokex_worker_hold_extension();
		PushActiveSnapshot(GetTransactionSnapshot());
		pgstat_report_activity(STATE_RUNNING, activity);
		fn(arg);
		PopActiveSnapshot();
		CommitTransactionCommand();
		pgstat_report_activity(STATE_IDLE, NULL);
	}
	PG_CATCH();
	{
		ErrorData  *e;

		MemoryContextSwitchTo(cxt);
		e = CopyErrorData();
		FlushErrorState();
		AbortCurrentTransaction();
		strlcpy(why, e->message ? e->message : "unknown error", whylen);
		FreeErrorData(e);
		ok = false;
	}
	PG_END_TRY();
	return ok;
}

/* ---- the writer's insert ----------------------------------------------- */

/* Are all partitions under rel plain tables (no foreign table, whose insert is not a heap's)? */
static bool
plain_partitions(Relation rel)
{
	PartitionDesc pd = RelationGetPartitionDesc(rel, true);

	for (int i = 0; i < pd->nparts; i++)
	{
		char		kind = get_rel_relkind(pd->oids[i]);

		if (kind == RELKIND_PARTITIONED_TABLE)
		{
			Relation	sub = table_open(pd->oids[i], AccessShareLock);
			bool		ok = plain_partitions(sub);

			table_close(sub, NoLock);
			if (!ok)
				return false;
		}
		else if (kind != RELKIND_RELATION)
			return false;
	}
	return true;
}

/*
 * Whether the rows can go straight into the table (direct_insert) rather
 * than through INSERT ... jsonb_populate_recordset (insert_rows, a third of
 * the writer's work): only when that INSERT would do nothing more: fire no
 * trigger but those tokex made, apply no rule, reach no foreign table, and
 * find no Shared Signals stream for the tracking its statement trigger does
 * (tokex._ssf_track).  The stream is looked for in the latest committed
 * state, with the table locked, as the trigger would after the INSERT:
 * not in the transaction's snapshot, taken before a wait for the lock.
 * Anything else takes the INSERT.
 */
static bool
direct_insert_allowed(Relation root)
{
	TriggerDesc *td = root->trigdesc;
	Oid			ssf;
	bool		streams = true;

	if (root->rd_rules != NULL)
		return false;
	if (root->rd_rel->relkind == RELKIND_PARTITIONED_TABLE && !plain_partitions(root))
		return false;
	for (int i = 0; td && i < td->numtriggers; i++)
	{
		Trigger    *t = &td->triggers[i];

		if (t->tgenabled == TRIGGER_DISABLED || !TRIGGER_FOR_INSERT(t->tgtype))
			continue;
		if (strcmp(t->tgname, "audit_event_row") != 0 && strcmp(t->tgname, "audit_event_ssf") != 0)
			return false;
	}
	ssf = get_relname_relid("ssf_stream", RelationGetNamespace(root));
	if (OidIsValid(ssf))
	{
		Relation	rel = table_open(ssf, AccessShareLock);
		Snapshot	snap = RegisterSnapshot(GetLatestSnapshot());
		TableScanDesc scan = table_beginscan(rel, snap, 0, NULL);

		streams = heap_getnext(scan, ForwardScanDirection) != NULL;
		table_endscan(scan);
		UnregisterSnapshot(snap);
		table_close(rel, AccessShareLock);
	}
	return !streams;
}

/* How one column is read: its type's input, or its element type's */
typedef struct ColumnIn
{
	FmgrInfo	in;				/* the type's input function (scalars) */
	Oid			ioparam;
	Oid			elem;			/* arrays: the element type, else InvalidOid */
	FmgrInfo	elem_in;
	Oid			elem_ioparam;
	int16		elem_len;
	bool		elem_byval;
	char		elem_align;
} ColumnIn;

/* A packed value's text, *p moved past it; NULL if the row ends first */
static const char *
packed_text(const char **p, const char *end)
{
	const char *t = *p;
	const char *nul = memchr(t, '\0', end - t);

	if (nul == NULL)
		return NULL;
	*p = nul + 1;
	return t;
}

/* Move *p past one packed value (an element when element); false if the row ends first */
static bool
packed_skip(const char **p, const char *end, bool element)
{
	char		tag;

	if (*p >= end)
		return false;
	tag = *(*p)++;
	if (tag == 't' || tag == 'f' || (tag == 'z' && element))
		return true;
	if (tag == 's' || tag == 'i')
		return packed_text(p, end) != NULL;
	if (tag == 'a' && !element && end - *p >= 2)
	{
		int			n = ((unsigned char) (*p)[0] << 8) | (unsigned char) (*p)[1];

		*p += 2;
		for (int k = 0; k < n; k++)
			if (!packed_skip(p, end, true))
				return false;
		return true;
	}
	return false;
}

/* A packed scalar's text (p at its tag, checked by packed_skip) */
static const char *
packed_scalar(const char **p, const char *end)
{
	char		tag = *(*p)++;

	return tag == 't' ? "true" : tag == 'f' ? "false" : packed_text(p, end);
}

/*
 * One packed row (see row_pack) into values/nulls of desc, as
 * jsonb_populate_recordset reads the same row as JSON: a column absent is
 * NULL, a scalar goes through its type's input function, a flat array
 * becomes a one-dimensional array, each element through its element
 * type's input with the column's typmod.  The row is walked once for where
 * each column's value is, then the values are read in the table's column
 * order, so a row with two bad values is refused for the same one as by
 * the INSERT.  False for an array where the column takes a scalar or the
 * other way round (what the INSERT does with those is its own), or a
 * malformed row: the batch then takes the INSERT.
 */
static bool
packed_values(const char *p, const char *end, TupleDesc desc, ColumnIn *cols,
			  Datum *values, bool *nulls)
{
	const char **at = palloc0(sizeof(char *) * desc->natts);
	int			guess = 0;

	p++;						/* ROW_PACKED */
	for (;;)
	{
		const char *name = packed_text(&p, end);
		int			i;

		if (name == NULL)
			return false;
		if (*name == '\0')
			break;
		if ((i = column_named(desc, name, &guess)) >= 0)
			at[i] = p;
		if (!packed_skip(&p, end, false))
			return false;
	}
	for (int i = 0; i < desc->natts; i++)
	{
		ColumnIn   *c = &cols[i];
		Form_pg_attribute a = TupleDescAttr(desc, i);
		const char *q = at[i];

		nulls[i] = q == NULL;
		if (q == NULL)
			continue;
		if (*q == 'a')
		{
			int			n = ((unsigned char) q[1] << 8) | (unsigned char) q[2];
			Datum	   *items;
			bool	   *inulls;
			int			dims[1] = {n};
			int			lbs[1] = {1};

			if (!OidIsValid(c->elem))
				return false;	/* an array for a scalar column: the INSERT's to judge */
			if (n == 0)
			{
				values[i] = PointerGetDatum(construct_empty_array(c->elem));
				continue;
			}
			q += 3;
			items = palloc(sizeof(Datum) * n);
			inulls = palloc(sizeof(bool) * n);
			for (int k = 0; k < n; k++)
			{
				inulls[k] = *q == 'z';
				if (inulls[k])
					q++;
				else			/* an array's typmod is its elements' */
					items[k] = InputFunctionCall(&c->elem_in, (char *) packed_scalar(&q, end),
												 c->elem_ioparam, a->atttypmod);
			}
			values[i] = PointerGetDatum(construct_md_array(items, inulls, 1, dims, lbs, c->elem,
														   c->elem_len, c->elem_byval, c->elem_align));
		}
		else
		{
			if (OidIsValid(c->elem))
				return false;	/* a scalar for an array column: the INSERT's to judge */
			values[i] = InputFunctionCall(&c->in, (char *) packed_scalar(&q, end), c->ioparam,
										  a->atttypmod);
		}
	}
	return true;
}

/* A packed value written back as the JSON it was packed from; false if malformed */
static bool
packed_json_value(StringInfo out, const char **p, const char *end, bool element)
{
	char		tag;
	const char *t;

	if (*p >= end)
		return false;
	tag = *(*p)++;
	switch (tag)
	{
		case 't':
			appendStringInfoString(out, "true");
			return true;
		case 'f':
			appendStringInfoString(out, "false");
			return true;
		case 'z':
			appendStringInfoString(out, "null");
			return element;
		case 'i':
			if ((t = packed_text(p, end)) == NULL)
				return false;
			appendStringInfoString(out, t);
			return true;
		case 's':
			if ((t = packed_text(p, end)) == NULL)
				return false;
			escape_json(out, t);
			return true;
		case 'a':
			{
				int			n;

				if (element || end - *p < 2)
					return false;
				n = ((unsigned char) (*p)[0] << 8) | (unsigned char) (*p)[1];
				*p += 2;
				appendStringInfoChar(out, '[');
				for (int k = 0; k < n; k++)
				{
					if (k)
						appendStringInfoChar(out, ',');
					if (!packed_json_value(out, p, end, true))
						return false;
				}
				appendStringInfoChar(out, ']');
				return true;
			}
		default:
			return false;
	}
}

/* A slot's row as JSON text, appended to out: as it is, or the packed row written back. */
static void
slot_json(StringInfo out, const char *data, int len)
{
	const char *p = data + 1,
			   *end = data + len;
	bool		first = true;

	if (len == 0 || data[0] != ROW_PACKED)
	{
		appendBinaryStringInfo(out, data, len);
		return;
	}
	appendStringInfoChar(out, '{');
	for (;;)
	{
		const char *name = packed_text(&p, end);

		if (name == NULL)
			elog(ERROR, "tokex: a packed audit row is cut short");
		if (*name == '\0')
			break;
		if (!first)
			appendStringInfoChar(out, ',');
		first = false;
		escape_json(out, name);
		appendStringInfoChar(out, ':');
		if (!packed_json_value(out, &p, end, false))
			elog(ERROR, "tokex: a packed audit row is malformed");
	}
	appendStringInfoChar(out, '}');
}

/* The rows of one batch, as their slots hold them (JSON or packed), copied out */
typedef struct Batch
{
	int			n;
	char	  **data;
	int		   *len;
} Batch;

/*
 * Insert the rows straight into tokex.audit_event, as logical replication's
 * apply worker inserts a row: routed to its partition, its BEFORE ROW
 * trigger (seq, row_hash), constraints and indexes, in one executor state
 * for the batch.  A row that came as JSON is packed here, its columns only.
 * False (nothing done) when a row is not what packed_values reads: the
 * caller then takes the INSERT.
 */
static bool
direct_insert(Batch *b, Relation root)
{
	int			n = b->n;
	TupleDesc	desc = RelationGetDescr(root);
	int			natts = desc->natts;
	ColumnIn   *cols = palloc0(sizeof(ColumnIn) * natts);
	Datum	  **values = palloc(sizeof(Datum *) * n);
	bool	  **nulls = palloc(sizeof(bool *) * n);
	EState	   *estate;
	RangeTblEntry *rte;
	ResultRelInfo *rri;
	ModifyTableState *mtstate = NULL;
	PartitionTupleRouting *proute = NULL;
	TupleTableSlot *slot;
	bool		partitioned = root->rd_rel->relkind == RELKIND_PARTITIONED_TABLE;

	if (!partitioned && root->rd_rel->relkind != RELKIND_RELATION)
		return false;
	for (int i = 0; i < natts; i++)
	{
		Form_pg_attribute a = TupleDescAttr(desc, i);
		ColumnIn   *c = &cols[i];
		Oid			func;

		if (a->attisdropped)
			continue;
		if (a->attgenerated)
			return false;		/* computed, not given: the INSERT's to refuse or fill */
		c->elem = get_element_type(a->atttypid);
		if (OidIsValid(c->elem))
		{
			getTypeInputInfo(c->elem, &func, &c->elem_ioparam);
			fmgr_info(func, &c->elem_in);
			get_typlenbyvalalign(c->elem, &c->elem_len, &c->elem_byval, &c->elem_align);
		}
		else if (a->atttypid == JSONOID || a->atttypid == JSONBOID ||
				 get_typtype(a->atttypid) != TYPTYPE_BASE)
			return false;		/* as JSON, a domain, a composite: the INSERT's */
		getTypeInputInfo(a->atttypid, &func, &c->ioparam);
		fmgr_info(func, &c->in);
	}
	/* every row read first: a row this cannot read sends them all to the INSERT */
	for (int r = 0; r < n; r++)
	{
		const char *data = b->data[r];
		size_t		len = b->len[r];

		values[r] = palloc(sizeof(Datum) * natts);
		nulls[r] = palloc(sizeof(bool) * natts);

		if (len == 0 || data[0] != ROW_PACKED)
		{
			json_error_t err;
			json_t	   *row = tokex_json_track(json_loadb(data, len, JSON_REJECT_DUPLICATES, &err));

			if (row == NULL || !json_is_object(row) || (data = row_pack(row, &len, desc)) == NULL)
				return false;
		}
		if (!packed_values(data, data + len, desc, cols, values[r], nulls[r]))
			return false;
	}

	estate = CreateExecutorState();
	rte = makeNode(RangeTblEntry);
	rte->rtekind = RTE_RELATION;
	rte->relid = RelationGetRelid(root);
	rte->relkind = root->rd_rel->relkind;
	rte->rellockmode = RowExclusiveLock;
	ExecInitRangeTable(estate, list_make1(rte));
	rri = makeNode(ResultRelInfo);
	InitResultRelInfo(rri, root, 1, NULL, 0);
	estate->es_opened_result_relations = lappend(estate->es_opened_result_relations, rri);
	estate->es_output_cid = GetCurrentCommandId(true);
	AfterTriggerBeginQuery();
	if (partitioned)
	{
		mtstate = makeNode(ModifyTableState);
		mtstate->ps.plan = NULL;
		mtstate->ps.state = estate;
		mtstate->operation = CMD_INSERT;
		mtstate->resultRelInfo = rri;
		mtstate->rootResultRelInfo = rri;
		proute = ExecSetupPartitionTupleRouting(estate, root);
	}
	else
		ExecOpenIndices(rri, false);
	slot = table_slot_create(root, &estate->es_tupleTable);
	for (int r = 0; r < n; r++)
	{
		ResultRelInfo *target = rri;
		TupleTableSlot *s = slot;

		ExecClearTuple(slot);
		memcpy(slot->tts_values, values[r], sizeof(Datum) * natts);
		memcpy(slot->tts_isnull, nulls[r], sizeof(bool) * natts);
		ExecStoreVirtualTuple(slot);
		if (partitioned)
		{
			target = ExecFindPartition(mtstate, rri, proute, slot, estate);
			if (target->ri_RootToPartitionMap != NULL)
				s = execute_attr_map_slot(target->ri_RootToPartitionMap->attrMap, slot,
										  target->ri_PartitionTupleSlot);
		}
		Assert(target->ri_RelationDesc->rd_rel->relkind == RELKIND_RELATION);	/* plain_partitions */
		ExecSimpleRelationInsert(target, estate, s);
	}
	AfterTriggerEndQuery(estate);
	if (partitioned)
		ExecCleanupTupleRouting(mtstate, proute);
	else
		ExecCloseIndices(rri);
	ExecCloseResultRelations(estate);
	ExecResetTupleTable(estate->es_tupleTable, false);
	FreeExecutorState(estate);
	return true;
}

/* The writer's insert: the batch straight in, or by the INSERT */
static void
insert_batch(void *arg)
{
	Batch	   *b = (Batch *) arg;
	Oid			nsp = get_namespace_oid("tokex", true);
	Oid			relid = OidIsValid(nsp) ? get_relname_relid("audit_event", nsp) : InvalidOid;
	bool		done = false;

	if (OidIsValid(relid) && tokex_audit_direct)
	{
		Relation	root = table_open(relid, RowExclusiveLock);

		if (direct_insert_allowed(root))
			done = direct_insert(b, root);
		table_close(root, NoLock);
	}
	if (!done)
	{
		StringInfoData buf;

		initStringInfo(&buf);
		appendStringInfoChar(&buf, '[');
		for (int i = 0; i < b->n; i++)
		{
			if (i)
				appendStringInfoChar(&buf, ',');
			slot_json(&buf, b->data[i], b->len[i]);
		}
		appendStringInfoChar(&buf, ']');
		insert_rows(buf.data);
	}
}

/* Commit the rows of these slots in one transaction; false (and why) on error. */
static bool
write_batch(int *idx, int n, char *why, size_t whylen)
{
	Batch		b;

	b.n = n;
	b.data = palloc(sizeof(char *) * n);
	b.len = palloc(sizeof(int) * n);
	for (int i = 0; i < n; i++)
	{
		AuditSlot  *s = &audit_shmem->slots[idx[i]];

		b.len[i] = s->len;
		b.data[i] = palloc(s->len + 1);
		memcpy(b.data[i], s->data, s->len + 1);
	}
	return tokex_worker_xact("tokex audit insert", insert_batch, &b, why, whylen);
}

static void
finish(int *idx, int n, bool ok, const char *why)
{
	LWLockAcquire(audit_shmem->lock, LW_EXCLUSIVE);
	for (int i = 0; i < n; i++)
	{
		AuditSlot  *s = &audit_shmem->slots[idx[i]];

		if (s->abandoned)
			s->state = SLOT_FREE;
		else
		{
			s->state = ok ? SLOT_DONE : SLOT_FAILED;
			if (!ok)
				strlcpy(s->error, why, sizeof(s->error));
			SetLatch(&ProcGlobal->allProcs[s->requester].procLatch);
		}
	}
	LWLockRelease(audit_shmem->lock);
	ConditionVariableBroadcast(&audit_shmem->cv);
}

void
tokex_audit_writer_main(Datum arg)
{
	Oid			db;
	int			idx[AUDIT_SLOTS];
	TimestampTz last = GetCurrentTimestamp();
	MemoryContext cxt;

	writer_index = DatumGetInt32(arg);
	memcpy(&db, MyBgworkerEntry->bgw_extra, sizeof(Oid));
	writer_db = db;
	before_shmem_exit(writer_exit, (Datum) 0);
	pqsignal(SIGTERM, die);
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnectionByOid(db, InvalidOid, 0);
	pgstat_report_appname("tokex audit writer");

	/* a row is worth its token only once it survives a crash */
	if (synchronous_commit == SYNCHRONOUS_COMMIT_OFF)
		SetConfigOption("synchronous_commit", "local", PGC_SUSET, PGC_S_OVERRIDE);
	/* a requester holding a lock the insert needs would wait forever */
	SetConfigOption("lock_timeout", "5s", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("search_path", "pg_catalog, pg_temp", PGC_SUSET, PGC_S_OVERRIDE);

	LWLockAcquire(audit_shmem->lock, LW_EXCLUSIVE);
	if (audit_shmem->writers[writer_index].state != WRITER_STARTING ||
		audit_shmem->writers[writer_index].dboid != db)
	{
		/* given up on (WRITER_START_MS) or taken over: not ours any more */
		LWLockRelease(audit_shmem->lock);
		writer_index = -1;
		proc_exit(0);
	}
	audit_shmem->writers[writer_index].pgprocno = MyProc->pgprocno;
	audit_shmem->writers[writer_index].pid = MyProcPid;
	audit_shmem->writers[writer_index].state = WRITER_RUNNING;
	LWLockRelease(audit_shmem->lock);
	ConditionVariableBroadcast(&audit_shmem->cv);

	cxt = AllocSetContextCreate(TopMemoryContext, "tokex audit writer", ALLOCSET_DEFAULT_SIZES);
	for (;;)
	{
		int			n = 0;

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		LWLockAcquire(audit_shmem->lock, LW_EXCLUSIVE);
		for (int i = 0; i < AUDIT_SLOTS; i++)
			if (audit_shmem->slots[i].state == SLOT_FILLED && audit_shmem->slots[i].dboid == db)
			{
				audit_shmem->slots[i].state = SLOT_WRITING;
				idx[n++] = i;
			}
		if (n == 0 && TimestampDifferenceExceeds(last, GetCurrentTimestamp(), WRITER_IDLE_MS))
		{
			/* idle: leave, so DROP DATABASE is not kept waiting; a request restarts us */
			audit_shmem->writers[writer_index].state = WRITER_NONE;
			audit_shmem->writers[writer_index].pid = 0;
			LWLockRelease(audit_shmem->lock);
			ConditionVariableBroadcast(&audit_shmem->cv);
			writer_index = -1;
			proc_exit(0);
		}
		LWLockRelease(audit_shmem->lock);

		if (n > 0)
		{
			char		why[256];
			MemoryContext old = MemoryContextSwitchTo(cxt);

			if (write_batch(idx, n, why, sizeof(why)))
				finish(idx, n, true, NULL);
			else if (n == 1)
				finish(idx, 1, false, why);
			else
			{
				/* one bad row must not fail the others: retry each alone */
				for (int i = 0; i < n; i++)
					finish(&idx[i], 1, write_batch(&idx[i], 1, why, sizeof(why)), why);
			}
			MemoryContextSwitchTo(old);
			MemoryContextReset(cxt);
			last = GetCurrentTimestamp();
			continue;
		}
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 WRITER_IDLE_MS / 4, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}
