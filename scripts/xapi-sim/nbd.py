"""NBD exports served by real nbdkit processes.

Design (works with Debian 12's nbdkit 1.32, which has no python plugin):

* One nbdkit per (VDI, session) pair, started on demand by VDI.get_nbd_info.
  nbdkit's file plugin serves the VDI's disk file read-only; the exportname
  filter with exportname-strict=true accepts only the exact XenServer-style
  name "/<vdi-uuid>?session_id=<ref>", so any other name makes nbdkit close
  the connection, as xapi-nbd does.  When the session logs out (or the VDI is
  destroyed / data-destroyed) the process is stopped and its port closed, so
  a dead session can no longer read.
* The listening socket is created here and handed to nbdkit by systemd-style
  socket activation (LISTEN_FDS).  That gives a race-free port number, lets
  clients connect before nbdkit has finished starting (they wait in the
  backlog), and lets us restart nbdkit on the same port (to apply new fault
  settings, or to drop all connections at once).
* Filters: exportname (strict names), limit (16 connections, like xapi-nbd),
  log (per-request log that we parse live for the bytes-read counter and for
  "is this VDI attached over NBD"), blocksize-policy (reads not aligned to
  512 bytes fail with EINVAL, like xapi-nbd), error (read errors while a
  trigger file exists, so a test can start failing reads mid-transfer), and
  delay (slow reads) only when the slow fault is on.
* Each export's error trigger is its own path: a symbolic link to the global
  trigger file (so the global fault reaches every export at once), replaced
  by a plain file while a VDI-scoped fault covers the export's VDI.
* TLS: --tls=require with the simulator's certificate; --no-sr (no structured
  replies) and --mask-handshake=1 (no NO_ZEROES flag) to be closer to xapi-nbd.
"""

import bisect
import datetime
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

MAX_CONNECTIONS = 16
CONNECTION_LOG_MAX = 100000   # events kept by the connection log (the oldest go first)

_CONNECT = re.compile(r"connection=(\d+) Connect ")
_DISCONNECT = re.compile(r"connection=(\d+) Disconnect")
_READ = re.compile(r"connection=(\d+) Read id=(\d+) offset=0x([0-9a-fA-F]+) count=0x([0-9a-fA-F]+)")
_READ_DONE = re.compile(r"connection=(\d+) \.\.\.Read id=(\d+) return=(-?\d+)")
# The log filter starts each line with the time in UTC (whatever TZ says),
# to the microsecond.
_STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}) ")


def _log_time(line):
    """Seconds since the epoch of a log line (now if it carries no time stamp)."""
    m = _STAMP.match(line)
    if m:
        try:
            return datetime.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S.%f").replace(
                tzinfo=datetime.timezone.utc).timestamp()
        except ValueError:
            pass
    return time.time()


class Export:
    def __init__(self, vdi_ref, vdi_uuid, path, session, exportname, tls, logdir, bind,
                 host=None, cert_dir=None, down=False, lineage=()):
        self.vdi_ref = vdi_ref
        self.vdi_uuid = vdi_uuid
        # The VDI's uuid, then those of what it is a snapshot of (snapshot_of,
        # followed up): a VDI-scoped read-error fault on any of them covers it.
        self.lineage = (vdi_uuid,) + tuple(u for u in lineage if u != vdi_uuid)
        self.path = path
        self.session = session
        self.exportname = exportname
        self.tls = tls
        self.host = host          # name of the pool host serving it
        self.bind = bind
        self.cert_dir = cert_dir
        self.down = down          # fault nbd_host_down: port reserved, not listening
        self.stopped = False      # fault nbd_stall: process frozen with SIGSTOP
        self.port = 0
        self.open_socket()
        self.port = self.sock.getsockname()[1]
        base = os.path.join(logdir, "%s-%d" % (vdi_uuid, self.port))
        self.logfile = base + ".log"
        self.errfile = base + ".stderr"
        self.error_file = None    # this export's error trigger (NbdManager._set_trigger)
        self.proc = None
        self.log_pos = 0
        self.partial = b""
        self.pending = {}      # (connection, id) -> byte count of a read in flight
        self.active = set()    # connection numbers currently open
        self.stopping = False

    def open_socket(self):
        """Bind (again, same port) and listen unless the host is down: a bound
        socket that does not listen makes connections fail with ECONNREFUSED."""
        family = socket.AF_INET6 if ":" in self.bind else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((self.bind, self.port))
        if not self.down:
            self.sock.listen(64)


