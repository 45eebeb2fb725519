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
import subprocess
import threading
import time
import traceback

import records as R
from records import NULL, new_ref, new_uuid
from wire import DateTime, to_xml

CBT_BLOCK = 64 * 1024       # one CBT bit covers this many bytes
VDI_ROUND = 2 * 1024 * 1024  # VHD-based SRs round VDI sizes up to this
MAX_VHD_SIZE = 2040 * 1024 ** 3

CLASSES = ["VM", "VBD", "VDI", "SR", "PBD", "host", "pool", "network", "task", "session"]


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

    def __init__(self, host_header=""):
        self.host_header = host_header or ""

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
        self.faults = {"host_is_slave": None, "no_nbd": False}
        self.tls = threading.local()
        self.methods = {}
        self._register()
        self._bootstrap()

    # ---- bootstrap -----------------------------------------------------------------

    def _add(self, cls, rec, ref=None):
        ref = ref or new_ref()
        self.db[cls][ref] = rec
        return ref

    def _bootstrap(self):
        self.host = self._add("host", R.host_record(self.cfg["hostname"], self.cfg["address"]))
        # The main SR supports CBT; the second one (a plain LVM SR) does not, to
        # exercise the "CBT unsupported on this SR" path.
        self.sr_main = self._add("SR", R.sr_record("Local storage", "ext", True, 1 << 40))
        self.sr_nocbt = self._add("SR", R.sr_record("Local storage (no CBT)", "lvm", False,
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
            return self._add("session", R.session_record(self.host, uname, originator))

    def logout(self, sref):
        with self.lock:
            rec = self.db["session"].pop(sref, None)
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
                   "session": R.session_record(NULL, "", "")}
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
        m("VM.clean_shutdown", self.vm_shutdown, ["ref"])
        m("VM.hard_shutdown", self.vm_shutdown, ["ref"])

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

        m(cls + ".get_record", get_record, ["ref"], async_ok=False)
        m(cls + ".get_by_uuid", get_by_uuid, ["string"], async_ok=False)
        if cls != "session":
            m(cls + ".get_all", get_all, [], async_ok=False)
            m(cls + ".get_all_records", get_all_records, [], async_ok=False)
        if "name_label" in fields:
            m(cls + ".get_by_name_label", get_by_name_label, ["string"], async_ok=False)
        for f in fields:
            m(cls + ".get_" + f, getter(f), ["ref"], async_ok=False)
        if "name_label" in fields and cls not in ("session", "task"):
            m(cls + ".set_name_label", setter("name_label"), ["ref", "string"], async_ok=False)
            m(cls + ".set_name_description", setter("name_description"), ["ref", "string"],
              async_ok=False)
        if "other_config" in fields:
            m(cls + ".set_other_config", setter("other_config"), ["ref", "map"], async_ok=False)
            m(cls + ".add_to_other_config", add_to_other_config, ["ref", "string", "string"],
              async_ok=False)
            m(cls + ".remove_from_other_config", remove_from_other_config, ["ref", "string"],
              async_ok=False)

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
            return self.cert_pem

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

    def _new_vdi(self, name, sr, size, vdi_type="user", image=None):
        """Create a VDI record and its (sparse) disk file, optionally from an image."""
        rec = R.vdi_record(name, sr, size, vdi_type)
        ref = new_ref()
        path = self._disk_path(rec["uuid"])
        if image:
            copy_file(image, path)
        with open(path, "ab") as f:
            f.truncate(size)
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

    def create_vm(self, name, disks, cd=False, power_state="Running"):
        """Create a VM with one VDI per entry of `disks` (dicts: image and/or size,
        sr (ref or uuid, default the CBT-capable SR), name, cbt)."""
        with self.lock:
            vref = self._add("VM", R.vm_record(name, self.host, power_state))
            vm = self.db["VM"][vref]
            running = power_state == "Running"
            if running:
                self.db["host"][self.host]["resident_VMs"].append(vref)
            for i, d in enumerate(disks):
                # SR by ref or uuid; "cbt" / "nocbt" name the two built-in SRs.
                sr = {None: self.sr_main, "": self.sr_main, "cbt": self.sr_main,
                      "nocbt": self.sr_nocbt}.get(d.get("sr"), d.get("sr"))
                if sr not in self.db["SR"]:
                    sr = self.by_uuid("SR", sr)
                image = d.get("image")
                size = d.get("size")
                if size is None:
                    if not image:
                        raise XapiError("INTERNAL_ERROR", "disk needs image or size")
                    size = os.path.getsize(image)
                size = int(size)
                size = (size + 511) // 512 * 512
                vdi = self._new_vdi(d.get("name") or "%s disk %d" % (name, i), sr, size,
                                    image=image)
                vbd = self._add("VBD", R.vbd_record(vref, vdi, i, "Disk", running,
                                                    bootable=(i == 0)))
                vm["VBDs"].append(vbd)
                self.db["VDI"][vdi]["VBDs"].append(vbd)
                if d.get("cbt"):
                    self.vdi_enable_cbt(None, vdi)
            if cd:
                # userdevice 3 is the usual CD slot; move it past the disks if needed.
                ud = max(3, len(disks))
                vbd = self._add("VBD", R.vbd_record(vref, NULL, ud, "CD", running, mode="RO"))
                vm["VBDs"].append(vbd)
            return vref

    def vm_snapshot(self, s, vref, new_name, ignore_vdis):
        with self.lock:
            vm = self.get("VM", vref)
            if vm["is_a_snapshot"] or vm["is_a_template"] or vm["is_control_domain"]:
                raise XapiError("OPERATION_NOT_ALLOWED",
                                "VM %s cannot be snapshotted" % vref)
            now = DateTime()
            snap = copy.deepcopy(vm)
            sref = new_ref()
            snap.update({
                "uuid": new_uuid(), "name_label": new_name, "is_a_snapshot": True,
                "snapshot_of": vref, "snapshot_time": now, "snapshots": [],
                "power_state": "Halted", "resident_on": NULL, "domid": -1,
                "VBDs": [], "VIFs": [], "consoles": [], "memory_target": 0,
                "snapshot_info": {"power-state-at-snapshot": vm["power_state"]},
                "allowed_operations": ["changing_dynamic_range", "destroy", "export",
                                       "clone", "copy", "revert"],
                "parent": NULL, "children": [],
            })
            self.db["VM"][sref] = snap
            for vbd in vm["VBDs"]:
                b = self.db["VBD"][vbd]
                if b["type"] == "Disk" and not b["empty"] and b["VDI"] not in ignore_vdis:
                    new_vdi = self._snapshot_vdi(b["VDI"], now)
                elif b["type"] == "Disk":
                    continue
                else:
                    new_vdi = NULL  # CD drives come along, empty
                nb = self._add("VBD", R.vbd_record(sref, new_vdi, b["userdevice"], b["type"],
                                                   False, b["mode"], b["bootable"]))
                snap["VBDs"].append(nb)
                if new_vdi != NULL:
                    self.db["VDI"][new_vdi]["VBDs"].append(nb)
            vm["snapshots"].append(sref)
            return sref

    def vm_destroy(self, s, vref):
        with self.lock:
            vm = self.get("VM", vref)
            if vm["is_control_domain"]:
                raise XapiError("OPERATION_NOT_ALLOWED", "Cannot destroy the control domain")
            if vm["power_state"] != "Halted":
                raise XapiError("VM_BAD_POWER_STATE", vref, "halted",
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
        vm["resident_on"] = self.host if running else NULL
        vm["domid"] = 1 if running else -1
        residents = self.db["host"][self.host]["resident_VMs"]
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

    def vm_shutdown(self, s, vref):
        with self.lock:
            vm = self.get("VM", vref)
            if vm["power_state"] == "Halted" or vm["is_control_domain"]:
                raise XapiError("VM_BAD_POWER_STATE", vref, "running", vm["power_state"].lower())
            self._set_power(vref, "Halted")
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
            ref = self._add("VBD", rec)
            vm["VBDs"].append(ref)
            if vdi != NULL:
                self.db["VDI"][vdi]["VBDs"].append(ref)
            return ref

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

    def _snapshot_vdi(self, ref, now):
        """Freeze a copy of the disk and move the live CBT log into it."""
        rec = self.get("VDI", ref)
        st = self.vdi_state[ref]
        if rec["type"] == "cbt_metadata":
            raise XapiError("VDI_INCOMPATIBLE_TYPE", ref, "cbt_metadata")
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
            orig = self.db["VDI"].get(rec["snapshot_of"])
            if orig is not None and ref in orig["snapshots"]:
                orig["snapshots"].remove(ref)
            sr = self.db["SR"].get(rec["SR"])
            if sr is not None and ref in sr["VDIs"]:
                sr["VDIs"].remove(ref)
            if self.nbd:
                self.nbd.stop_vdi(ref)
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
        with self.lock:
            rec = self.get("VDI", ref)
            self._check_cbt_toggle(ref, rec)
            if "vdi_enable_cbt" not in self.db["SR"][rec["SR"]]["allowed_operations"]:
                raise XapiError("SR_OPERATION_NOT_SUPPORTED", rec["SR"])
            st = self.vdi_state[ref]
            if st.cbt_log is None:
                st.cbt_log = bytearray(bitmap_len(rec["virtual_size"]))
                st.cbt_parent = None
            rec["cbt_enabled"] = True
            return ""

    def vdi_disable_cbt(self, s, ref):
        with self.lock:
            rec = self.get("VDI", ref)
            self._check_cbt_toggle(ref, rec)
            if "vdi_disable_cbt" not in self.db["SR"][rec["SR"]]["allowed_operations"]:
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
        exportname = "/%s?session_id=%s" % (uuid, s)
        port = self.nbd.ensure_export(ref, uuid, path, s, exportname, tls=(mode == "tls"))
        return [{"exportname": exportname, "address": self.cfg["nbd_address"],
                 "port": port, "cert": self.cert_pem, "subject": self.cfg["subject"]}]

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
                          "empty": b["empty"],
                          "vdi": self.db["VDI"][b["VDI"]]["uuid"] if b["VDI"] in self.db["VDI"]
                          else None})
        return {"ref": ref, "uuid": vm["uuid"], "name_label": vm["name_label"],
                "power_state": vm["power_state"], "is_a_snapshot": vm["is_a_snapshot"],
                "snapshot_of": self.db["VM"].get(vm["snapshot_of"], {}).get("uuid"),
                "is_control_domain": vm["is_control_domain"], "disks": disks}


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
