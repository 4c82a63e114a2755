"""The team cache: responses in PostgreSQL (psycopg 3), shared by every kernel and machine that
names the same URL, with the interface and the promises of the local ``ResponseCache``.

Tables, in a schema of their own (``dataformer`` unless told otherwise):

- ``responses``: one row per response: its key, its JSON exactly as received (``bytea``), the
  projects using it (``text[]``, in the order they came), size, tokens, when it was stored, the
  prompt's first 1,000 characters, the project that paid for it and what it cost; ``seq`` keeps
  the order they were stored in, for browsing;
- ``projects``: a project's accounting, as the local store keeps it;
- ``migrations``: the names of the migrations applied (``MIGRATIONS``), each run once,
  under an advisory lock, in its own transaction.

Everything read back goes through the local store's checks (``records._entry_record``,
``names.stored_name``): a row changed by something else is a miss, never a crash. The cache
key and the stored JSON are the local store's, so a local cache copied in hits the same.

Each thread has its own connection: the cache writer commits from its thread while a panel or
``generate`` reads from another. The password in the URL is a secret: it appears in no repr,
message or traceback.
"""

from __future__ import annotations

import contextlib
import functools
import os
import random
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, TypeVar

from .._format import plural
from .._sync import warn
from ..errors import CacheError, ConfigurationError, DataformerWarning, StoreUnavailable, UnknownProjectWarning
from ..names import FULL, normalize_project, stored_name
from ..settings import Secret
from .browse import Browsing
from .listeners import Observed
from .records import (
    ClearReport,
    Entry,
    Hits,
    NewResponse,
    ProjectInfo,
    _entry,
    _entry_record,
    _new_response,
    clear_names,
    without_entry,
)

if TYPE_CHECKING:
    import psycopg

DEFAULT_SCHEMA = "dataformer"
T = TypeVar("T")
_PROJECT_FIELDS = ("entries", "bytes", "last_used", "prompt_tokens", "completion_tokens", "saved_tokens", "cost",
                   "unpriced")
# Named migrations of the team store's schema, in order; "{s}" is the schema, quoted.
MIGRATIONS: tuple[tuple[str, str], ...] = (
    ("0001_tables", """
        CREATE TABLE {s}.responses (
            key text PRIMARY KEY,
            body bytea NOT NULL,
            projects text[] NOT NULL,
            size bigint NOT NULL,
            prompt_tokens bigint NOT NULL DEFAULT 0,
            completion_tokens bigint NOT NULL DEFAULT 0,
            created double precision NOT NULL,
            prompt text NOT NULL DEFAULT '',
            paid_by text,
            cost double precision,
            seq bigserial NOT NULL
        );
        CREATE INDEX responses_projects ON {s}.responses USING gin (projects);
        CREATE INDEX responses_seq ON {s}.responses (seq);
        CREATE TABLE {s}.projects (
            name text PRIMARY KEY,
            entries bigint NOT NULL DEFAULT 0,
            bytes bigint NOT NULL DEFAULT 0,
            last_used double precision NOT NULL DEFAULT 0,
            prompt_tokens bigint NOT NULL DEFAULT 0,
            completion_tokens bigint NOT NULL DEFAULT 0,
            saved_tokens bigint NOT NULL DEFAULT 0,
            cost double precision NOT NULL DEFAULT 0,
            unpriced bigint NOT NULL DEFAULT 0
        );
    """),
    # Who is sending a request right now, until when: two kernels never pay for one request.
    ("0002_claims", """
        CREATE TABLE {s}.claims (
            key text PRIMARY KEY,
            owner text NOT NULL,
            expires double precision NOT NULL
        );
        CREATE INDEX claims_owner ON {s}.claims (owner);
    """),
    # The stores whose accounting was copied in (python -m dataformer_nb cache copy): once each.
    ("0003_copies", """
        CREATE TABLE {s}.copies (source text PRIMARY KEY, copied double precision NOT NULL);
    """),
    # Who used each project (DATAFORMER_USER, else the OS user), in the order they came.
    ("0004_project_users", """
        ALTER TABLE {s}.projects ADD COLUMN users text[] NOT NULL DEFAULT '{{}}';
    """),
    # The records of provider batches (the batch ledger's), shared by the team, so any member's
    # run resumes and collects a batch another submitted; opaque bytes here, read by the ledger.
    ("0005_batch_records", """
        CREATE TABLE {s}.batch_records (
            local text PRIMARY KEY,
            record bytea NOT NULL,
            keys bytea
        );
    """),
)
# Keys asked for in one query: a warm re-run of 10^5 reads 200 pages.
READ_BATCH = 500


class _Conflict(CacheError):
    """A transaction PostgreSQL rolled back because another one crossed it (a deadlock, or a
    serialization failure): run again, it succeeds."""


def _retried(method: Callable[..., T]) -> Callable[..., T]:
    """``method`` run again, up to 8 times, when its transaction crossed another run's and was
    rolled back (rivals writing the same rows in another order). Each write method is whole
    transactions that re-read what they change, so running it again is safe."""

    @functools.wraps(method)
    def run(*args: Any, **kwargs: Any) -> T:
        for attempt in range(8):
            try:
                return method(*args, **kwargs)
            except _Conflict:
                if attempt == 7:
                    raise
                time.sleep(random.uniform(0, 0.01 * 2 ** attempt))  # rivals apart, then again
        raise AssertionError("unreachable")

    return run