class NbdManager:
    def __init__(self, state_dir, cert_dir, bind="127.0.0.1", master_name=None):
        self.cert_dir = cert_dir
        # Pool hosts by name: (bind address, certificate directory).  Exports
        # named without a host belong to the master.
        self.master_name = master_name
        self.hosts = {master_name: (bind, cert_dir)}
        self.down_hosts = set()
        self.stall = False
        self.state_dir = state_dir
        # The "wrong certificate" fault: nbdkit presents another self-signed
        # certificate for the same name than the one get_nbd_info hands out,
        # as a man in the middle would.
        self.wrong_cert = False
        self.bind = bind
        self.logdir = os.path.join(state_dir, "nbd")
        os.makedirs(self.logdir, exist_ok=True)
        faults_dir = os.path.join(state_dir, "faults")
        os.makedirs(faults_dir, exist_ok=True)
        # The error filter injects read errors only while this file exists.
        self.error_trigger = os.path.join(faults_dir, "nbd-read-error")
        if os.path.exists(self.error_trigger):
            os.unlink(self.error_trigger)
        # Per-export triggers: a link to error_trigger, or a plain file while
        # a VDI-scoped fault covers the export.
        self.error_dir = os.path.join(faults_dir, "nbd-read-error.d")
        shutil.rmtree(self.error_dir, ignore_errors=True)
        os.makedirs(self.error_dir)
        self.error_vdis = set()   # uuids under the VDI-scoped read-error fault
        self.lock = threading.RLock()
        self.spawner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nbdkit spawner")
        self.exports = {}
        self.error_rate = 1.0     # used while the trigger file exists
        self.delay_ms = 0
        self.drop = None          # {"after_bytes": n, "times": k, "base": bytes at arming}
        self.reset_stats()
        self.closed = False
        self.watcher = threading.Thread(target=self._watch, name="nbd watcher", daemon=True)
        self.watcher.start()

    # ---- processes ---------------------------------------------------------------------

    def _args(self, e):
        args = ["nbdkit", "-f", "-r", "--exit-with-parent", "--no-sr", "--mask-handshake=1"]
        if e.tls:
            own = e.cert_dir or self.cert_dir
            cert_dir = self._impostor_dir(own) if self.wrong_cert else own
            args += ["--tls=require", "--tls-certificates=" + cert_dir]
        else:
            args += ["--tls=off"]
        filters = ["exportname", "limit", "log", "blocksize-policy", "error"]
        if self.delay_ms > 0 or self.stall:
            filters.append("delay")
        args += ["--filter=" + f for f in filters]
        args += ["file", "file=" + e.path,
                 "exportname-strict=true", "exportname-list=error", "exportname=" + e.exportname,
                 "limit=%d" % MAX_CONNECTIONS,
                 "logfile=" + e.logfile, "logappend=true",
                 "blocksize-error-policy=error", "blocksize-minimum=512",
                 "error-pread=EIO", "error-pread-rate=%g" % self.error_rate,
                 "error-pread-file=" + e.error_file]
        if self.stall:
            # Fault nbd_stall: about 23 days per read, i.e. reads never return
            # (nbdkit's sleep ends early when the client hangs up).
            args.append("delay-read=2000000000ms")
        elif self.delay_ms > 0:
            args.append("delay-read=%dms" % self.delay_ms)
        return args

    def _spawn(self, e):
        if e.down:
            return  # fault nbd_host_down: nothing serves the (non-listening) port
        fd = e.sock.fileno()
        # The shell learns its own pid ($$), which exec keeps for nbdkit: that is
        # what LISTEN_PID must say.  The socket comes in as stdin and "3<&0"
        # puts it where socket activation expects it (dash only takes
        # one-digit descriptors in redirections, so not "3<&<fd>").
        script = 'LISTEN_PID=$$ LISTEN_FDS=1 exec "$@" 3<&0 0</dev/null'
        args = ["sh", "-c", script, "sh"] + self._args(e)

        def start():
            with open(e.errfile, "ab") as err:
                return subprocess.Popen(args, stdin=fd, stdout=err, stderr=err)
        # --exit-with-parent is PR_SET_PDEATHSIG, which fires when the *thread*
        # that forked the child ends.  Request threads end with their HTTP
        # connection, so all nbdkits are forked from one thread that lives as
        # long as the simulator.
        e.proc = self.spawner.submit(start).result()
        e.stopping = False
        e.stalled_args = self.stall

    def _kill(self, e, sig=signal.SIGTERM):
        if e.proc is not None and e.proc.poll() is None:
            if e.stopped:
                e.proc.send_signal(signal.SIGCONT)
                e.stopped = False
            e.proc.send_signal(sig)
            try:
                e.proc.wait(5)
            except subprocess.TimeoutExpired:
                e.proc.kill()
                e.proc.wait()
        self._parse(e)
        # The process is gone, so are its connections (numbering restarts too);
        # a killed nbdkit logs no Disconnect, so the log gets one per connection.
        now = time.time()
        for _ in e.active:
            self._log_connection(now, e, "disconnect")
        e.active.clear()
        e.pending.clear()

    def ensure_export(self, vdi_ref, vdi_uuid, path, session, exportname, tls=True, host=None,
                      lineage=()):
        """Start (or find) the nbdkit of this VDI and session on pool host `host`
        (default: the master), bound to that host's NBD address and presenting
        its certificate; returns the port.  lineage: uuids of the VDIs this one
        is a snapshot of (snapshot_of, nearest first), for VDI-scoped faults."""
        if host not in self.hosts:
            host = self.master_name
        with self.lock:
            key = (vdi_ref, session, host)
            e = self.exports.get(key)
            if e is not None and e.tls != tls:
                # The pool's NBD mode changed (network purposes): restart in the new mode.
                self._kill(e)
                e.tls = tls
                self._spawn(e)
            elif e is not None and (e.proc is None or e.proc.poll() is not None):
                self._spawn(e)
            if e is None:
                bind, cert_dir = self.hosts[host]
                e = Export(vdi_ref, vdi_uuid, path, session, exportname, tls, self.logdir,
                           bind, host, cert_dir, down=host in self.down_hosts, lineage=lineage)
                e.error_file = os.path.join(self.error_dir, "%s-%d" % (vdi_uuid, e.port))
                self._set_trigger(e)
                self.exports[key] = e
                self._spawn(e)
            return e.port

    def add_host(self, name, bind, cert_dir):
        """A pool member: its exports bind `bind` and use the certificate in cert_dir."""
        with self.lock:
            self.hosts[name] = (bind, cert_dir)

    def set_host_down(self, name):
        """Fault nbd_host_down: the NBD endpoints of host `name` (None: none)
        refuse connections: its nbdkits stop (open connections are cut) and
        its ports stay bound without listening.  Clearing the fault listens on
        the same ports again and restarts the nbdkits."""
        with self.lock:
            down = {name} if name else set()
            for e in self.exports.values():
                want = e.host in down
                if want == e.down:
                    continue
                if want:
                    self._parse(e)
                    self.stats["dropped_connections"] += len(e.active)
                    e.stopping = True
                    self._kill(e, signal.SIGKILL)
                    e.sock.close()
                    e.down = True
                    e.open_socket()
                else:
                    e.sock.close()
                    e.down = False
                    e.open_socket()
                    self._spawn(e)
            self.down_hosts = down

    def set_stall(self, on):
        """Fault nbd_stall: reads hang.  nbdkits with open connections are
        frozen (SIGSTOP) so that a transfer stops mid-way; the others are
        restarted with a delay filter whose delay never ends, so the handshake
        works and the first read hangs.  Off: thawed and restarted normally."""
        with self.lock:
            if on == self.stall:
                return
            self.stall = on
            for e in self.exports.values():
                self._parse(e)
                if e.proc is None or e.proc.poll() is not None:
                    continue
                if on and e.active:
                    e.proc.send_signal(signal.SIGSTOP)
                    e.stopped = True
                elif not on and e.stopped:
                    e.proc.send_signal(signal.SIGCONT)
                    e.stopped = False
                elif not on and getattr(e, "stalled_args", False):
                    # Its reads sleep for ever: only a restart ends them (the
                    # connections hanging in them are cut).
                    self.stats["dropped_connections"] += len(e.active)
                    self._kill(e, signal.SIGKILL)
                    self._spawn(e)
            self._restart_idle()

    def _stop(self, key):
        e = self.exports.pop(key, None)
        if e is not None:
            e.stopping = True
            self._kill(e)
            e.sock.close()
            if e.error_file and os.path.lexists(e.error_file):
                os.unlink(e.error_file)

    def stop_session(self, session):
        with self.lock:
            for key in [k for k in self.exports if k[1] == session]:
                self._stop(key)

    def stop_vdi(self, vdi_ref):
        with self.lock:
            for key in [k for k in self.exports if k[0] == vdi_ref]:
                self._stop(key)

    def shutdown(self):
        with self.lock:
            self.closed = True
            for key in list(self.exports):
                self._stop(key)
        self.spawner.shutdown(wait=False)

    # ---- faults ------------------------------------------------------------------------

    def _restart_idle(self):
        """Apply changed command-line settings: restart exports nobody is reading."""
        for e in self.exports.values():
            self._parse(e)
            if not e.active and not e.stopped and not e.down:
                self._kill(e)
                self._spawn(e)

    def _set_rate(self, rate):
        if rate is not None and rate != self.error_rate:
            self.error_rate = rate
            self._restart_idle()

    def set_read_errors(self, on, rate=1.0):
        """The global read-error fault; off also clears the VDI-scoped ones."""
        with self.lock:
            if on:
                self._set_rate(rate)
                open(self.error_trigger, "w").close()
            else:
                if os.path.exists(self.error_trigger):
                    os.unlink(self.error_trigger)
                if self.error_vdis:
                    self.error_vdis.clear()
                    for e in self.exports.values():
                        self._set_trigger(e)

    def set_vdi_read_errors(self, uuids, on, rate=None):
        """The VDI-scoped read-error fault: reads of exports of these VDIs, and
        of any VDI that is a snapshot of one of them (however deep), fail with
        EIO while on; other exports read normally (unless the global fault is
        on).  Takes effect at once, also on open connections."""
        with self.lock:
            if on:
                self._set_rate(rate)
                self.error_vdis.update(uuids)
            else:
                self.error_vdis.difference_update(uuids)
            for e in self.exports.values():
                self._set_trigger(e)

    def _set_trigger(self, e):
        """Point the export's trigger at the global one, or make it a plain file
        while a VDI-scoped fault covers it.  Swapped with a rename, so nbdkit,
        which tests the path at every read, never sees it missing by mistake."""
        scoped = bool(self.error_vdis.intersection(e.lineage))
        is_file = os.path.isfile(e.error_file) and not os.path.islink(e.error_file)
        if os.path.lexists(e.error_file) and scoped == is_file:
            return
        tmp = e.error_file + ".new"
        if os.path.lexists(tmp):
            os.unlink(tmp)
        if scoped:
            open(tmp, "w").close()
        else:
            os.symlink(self.error_trigger, tmp)
        os.replace(tmp, e.error_file)

    def _impostor_dir(self, cert_dir=None):
        cert_dir = cert_dir or self.cert_dir
        d = os.path.join(self.state_dir, "tls-impostor")
        if cert_dir != self.cert_dir:
            d += "-" + os.path.basename(cert_dir)
        if not os.path.exists(os.path.join(d, "server-key.pem")):
            os.makedirs(d, mode=0o700, exist_ok=True)
            with open(os.path.join(cert_dir, "server-cert.pem")) as f:
                pem = f.read()
            subject = subprocess.run(["openssl", "x509", "-noout", "-subject", "-nameopt", "multiline"],
                                     input=pem, capture_output=True, text=True).stdout
            cn = "localhost"
            for line in subject.splitlines():
                if "commonName" in line:
                    cn = line.split("=", 1)[1].strip()
            subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                            "-keyout", os.path.join(d, "server-key.pem"),
                            "-out", os.path.join(d, "server-cert.pem"), "-days", "3650",
                            "-subj", "/CN=" + cn,
                            "-addext", "subjectAltName=DNS:%s,DNS:localhost,IP:127.0.0.1" % cn],
                           check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            with open(os.path.join(d, "server-cert.pem")) as f:
                other = f.read()
            with open(os.path.join(d, "ca-cert.pem"), "w") as f:
                f.write(other)
        return d

    def set_wrong_cert(self, on):
        with self.lock:
            if on != self.wrong_cert:
                self.wrong_cert = on
                self._restart_idle()

    def set_delay(self, ms):
        with self.lock:
            if ms != self.delay_ms:
                self.delay_ms = ms
                self._restart_idle()

    def drop_connections(self):
        """Cut every open NBD connection abruptly; the ports keep working."""
        with self.lock:
            n = 0
            for e in self.exports.values():
                if e.down:
                    continue
                self._parse(e)
                n += len(e.active)
                self._kill(e, signal.SIGKILL)
                self._spawn(e)
            self.stats["dropped_connections"] += n
            return n

    def set_drop_after(self, after_bytes, times=1):
        with self.lock:
            self._poll_all()
            if after_bytes is None:
                self.drop = None
            else:
                self.drop = {"after_bytes": int(after_bytes), "times": int(times),
                             "base": self.stats["bytes_read"]}

    def fault_state(self):
        return {"read_errors": os.path.exists(self.error_trigger),
                "read_error_vdis": sorted(self.error_vdis),
                "read_error_rate": self.error_rate, "delay_ms": self.delay_ms,
                "drop": dict(self.drop) if self.drop else None, "wrong_cert": self.wrong_cert,
                "stall": self.stall, "host_down": next(iter(self.down_hosts), None)}

    # ---- log parsing and counters ------------------------------------------------------

    def reset_stats(self):
        with getattr(self, "lock", threading.RLock()):
            # What was logged before the reset counts before it.
            if getattr(self, "exports", None):
                self._poll_all()
            self.stats = {"bytes_read": 0, "read_requests": 0, "read_errors": 0,
                          "connections": 0, "dropped_connections": 0}
            self.per_vdi = {}
            # host name -> {"connections": total since the reset}.
            self.per_host = {}
            # The connection log: (time, sequence, host, vdi uuid, event),
            # kept in time order; conn_base: per host [active, peak] before
            # its first event (the connections open now, and what the oldest
            # events, once dropped, did to the count).
            self.conn_t0 = time.time()
            self.conn_events = []
            self.conn_seq = 0
            self.conn_dropped = 0
            self.conn_cache = None
            self.conn_base = {}
            for e in getattr(self, "exports", {}).values():
                b = self.conn_base.setdefault(e.host, [0, 0])
                b[0] += len(e.active)
                b[1] = b[0]
            if getattr(self, "drop", None):
                self.drop["base"] = 0

    def _log_connection(self, t, e, event):
        """One event of the connection log; `t` is when nbdkit logged it."""
        self.conn_seq += 1
        # Mostly an append: events come in time order, except across exports
        # whose logs are read one after the other.
        bisect.insort(self.conn_events, (t, self.conn_seq, e.host, e.vdi_uuid, event))
        self.conn_cache = None
        if len(self.conn_events) > CONNECTION_LOG_MAX:
            # Drop the oldest tenth, folding their effect into conn_base.
            n = len(self.conn_events) - CONNECTION_LOG_MAX * 9 // 10
            for _, _, host, _, ev in self.conn_events[:n]:
                b = self.conn_base.setdefault(host, [0, 0])
                b[0] += 1 if ev == "connect" else -1
                b[1] = max(b[1], b[0])
            del self.conn_events[:n]
            self.conn_dropped += n

    def _replay_connections(self):
        """The log in time order with the count of open connections on the
        event's host after each event, and the peak per host."""
        if self.conn_cache is None:
            active = {h: b[0] for h, b in self.conn_base.items()}
            peak = {h: b[1] for h, b in self.conn_base.items()}
            events = []
            for t, _, host, vdi, ev in self.conn_events:
                n = active.get(host, 0) + (1 if ev == "connect" else -1)
                active[host] = n
                peak[host] = max(peak.get(host, 0), n)
                events.append({"t": round(max(0.0, t - self.conn_t0), 6), "host": host,
                               "vdi": vdi, "event": ev, "active_on_host": n})
            self.conn_cache = (events, peak)
        return self.conn_cache

    def _parse(self, e):
        try:
            with open(e.logfile, "rb") as f:
                f.seek(e.log_pos)
                data = f.read()
        except FileNotFoundError:
            return
        e.log_pos += len(data)
        data = e.partial + data
        lines = data.split(b"\n")
        e.partial = lines.pop()  # an incomplete last line waits for the next poll
        for raw in lines:
            line = raw.decode("utf-8", "replace")
            m = _READ.search(line)
            if m:
                e.pending[(m.group(1), m.group(2))] = int(m.group(4), 16)
                continue
            m = _READ_DONE.search(line)
            if m:
                count = e.pending.pop((m.group(1), m.group(2)), 0)
                if m.group(3) == "0":
                    self.stats["bytes_read"] += count
                    self.stats["read_requests"] += 1
                    v = self.per_vdi.setdefault(e.vdi_uuid, {"bytes_read": 0, "read_requests": 0})
                    v["bytes_read"] += count
                    v["read_requests"] += 1
                else:
                    self.stats["read_errors"] += 1
                continue
            m = _CONNECT.search(line)
            if m:
                if m.group(1) not in e.active:
                    e.active.add(m.group(1))
                    self._log_connection(_log_time(line), e, "connect")
                self.stats["connections"] += 1
                h = self.per_host.setdefault(e.host, {"connections": 0})
                h["connections"] += 1
                continue
            m = _DISCONNECT.search(line)
            if m and m.group(1) in e.active:
                e.active.discard(m.group(1))
                self._log_connection(_log_time(line), e, "disconnect")

    def _poll_all(self):
        for e in list(self.exports.values()):
            self._parse(e)

    def active_connections(self, vdi_ref):
        with self.lock:
            n = 0
            for key, e in self.exports.items():
                if key[0] == vdi_ref:
                    self._parse(e)
                    n += len(e.active)
            return n

    def snapshot_stats(self):
        with self.lock:
            self._poll_all()
            out = dict(self.stats)
            out["per_vdi"] = {k: dict(v) for k, v in self.per_vdi.items()}
            out["active_connections"] = sum(len(e.active) for e in self.exports.values())
            out["exports"] = [{"vdi": e.vdi_uuid, "port": e.port, "session": e.session,
                               "pid": e.proc.pid if e.proc else None,
                               "active": len(e.active), "host": e.host, "address": e.bind,
                               "down": e.down} for e in self.exports.values()]
            out["per_host"] = self._per_host()
            return out

    def _per_host(self):
        """Per host: connections since the reset, open now, and the peak of open
        connections, from the connection log in nbdkit's time order (so a
        disconnection logged just before a connection elsewhere on the host
        is not counted as overlapping it)."""
        _, peak = self._replay_connections()
        out = {}
        for name in self.hosts:
            out[name] = {
                "connections": self.per_host.get(name, {}).get("connections", 0),
                "active": sum(len(e.active) for e in self.exports.values() if e.host == name),
                "max_active": peak.get(name, 0)}
        return out

    def connection_log(self):
        """GET /sim/nbd/connections: connect/disconnect events since the reset."""
        with self.lock:
            self._poll_all()
            events, _ = self._replay_connections()
            return {"since_reset": round(time.time() - self.conn_t0, 6),
                    "events": list(events), "dropped_events": self.conn_dropped,
                    "max_events": CONNECTION_LOG_MAX, "per_host": self._per_host()}

    def _watch(self):
        """Keep counters fresh, apply the drop-after-N-bytes fault, revive crashed nbdkits."""
        while not self.closed:
            time.sleep(0.05)
            with self.lock:
                if self.closed:
                    return
                self._poll_all()
                d = self.drop
                if d and d["times"] > 0 and self.stats["bytes_read"] - d["base"] >= d["after_bytes"]:
                    self.drop_connections()
                    d["times"] -= 1
                    d["base"] = self.stats["bytes_read"]
                    if d["times"] <= 0:
                        self.drop = None
                for e in self.exports.values():
                    if e.proc is not None and e.proc.poll() is not None and not e.stopping \
                            and not e.down:
                        self._kill(e)
                        self._spawn(e)
