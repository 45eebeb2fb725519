"""XAPI's event API (event.from, event.inject) and system.listMethods.

The object database is `Sim.db[class][ref]`: plain dicts that sim.py,
handlers.py and control.py change in place.  Instead of intercepting every
such change, the event log keeps its own copy of each record and compares:
a *scan* turns every difference into a database write, stamped with the
current generation, after which the generation moves on by one, as xapi's
database does (ocaml/database/db_cache_types.ml: a write stamps the row with
the manifest generation, then Database.increment).  Each row remembers when
it was created and last modified; removed rows go to a bounded list of
(created, deleted, ref) like Table.remove.

A scan runs whenever a client asks (event.from, event.inject), and every
50 ms while an event.from call waits, which is also xapi's batching delay
between two looks at the database.  So nothing is scanned while no client
uses events, and what a client sees is always the database as it is.
"""

import copy
import math
import time

from wire import I4

# Classes whose changes produce no events (datamodel: gen_events = false).
NO_EVENTS = {"session", "user", "data_source", "secret", "auth", "event"}

# xapi keeps at most this many deletions per table (Table.remove: 512, then 256).
DELETED_MAX, DELETED_KEEP = 512, 256

POLL = 0.05           # xapi_globs.event_from_delay: 50 ms between looks
DELAY_BEFORE = 0.05   # ... and 50 ms before the first one, except for task-only
                      # subscriptions (event_from_task_delay: 0)
DEFAULT_TIMEOUT = 24 * 3600.0  # Clock.Timer.s_to_span failing: 24 hours


def _error(code, *params):
    from sim import XapiError  # late: sim imports this module
    return XapiError(code, *params)


class Row:
    __slots__ = ("created", "modified", "copy")

    def __init__(self, gen, rec):
        self.created = gen
        self.modified = gen
        self.copy = rec


def parse_token(token):
    """xapi_event.ml Token.of_string: "" is the beginning, otherwise
    "<generation>,<message generation>" as two decimal int64s."""
    parts = token.split(",")
    if parts == [""]:
        return 0, 0
    if len(parts) == 2:
        try:
            a, b = int(parts[0].strip()), int(parts[1].strip())
            if -2 ** 63 <= a < 2 ** 63 and -2 ** 63 <= b < 2 ** 63:
                return a, b
        except ValueError:
            pass
    raise _error("EVENT_FROM_TOKEN_PARSE_FAILURE", token)


def make_token(gen, msg_gen):
    # Zero-padded so that tokens compare as strings (Token.to_string).
    return "%020d,%020d" % (gen, msg_gen)


def parse_subscription(text):
    """Subscription.of_string: "*" = everything, "class" or "class/ref"
    (class names are case-insensitive)."""
    if not isinstance(text, str):
        raise _error("INTERNAL_ERROR", "Unmarshalling classes in event.from: expected string")
    if text == "*":
        return ("all", None, None)
    cls, sep, ref = text.partition("/")
    if sep:
        return ("object", cls.lower(), ref)
    return ("class", cls.lower(), None)


def table_matches(subs, table):
    t = table.lower()
    return any(k == "all" or c == t for k, c, _ in subs)


def object_matches(subs, table, ref):
    t = table.lower()
    return any(k == "all" or (k == "class" and c == t) or (k == "object" and c == t and r == ref)
               for k, c, r in subs)


def _seconds(value):
    """The Float parameter: a double, an int or a numeric string (ocaml-rpc float_of_rpc)."""
    if isinstance(value, bool):
        raise _error("INTERNAL_ERROR", "Unmarshalling timeout in event.from: expected float")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise _error("INTERNAL_ERROR", "Unmarshalling timeout in event.from: expected float")