class PostgresCache(Browsing, Observed):
    """Responses in PostgreSQL at ``url`` (``postgresql://user:password@host:port/database``,
    with any libpq parameter, TLS ones included), in ``schema`` (created if missing; the role
    needs only to own it). Same interface as ``ResponseCache``.

    Raises CacheError, naming the host and database (never the password), if the server does
    not answer or the role may not create the schema; ConfigurationError for a URL that is not
    one.
    """

    def __init__(self, url: str, schema: str = DEFAULT_SCHEMA) -> None:
        import psycopg
        from psycopg import sql

        self._psycopg = psycopg
        self._url = Secret(check_cache_url(url))
        self.schema = _checked_schema(schema)
        self._s = sql.Identifier(self.schema)
        self._location = where_url(url)
        self._local = threading.local()
        self._connections: list[psycopg.Connection[Any]] = []
        self._lock = threading.Lock()
        self.user = _user()
        self._migrate()

    def __repr__(self) -> str:
        return f"PostgresCache({self._location!r}, schema={self.schema!r})"

    @property
    def location(self) -> str:
        """Host, port and database, with the schema (no user, no password)."""
        return f"{self._location}, schema {self.schema}"

    # Connections and errors

    def _connect(self) -> psycopg.Connection[Any]:
        """A new connection (autocommit); StoreUnavailable, naming the host, if there is none to be had."""
        try:
            return self._psycopg.connect(self._url.reveal(), autocommit=True, connect_timeout=10)
        except self._psycopg.Error as exc:
            raise StoreUnavailable(f"the team cache at {self._location} cannot be reached "
                                   f"({_message(exc, self._url)}): check that the server is running and the "
                                   "URL's host, port and database") from None

    def _connection(self) -> psycopg.Connection[Any]:
        db = getattr(self._local, "db", None)
        if db is None or db.closed:
            db = self._connect()
            self._local.db = db
            with self._lock:
                self._connections.append(db)
        return db

    @contextlib.contextmanager
    def _transaction(self, doing: str) -> Iterator[psycopg.Cursor[Any]]:
        """A cursor in one transaction; psycopg's errors as a CacheError naming the store (the one
        place they are mapped). A connection that broke is dropped: the next call reconnects."""
        db = self._connection()
        try:
            with db.transaction(), db.cursor() as cursor:
                yield cursor
        except self._psycopg.Error as exc:
            if db.closed or db.broken:
                self._local.db = None
            if db.broken or (isinstance(exc, self._psycopg.OperationalError) and db.closed):
                raise StoreUnavailable(f"the team cache at {self.location} cannot be {doing}: its server went away "
                                       f"({_message(exc, self._url)})") from None
            if isinstance(exc, (self._psycopg.errors.DeadlockDetected, self._psycopg.errors.SerializationFailure)):
                raise _Conflict(f"the team cache at {self.location} cannot be {doing} "
                                f"({_message(exc, self._url)})") from None
            raise CacheError(f"the team cache at {self.location} cannot be {doing} "
                             f"({_message(exc, self._url)})") from None

    def close(self) -> None:
        """Close every connection this cache opened (they reopen on next use)."""
        with self._lock:
            for db in self._connections:
                db.close()
            self._connections.clear()
        self._local = threading.local()

    def _migrate(self) -> None:
        from psycopg import sql

        with self._transaction("opened") as cur:
            # One migrator at a time across the team; the others wait here, then find it done.
            cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"dataformer_nb:{self.schema}",))
            # Looked up first: CREATE SCHEMA IF NOT EXISTS needs the right to create schemas even
            # when it exists, which a role that only owns its schema does not have.
            cur.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (self.schema,))
            if cur.fetchone() is None:
                self._create_schema(cur)
            cur.execute(sql.SQL("CREATE TABLE IF NOT EXISTS {}.migrations (name text PRIMARY KEY, "
                                "applied double precision NOT NULL)").format(self._s))
            cur.execute(sql.SQL("SELECT name FROM {}.migrations").format(self._s))
            done = {name for (name,) in cur.fetchall()}
            unknown = done - {name for name, _ in MIGRATIONS}
            if unknown:
                raise CacheError(f"the team cache at {self.location} was written by a newer dataformer_nb (migrations "
                                 f"{sorted(unknown)}): upgrade dataformer_nb, or pass another schema")
            for name, statements in MIGRATIONS:
                if name not in done:
                    cur.execute(sql.SQL(statements.replace("{s}", "{schema}")).format(schema=self._s))
                    cur.execute(sql.SQL("INSERT INTO {}.migrations VALUES (%s, %s)").format(self._s),
                                (name, time.time()))

    def _create_schema(self, cur: psycopg.Cursor[Any]) -> None:
        from psycopg import errors, sql

        try:
            cur.execute(sql.SQL("CREATE SCHEMA {}").format(self._s))
        except errors.InsufficientPrivilege:
            raise CacheError(f"the team cache at {self.location} cannot be opened: the schema does not exist and "
                             "this role may not create it (permission denied): ask the database's owner to run "
                             f'CREATE SCHEMA "{self.schema}" AUTHORIZATION <this role>, or set '
                             "DATAFORMER_CACHE_SCHEMA to a schema this role owns") from None

    def _sql(self, text: str) -> Any:
        """``text`` with ``{s}`` as this cache's schema, quoted."""
        from psycopg import sql

        return sql.SQL(text.replace("{s}", "{schema}")).format(schema=self._s)

    # Sizes

    def __len__(self) -> int:
        """The number of cached responses."""
        with self._transaction("read") as cur:
            cur.execute(self._sql("SELECT count(*) FROM {s}.responses"))
            return int(_one(cur)[0])

    @property
    def stored_bytes(self) -> int:
        """The bytes of the cached responses (each counted once)."""
        with self._transaction("read") as cur:
            cur.execute(self._sql("SELECT coalesce(sum(size), 0) FROM {s}.responses"))
            return int(_one(cur)[0])

    def volume(self) -> int:
        """Bytes the cache's tables and indexes take in the database."""
        with self._transaction("read") as cur:
            cur.execute(self._sql("SELECT pg_total_relation_size(%s) + pg_total_relation_size(%s)"),
                        (f'"{self.schema}".responses', f'"{self.schema}".projects'))
            return int(_one(cur)[0])

    def compact(self) -> int:
        """Give back to the disk the room deleted responses left (VACUUM FULL: it locks the tables
        while it rewrites them); the bytes freed."""
        before = self.volume()
        db = self._connection()
        try:
            db.execute(self._sql("VACUUM FULL {s}.responses"))
            db.execute(self._sql("VACUUM FULL {s}.projects"))
        except self._psycopg.Error as exc:
            raise CacheError(f"the team cache at {self.location} could not be compacted "
                             f"({_message(exc, self._url)}): the role must own its tables") from None
        self.notify()
        return max(before - self.volume(), 0)

    # Responses

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and bool(self.users([key]))

    def get(self, key: str) -> dict[str, Any] | None:
        """The cached response under ``key``, decoded, or None."""
        from .._json import loads_or_none

        rows, _ = self._rows([key])
        if not rows:
            return None
        value = loads_or_none(rows[0][1])
        return value if isinstance(value, dict) else None

    def _rows(self, keys: list[str]) -> tuple[list[tuple[str, bytes, dict[str, Any]]], list[str]]:
        """``(key, body, record)`` of the rows among ``keys`` (the record: projects and tokens), and
        the keys of the damaged ones, left out with one warning (misses: new responses replace
        them, see ``lookup``). The columns are typed, so a row changed by hand can only hold
        something other than a JSON object, or no projects: only that is checked here, in the
        path of every warm re-run. Rows come in PostgreSQL's binary format: bytea as hex text cost
        a warm re-run of 10^5 more than all the rest of it."""
        found: list[tuple[str, bytes, dict[str, Any]]] = []
        damaged: list[str] = []
        columns = "SELECT key, body, projects, prompt_tokens, completion_tokens FROM {s}.responses WHERE key = "
        # A page of keys as one comma-joined text, split by the server: psycopg quotes a list's
        # items one by one (a regular expression each), which cost a warm re-run of 10^5 about a
        # quarter of its CPU. Keys with a comma (never ours) go as a list.
        joined_query, list_query = self._sql(columns + "ANY(string_to_array(%s, ','))"), self._sql(columns + "ANY(%s)")
        with self._transaction("read") as cur:
            for start in range(0, len(keys), READ_BATCH):
                page = keys[start:start + READ_BATCH]
                joined = ",".join(page)
                if joined.count(",") == len(page) - 1:
                    cur.execute(joined_query, (joined,), binary=True)
                else:
                    cur.execute(list_query, (page,), binary=True)
                for key, body, projects, prompt_tokens, completion_tokens in cur.fetchall():
                    if projects is None or not _is_json_object(body):
                        damaged.append(key)
                    else:
                        found.append((key, body, {"projects": projects, "prompt_tokens": prompt_tokens,
                                                  "completion_tokens": completion_tokens}))
        if damaged:
            warnings.warn(f"{plural(len(damaged), 'response')} in the team cache at {self.location} "
                          f"{'has' if len(damaged) == 1 else 'have'} a damaged row: read as not cached (a new "
                          "response replaces each); the cache was changed by something other than dataformer_nb",
                          DataformerWarning, stacklevel=3)
        return found, damaged

    @_retried
    def lookup(self, keys: Iterable[str], project: str) -> Hits:
        """The cached responses among ``keys``, as JSON, each now recorded as used by ``project``."""
        project = normalize_project(project)
        found = Hits()
        joining: list[NewResponse] = []
        saved = 0
        rows, damaged = self._rows(list(keys))
        for key, body, record in rows:
            found[key] = body
            saved += record["prompt_tokens"] + record["completion_tokens"]
            if project not in record["projects"]:
                joining.append(NewResponse(key, body, record["prompt_tokens"], record["completion_tokens"]))
        if damaged:
            with self._transaction("written") as cur:  # made room for the new responses that will replace them
                cur.execute(self._sql("DELETE FROM {s}.responses WHERE key = ANY(%s)"), (damaged,))
        if found:
            with self._transaction("written") as cur:
                # Another run may have cleared a response since it was read: it goes back in, for
                # this project, which has it: no one pays for it again.
                stored = self._insert(cur, joining, project, paid=False)
                joined = self._join(cur, [item.key for item in joining if item.key not in stored], project)
                self._add_to_project(cur, project, len(stored) + len(joined),
                                     sum(stored.values()) + sum(joined.values()), saved_tokens=saved)
        found.saved_tokens = saved
        return found

    def users(self, keys: Iterable[str]) -> dict[str, frozenset[str]]:
        """The projects using each cached response among ``keys``; reads only."""
        return {key: frozenset(record["projects"]) for key, _, record in self._rows(list(keys))[0]}

    def put(self, key: str, response: Mapping[str, Any] | bytes, project: str) -> None:
        """Store ``response`` under ``key`` for ``project`` (committed before returning)."""
        self.put_many([(key, response)], project)

    @_retried
    def put_many(self, items: Iterable[NewResponse | tuple[str, Mapping[str, Any] | bytes]], project: str) -> None:
        """Store each response for ``project``, all in one transaction (see ResponseCache.put_many)."""
        project = normalize_project(project)
        new = list({item.key: item for item in map(_new_response, items)}.values())
        if not new:
            return
        prompt = sum(item.prompt_tokens for item in new)
        completion = sum(item.completion_tokens for item in new)
        cost = sum(item.cost for item in new if item.cost is not None)
        unpriced = sum(1 for item in new if item.cost is None)
        with self._transaction("written") as cur:
            stored = self._insert(cur, new, project, paid=True)
            joined = self._join(cur, [item.key for item in new if item.key not in stored], project)
            self._add_to_project(cur, project, len(stored) + len(joined), sum(stored.values()) + sum(joined.values()),
                                 prompt_tokens=prompt, completion_tokens=completion, cost=cost, unpriced=unpriced)
            # In the same transaction: whoever finds the claim gone finds the response.
            cur.execute(self._sql("DELETE FROM {s}.claims WHERE key = ANY(%s)"), ([item.key for item in new],))

    def _insert(self, cur: psycopg.Cursor[Any], items: list[NewResponse], project: str, paid: bool) -> dict[str, int]:
        """Insert the responses whose key is free; their sizes by key."""
        if not items:
            return {}
        cur.execute(self._sql(
            "INSERT INTO {s}.responses (key, body, projects, size, prompt_tokens, completion_tokens, created, prompt,"
            " paid_by, cost)"
            " SELECT k, b, ARRAY[%s], octet_length(b), p, c, %s, t, %s, co"
            " FROM unnest(%s::text[], %s::bytea[], %s::bigint[], %s::bigint[], %s::text[], %s::float8[])"
            " AS u(k, b, p, c, t, co)"
            " ON CONFLICT (key) DO NOTHING RETURNING key, size"),
            (project, int(time.time()), project if paid else None, [i.key for i in items], [i.data for i in items],
             [i.prompt_tokens for i in items], [i.completion_tokens for i in items], [i.prompt for i in items],
             [i.cost if paid else None for i in items]))
        return dict(cur.fetchall())

    def _join(self, cur: psycopg.Cursor[Any], keys: list[str], project: str) -> dict[str, int]:
        """Add ``project`` to the rows of ``keys`` that do not list it; their sizes by key."""
        if not keys:
            return {}
        cur.execute(self._sql("UPDATE {s}.responses SET projects = array_append(projects, %s)"
                              " WHERE key = ANY(%s) AND NOT projects @> ARRAY[%s] RETURNING key, size"),
                    (project, keys, project))
        return dict(cur.fetchall())

    @_retried
    def touch(self, project: str) -> None:
        """Record that ``project`` was used now, even if nothing was added to it."""
        with self._transaction("written") as cur:
            self._add_to_project(cur, normalize_project(project), 0, 0)

    @_retried
    def remove(self, project: str, key: str) -> bool:
        """Drop one response from ``project`` (deleted if no other project uses it); whether
        ``project`` used it."""
        project = normalize_project(project)
        with self._transaction("written") as cur:
            cur.execute(self._sql(f"SELECT {_RECORD} FROM {{s}}.responses WHERE key = %s FOR UPDATE"), (key,))
            row = cur.fetchone()
            record = None if row is None else _entry_record(_record(list(row)))
            if record is None or project not in record["projects"]:
                return False
            remaining = [p for p in record["projects"] if p != project]
            if remaining:
                cur.execute(self._sql("UPDATE {s}.responses SET projects = %s WHERE key = %s"), (remaining, key))
            else:
                cur.execute(self._sql("DELETE FROM {s}.responses WHERE key = %s"), (key,))
            own = self._project(cur, project, lock=True)
            if own is not None:
                self._write_project(cur, project, without_entry(own, record, project))
        self.notify()
        return True

    # Copying between stores (cache/copy.py)

    def all_rows(self, page: int = 1000) -> Iterator[list[tuple[str, bytes, dict[str, Any]]]]:
        """Every response as ``(key, JSON bytes, entry record)``, ``page`` at a time, in the order
        they were stored, records checked (a damaged row is left out)."""
        after = -1
        while True:
            with self._transaction("read") as cur:
                cur.execute(self._sql(f"SELECT seq, key, body, {_RECORD} FROM {{s}}.responses WHERE seq > %s"
                                      " ORDER BY seq LIMIT %s"), (after, page))
                rows = cur.fetchall()
            if not rows:
                return
            after = rows[-1][0]
            checked = [(key, bytes(body), _entry_record(_record(columns))) for _, key, body, *columns in rows]
            yield [(key, body, record) for key, body, record in checked
                   if record is not None and _is_json_object(body)]

    @_retried
    def merge_rows(self, rows: list[tuple[str, bytes, dict[str, Any]]]) -> None:
        """Add responses with their records, in one transaction: a key already here gains the
        projects it lacks. Project counts are recounted by ``merge_accounting``."""
        from psycopg.types.json import Jsonb

        if not rows:
            return
        with self._transaction("written") as cur:
            cur.execute(self._sql(
                "INSERT INTO {s}.responses AS r (key, body, projects, size, prompt_tokens, completion_tokens, created,"
                " prompt, paid_by, cost)"
                " SELECT k, b, array(SELECT jsonb_array_elements_text(j)), octet_length(b), p, c, t, pr, by, co"
                " FROM unnest(%s::text[], %s::bytea[], %s::jsonb[], %s::bigint[], %s::bigint[], %s::float8[],"
                " %s::text[], %s::text[], %s::float8[]) AS u(k, b, j, p, c, t, pr, by, co)"
                " ON CONFLICT (key) DO UPDATE SET projects = r.projects"
                " || array(SELECT p FROM unnest(EXCLUDED.projects) AS p WHERE p <> ALL(r.projects))"
                " WHERE NOT r.projects @> EXCLUDED.projects"),
                ([k for k, _, _ in rows], [b for _, b, _ in rows],
                 [Jsonb(r["projects"]) for _, _, r in rows],
                 [r["prompt_tokens"] for _, _, r in rows], [r["completion_tokens"] for _, _, r in rows],
                 [float(r["created"]) for _, _, r in rows], [r.get("prompt", "") for _, _, r in rows],
                 [r.get("by") for _, _, r in rows], [r.get("cost") for _, _, r in rows]))

    def project_records(self) -> dict[str, dict[str, Any]]:
        """Each project's accounting record."""
        with self._transaction("read") as cur:
            cur.execute(self._sql(f"SELECT name, {', '.join(_PROJECT_FIELDS)} FROM {{s}}.projects"))
            return {name: dict(zip(_PROJECT_FIELDS, values, strict=True)) for name, *values in cur.fetchall()
                    if stored_name(name) is not None}

    @_retried
    def merge_accounting(self, source: str, records: Mapping[str, Mapping[str, Any]]) -> None:
        """Add the tokens, savings and costs of ``records`` (another store's projects) once per
        ``source``, and recount every project's responses and bytes from the rows."""
        with self._transaction("written") as cur:
            cur.execute(self._sql("INSERT INTO {s}.copies VALUES (%s, %s) ON CONFLICT DO NOTHING RETURNING source"),
                        (source, time.time()))
            first_time = cur.fetchone() is not None
            for name, theirs in records.items() if first_time else ():
                if stored_name(name) is None:
                    continue
                cur.execute(self._sql(
                    "INSERT INTO {s}.projects AS p (name, last_used, prompt_tokens, completion_tokens, saved_tokens,"
                    " cost, unpriced) VALUES (%s, %s, %s, %s, %s, %s, %s)"
                    " ON CONFLICT (name) DO UPDATE SET last_used = greatest(p.last_used, EXCLUDED.last_used),"
                    " prompt_tokens = p.prompt_tokens + EXCLUDED.prompt_tokens,"
                    " completion_tokens = p.completion_tokens + EXCLUDED.completion_tokens,"
                    " saved_tokens = p.saved_tokens + EXCLUDED.saved_tokens, cost = p.cost + EXCLUDED.cost,"
                    " unpriced = p.unpriced + EXCLUDED.unpriced"),
                    (name, float(theirs["last_used"]), int(theirs["prompt_tokens"]), int(theirs["completion_tokens"]),
                     int(theirs["saved_tokens"]), float(theirs["cost"]), int(theirs["unpriced"])))
            cur.execute(self._sql("UPDATE {s}.projects SET entries = 0, bytes = 0"))
            cur.execute(self._sql(
                "INSERT INTO {s}.projects AS p (name, entries, bytes)"
                " SELECT u.name, count(*), sum(r.size) FROM {s}.responses r, unnest(r.projects) AS u(name)"
                " GROUP BY u.name"
                " ON CONFLICT (name) DO UPDATE SET entries = EXCLUDED.entries, bytes = EXCLUDED.bytes"))

    # Claims: one sender per request across the team

    @_retried
    def claim(self, keys: list[str], owner: str, lease: float) -> set[str]:
        """Claim ``keys`` for ``owner`` for ``lease`` seconds (by the server's clock: machines'
        clocks differ); the keys it now holds. A key another owner holds, whose lease has not
        run out, stays theirs: they are sending it."""
        if not keys:
            return set()
        with self._transaction("written") as cur:
            cur.execute(self._sql(
                "INSERT INTO {s}.claims AS c (key, owner, expires)"
                " SELECT k, %s, extract(epoch FROM clock_timestamp()) + %s FROM unnest(%s::text[]) AS k"
                " ON CONFLICT (key) DO UPDATE SET owner = EXCLUDED.owner, expires = EXCLUDED.expires"
                " WHERE c.expires < extract(epoch FROM clock_timestamp()) OR c.owner = EXCLUDED.owner"
                " RETURNING key"), (owner, lease, keys))
            return {key for (key,) in cur.fetchall()}

    @_retried
    def renew(self, owner: str, lease: float) -> None:
        """Extend every claim ``owner`` holds by ``lease`` seconds from now."""
        with self._transaction("written") as cur:
            cur.execute(self._sql("UPDATE {s}.claims SET expires = extract(epoch FROM clock_timestamp()) + %s"
                                  " WHERE owner = %s"), (lease, owner))

    @_retried
    def release(self, owner: str) -> None:
        """Give up every claim ``owner`` holds (what it did not store, someone else may send)."""
        with self._transaction("written") as cur:
            cur.execute(self._sql("DELETE FROM {s}.claims WHERE owner = %s"), (owner,))

    def claimed(self, keys: list[str]) -> set[str]:
        """The keys among ``keys`` that someone holds a live claim on."""
        with self._transaction("read") as cur:
            cur.execute(self._sql("SELECT key FROM {s}.claims WHERE key = ANY(%s)"
                                  " AND expires >= extract(epoch FROM clock_timestamp())"), (keys,))
            return {key for (key,) in cur.fetchall()}

    # Batch records: the team's batch ledger keeps them here (bytes it writes and checks itself)

    def save_batch_record(self, local: str, record: bytes, keys: bytes | None = None) -> None:
        """Store the record ``local`` whole (and its ``keys``, when given; kept otherwise)."""
        with self._transaction("written") as cur:
            cur.execute(self._sql("INSERT INTO {s}.batch_records AS b (local, record, keys) VALUES (%s, %s, %s)"
                                  " ON CONFLICT (local) DO UPDATE SET record = EXCLUDED.record,"
                                  " keys = coalesce(EXCLUDED.keys, b.keys)"), (local, record, keys))

    def drop_batch_keys(self, local: str) -> None:
        """Forget the keys of record ``local`` (its batch is collected), keeping the record."""
        with self._transaction("written") as cur:
            cur.execute(self._sql("UPDATE {s}.batch_records SET keys = NULL WHERE local = %s"), (local,))

    def drop_batch_record(self, local: str) -> None:
        """Remove the record ``local`` and its keys."""
        with self._transaction("written") as cur:
            cur.execute(self._sql("DELETE FROM {s}.batch_records WHERE local = %s"), (local,))

    def batch_records(self) -> list[tuple[str, bytes]]:
        """Every record, as ``(local, bytes)``, without its keys."""
        with self._transaction("read") as cur:
            cur.execute(self._sql("SELECT local, record FROM {s}.batch_records"))
            return [(local, bytes(record)) for local, record in cur.fetchall()]

    def batch_record_keys(self, local: str) -> bytes | None:
        """The keys stored with record ``local``; None if there are none."""
        with self._transaction("read") as cur:
            cur.execute(self._sql("SELECT keys FROM {s}.batch_records WHERE local = %s"), (local,))
            row = cur.fetchone()
            return None if row is None or row[0] is None else bytes(row[0])

    def submit_lock(self) -> TeamLock:
        """The lock runs take turns under to look up and submit batches, team-wide."""
        return TeamLock(self, f"dataformer_nb:{self.schema}:batch-submit")

    # Projects

    def has_project(self, project: str) -> bool:
        """Whether ``project`` (a valid name) is in the cache."""
        with self._transaction("read") as cur:
            return self._project(cur, project) is not None

    def projects(self) -> list[ProjectInfo]:
        """Every project, most recently used first."""
        with self._transaction("read") as cur:
            cur.execute(self._sql(f"SELECT name, users, {', '.join(_PROJECT_FIELDS)} FROM {{s}}.projects"))
            rows = cur.fetchall()
        infos = []
        for name, users, *values in rows:
            record = dict(zip(_PROJECT_FIELDS, values, strict=True))
            if stored_name(name) is None:
                continue  # not a name dataformer_nb writes: never shown, never a file name
            infos.append(ProjectInfo(name, int(record["entries"]), int(record["bytes"]),
                                     datetime.fromtimestamp(record["last_used"], tz=timezone.utc),
                                     int(record["prompt_tokens"]), int(record["completion_tokens"]),
                                     int(record["saved_tokens"]),
                                     record["cost"] if record["cost"] and not record["unpriced"] else None,
                                     tuple(u for u in users if isinstance(u, str))))
        return sorted(infos, key=lambda p: p.last_used, reverse=True)

    def _project(self, cur: psycopg.Cursor[Any], name: str, lock: bool = False) -> dict[str, Any] | None:
        cur.execute(self._sql(f"SELECT {', '.join(_PROJECT_FIELDS)} FROM {{s}}.projects WHERE name = %s"
                              + (" FOR UPDATE" if lock else "")), (name,))
        row = cur.fetchone()
        return None if row is None else dict(zip(_PROJECT_FIELDS, row, strict=True))

    def _write_project(self, cur: psycopg.Cursor[Any], name: str, record: Mapping[str, Any]) -> None:
        fields = [f for f in _PROJECT_FIELDS if f != "last_used"]
        cur.execute(self._sql(f"UPDATE {{s}}.projects SET {', '.join(f'{f} = %s' for f in fields)} WHERE name = %s"),
                    (*(record[f] for f in fields), name))

    def _add_to_project(self, cur: psycopg.Cursor[Any], project: str, entries: int, size: int, *,
                        prompt_tokens: int = 0, completion_tokens: int = 0, saved_tokens: int = 0,
                        cost: float = 0.0, unpriced: int = 0) -> None:
        cur.execute(self._sql(
            "INSERT INTO {s}.projects AS p (name, entries, bytes, last_used, prompt_tokens, completion_tokens,"
            " saved_tokens, cost, unpriced, users) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (name) DO UPDATE SET entries = p.entries + EXCLUDED.entries,"
            " bytes = p.bytes + EXCLUDED.bytes, last_used = EXCLUDED.last_used,"
            " prompt_tokens = p.prompt_tokens + EXCLUDED.prompt_tokens,"
            " completion_tokens = p.completion_tokens + EXCLUDED.completion_tokens,"
            " saved_tokens = p.saved_tokens + EXCLUDED.saved_tokens, cost = p.cost + EXCLUDED.cost,"
            " unpriced = p.unpriced + EXCLUDED.unpriced,"
            " users = CASE WHEN p.users @> EXCLUDED.users THEN p.users ELSE p.users || EXCLUDED.users END"),
            (project, entries, size, time.time(), prompt_tokens, completion_tokens, saved_tokens, cost, unpriced,
             [self.user]))

    @_retried
    def clear(self, projects: str | Iterable[str]) -> ClearReport:
        """Clear one project, several, or everything (``"full"``); see ResponseCache.clear."""
        names = clear_names(projects)
        with self._transaction("cleared") as cur:
            cur.execute(self._sql("LOCK TABLE {s}.projects IN SHARE ROW EXCLUSIVE MODE"))
            cur.execute(self._sql("SELECT name FROM {s}.projects"))
            known = {name for (name,) in cur.fetchall() if stored_name(name) is not None}
            if FULL in names:
                cur.execute(self._sql("SELECT count(*), coalesce(sum(size), 0) FROM {s}.responses"))
                count, size = _one(cur)
                cur.execute(self._sql("TRUNCATE {s}.responses, {s}.projects"))
                report = ClearReport(tuple(sorted(known)), int(count), int(size), 0)
            else:
                unknown = [n for n in names if n not in known]
                if unknown:
                    warn(f"clear_project_cache: no project named {', '.join(map(repr, unknown))} in the cache; "
                         f"known projects: {', '.join(sorted(known)) or 'none'}", UnknownProjectWarning)
                chosen = sorted({n for n in names if n in known})
                report = self._clear_projects(cur, chosen) if chosen else ClearReport((), 0, 0, 0)
        self.notify()
        return report

    def _clear_projects(self, cur: psycopg.Cursor[Any], names: list[str]) -> ClearReport:
        # The projects' names leave every row, in order; rows left with none are deleted.
        cur.execute(self._sql(
            "UPDATE {s}.responses SET projects = array(SELECT p FROM unnest(projects) WITH ORDINALITY AS t(p, i)"
            " WHERE p <> ALL(%s) ORDER BY i) WHERE projects && %s RETURNING cardinality(projects) > 0"),
            (names, names))
        kept = sum(1 for (left,) in cur.fetchall() if left)
        cur.execute(self._sql("DELETE FROM {s}.responses WHERE cardinality(projects) = 0 RETURNING size"))
        sizes = [size for (size,) in cur.fetchall()]
        cur.execute(self._sql("DELETE FROM {s}.projects WHERE name = ANY(%s)"), (names,))
        return ClearReport(tuple(names), len(sizes), int(sum(sizes)), kept)

    # Browsing

    def entries(self, project: str, offset: int = 0, limit: int = 50, contains: str | None = "") -> list[Entry]:
        """A page of the responses ``project`` uses, in the order they were stored (see
        ResponseCache.entries)."""
        project = normalize_project(project)
        contains = "" if contains is None else contains
        if not isinstance(contains, str):
            raise ConfigurationError(f"contains={contains!r} must be a string (\"\" or None for every response)")
        with self._transaction("read") as cur:
            cur.execute(self._sql(
                f"SELECT key, body, {_RECORD} FROM {{s}}.responses WHERE projects @> ARRAY[%s]"
                " AND (%s = '' OR strpos(lower(prompt), %s) > 0"
                "      OR strpos(lower(convert_from(body, 'UTF8')), %s) > 0)"
                " ORDER BY seq LIMIT %s OFFSET %s"),
                (project, contains, contains.lower(), contains.lower(), limit, offset))
            rows = cur.fetchall()
        entries = []
        for key, body, *columns in rows:
            record = _entry_record(_record(columns))
            entry = None if record is None else _entry(key, bytes(body), record)
            if entry is not None:
                entries.append(entry)
        return entries


