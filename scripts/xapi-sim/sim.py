"""The simulated pool master: object database, dispatcher, tasks and API calls.

Everything that XAPI keeps in its database lives in `Sim.db[class][ref]` as a
complete record.  What the storage layer (SM, blktap) keeps outside the
database -- the disk file and the CBT log with its chain links -- lives in
`Sim.vdi_state`.  One re-entrant lock protects both; long operations (checksum,
imports) take it only to look things up.
"""

import copy
import hashlib
import os
import shutil
import struct
import subprocess
import threading
import time
import traceback

import events
import records as R
from records import NULL, new_ref, new_uuid
from wire import DateTime, to_xml

CBT_BLOCK = 64 * 1024       # one CBT bit covers this many bytes
VDI_ROUND = 2 * 1024 * 1024  # VHD-based SRs round VDI sizes up to this
MAX_VHD_SIZE = 2040 * 1024 ** 3

CLASSES = ["VM", "VBD", "VDI", "SR", "PBD", "host", "pool", "network", "task", "session",
           "PIF", "SM"]


class XapiError(Exception):
    """An API failure: becomes Status=Failure with ErrorDescription = [code, params...]."""

    def __init__(self, code, *params):
        super().__init__(code)
        self.error = [code] + [str(p) for p in params]

    def __str__(self):
        return repr(self.error)


def sr_backend_failure(number, description, opterr):
    return XapiError("SR_BACKEND_FAILURE_%d" % number, "",
                     "%s [opterr=%s]" % (description, opterr), "")


def bitmap_len(size):
    """Bytes of a CBT bitmap for a disk of `size` bytes (one bit per 64 KiB)."""
    blocks = (size + CBT_BLOCK - 1) // CBT_BLOCK
    return (blocks + 7) // 8


class VdiState:
    """Storage-side state of a VDI (what SM/blktap would keep)."""

    def __init__(self, path):
        self.path = path          # the disk file; None once data-destroyed
        self.cbt_log = None       # bytearray, MSB-first bit per 64 KiB, or None
        self.cbt_parent = None    # older VDI in the CBT chain (a snapshot)
        self.cbt_child = None     # newer VDI in the CBT chain


class Method:
    def __init__(self, fn, params, optional=(), async_ok=True, session=True):
        self.fn = fn
        self.params = params          # list of type names for mandatory params
        self.optional = optional      # list of (type name, default)
        self.async_ok = async_ok
        self.session = session


class Ctx:
    """Per-request facts the dispatcher needs (which host name the client used)."""

    def __init__(self, host_header="", member=None):
        self.host_header = host_header or ""
        # Name of the pool member whose listener took the request (None: the master).
        self.member = member

    def host_name(self):
        h = self.host_header.strip()
        if h.startswith("["):
            return h[1:h.index("]")] if "]" in h else h[1:]
        return h.rsplit(":", 1)[0] if h.count(":") == 1 else h


def _coerce(kind, value, method):
    """Convert a parsed parameter to the type the method expects, as xapi's unmarshaller would."""
    def bad():
        return XapiError("INTERNAL_ERROR", "Unmarshalling %s in %s: expected %s, got %r"
                         % ("parameter", method, kind, value))
    if kind == "any":
        return value
    if kind in ("string", "ref"):
        if isinstance(value, str):
            return value
        raise bad()
    if kind == "int":
        if isinstance(value, bool):
            raise bad()
        if isinstance(value, int):
            return value
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                raise bad()
        raise bad()
    if kind == "bool":
        if isinstance(value, bool):
            return value
        raise bad()
    if kind == "set":
        if isinstance(value, list):
            return value
        raise bad()
    if kind == "map":
        if isinstance(value, dict):
            return value
        raise bad()
    raise bad()