class EventLog:
    def __init__(self, sim):
        self.sim = sim
        self.generation = 1  # a fresh database; "" (0) is before everything
        self.rows = {}       # class -> {ref: Row}
        self.deleted = {}    # class -> [(created, deleted, ref)], newest first
        m = sim._method
        m("system.listMethods", self.list_methods, [], [("any", None)], async_ok=False,
          session=False)
        m("event.from", self.event_from, ["set", "string", "any"], async_ok=False)
        m("event.inject", self.event_inject, ["string", "string"], async_ok=False)
        with sim.lock:
            self.scan()

    # ---- change detection -------------------------------------------------------------

    def _bump(self):
        g = self.generation
        self.generation += 1
        return g

    def scan(self):
        """Turn every difference between the database and our copies into a write.
        Caller holds sim.lock."""
        for cls, table in self.sim.db.items():
            rows = self.rows.setdefault(cls, {})
            for ref, rec in list(table.items()):
                row = rows.get(ref)
                try:
                    if row is None:
                        rows[ref] = Row(self.generation, copy.deepcopy(rec))
                        self._bump()
                    elif row.copy != rec:
                        row.copy = copy.deepcopy(rec)
                        row.modified = self._bump()
                except RuntimeError:
                    # Changed under our feet by a thread without the lock:
                    # the next scan sees the settled record.
                    continue
            gone = [ref for ref in rows if ref not in table]
            for ref in gone:
                row = rows.pop(ref)
                dl = self.deleted.setdefault(cls, [])
                dl.insert(0, (row.created, self._bump(), ref))
                if len(dl) >= DELETED_MAX:
                    del dl[DELETED_KEEP:]
        for cls in [c for c in self.rows if c not in self.sim.db]:
            del self.rows[cls]

    def _collect(self, subs, since):
        """xapi_event.ml collect_events: objects created, modified (not created)
        and deleted (created before) after `since`; `last` is the newest
        generation among them."""
        creates, mods, deletes = [], [], []
        last = since
        for cls, rows in self.rows.items():
            if cls in NO_EVENTS or not table_matches(subs, cls):
                continue
            for ref, row in rows.items():
                if row.modified <= since or not object_matches(subs, cls, ref):
                    continue
                last = max(last, row.modified)
                if row.created > since:
                    creates.append((row.created, cls, ref))
                else:
                    mods.append((row.modified, cls, ref))
            for created, deleted, ref in self.deleted.get(cls, []):
                if deleted <= since:
                    break
                if object_matches(subs, cls, ref):
                    last = max(last, deleted)
                    if created <= since:
                        deletes.append((deleted, cls, ref))
        return sorted(creates), sorted(mods), sorted(deletes), last

    # ---- API ------------------------------------------------------------------------------

    def list_methods(self, ctx, _ignored=None):
        """system.listMethods (generated in gen_server.ml): the synchronous wire
        names of every message, without a session; the parameters are ignored."""
        with self.sim.lock:
            return [n for n in self.sim.methods if not n.startswith("system.")]

    def event_from(self, s, classes, token, timeout):
        """xapi_event.ml `from`/`from_inner`: block until an object of the
        subscribed classes was added, modified or deleted after `token`, or the
        timeout (seconds) passes; answer {events, valid_ref_counts, token}."""
        subs = [parse_subscription(c) for c in classes]
        since, msg_gen = parse_token(token)
        seconds = _seconds(timeout)
        if math.isnan(seconds) or seconds < 0 or seconds * 1e9 >= 2.0 ** 64:
            seconds = DEFAULT_TIMEOUT  # not a valid Mtime span
        deadline = time.monotonic() + seconds
        task_only = all(k != "all" and c == "task" for k, c, _ in subs)
        if not task_only:
            time.sleep(min(DELAY_BEFORE, seconds))
        # No messages are ever generated; the message part of the token is
        # 0 unless the subscription covers messages, then it is handed back.
        msg_gen = msg_gen if table_matches(subs, "message") else 0
        while True:
            with self.sim.lock:
                self.scan()
                creates, mods, deletes, last = self._collect(subs, since)
                expired = time.monotonic() >= deadline
                if creates or mods or deletes or expired:
                    return self._answer(creates, mods, deletes, last, msg_gen)
                if s not in self.sim.db["session"]:
                    # Logout wakes a waiting call (From.on_session_deleted).
                    raise _error("SESSION_INVALID", s)
            since = last
            time.sleep(max(0.0, min(POLL, deadline - time.monotonic())))

    def _answer(self, creates, mods, deletes, last, msg_gen):
        db = self.sim.db
        events = []

        def event(op, gen, cls, ref, snapshot=True):
            # Event_types.event: id, timestamp, class (lower case), operation,
            # ref, snapshot (the get_record value; absent for deletions).
            ev = {"id": str(gen), "timestamp": "0.0", "class": cls.lower(), "operation": op,
                  "ref": ref}
            if snapshot:
                ev["snapshot"] = copy.deepcopy(db[cls][ref])
            events.append(ev)

        for gen, cls, ref in creates:
            event("add", gen, cls, ref)
        for gen, cls, ref in mods:
            event("mod", gen, cls, ref)
        for gen, cls, ref in deletes:
            event("del", gen, cls, ref, snapshot=False)
        # Every table, lower case, as Int32 (printed <i4> in XML-RPC).
        counts = {cls.lower(): I4(len(table)) for cls, table in db.items()}
        return {"events": events, "valid_ref_counts": counts, "token": make_token(last, msg_gen)}

    def event_inject(self, s, cls, ref):
        """xapi_event.ml `inject`: the ref must be in table `cls` (exact name),
        else HANDLE_INVALID; the row is touched (a mod event) and the token
        just before that write is returned, so the next event.from from it
        reports the touch (Db_cache_types.touch: two increments)."""
        with self.sim.lock:
            self.scan()
            row = self.rows.get(cls, {}).get(ref)
            if row is None or ref not in self.sim.db.get(cls, {}):
                raise _error("HANDLE_INVALID", cls, ref)
            g = self.generation
            row.modified = g
            self.generation += 2
            return make_token(g - 1, 0)