# The columns of a response row that make its record, in _record's order.
_RECORD = "projects, size, prompt_tokens, completion_tokens, created, prompt, paid_by, cost"


class TeamLock:
    """An advisory lock of the team's server, held by a connection of its own: released when
    ``release()`` is called or when that connection dies (a killed kernel never leaves it held)."""

    def __init__(self, cache: PostgresCache, name: str) -> None:
        self._cache, self._name = cache, name
        self._db: psycopg.Connection[Any] | None = None

    def try_acquire(self) -> bool:
        """Take the lock if no one holds it; whether it is now held here."""
        cache = self._cache
        if self._db is None or self._db.closed:
            self._db = cache._connect()
        try:
            row = self._db.execute("SELECT pg_try_advisory_lock(hashtext(%s))", (self._name,)).fetchone()
        except cache._psycopg.Error as exc:
            self.release()
            raise StoreUnavailable(f"the team cache at {cache.location} cannot be locked to submit batches "
                                   f"({_message(exc, cache._url)}): check that its server is running") from None
        return bool(row and row[0])

    def release(self) -> None:
        """Let the lock go (closing its connection releases it on the server)."""
        if self._db is not None:
            with contextlib.suppress(Exception):
                self._db.close()
            self._db = None


def _record(columns: list[Any]) -> dict[str, Any]:
    """A response row's columns as the local store's entry record (then checked the same way)."""
    projects, size, prompt_tokens, completion_tokens, created, prompt, paid_by, cost = columns
    record = {"projects": projects, "size": size, "prompt_tokens": prompt_tokens,
              "completion_tokens": completion_tokens, "created": created, "prompt": prompt}
    if paid_by is not None:
        record["by"] = paid_by
    if cost is not None:
        record["cost"] = cost
    return record