class Sim:
    def __init__(self, cfg, state_dir, cert_pem, nbd):
        """cfg: dict with user, password, hostname, address, nbd_address, subject,
        auth_delay, vbd_wait; nbd: an NbdManager (may be None in unit use)."""
        self.cfg = cfg
        self.state_dir = state_dir
        self.disk_dir = os.path.join(state_dir, "disks")
        os.makedirs(self.disk_dir, exist_ok=True)
        self.cert_pem = cert_pem
        self.nbd = nbd
        self.lock = threading.RLock()
        self.db = {c: {} for c in CLASSES}
        self.vdi_state = {}
        self.faults = {"host_is_slave": None, "no_nbd": False, "task_stuck": False,
                       "http_stall": False, "sr_busy": {}}
        self.session_log = {}     # every session ever made: ref -> summary (GET /sim/sessions)
        self.tls = threading.local()
        self.methods = {}
        self._register()
        self._bootstrap()
        self._bootstrap_pool()
        self._bootstrap_iso()
        # event.from / event.inject / system.listMethods over this database.
        self.events = events.EventLog(self)

    # ---- bootstrap -----------------------------------------------------------------

    def _add(self, cls, rec, ref=None):
        ref = ref or new_ref()
        self.db[cls][ref] = rec
        return ref

    def _bootstrap(self):
        self.host = self._add("host", R.host_record(self.cfg["hostname"], self.cfg["address"]))
        # The main SR supports CBT; the second one does not, to exercise the
        # "CBT unsupported on this SR" path.  Its type is one whose SM driver
        # lacks VDI_CONFIG_CBT (XCP-ng's LINSTOR; LVM, EXT and NFS all have it).
        self.sr_main = self._add("SR", R.sr_record("Local storage", "ext", True, 1 << 40))
        self.sr_nocbt = self._add("SR", R.sr_record("XOSTOR (no CBT)", "linstor", False,
                                                    1 << 40))
        for sr in (self.sr_main, self.sr_nocbt):
            pbd = self._add("PBD", R.pbd_record(self.host, sr))
            self.db["SR"][sr]["PBDs"].append(pbd)
            self.db["host"][self.host]["PBDs"].append(pbd)
        self.pool = self._add("pool", R.pool_record(self.host, self.sr_main))
        self.network = self._add("network", R.network_record(
            "Pool-wide network associated with eth0", ["nbd"]))
        dom0 = self._add("VM", R.vm_record("Control domain on host: " + self.cfg["hostname"],
                                           self.host, "Running", is_control_domain=True))
        self.db["host"][self.host]["control_domain"] = dom0
        self.db["host"][self.host]["resident_VMs"].append(dom0)

    def _bootstrap_pool(self):
        """Pool members (--hosts), a shared SR seen by every host, a local SR of
        host1, the PIFs on the NBD network(s) and the SM plugin records."""
        cfg = self.cfg
        self.hosts = [self.host]                   # index 0: the master
        self.host_certs = {self.host: self.cert_pem}
        self.host_ports = {}                       # host ref -> (http, https); set by xapisim
        self.sr_cbt_types = {}                     # SR -> its type before /sim/sr/cbt off
        for m in cfg.get("members", []):
            h = self._add("host", R.host_record(m["name"], m["address"]))
            self.hosts.append(h)
            self.host_certs[h] = m["cert_pem"]
            dom0 = self._add("VM", R.vm_record("Control domain on host: " + m["name"], h,
                                               "Running", is_control_domain=True))
            self.db["host"][h]["control_domain"] = dom0
            self.db["host"][h]["resident_VMs"].append(dom0)
        rec = R.sr_record("Shared storage", "nfs", True, 1 << 41)
        rec.update({"shared": True, "other_config": {}, "sm_config": {}})
        self.sr_shared = self._add("SR", rec)
        for h in self.hosts:
            self._add_pbd(h, self.sr_shared, {"server": "nfs.sim", "serverpath": "/export/sr"})
        self.sr_local_host1 = None
        if len(self.hosts) > 1:
            self.sr_local_host1 = self._add("SR", R.sr_record("Local storage (host1)", "ext",
                                                              True, 1 << 40))
            self._add_pbd(self.hosts[1], self.sr_local_host1)
        # Management network (eth0) on every host; with --nbd-network dedicated or
        # ipv6 the "nbd" purpose moves to a second network (eth1) whose addresses
        # are not in the hosts' certificates.
        mode = cfg.get("nbd_network", "management")
        self.nbd_network = self.network
        if mode != "management":
            self.db["network"][self.network]["purpose"] = []
            self.nbd_network = self._add("network", R.network_record("NBD network", ["nbd"]))
            self.db["network"][self.nbd_network]["bridge"] = "xenbr1"
        self.default_purpose = {n: list(r["purpose"]) for n, r in self.db["network"].items()}
        for i, h in enumerate(self.hosts):
            nbd_addr = self.host_nbd_address(h)
            if mode == "management":
                self._add_pif(h, self.network, "eth0", nbd_addr, management=True)
            else:
                self._add_pif(h, self.network, "eth0", self.db["host"][h]["address"],
                              management=True)
                self._add_pif(h, self.nbd_network, "eth1", nbd_addr)
        for sr_type in R.SM_DRIVERS:
            self._add("SM", R.sm_record(sr_type))
        for sr in self.db["SR"]:
            self.refresh_sr_operations(sr)

    def _add_pbd(self, host, sr, device_config=None):
        rec = R.pbd_record(host, sr)
        if device_config is not None:
            rec["device_config"] = dict(device_config)
        pbd = self._add("PBD", rec)
        self.db["SR"][sr]["PBDs"].append(pbd)
        self.db["host"][host]["PBDs"].append(pbd)
        return pbd

    def _add_vbd(self, rec):
        """Adds VBD `rec`, listed on its VM and, unless empty, on its VDI."""
        vbd = self._add("VBD", rec)
        self.db["VM"][rec["VM"]]["VBDs"].append(vbd)
        if rec["VDI"] != NULL:
            self.db["VDI"][rec["VDI"]]["VBDs"].append(vbd)
        return vbd

    def _add_pif(self, host, network, device, address, management=False):
        """A PIF with `address` as IPv4, or as IPv6 when it has a colon (kept in
        the address/prefix form xapi stores)."""
        v6 = ":" in address
        mac = "02:00:%02x:%02x:%02x:%02x" % tuple(os.urandom(4))
        pif = self._add("PIF", R.pif_record(host, network, device, "" if v6 else address,
                                            [address] if v6 else [], management, mac))
        self.db["host"][host]["PIFs"].append(pif)
        self.db["network"][network]["PIFs"].append(pif)
        return pif

    def host_nbd_address(self, host):
        """The address a host has on the NBD network (as get_nbd_info reports it)."""
        i = self.hosts.index(host)
        return self.cfg["nbd_address"] if i == 0 else self.cfg["members"][i - 1]["nbd_address"]

    def host_name(self, host):
        return self.db["host"][host]["hostname"]

    def host_by_name(self, name):
        """A host by hostname, name_label, uuid or ref; "master" is host 0."""
        if name in (None, "", "master"):
            return self.host
        for h in self.hosts:
            r = self.db["host"][h]
            if name in (h, r["uuid"], r["hostname"], r["name_label"]):
                return h
        raise XapiError("UUID_INVALID", "host", name)

    def sr_alias(self, key):
        """An SR by ref, uuid or alias: cbt, nocbt, shared, local-host1."""
        aliases = {None: self.sr_main, "": self.sr_main, "cbt": self.sr_main,
                   "nocbt": self.sr_nocbt, "shared": self.sr_shared,
                   "local-host1": self.sr_local_host1}
        sr = aliases.get(key, key)
        if sr is None:
            raise XapiError("UUID_INVALID", "SR", key)
        return sr if sr in self.db["SR"] else self.by_uuid("SR", sr)

    def refresh_sr_operations(self, sr):
        """SR.allowed_operations as xapi_sr_operations.ml update_allowed_operations
        computes them (valid_operations): operations whose SM feature the SR
        type's driver lacks go (check_sm_features); destroy/forget go while a
        PBD is attached, destroy also without PBDs or with VDIs; and while
        current_operations is not empty everything goes except `plug`, which
        goes too unless every current operation is a plug (check_parallel_ops).
        SR types without a modelled SM plugin keep their list."""
        rec = self.db["SR"][sr]
        feats = R.sm_features(rec["type"])
        if feats is None:
            return
        attached = any(self.db["PBD"].get(p, {}).get("currently_attached") for p in rec["PBDs"])
        current = set(rec["current_operations"].values())
        ops = []
        for op in R.SR_ALL_OPS:
            if R.SR_OP_FEATURE.get(op, "") not in feats and op in R.SR_OP_FEATURE:
                continue
            if op in ("destroy", "forget") and attached:
                continue
            if op == "destroy" and (not rec["PBDs"] or rec["VDIs"]):
                continue
            if current and (op != "plug" or current != {"plug"}):
                continue
            ops.append(op)
        rec["allowed_operations"] = ops

    def sr_has_cbt(self, sr):
        """Whether the SR's driver can do CBT: its SM's VDI_CONFIG_CBT feature
        (xapi_vdi.ml check_sm_feature_error), else its allowed_operations."""
        rec = self.db["SR"][sr]
        feats = R.sm_features(rec["type"])
        if feats is None:
            return "vdi_enable_cbt" in rec["allowed_operations"]
        return "VDI_CONFIG_CBT" in feats

    def wait_sr_free(self, srs):
        """message_forwarding.ml with_sr_andor_vdi: a VDI operation marks its SR
        first; while another operation is in SR.current_operations that fails
        with OTHER_OPERATION_IN_PROGRESS and Helpers.retry_with_global_lock
        waits and retries (for up to 2 hours), so the call blocks until the SR
        is free."""
        deadline = time.monotonic() + 7200
        while True:
            with self.lock:
                busy = [sr for sr in srs if self.db["SR"].get(sr, {}).get("current_operations")]
                if not busy:
                    return
                if time.monotonic() > deadline:
                    cur = self.db["SR"][busy[0]]["current_operations"]
                    task, op = next(iter(cur.items()))
                    raise XapiError("OTHER_OPERATION_IN_PROGRESS", "SR", busy[0], op, task)
            time.sleep(0.05)

    def wait_sr_free_for_vdis(self, vdis):
        with self.lock:
            srs = {self.db["VDI"][v]["SR"] for v in vdis if v in self.db["VDI"]}
        self.wait_sr_free(srs)

    def set_sr_busy(self, sr, on, op="scan"):
        """Fault sr_busy: an operation (default SR.scan, which xapi runs
        periodically) holds the SR: it is in current_operations under a pending
        task, and allowed_operations shrink as xapi recomputes them."""
        with self.lock:
            rec = self.get("SR", sr)
            busy = self.faults["sr_busy"]
            if on and sr not in busy:
                if op not in R.SR_ALL_OPS:
                    raise XapiError("INVALID_VALUE", "op", op)
                label = ("VDI." + op[4:]) if op.startswith("vdi_") else ("SR." + op)
                t = self._add("task", R.task_record(label, "", self.host))
                busy[sr] = t
                rec["current_operations"][t] = op
            elif not on and sr in busy:
                t = busy.pop(sr)
                rec["current_operations"].pop(t, None)
                self.finish_task(t, raw_result="")
            self.refresh_sr_operations(sr)
            return {"sr": rec["uuid"], "current_operations": dict(rec["current_operations"]),
                    "allowed_operations": list(rec["allowed_operations"])}

    def _bootstrap_iso(self):
        """An ISO library SR holding one ISO file, as a local ISO SR (sm ISOSR.py)
        would show it: VDIs are the files, located by file name, read-only."""
        iso_dir = os.path.join(self.state_dir, "isos")
        os.makedirs(iso_dir, exist_ok=True)
        path = os.path.join(iso_dir, "tools.iso")
        write_iso_image(path)
        size = os.path.getsize(path)
        sr_rec = R.sr_record("ISO library", "iso", False, 1 << 30)
        # xapi_sr_operations.ml: only the operations ISOSR's capabilities allow
        # (VDI_CREATE, VDI_DELETE, attach/detach, scan); no snapshot, no CBT.
        sr_rec.update({"content_type": "iso", "shared": True, "other_config": {},
                       "sm_config": {}, "virtual_allocation": size,
                       "physical_utilisation": size,
                       "allowed_operations": ["unplug", "plug", "pbd_create", "pbd_destroy",
                                              "vdi_clone", "scan", "vdi_create",
                                              "vdi_destroy"]})
        self.sr_iso = self._add("SR", sr_rec)
        for host in list(self.db["host"]):
            pbd_rec = R.pbd_record(host, self.sr_iso)
            pbd_rec["device_config"] = {"location": iso_dir, "legacy_mode": "true"}
            pbd = self._add("PBD", pbd_rec)
            self.db["SR"][self.sr_iso]["PBDs"].append(pbd)
            self.db["host"][host]["PBDs"].append(pbd)
        # sm VDI.py _db_introduce: scanned ISOs get type "user" (the default ty),
        # ISOVDI.__init__: location and label are the file name, read_only.
        rec = R.vdi_record("tools.iso", self.sr_iso, size, "user")
        rec.update({"location": "tools.iso", "read_only": True, "sm_config": {},
                    "physical_utilisation": size,
                    # xapi_vdi.ml check_operation_error with ISOSR's features
                    "allowed_operations": ["forget", "copy", "destroy"]})
        self.iso_vdi = new_ref()
        self.db["VDI"][self.iso_vdi] = rec
        self.vdi_state[self.iso_vdi] = VdiState(path)
        self.db["SR"][self.sr_iso]["VDIs"].append(self.iso_vdi)
        self.refresh_sr_operations(self.sr_iso)

    # ---- lookups ---------------------------------------------------------------------

    def get(self, cls, ref):
        rec = self.db[cls].get(ref) if isinstance(ref, str) else None
        if rec is None:
            raise XapiError("HANDLE_INVALID", cls, ref)
        return rec

    def by_uuid(self, cls, uuid):
        for ref, rec in self.db[cls].items():
            if rec.get("uuid") == uuid:
                return ref
        raise XapiError("UUID_INVALID", cls, uuid)

    def vdi_ref(self, ref_or_uuid):
        """HTTP handlers accept a VDI as ref or uuid."""
        if ref_or_uuid in self.db["VDI"]:
            return ref_or_uuid
        if ref_or_uuid.startswith("OpaqueRef:"):
            raise XapiError("HANDLE_INVALID", "VDI", ref_or_uuid)
        return self.by_uuid("VDI", ref_or_uuid)

    # ---- sessions -------------------------------------------------------------------

    def slave_master(self, ctx):
        """Master address if this request must be answered with HOST_IS_SLAVE, else None.

        The fault names the master's address.  A request that reached us under
        that very name (HTTP Host header) is served normally, so one simulator
        can play both the member (reached as e.g. 127.0.0.1) and the master
        (reached as e.g. localhost) for redirect tests.  With "always": every
        request is refused."""
        if getattr(ctx, "member", None):
            # A pool member's own listener (--hosts): xapi on a member refuses
            # logins and calls with a normal session, naming the master's
            # address (session_check.ml, xapi_session.ml login).
            return self.db["host"][self.host]["address"]
        f = self.faults.get("host_is_slave")
        if not f:
            return None
        master = f["master"]
        if f.get("always") or ctx.host_name() != master:
            return master
        return None

    def check_session(self, ref, ctx):
        master = self.slave_master(ctx)
        if master is not None:
            raise XapiError("HOST_IS_SLAVE", master)
        rec = self.db["session"].get(ref) if isinstance(ref, str) else None
        if rec is None:
            raise XapiError("SESSION_INVALID", ref)
        rec["last_active"] = DateTime()
        if ref in self.session_log:
            self.session_log[ref]["_active"] = time.monotonic()
        return ref

    def session_valid(self, ref):
        with self.lock:
            return ref in self.db["session"]

    def login(self, uname, pwd, version, originator, ctx):
        master = self.slave_master(ctx)
        if master is not None:
            # Checked before the password, so no delay (as xapi).
            raise XapiError("HOST_IS_SLAVE", master)
        if uname != self.cfg["user"] or pwd != self.cfg["password"]:
            # xapi sleeps (about 5 s) before answering to slow down guessing.
            time.sleep(self.cfg["auth_delay"])
            raise XapiError("SESSION_AUTHENTICATION_FAILED", uname,
                            "Authentication failure")
        with self.lock:
            sref = self._add("session", R.session_record(self.host, uname, originator))
            self.session_log[sref] = {"ref": sref, "uname": uname, "originator": originator,
                                      "created": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                               time.gmtime()),
                                      "ended": None, "_active": time.monotonic()}
            doomed = self._sessions_over_cap()
        for old in doomed:
            self.logout(old, reason="cap")
        return sref

    def _sessions_over_cap(self):
        """db_gc_util.ml timeout_sessions, run at every login here (xapi: every
        30 s): root sessions are grouped by originator (cap --session-cap,
        xapi's max_sessions_per_originator = 500), other users by user name
        (same cap), and root sessions without an originator share one pool
        (cap --anon-session-cap, xapi's max_sessions = 400).  Only sessions
        whose tasks have all completed count; over the cap, the least recently
        active ones are destroyed (timeout_sessions_common)."""
        cap = self.cfg.get("session_cap", 500)
        anon_cap = self.cfg.get("anon_session_cap", 400)
        groups = {}
        for ref, rec in self.db["session"].items():
            if rec["pool"]:
                continue
            root = rec["auth_user_name"] in ("", "root")
            if root and rec["originator"] == "":
                key = ("anon", "")
            elif root:
                key = ("orig", rec["originator"])
            else:
                key = ("user", rec["auth_user_name"])
            busy = any(self.db["task"].get(t, {}).get("status") in ("pending", "cancelling")
                       for t in rec["tasks"])
            if not busy:
                groups.setdefault(key, []).append(ref)
        doomed = []
        for key, refs in groups.items():
            limit = anon_cap if key[0] == "anon" else cap
            refs.sort(key=lambda r: self.session_log.get(r, {}).get("_active", 0), reverse=True)
            doomed += refs[limit:]
        return doomed

    def logout(self, sref, reason="logout"):
        with self.lock:
            rec = self.db["session"].pop(sref, None)
            if rec is not None and sref in self.session_log:
                self.session_log[sref]["ended"] = reason
        if rec is not None and self.nbd:
            # Its exports die with it: new NBD connections naming it are refused.
            self.nbd.stop_session(sref)

    # ---- dispatcher -------------------------------------------------------------------

    def dispatch(self, name, params, ctx):
        """Run one API call; returns the value or raises XapiError."""
        is_async = name.startswith("Async.")
        base = name[len("Async."):] if is_async else name
        m = self.methods.get(base)
        if m is None or (is_async and not m.async_ok):
            raise XapiError("MESSAGE_METHOD_UNKNOWN", name)
        args = list(params[1:]) if m.session else list(params)
        n_mand = len(m.params)
        received = len(args)
        if m.session and not params:
            raise XapiError("MESSAGE_PARAMETER_COUNT_MISMATCH", name, n_mand, 0)
        if received < n_mand or (not m.optional and received != n_mand):
            raise XapiError("MESSAGE_PARAMETER_COUNT_MISMATCH", name, n_mand, received)
        if m.session:
            with self.lock:
                sref = self.check_session(params[0], ctx)
        else:
            sref = None
        # Trailing optional parameters take defaults; surplus ones are ignored.
        kinds = list(m.params) + [k for k, _ in m.optional]
        values = []
        for i, kind in enumerate(kinds):
            if i < received:
                values.append(_coerce(kind, args[i], name))
            else:
                values.append(copy.deepcopy(m.optional[i - n_mand][1]))
        call_args = ([sref] if m.session else [ctx]) + values
        if not is_async:
            return m.fn(*call_args)
        return self.start_task(name, sref, m.fn, call_args)

    # ---- tasks ----------------------------------------------------------------------

    def create_task(self, label, description, sref):
        with self.lock:
            tref = self._add("task", R.task_record(label, description, self.host))
            if sref in self.db["session"]:
                self.db["session"][sref]["tasks"].append(tref)
            return tref

    def task_progress(self, tref, fraction):
        with self.lock:
            t = self.db["task"].get(tref)
            if t is not None and t["status"] == "pending":
                t["progress"] = max(0.0, min(1.0, float(fraction)))

    def current_task_progress(self, fraction):
        tref = getattr(self.tls, "task", None)
        if tref:
            self.task_progress(tref, fraction)

    def finish_task(self, tref, value=None, error=None, raw_result=None):
        """Complete a task: result is the XML-RPC serialisation of `value`."""
        with self.lock:
            t = self.db["task"].get(tref)
            if t is None or t["status"] not in ("pending", "cancelling"):
                return
            t["finished"] = DateTime()
            if error is None:
                t["status"] = "success"
                t["progress"] = 1.0
                t["result"] = raw_result if raw_result is not None else to_xml(value)
            else:
                t["status"] = "failure"
                t["progress"] = 1.0
                t["error_info"] = [str(e) for e in error]

    def start_task(self, label, sref, fn, call_args):
        tref = self.create_task(label, "", sref)
        if self.faults.get("task_stuck"):
            # Fault task_stuck: the call never runs; the task stays pending with
            # its progress frozen (a wedged xapi operation), even once cleared.
            return tref

        def run():
            self.tls.task = tref
            try:
                value = fn(*call_args)
                self.finish_task(tref, value)
            except XapiError as e:
                self.finish_task(tref, error=e.error)
            except Exception as e:  # an internal bug must still end the task
                traceback.print_exc()
                self.finish_task(tref, error=["INTERNAL_ERROR", str(e)])
            finally:
                self.tls.task = None
        threading.Thread(target=run, name="task " + label, daemon=True).start()
        return tref

    # ---- registration ------------------------------------------------------------------

    def _method(self, name, fn, params=(), optional=(), async_ok=True, session=True):
        self.methods[name] = Method(fn, list(params), list(optional), async_ok, session)

    def _register(self):
        m = self._method
        # Generic getters and a few setters for every class.
        samples = {"VM": R.vm_record("", NULL), "VBD": R.vbd_record(NULL, NULL, 0),
                   "VDI": R.vdi_record("", NULL, 0), "SR": R.sr_record("", "", True, 0),
                   "PBD": R.pbd_record(NULL, NULL), "host": R.host_record("", ""),
                   "pool": R.pool_record(NULL, NULL), "network": R.network_record("", []),
                   "task": R.task_record("", "", NULL),
                   "session": R.session_record(NULL, "", ""),
                   "PIF": R.pif_record(NULL, NULL, ""), "SM": R.sm_record("ext")}
        for cls, sample in samples.items():
            self._register_class(cls, list(sample.keys()))

        m("session.login_with_password",
          lambda ctx, u, p, v, o: self.login(u, p, v, o, ctx),
          ["string", "string"], [("string", "1.1"), ("string", "")], async_ok=False,
          session=False)
        m("session.logout", lambda s: self.logout(s) or "", async_ok=False)
        m("session.get_this_host", self.session_get_this_host, ["ref"], async_ok=False)

        m("task.create", self.task_create, ["string", "string"], async_ok=False)
        m("task.destroy", self.task_destroy, ["ref"], async_ok=False)
        m("task.cancel", self.task_cancel, ["ref"])

        m("VM.snapshot", self.vm_snapshot, ["ref", "string"], [("set", [])])
        m("VM.destroy", self.vm_destroy, ["ref"])
        m("VM.start", self.vm_start, ["ref", "bool", "bool"])
        m("VM.clean_shutdown", self.vm_clean_shutdown, ["ref"])
        m("VM.hard_shutdown", self.vm_shutdown, ["ref"])
        m("VM.resume", self.vm_resume, ["ref", "bool", "bool"])

        m("VBD.create", self.vbd_create, ["map"])
        m("VBD.destroy", self.vbd_destroy, ["ref"])

        m("VDI.create", self.vdi_create, ["map"])
        m("VDI.destroy", self.vdi_destroy, ["ref"])
        m("VDI.snapshot", self.vdi_snapshot_api, ["ref"], [("map", {})])
        m("VDI.resize", self.vdi_resize, ["ref", "int"])
        m("VDI.enable_cbt", self.vdi_enable_cbt, ["ref"])
        m("VDI.disable_cbt", self.vdi_disable_cbt, ["ref"])
        m("VDI.data_destroy", self.vdi_data_destroy, ["ref"])
        m("VDI.list_changed_blocks", self.vdi_list_changed_blocks, ["ref", "ref"])
        m("VDI.get_nbd_info", self.vdi_get_nbd_info, ["ref"], async_ok=False)
        m("VDI.checksum", self.vdi_checksum, ["ref"])
        m("VDI.pool_migrate", self.vdi_pool_migrate, ["ref", "ref", "map"])

        m("host.get_server_certificate", self.host_get_server_certificate, ["ref"])
        m("network.add_purpose", self.network_add_purpose, ["ref", "string"])
        m("network.remove_purpose", self.network_remove_purpose, ["ref", "string"])

    def _register_class(self, cls, fields):
        m = self._method

        def getter(field):
            def fn(s, ref):
                with self.lock:
                    return copy.deepcopy(self.get(cls, ref)[field])
            return fn

        def get_record(s, ref):
            with self.lock:
                return copy.deepcopy(self.get(cls, ref))

        def get_by_uuid(s, uuid):
            with self.lock:
                return self.by_uuid(cls, uuid)

        def get_all(s):
            with self.lock:
                return list(self.db[cls].keys())

        def get_all_records(s):
            with self.lock:
                return copy.deepcopy(self.db[cls])

        def get_by_name_label(s, label):
            with self.lock:
                return [r for r, rec in self.db[cls].items() if rec["name_label"] == label]

        def setter(field):
            def fn(s, ref, value):
                with self.lock:
                    self.get(cls, ref)[field] = value
                    return ""
            return fn

        def add_to_other_config(s, ref, key, value):
            with self.lock:
                oc = self.get(cls, ref)["other_config"]
                if key in oc:
                    raise XapiError("MAP_DUPLICATE_KEY", cls, "other_config", ref, key)
                oc[key] = value
                return ""

        def remove_from_other_config(s, ref, key):
            with self.lock:
                self.get(cls, ref)["other_config"].pop(key, None)
                return ""

        # Tags are a set in xapi: adding one twice keeps one.
        def add_tags(s, ref, tag):
            with self.lock:
                tags = self.get(cls, ref)["tags"]
                if tag not in tags:
                    tags.append(tag)
                return ""

        def remove_tags(s, ref, tag):
            with self.lock:
                tags = self.get(cls, ref)["tags"]
                if tag in tags:
                    tags.remove(tag)
                return ""

        m(cls + ".get_record", get_record, ["ref"], async_ok=False)
        m(cls + ".get_by_uuid", get_by_uuid, ["string"], async_ok=False)
        if cls != "session":
            m(cls + ".get_all", get_all, [], async_ok=False)
            m(cls + ".get_all_records", get_all_records, [], async_ok=False)
        if "name_label" in fields:
            m(cls + ".get_by_name_label", get_by_name_label, ["string"], async_ok=False)
        for f in fields:
            m(cls + ".get_" + f, getter(f), ["ref"], async_ok=False)
        if "name_label" in fields and cls not in ("session", "task", "SM"):
            m(cls + ".set_name_label", setter("name_label"), ["ref", "string"], async_ok=False)
            m(cls + ".set_name_description", setter("name_description"), ["ref", "string"],
              async_ok=False)
        if "other_config" in fields:
            m(cls + ".set_other_config", setter("other_config"), ["ref", "map"], async_ok=False)
            m(cls + ".add_to_other_config", add_to_other_config, ["ref", "string", "string"],
              async_ok=False)
            m(cls + ".remove_from_other_config", remove_from_other_config, ["ref", "string"],
              async_ok=False)
        if "tags" in fields:
            m(cls + ".set_tags", setter("tags"), ["ref", "set"], async_ok=False)
            m(cls + ".add_tags", add_tags, ["ref", "string"], async_ok=False)
            m(cls + ".remove_tags", remove_tags, ["ref", "string"], async_ok=False)

    # ---- session, task, host, network ---------------------------------------------------

    def session_get_this_host(self, s, self_ref):
        with self.lock:
            return self.get("session", self_ref)["this_host"]

    def task_create(self, s, label, description):
        return self.create_task(label, description, s)

    def task_destroy(self, s, tref):
        with self.lock:
            self.get("task", tref)
            del self.db["task"][tref]
            for srec in self.db["session"].values():
                if tref in srec["tasks"]:
                    srec["tasks"].remove(tref)
            return ""

    def task_cancel(self, s, tref):
        with self.lock:
            t = self.get("task", tref)
            # Only tasks made by task.create (driven by a client's HTTP upload)
            # can be cancelled here; our own work items run to completion, which
            # xapi also allows ("request only; may be ignored").
            if t["status"] == "pending" and t["name_label"] and not t["name_label"].startswith("Async."):
                t["status"] = "cancelled"
                t["finished"] = DateTime()
                t["error_info"] = ["TASK_CANCELLED", tref]
            return ""

    def host_get_server_certificate(self, s, href):
        with self.lock:
            self.get("host", href)
            # Each pool member has its own self-signed certificate.
            return self.host_certs.get(href, self.cert_pem)

    def network_add_purpose(self, s, nref, value):
        if value not in ("nbd", "insecure_nbd"):
            raise XapiError("INVALID_VALUE", "purpose", value)
        with self.lock:
            p = self.get("network", nref)["purpose"]
            if value not in p:
                p.append(value)
            return ""

    def network_remove_purpose(self, s, nref, value):
        with self.lock:
            p = self.get("network", nref)["purpose"]
            if value in p:
                p.remove(value)
            return ""

    def nbd_mode(self):
        """Pool-wide NBD mode from network purposes: 'tls', 'notls', or None (off)."""
        purposes = set()
        for n in self.db["network"].values():
            purposes.update(n["purpose"])
        if "nbd" in purposes and "insecure_nbd" not in purposes:
            return "tls"
        if "insecure_nbd" in purposes and "nbd" not in purposes:
            return "notls"
        return None

    # ---- disks ----------------------------------------------------------------------

    def _disk_path(self, uuid):
        return os.path.join(self.disk_dir, uuid + ".raw")

    def _new_vdi(self, name, sr, size, vdi_type="user", image=None, fill=None):
        """Create a VDI record and its (sparse) disk file, optionally from an image
        or filled with generated content (fill: see fill_disk)."""
        rec = R.vdi_record(name, sr, size, vdi_type)
        ref = new_ref()
        path = self._disk_path(rec["uuid"])
        if image:
            copy_file(image, path)
        with open(path, "ab") as f:
            f.truncate(size)
        if fill:
            fill_disk(path, size, **fill)
        self.db["VDI"][ref] = rec
        self.vdi_state[ref] = VdiState(path)
        self.db["SR"][sr]["VDIs"].append(ref)
        self._update_utilisation(ref)
        return ref

    def _update_utilisation(self, ref):
        st = self.vdi_state[ref]
        rec = self.db["VDI"][ref]
        if st.path and os.path.exists(st.path):
            rec["physical_utilisation"] = os.stat(st.path).st_blocks * 512
        else:
            rec["physical_utilisation"] = 0
        sr = self.db["SR"].get(rec["SR"])
        if sr is not None:
            sr["virtual_allocation"] = sum(self.db["VDI"][v]["virtual_size"]
                                           for v in sr["VDIs"] if v in self.db["VDI"])
            sr["physical_utilisation"] = sum(self.db["VDI"][v]["physical_utilisation"]
                                             for v in sr["VDIs"] if v in self.db["VDI"])

    def vdi_in_use(self, ref, include_snapshot_vms=True):
        """Whether the VDI is attached: a plugged VBD or an open NBD connection."""
        for vbd in self.db["VDI"][ref]["VBDs"]:
            b = self.db["VBD"].get(vbd)
            if b is None or not b["currently_attached"]:
                continue
            vm = self.db["VM"].get(b["VM"])
            if vm is not None and vm["is_a_snapshot"] and not include_snapshot_vms:
                continue
            return True
        if not self.nbd or not self.nbd.active_connections(ref):
            return False
        # nbdkit logs a disconnection a moment after the client has closed its
        # socket; give a client that just hung up that moment (xapi also needs
        # a little while to unplug its dom0 VBD) before calling the VDI busy.
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline:
            time.sleep(0.02)
            if not self.nbd.active_connections(ref):
                return False
        return True

    def mark_written(self, ref, offset, length):
        """Record a guest write in the live CBT log (64 KiB granularity)."""
        st = self.vdi_state[ref]
        if st.cbt_log is None or length <= 0:
            return
        first = offset // CBT_BLOCK
        last = (offset + length - 1) // CBT_BLOCK
        log = st.cbt_log
        for b in range(first, last + 1):
            if (b >> 3) < len(log):
                log[b >> 3] |= 0x80 >> (b & 7)

    def guest_write(self, ref, offset, data, update=True):
        with self.lock:
            rec = self.get("VDI", ref)
            st = self.vdi_state[ref]
            if st.path is None:
                raise XapiError("VDI_INCOMPATIBLE_TYPE", ref, rec["type"])
            if offset < 0 or offset + len(data) > rec["virtual_size"]:
                raise XapiError("VDI_IO_ERROR", "Device I/O errors")
            with open(st.path, "r+b") as f:
                if not (all_zero(data) and is_hole(f.fileno(), offset, len(data))):
                    # (Zeros over a hole are already there: keep the file sparse.)
                    f.seek(offset)
                    f.write(data)
            self.mark_written(ref, offset, len(data))
            if update:
                self._update_utilisation(ref)

    def guest_zero(self, ref, offset, length):
        chunk = 1 << 20
        with self.lock:
            pos = offset
            while pos < offset + length:
                n = min(chunk, offset + length - pos)
                self.guest_write(ref, pos, bytes(n))
                pos += n

    def guest_replace(self, ref, image, only_changed=True):
        """Make the disk's content equal to `image` (zero-extended), as a guest would.

        With only_changed, only the 64 KiB blocks that differ are written (and so
        tracked); otherwise every block is rewritten.  Returns blocks written."""
        written = 0
        with self.lock:
            rec = self.get("VDI", ref)
            size = rec["virtual_size"]
            if os.path.getsize(image) > size:
                raise XapiError("VDI_IO_ERROR", "Device I/O errors")
            st = self.vdi_state[ref]
            with open(image, "rb") as src, open(st.path, "r+b") as dst:
                for off in range(0, size, CBT_BLOCK):
                    n = min(CBT_BLOCK, size - off)
                    new = src.read(n)
                    new += bytes(n - len(new))
                    if only_changed:
                        dst.seek(off)
                        if dst.read(n) == new:
                            continue
                    dst.seek(off)
                    dst.write(new)
                    self.mark_written(ref, off, n)
                    written += 1
            self._update_utilisation(ref)
        return written

    # ---- VM -------------------------------------------------------------------------

    def create_vm(self, name, disks, cd=False, power_state="Running", host=None, tags=None):
        """Create a VM with one VDI per entry of `disks` (dicts: image and/or size,
        sr (ref or uuid, default the CBT-capable SR), name, cbt, sharable, on_boot,
        fill: {"kind": random|zero|pattern, "seed": ...} for generated content).
        cd: True (a CD drive with the ISO library's ISO), "empty", or False.
        power_state: Running, Halted or Suspended (with a suspend image)."""
        if power_state not in ("Running", "Halted", "Suspended"):
            raise XapiError("INTERNAL_ERROR", "power_state must be Running, Halted or Suspended")
        if any(d.get("on_boot", "persist") not in ("persist", "reset") for d in disks):
            raise XapiError("INTERNAL_ERROR", "on_boot must be persist or reset")
        if any((d.get("fill") or {}).get("kind", "random") not in FILL_KINDS for d in disks):
            raise XapiError("INTERNAL_ERROR", "fill must be one of " + ", ".join(FILL_KINDS))
        with self.lock:
            # host: the pool member the VM runs on (resident_on; kept as affinity).
            home = self.host_by_name(host)
            vref = self._add("VM", R.vm_record(name, home, power_state))
            vm = self.db["VM"][vref]
            if host:
                vm["affinity"] = home
            if tags:
                vm["tags"] = list(dict.fromkeys(tags))  # a set in xapi: each tag once
            running = power_state == "Running"
            # A suspended VM keeps its VBDs currently_attached (xapi_xenops.ml,
            # update_vm_internal preserves them; import.ml restores them).
            attached = power_state in ("Running", "Suspended")
            if running:
                self.db["host"][home]["resident_VMs"].append(vref)
            for i, d in enumerate(disks):
                # SR by ref, uuid or alias (cbt, nocbt, shared, local-host1).
                sr = self.sr_alias(d.get("sr"))
                image = d.get("image")
                size = d.get("size")
                if size is None:
                    if not image:
                        raise XapiError("INTERNAL_ERROR", "disk needs image or size")
                    size = os.path.getsize(image)
                size = int(size)
                size = (size + 511) // 512 * 512
                fill = d.get("fill")
                if fill:
                    # Generated content: a function of the seed, the VM's name,
                    # the disk's index and its size.
                    fill = {"kind": fill.get("kind", "random"), "seed": fill.get("seed"),
                            "label": "%s/%d" % (name, i)}
                vdi = self._new_vdi(d.get("name") or "%s disk %d" % (name, i), sr, size,
                                    image=image, fill=fill)
                self._add_vbd(R.vbd_record(vref, vdi, i, "Disk", attached, bootable=(i == 0)))
                vrec = self.db["VDI"][vdi]
                # xapi_vdi.ml check_operation_error: no snapshot of a sharable VDI,
                # neither snapshot nor copy of an on_boot=reset one.
                if d.get("sharable"):
                    vrec["sharable"] = True
                    vrec["allowed_operations"].remove("snapshot")
                if d.get("on_boot") == "reset":
                    vrec["on_boot"] = "reset"
                    for op in ("snapshot", "copy"):
                        if op in vrec["allowed_operations"]:
                            vrec["allowed_operations"].remove(op)
                if d.get("cbt"):
                    self.vdi_enable_cbt(None, vdi)
            if cd:
                # userdevice 3 is the usual CD slot; move it past the disks if needed.
                ud = max(3, len(disks))
                iso = self.iso_vdi if cd != "empty" and self.iso_vdi in self.db["VDI"] else NULL
                self._add_vbd(R.vbd_record(vref, iso, ud, "CD", attached, mode="RO"))
            if power_state == "Suspended":
                self._make_suspend_image(vref, disks)
            return vref

    def _make_suspend_image(self, vref, disks):
        """The memory image of a suspended VM: a VDI of type suspend, named and
        sized as xapi_xenops.ml `suspend` makes it (memory_static_max * 1.2 * 1.05
        + 100 MiB), here on the SR of the VM's first disk."""
        vm = self.db["VM"][vref]
        sr = self.sr_main
        for vbd in vm["VBDs"]:
            b = self.db["VBD"][vbd]
            if b["type"] == "Disk" and b["VDI"] in self.db["VDI"]:
                sr = self.db["VDI"][b["VDI"]]["SR"]
                break
        size = int(vm["memory_static_max"] * 1.2 * 1.05) + 100 * 1024 * 1024
        size = (size + VDI_ROUND - 1) // VDI_ROUND * VDI_ROUND
        vdi = self._new_vdi("Suspend image", sr, size, "suspend")
        rec = self.db["VDI"][vdi]
        rec["name_description"] = "Suspend image"
        with open(self.vdi_state[vdi].path, "r+b") as f:
            seed = hashlib.sha256(vm["uuid"].encode()).digest()
            f.write(b"XenSavedDomain\n" + vm["uuid"].encode() + b"\n" + seed * 2048)
        self._update_utilisation(vdi)
        vm["suspend_VDI"] = vdi
        vm["suspend_SR"] = sr
        return vdi

    def vm_snapshot(self, s, vref, new_name, ignore_vdis):
        # Each disk snapshot goes through VDI.snapshot, which waits for a busy SR.
        with self.lock:
            disks = [self.db["VBD"][b]["VDI"] for b in self.db["VM"].get(vref, {}).get("VBDs", [])
                     if b in self.db["VBD"] and self.db["VBD"][b]["type"] == "Disk"]
        self.wait_sr_free_for_vdis([d for d in disks if d not in ignore_vdis])
        with self.lock:
            vm = self.get("VM", vref)
            if vm["is_a_snapshot"] or vm["is_a_template"] or vm["is_control_domain"]:
                raise XapiError("OPERATION_NOT_ALLOWED",
                                "VM %s cannot be snapshotted" % vref)
            # xapi_vm_lifecycle.ml check_operation_error: a disk whose sm_config
            # says on_boot=reset (blktap2 writes it for cached reset disks) blocks
            # the whole VM, ignore_vdis or not.
            for vbd in vm["VBDs"]:
                vdi = self.db["VDI"].get(self.db["VBD"][vbd]["VDI"])
                if vdi is not None and vdi["sm_config"].get("on_boot") == "reset":
                    raise XapiError("VDI_ON_BOOT_MODE_INCOMPATIBLE_WITH_OPERATION")
            # xapi_vm_clone.ml `clone`: VBDs whose VDI is in ignore_vdis are
            # dropped before anything is copied, so the snapshot VM has no VBD
            # at all for them.
            vbds = [v for v in vm["VBDs"] if self.db["VBD"][v]["VDI"] not in ignore_vdis]
            # safe_clone_disks snapshots the disks in VBD order and destroys the
            # ones made so far when one fails; checking first leaves the same state.
            for vbd in vbds:
                b = self.db["VBD"][vbd]
                if not b["empty"] and b["type"] != "CD":
                    self._check_vdi_snapshot(b["VDI"], self.get("VDI", b["VDI"]))
            now = DateTime()
            snap = copy.deepcopy(vm)
            sref = new_ref()
            snap.update({
                # copy_vm_record: a snapshot is also a template.
                "uuid": new_uuid(), "name_label": new_name, "is_a_snapshot": True,
                "is_a_template": True, "snapshot_of": vref, "snapshot_time": now, "snapshots": [],
                "power_state": "Halted", "resident_on": NULL, "domid": -1,
                "VBDs": [], "VIFs": [], "consoles": [], "memory_target": 0,
                "snapshot_info": {"power-state-at-snapshot": vm["power_state"]},
                "allowed_operations": ["changing_dynamic_range", "destroy", "export",
                                       "clone", "copy", "revert"],
                "parent": NULL, "children": [],
                # copy_vm_record: a snapshot has no suspend image, even of a
                # suspended VM (clone copies it for clone/checkpoint only).
                "suspend_VDI": NULL, "suspend_SR": NULL,
            })
            self.db["VM"][sref] = snap
            for vbd in vbds:
                b = self.db["VBD"][vbd]
                if b["empty"]:
                    new_vdi = NULL
                elif b["type"] == "CD":
                    # safe_clone_disks: an ISO is not copied, the snapshot's CD
                    # drive points at the original ISO VDI.
                    new_vdi = b["VDI"]
                else:
                    new_vdi = self._snapshot_vdi(b["VDI"], now)
                self._add_vbd(R.vbd_record(sref, new_vdi, b["userdevice"], b["type"], False,
                                           b["mode"], b["bootable"]))
            vm["snapshots"].append(sref)
            return sref

    def vm_destroy(self, s, vref):
        with self.lock:
            vm = self.get("VM", vref)
            if vm["is_control_domain"]:
                raise XapiError("OPERATION_NOT_ALLOWED", "Cannot destroy the control domain")
            # xapi_vm_lifecycle.ml allowed_power_states: destroy takes Halted or
            # Suspended VMs (the suspend image stays, like the disks).
            if vm["power_state"] not in ("Halted", "Suspended"):
                raise XapiError("VM_BAD_POWER_STATE", vref, "halted, suspended",
                                vm["power_state"].lower())
            # VBD records go; the VDIs stay (they must be destroyed separately).
            for vbd in vm["VBDs"]:
                b = self.db["VBD"].pop(vbd, None)
                if b and b["VDI"] in self.db["VDI"]:
                    self.db["VDI"][b["VDI"]]["VBDs"].remove(vbd)
            parent = self.db["VM"].get(vm["snapshot_of"])
            if parent is not None and vref in parent["snapshots"]:
                parent["snapshots"].remove(vref)
            del self.db["VM"][vref]
            return ""

    def _set_power(self, vref, state):
        vm = self.get("VM", vref)
        running = state == "Running"
        vm["power_state"] = state
        home = vm["affinity"] if vm["affinity"] in self.hosts else self.host
        vm["resident_on"] = home if running else NULL
        vm["domid"] = 1 if running else -1
        residents = self.db["host"][home]["resident_VMs"]
        if running and vref not in residents:
            residents.append(vref)
        if not running and vref in residents:
            residents.remove(vref)
        for vbd in vm["VBDs"]:
            b = self.db["VBD"][vbd]
            b["currently_attached"] = running
            b["device"] = ("xvd" + "abcdefghijklmnop"[int(b["userdevice"]) % 16]) if running else ""

    def vm_start(self, s, vref, start_paused, force):
        with self.lock:
            vm = self.get("VM", vref)
            if vm["is_a_snapshot"] or vm["is_a_template"]:
                raise XapiError("OPERATION_NOT_ALLOWED", "VM is a snapshot or template")
            if vm["power_state"] != "Halted":
                raise XapiError("VM_BAD_POWER_STATE", vref, "halted", vm["power_state"].lower())
            self._set_power(vref, "Paused" if start_paused else "Running")
            return ""

    def vm_clean_shutdown(self, s, vref):
        with self.lock:
            vm = self.get("VM", vref)
            # xapi_vm_lifecycle.ml allowed_power_states: clean_shutdown needs Running.
            if vm["power_state"] != "Running" or vm["is_control_domain"]:
                raise XapiError("VM_BAD_POWER_STATE", vref, "running", vm["power_state"].lower())
            self._set_power(vref, "Halted")
            return ""

    def vm_shutdown(self, s, vref):
        """VM.hard_shutdown: Running, Paused or Suspended VMs."""
        with self.lock:
            vm = self.get("VM", vref)
            if vm["power_state"] == "Halted" or vm["is_control_domain"]:
                raise XapiError("VM_BAD_POWER_STATE", vref, "paused, suspended, running",
                                vm["power_state"].lower())
            if vm["power_state"] == "Suspended":
                # xapi_vm.ml hard_shutdown: the suspend image is destroyed (a
                # failure is only logged) and forgotten, then the VM is Halted.
                sv = vm["suspend_VDI"]
                if sv in self.db["VDI"]:
                    try:
                        self.vdi_destroy(s, sv)
                    except XapiError:
                        pass
                vm["suspend_VDI"] = NULL
            self._set_power(vref, "Halted")
            return ""

    def vm_resume(self, s, vref, start_paused, force):
        with self.lock:
            vm = self.get("VM", vref)
            if vm["power_state"] != "Suspended":
                raise XapiError("VM_BAD_POWER_STATE", vref, "suspended",
                                vm["power_state"].lower())
            sv = vm["suspend_VDI"]
            if sv not in self.db["VDI"]:
                # xapi_xenops.ml resume: without its image the VM is reset to Halted.
                vm["suspend_VDI"] = NULL
                self._set_power(vref, "Halted")
                raise XapiError("VM_HAS_NO_SUSPEND_VDI", "VM", vref)
            self._set_power(vref, "Paused" if start_paused else "Running")
            # After a successful resume the image is forgotten and destroyed.
            vm["suspend_VDI"] = NULL
            self.vdi_destroy(s, sv)
            return ""

    # ---- VBD ------------------------------------------------------------------------

    def vbd_create(self, s, args):
        with self.lock:
            for k in ("VM", "VDI", "userdevice", "bootable", "mode", "type", "empty",
                      "other_config"):
                if k not in args:
                    raise XapiError("INTERNAL_ERROR", "missing field %s in VBD record" % k)
            vref = args["VM"]
            vm = self.get("VM", vref)
            vdi = args["VDI"]
            if vdi != NULL:
                self.get("VDI", vdi)
            ud = args["userdevice"]
            if ud == "autodetect":
                used = {self.db["VBD"][b]["userdevice"] for b in vm["VBDs"]}
                ud = next(str(i) for i in range(64) if str(i) not in used)
            rec = R.vbd_record(vref, vdi, ud, args["type"], False, args["mode"],
                               bool(args["bootable"]))
            rec["empty"] = bool(args["empty"])
            rec["other_config"] = dict(args["other_config"])
            return self._add_vbd(rec)

    def vbd_destroy(self, s, ref):
        with self.lock:
            b = self.get("VBD", ref)
            if b["currently_attached"]:
                raise XapiError("OPERATION_NOT_ALLOWED", "VBD is currently attached")
            vm = self.db["VM"].get(b["VM"])
            if vm is not None and ref in vm["VBDs"]:
                vm["VBDs"].remove(ref)
            vdi = self.db["VDI"].get(b["VDI"])
            if vdi is not None and ref in vdi["VBDs"]:
                vdi["VBDs"].remove(ref)
            del self.db["VBD"][ref]
            return ""

    # ---- VDI ------------------------------------------------------------------------

    def vdi_create(self, s, args):
        for k in ("SR", "virtual_size", "type", "sharable", "read_only", "other_config"):
            if k not in args:
                raise XapiError("INTERNAL_ERROR", "missing field %s in VDI record" % k)
        size = _coerce("int", args["virtual_size"], "VDI.create")
        vdi_type = args["type"]
        if vdi_type == "cbt_metadata":
            raise XapiError("VDI_INCOMPATIBLE_TYPE", "", "cbt_metadata")
        if not isinstance(args["sharable"], bool) or not isinstance(args["read_only"], bool):
            raise XapiError("INTERNAL_ERROR", "sharable and read_only must be booleans")
        if size < 0:
            raise XapiError("INVALID_VALUE", "virtual_size", str(size))
        # VHD-based SRs round up to a multiple of 2 MiB; clients must re-read it.
        size = max(VDI_ROUND, (size + VDI_ROUND - 1) // VDI_ROUND * VDI_ROUND)
        if size > MAX_VHD_SIZE:
            raise XapiError("VDI_TOO_LARGE", NULL, str(MAX_VHD_SIZE))
        with self.lock:
            sr = args["SR"]
            self.get("SR", sr)
            ref = self._new_vdi(args.get("name_label", ""), sr, size, vdi_type)
            rec = self.db["VDI"][ref]
            rec["name_description"] = args.get("name_description", "")
            rec["sharable"] = args["sharable"]
            rec["read_only"] = args["read_only"]
            rec["other_config"] = dict(args["other_config"])
            rec["xenstore_data"] = dict(args.get("xenstore_data", {}))
            rec["sm_config"].update(args.get("sm_config", {}))
            rec["tags"] = list(args.get("tags", []))
            return ref

    def _check_vdi_snapshot(self, ref, rec):
        """xapi_vdi.ml check_operation_error for `snapshot`, in its order: the SR
        driver's features (ISOSR has no VDI_SNAPSHOT), cbt_metadata, then
        sharable (VDI_IS_SHARABLE [vdi]) and on_boot=reset (no parameters)."""
        sr = self.db["SR"].get(rec["SR"])
        feats = R.sm_features(sr["type"]) if sr is not None else None
        if sr is not None and (sr["type"] in ("iso", "udev") if feats is None
                               else "VDI_SNAPSHOT" not in feats):
            raise XapiError("SR_OPERATION_NOT_SUPPORTED", rec["SR"])
        if rec["type"] == "cbt_metadata":
            raise XapiError("VDI_INCOMPATIBLE_TYPE", ref, "cbt_metadata")
        if rec["sharable"]:
            raise XapiError("VDI_IS_SHARABLE", ref)
        if rec["on_boot"] == "reset":
            raise XapiError("VDI_ON_BOOT_MODE_INCOMPATIBLE_WITH_OPERATION")

    def _snapshot_vdi(self, ref, now):
        """Freeze a copy of the disk and move the live CBT log into it."""
        rec = self.get("VDI", ref)
        st = self.vdi_state[ref]
        self._check_vdi_snapshot(ref, rec)
        snap = copy.deepcopy(rec)
        sref = new_ref()
        u = new_uuid()
        snap.update({"uuid": u, "location": u, "is_a_snapshot": True, "snapshot_of": ref,
                     "snapshot_time": now, "snapshots": [], "VBDs": [],
                     "current_operations": {}})
        path = self._disk_path(u)
        copy_file(st.path, path)
        nst = VdiState(path)
        if st.cbt_log is not None:
            # The snapshot takes the accumulated log; the live disk starts afresh;
            # chain: older snapshot -> new snapshot -> live VDI.
            nst.cbt_log = st.cbt_log
            st.cbt_log = bytearray(bitmap_len(rec["virtual_size"]))
            nst.cbt_parent = st.cbt_parent
            if st.cbt_parent in self.vdi_state:
                self.vdi_state[st.cbt_parent].cbt_child = sref
            nst.cbt_child = ref
            st.cbt_parent = sref
        self.db["VDI"][sref] = snap
        self.vdi_state[sref] = nst
        rec["snapshots"].append(sref)
        self.db["SR"][snap["SR"]]["VDIs"].append(sref)
        self._update_utilisation(sref)
        return sref

    def vdi_snapshot_api(self, s, ref, driver_params):
        self.wait_sr_free_for_vdis([ref])
        with self.lock:
            return self._snapshot_vdi(ref, DateTime())

    def vdi_destroy(self, s, ref):
        with self.lock:
            rec = self.get("VDI", ref)
            if self.vdi_in_use(ref):
                raise XapiError("VDI_IN_USE", ref, "destroy")
            st = self.vdi_state[ref]
            # Keep the CBT chain answerable across the gap: our log is OR-ed into
            # the next newer member and the links are re-joined.
            parent, child = st.cbt_parent, st.cbt_child
            if child in self.vdi_state:
                cst = self.vdi_state[child]
                if cst.cbt_log is not None and st.cbt_log is not None:
                    merge_into(cst.cbt_log, st.cbt_log)
                cst.cbt_parent = parent if parent in self.vdi_state else None
            if parent in self.vdi_state:
                self.vdi_state[parent].cbt_child = child if child in self.vdi_state else None
            for vbd in list(rec["VBDs"]):
                b = self.db["VBD"].pop(vbd, None)
                vm = self.db["VM"].get(b["VM"]) if b else None
                if vm is not None and vbd in vm["VBDs"]:
                    vm["VBDs"].remove(vbd)
            # xapi_vdi.ml destroy_and_data_destroy_common: VMs whose suspend
            # image this was forget it (their power state is left alone).
            for vm in self.db["VM"].values():
                if vm["suspend_VDI"] == ref:
                    vm["suspend_VDI"] = NULL
            orig = self.db["VDI"].get(rec["snapshot_of"])
            if orig is not None and ref in orig["snapshots"]:
                orig["snapshots"].remove(ref)
            sr = self.db["SR"].get(rec["SR"])
            if sr is not None and ref in sr["VDIs"]:
                sr["VDIs"].remove(ref)
            if self.nbd:
                self.nbd.stop_vdi(ref)
            # (For an ISO this deletes the ISO file itself: sm ISOSR.py,
            # ISOVDI.delete unlinks it.)
            if st.path and os.path.exists(st.path):
                os.unlink(st.path)
            del self.db["VDI"][ref]
            del self.vdi_state[ref]
            if sr is not None:
                sr["virtual_allocation"] -= rec["virtual_size"]
                sr["physical_utilisation"] -= rec["physical_utilisation"]
            return ""

    def vdi_resize(self, s, ref, size):
        with self.lock:
            rec = self.get("VDI", ref)
            if rec["type"] == "cbt_metadata":
                raise XapiError("VDI_INCOMPATIBLE_TYPE", ref, "cbt_metadata")
            size = (size + VDI_ROUND - 1) // VDI_ROUND * VDI_ROUND
            if size < rec["virtual_size"]:
                raise XapiError("SR_BACKEND_FAILURE_79", "",
                                "VDI Invalid size [opterr=shrinking not allowed]", "")
            st = self.vdi_state[ref]
            with open(st.path, "r+b") as f:
                f.truncate(size)
            rec["virtual_size"] = size
            if st.cbt_log is not None:
                # New area reads as "not written": pad the live log with zero bits.
                st.cbt_log.extend(bytes(bitmap_len(size) - len(st.cbt_log)))
            self._update_utilisation(ref)
            return ""

    def _check_cbt_toggle(self, ref, rec):
        if rec["type"] == "cbt_metadata":
            raise XapiError("VDI_INCOMPATIBLE_TYPE", ref, "cbt_metadata")
        if rec["is_a_snapshot"]:
            raise XapiError("OPERATION_NOT_ALLOWED", "VDI is a snapshot: %s" % ref)
        if rec["type"] not in ("user", "system"):
            raise XapiError("VDI_INCOMPATIBLE_TYPE", ref, rec["type"])
        if rec["on_boot"] == "reset":
            raise XapiError("VDI_ON_BOOT_MODE_INCOMPATIBLE_WITH_OPERATION")

    def vdi_enable_cbt(self, s, ref):
        if s is not None:
            self.wait_sr_free_for_vdis([ref])
        with self.lock:
            rec = self.get("VDI", ref)
            self._check_cbt_toggle(ref, rec)
            # xapi_vdi.ml check_sm_feature_error: the SR's SM needs VDI_CONFIG_CBT.
            if not self.sr_has_cbt(rec["SR"]):
                raise XapiError("SR_OPERATION_NOT_SUPPORTED", rec["SR"])
            st = self.vdi_state[ref]
            if st.cbt_log is None:
                st.cbt_log = bytearray(bitmap_len(rec["virtual_size"]))
                st.cbt_parent = None
            rec["cbt_enabled"] = True
            return ""

    def vdi_disable_cbt(self, s, ref):
        self.wait_sr_free_for_vdis([ref])
        with self.lock:
            rec = self.get("VDI", ref)
            self._check_cbt_toggle(ref, rec)
            if not self.sr_has_cbt(rec["SR"]):
                raise XapiError("SR_OPERATION_NOT_SUPPORTED", rec["SR"])
            self.drop_cbt(ref)
            return ""

    def drop_cbt(self, ref):
        """Delete the live log and cut the link from the newest snapshot (disable
        CBT, or CBT lost by the system); older snapshots keep their logs."""
        st = self.vdi_state[ref]
        if st.cbt_parent in self.vdi_state:
            self.vdi_state[st.cbt_parent].cbt_child = None
        st.cbt_parent = None
        st.cbt_log = None
        self.db["VDI"][ref]["cbt_enabled"] = False

    def vdi_data_destroy(self, s, ref):
        self.wait_sr_free_for_vdis([ref])
        with self.lock:
            rec = self.get("VDI", ref)
            if not rec["is_a_snapshot"]:
                raise XapiError("OPERATION_NOT_ALLOWED", "VDI is not a snapshot: %s" % ref)
            if rec["type"] == "cbt_metadata":
                return ""  # already done: a no-op
            if not rec["cbt_enabled"]:
                raise XapiError("VDI_NO_CBT_METADATA", ref)
            if rec["type"] not in ("user", "system"):
                raise XapiError("VDI_INCOMPATIBLE_TYPE", ref, rec["type"])
            old_type = rec["type"]
            rec["type"] = "cbt_metadata"
        # xapi waits a few seconds for the VBDs to be destroyed (not just
        # unplugged); NBD connections count too, since they hold a dom0 VBD.
        deadline = time.monotonic() + self.cfg["vbd_wait"]
        while True:
            with self.lock:
                if ref not in self.db["VDI"]:
                    raise XapiError("HANDLE_INVALID", "VDI", ref)
                busy = bool(rec["VBDs"]) or bool(self.nbd and self.nbd.active_connections(ref))
                if not busy:
                    break
                if time.monotonic() >= deadline:
                    rec["type"] = old_type
                    raise XapiError("VDI_IN_USE", ref, "data_destroy")
            time.sleep(0.1)
        with self.lock:
            st = self.vdi_state[ref]
            if self.nbd:
                self.nbd.stop_vdi(ref)
            if st.path and os.path.exists(st.path):
                os.unlink(st.path)
            st.path = None
            rec["other_config"]["content_id"] = "/No content: this is a cbt_metadata VDI/"
            rec["allowed_operations"] = ["forget", "destroy"]
            self._update_utilisation(ref)
            return ""

    def vdi_list_changed_blocks(self, s, vfrom, vto):
        import base64
        self.wait_sr_free_for_vdis([vto])
        with self.lock:
            rfrom = self.get("VDI", vfrom)
            rto = self.get("VDI", vto)
            if self.vdi_in_use(vto, include_snapshot_vms=False):
                raise XapiError("VDI_IN_USE", vto, "list_changed_blocks")
            desc = "Failed to calculate changed blocks for given VDIs."
            if vfrom == vto:
                raise sr_backend_failure(460, desc, "Source and target VDI are same")
            sfrom = self.vdi_state[vfrom]
            if rfrom["cbt_enabled"] and rto["cbt_enabled"] and sfrom.cbt_log is not None:
                size = rto["virtual_size"]
                result = bytearray(bitmap_len(size))
                cur = vfrom
                seen = set()
                # Walk the child links from the older VDI; OR every log after it,
                # up to and including vdi_to.
                while True:
                    nxt = self.vdi_state[cur].cbt_child
                    if nxt is None or nxt not in self.vdi_state or nxt in seen:
                        break
                    seen.add(nxt)
                    log = self.vdi_state[nxt].cbt_log
                    if log is None:
                        break
                    if len(log) > len(result):
                        raise sr_backend_failure(
                            459, "Changed block tracking log is in an inconsistent state.",
                            "Inconsistent bitmaps")
                    merge_into(result, log)
                    cur = nxt
                    if cur == vto:
                        # Bits past the last block must read as zero.
                        nblocks = (size + CBT_BLOCK - 1) // CBT_BLOCK
                        if nblocks % 8:
                            result[-1] &= (0xFF << (8 - nblocks % 8)) & 0xFF
                        return base64.b64encode(bytes(result)).decode("ascii")
            raise sr_backend_failure(460, desc, "Source and target VDI are unrelated")

    def vdi_get_nbd_info(self, s, ref):
        with self.lock:
            rec = self.get("VDI", ref)
            if rec["type"] == "cbt_metadata":
                raise XapiError("VDI_INCOMPATIBLE_TYPE", ref, "cbt_metadata")
            mode = self.nbd_mode()
            if mode is None or self.nbd is None:
                return []   # "no NBD network" is an empty list, not an error
            path = self.vdi_state[ref].path
            uuid = rec["uuid"]
            # What the VDI is a snapshot of (and so on up), for the simulator's
            # VDI-scoped read-error fault, which follows a disk to its snapshots.
            lineage, up = [], rec["snapshot_of"]
            while up in self.db["VDI"] and len(lineage) < 100:
                lineage.append(self.db["VDI"][up]["uuid"])
                up = self.db["VDI"][up]["snapshot_of"]
            # xapi_vdi.ml _get_nbd_info: the hosts with a currently attached PBD
            # of the VDI's SR, in the order of the database's PBD table (a fold
            # over refs that conses, so descending refs: effectively random);
            # per host, its attached PIFs on networks with an nbd/insecure_nbd
            # purpose (same order), each giving its IPv4 address if set, then
            # its IPv6 addresses (as stored, address/prefix); one record per
            # address; hosts without such an address give none.
            nbd_nets = {n for n, r in self.db["network"].items()
                        if {"nbd", "insecure_nbd"} & set(r["purpose"])}
            plan = []
            for pbd in sorted(self.db["PBD"], reverse=True):
                p = self.db["PBD"][pbd]
                if p["SR"] != rec["SR"] or not p["currently_attached"] or \
                        p["host"] not in self.hosts:
                    continue
                ips = []
                for pif in sorted(self.db["PIF"], reverse=True):
                    f = self.db["PIF"][pif]
                    if f["host"] == p["host"] and f["currently_attached"] and \
                            f["network"] in nbd_nets:
                        ips += ([f["IP"]] if f["IP"] else []) + [a for a in f["IPv6"] if a]
                if ips:
                    plan.append((p["host"], ips))
        exportname = "/%s?session_id=%s" % (uuid, s)
        out = []
        for host, ips in plan:
            # Each host serves its own nbdkit, bound to its NBD address, with
            # its own certificate; the subject is the host's name (xapi takes
            # the first DNS name of the certificate, the hostname for the
            # certificates xapi generates).
            port = self.nbd.ensure_export(ref, uuid, path, s, exportname, tls=(mode == "tls"),
                                          host=self.host_name(host), lineage=lineage)
            subject = self.cfg["subject"] if host == self.host else self.host_name(host)
            for address in ips:
                out.append({"exportname": exportname, "address": address, "port": port,
                            "cert": self.host_certs[host], "subject": subject})
        return out

    def vdi_pool_migrate(self, s, ref, sr, options):
        """Storage migration: refused while CBT is on (VDI_CBT_ENABLED), which is
        why administrators disable CBT first and so break the chain.  The disk
        moves to a new VDI (new uuid) on the target SR; VBDs follow it."""
        with self.lock:
            rec = self.get("VDI", ref)
            self.get("SR", sr)
            if rec["type"] == "cbt_metadata":
                raise XapiError("VDI_INCOMPATIBLE_TYPE", ref, "cbt_metadata")
            if rec["cbt_enabled"]:
                raise XapiError("VDI_CBT_ENABLED", ref)
            if rec["is_a_snapshot"]:
                raise XapiError("OPERATION_NOT_ALLOWED", "VDI is a snapshot: %s" % ref)
            if sr == rec["SR"]:
                return ref
            st = self.vdi_state[ref]
            new = self._new_vdi(rec["name_label"], sr, rec["virtual_size"], rec["type"],
                                image=st.path)
            nrec = self.db["VDI"][new]
            for k in ("name_description", "sharable", "read_only", "other_config",
                      "xenstore_data", "tags", "on_boot", "allow_caching"):
                nrec[k] = copy.deepcopy(rec[k])
            for vbd in rec["VBDs"]:
                self.db["VBD"][vbd]["VDI"] = new
                nrec["VBDs"].append(vbd)
            rec["VBDs"] = []
            # The old VDI's snapshots stay on the old SR, still naming it in snapshot_of.
            self.vdi_destroy(s, ref)
            return new

    def vdi_checksum(self, s, ref):
        with self.lock:
            rec = self.get("VDI", ref)
            path = self.vdi_state[ref].path
            size = rec["virtual_size"]
            if path is None:
                raise XapiError("VDI_INCOMPATIBLE_TYPE", ref, "cbt_metadata")
        md5 = hashlib.md5()
        done = 0
        with open(path, "rb") as f:
            while done < size:
                chunk = f.read(min(4 << 20, size - done))
                if not chunk:  # a file shorter than the disk reads as zeros
                    chunk = bytes(min(4 << 20, size - done))
                md5.update(chunk)
                done += len(chunk)
                self.current_task_progress(done / size if size else 1.0)
        return md5.hexdigest()

    # ---- summaries for the control interface -------------------------------------------

    def describe_vdi(self, ref):
        rec = self.db["VDI"][ref]
        st = self.vdi_state[ref]
        return {"ref": ref, "uuid": rec["uuid"], "name_label": rec["name_label"],
                "type": rec["type"], "virtual_size": rec["virtual_size"],
                "is_a_snapshot": rec["is_a_snapshot"],
                "snapshot_of": self.db["VDI"].get(rec["snapshot_of"], {}).get("uuid"),
                "cbt_enabled": rec["cbt_enabled"], "path": st.path,
                "exists": bool(st.path) and os.path.exists(st.path),
                "sharable": rec["sharable"], "on_boot": rec["on_boot"],
                "read_only": rec["read_only"],
                "sr": self.db["SR"][rec["SR"]]["uuid"],
                "cbt_parent": self.db["VDI"].get(st.cbt_parent, {}).get("uuid"),
                "cbt_child": self.db["VDI"].get(st.cbt_child, {}).get("uuid"),
                "live_log_blocks": (sum(bin(b).count("1") for b in st.cbt_log)
                                    if st.cbt_log is not None else None)}

    def describe_vm(self, ref):
        vm = self.db["VM"][ref]
        disks = []
        for vbd in vm["VBDs"]:
            b = self.db["VBD"][vbd]
            disks.append({"vbd": vbd, "userdevice": b["userdevice"], "type": b["type"],
                          "empty": b["empty"], "mode": b["mode"],
                          "currently_attached": b["currently_attached"],
                          "vdi": self.db["VDI"][b["VDI"]]["uuid"] if b["VDI"] in self.db["VDI"]
                          else None})
        return {"ref": ref, "uuid": vm["uuid"], "name_label": vm["name_label"],
                "power_state": vm["power_state"], "is_a_snapshot": vm["is_a_snapshot"],
                "resident_on": (self.host_name(vm["resident_on"])
                                if vm["resident_on"] in self.db["host"] else None),
                "affinity": (self.host_name(vm["affinity"])
                             if vm["affinity"] in self.db["host"] else None),
                "tags": list(vm["tags"]),
                "snapshot_of": self.db["VM"].get(vm["snapshot_of"], {}).get("uuid"),
                "is_control_domain": vm["is_control_domain"], "disks": disks,
                "suspend_vdi": self.db["VDI"].get(vm["suspend_VDI"], {}).get("uuid")}


def merge_into(dst, src):
    """OR bitmap `src` into `dst` (src may be shorter: missing bits are zero)."""
    for i, b in enumerate(src[:len(dst)]):
        if b:
            dst[i] |= b


_ZEROS = memoryview(bytes(4096))


def all_zero(data):
    """True if the bytes-like `data` holds only zeros.  Data usually differs in
    its first bytes, so those are compared first; the full scan uses count(),
    the fastest whole-buffer test in CPython."""
    head = memoryview(data)[:len(_ZEROS)]
    if head != _ZEROS[:len(head)]:
        return False
    if not isinstance(data, (bytes, bytearray)):
        data = bytes(data)
    return data.count(0) == len(data)


FILL_KINDS = ("random", "zero", "pattern")


def fill_disk(path, size, kind="random", seed=None, label=""):
    """Write generated content over the whole (new, sparse) disk file.

    random: 1 MiB chunk i is the first bytes of SHAKE-128("<seed>/<label>/<i>")
      (label = "<VM name>/<disk index>"): incompressible, different for every
      disk, the same for the same seed, name and index; without a seed a
      random one is drawn.
    zero: nothing written (the file stays a hole).
    pattern: every 4 KiB block starts with the line "<label> offset 0x<hex>\n",
      the rest of each block is one byte value derived from seed and label
      (never 0): cheap, compressible, and still no two blocks alike."""
    if kind not in FILL_KINDS:
        raise XapiError("INTERNAL_ERROR", "fill must be one of " + ", ".join(FILL_KINDS))
    if kind == "zero":
        return
    if seed is None:
        seed = os.urandom(16).hex()
    key = ("%s/%s" % (seed, label)).encode()
    chunk = 1 << 20
    if kind == "pattern":
        value = 1 + hashlib.sha256(key).digest()[0] % 255
        template = bytes([value]) * chunk
        name = label.encode()[:400]
    with open(path, "r+b") as f:
        for pos in range(0, size, chunk):
            n = min(chunk, size - pos)
            if kind == "random":
                data = hashlib.shake_128(key + b"/%d" % (pos // chunk)).digest(n)
            else:
                buf = bytearray(template[:n])
                for off in range(0, n, 4096):
                    s = name + b" offset 0x%012x\n" % (pos + off)
                    buf[off:off + len(s)] = s[:n - off]
                data = buf
            f.write(data)


def is_hole(fd, offset, length):
    """True if [offset, offset+length) of the file holds no data (reads as zeros)."""
    try:
        return os.lseek(fd, offset, os.SEEK_DATA) >= offset + length
    except OSError:  # ENXIO: no data after offset
        return True


def copy_file(src, dst):
    """Copy a disk file keeping holes; reflink when the file system can."""
    try:
        subprocess.run(["cp", "--reflink=auto", "--sparse=always", src, dst], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    except (OSError, subprocess.CalledProcessError):
        shutil.copyfile(src, dst)


def write_iso_image(path):
    """A small ISO 9660 image: empty system area, a primary volume descriptor
    (volume "SIM_TOOLS"), the set terminator, then some file data."""
    size = 1 << 20
    data = bytearray(size)
    pvd = bytearray(2048)
    pvd[0:7] = b"\x01CD001\x01"
    pvd[40:72] = b"SIM_TOOLS".ljust(32)
    pvd[80:88] = struct.pack("<I", size // 2048) + struct.pack(">I", size // 2048)
    data[16 * 2048:17 * 2048] = pvd
    data[17 * 2048:17 * 2048 + 7] = b"\xffCD001\x01"
    text = b"cbt-backup simulator tools ISO\n"
    start = 18 * 2048
    data[start:] = (text * (size // len(text) + 1))[:size - start]
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