def _user() -> str:
    """Who this is, as projects record their users: ``DATAFORMER_USER`` (environment, ``.env``),
    else the operating system's user name."""
    import getpass

    from ..settings import resolve

    name = resolve("DATAFORMER_USER", None, None)
    if not name:
        try:
            name = getpass.getuser()
        except (KeyError, OSError):  # a container whose user has no name
            name = f"uid {os.getuid()}" if hasattr(os, "getuid") else "unknown"
    return str(name)[:100]


def _one(cur: psycopg.Cursor[Any]) -> tuple[Any, ...]:
    """The one row an aggregate query returns."""
    row = cur.fetchone()
    if row is None:  # an aggregate always has a row: only a server gone wrong gets here
        raise CacheError("the team cache's server returned no row for an aggregate query")
    return tuple(row)


def _is_json_object(body: bytes) -> bool:
    return body.lstrip()[:1] == b"{"  # the full parse happens where it is used; this catches a row of another kind


def check_cache_url(url: object) -> str:
    """``url`` if it is a PostgreSQL URL, else a ConfigurationError that shows no password."""
    if not isinstance(url, str) or not url.startswith(("postgresql://", "postgres://")):
        shown = where_url(url) if isinstance(url, str) else type(url).__name__
        raise ConfigurationError(f"cache_url={shown!r} is not a PostgreSQL URL: write "
                                 "postgresql://user:password@host:5432/database")
    return url


def _checked_schema(schema: object) -> str:
    if not isinstance(schema, str) or not schema or len(schema) > 63 or not schema.replace("_", "a").isalnum() \
            or not schema.isascii() or schema[0].isdigit():
        raise ConfigurationError(f"cache schema {schema!r} is not a plain name: use letters, digits and _ "
                                 "(at most 63, not starting with a digit), e.g. 'dataformer'")
    return schema


def where_url(url: str) -> str:
    """``host:port/database`` of a URL (no user, no password), for messages."""
    try:
        from psycopg.conninfo import conninfo_to_dict

        parts = conninfo_to_dict(url)
    except Exception:
        return "(an unreadable URL)"
    return f"{parts.get('host', 'localhost')}:{parts.get('port', 5432)}/{parts.get('dbname', '')}"


def _message(error: Exception, url: Secret) -> str:
    """psycopg's message, first line, without the password should libpq have quoted it."""
    from psycopg.conninfo import conninfo_to_dict

    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    try:
        password = conninfo_to_dict(url.reveal()).get("password")
    except Exception:
        password = None
    return text.replace(str(password), "***") if password else text
