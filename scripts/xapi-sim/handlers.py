"""XAPI's HTTP handlers: export_metadata, import_metadata, import_raw_vdi,
export_raw_vdi.

Common behaviour reproduced from xapi: authentication by session_id (query or
cookie) or HTTP Basic (a temporary session, logged out afterwards), 401 with
WWW-Authenticate otherwise; the work runs in a task (the caller's task_id, or
one made here and named in the task-id header); upload handlers answer
"200 OK" *before* reading the body, so the outcome is only in the task;
Transfer-Encoding (chunked) is refused with 404; the connection is closed at
the end.
"""

import base64
import copy
import datetime
import io
import struct
import tarfile
import time
import traceback
import urllib.parse
import xml.etree.ElementTree as ET

import vhd
import wire
from records import NULL, new_ref, new_uuid
from sim import XapiError

IO_ERROR = ["VDI_IO_ERROR", "Device I/O errors"]
XAPI_MAJOR, XAPI_MINOR = 24, 19


class Request:
    """What a handler needs to know about the request and its task."""

    def __init__(self, app, h, query):
        self.app = app
        self.sim = app.sim
        self.h = h
        self.pairs = urllib.parse.parse_qsl(query, keep_blank_values=True)
        self.q = {}
        for k, v in self.pairs:
            self.q.setdefault(k, v)
        self.cookies = {}
        for part in (h.headers.get("Cookie") or "").split(";"):
            if "=" in part:
                k, v = part.strip().split("=", 1)
                self.cookies[k] = v
        self.session = None
        self.temp_session = False
        self.task = None

    def arg(self, name, default=None):
        return self.q.get(name, self.cookies.get(name, default))

    # ---- authentication and task ------------------------------------------------------

    def authenticate(self, label, create_task=True):
        """Find the session and the task; on failure answer 401 and return False.
        With create_task=False a missing task is made later by ensure_task."""
        sim = self.sim
        task_id = self.arg("task_id")
        with sim.lock:
            if task_id and task_id in sim.db["task"]:
                self.task = task_id
        sid = self.arg("session_id")
        if sid and sim.session_valid(sid):
            self.session = sid
        else:
            auth = self.h.headers.get("Authorization") or ""
            if auth.startswith("Basic "):
                try:
                    user, _, pwd = base64.b64decode(auth[6:]).decode("utf-8").partition(":")
                    # Even on a pool member the login goes to the master
                    # (xapi_http.ml with_context: login over inet_rpc).
                    ctx = self.h._ctx()
                    ctx.member = None
                    self.session = sim.login(user, pwd, "1.1", "http-basic", ctx)
                    self.temp_session = True
                except (XapiError, ValueError, UnicodeDecodeError):
                    self.session = None
        if self.session is None:
            if self.task:
                sim.finish_task(self.task, error=["SESSION_AUTHENTICATION_FAILED"])
            body = b"<html><body><h1>HTTP 401 unauthorised</h1>Authorisation failed.</body></html>"
            self.raw_response("401 Unauthorised", [("WWW-Authenticate", 'Basic realm="xapi"'),
                                                   ("content-type", "text/html"),
                                                   ("Content-Length", str(len(body)))], body)
            return False
        if create_task:
            self.ensure_task(label)
        return True

    def ensure_task(self, label):
        if self.task is None:
            self.task = self.sim.create_task(label, "", self.session)

    def local_host(self):
        """The pool host whose listener took this request."""
        return getattr(self.h.server, "sim_host", None) or self.sim.host

    def redirect_elsewhere(self, sr):
        """import_raw_vdi.ml `import`, export_raw_vdi.ml `export_raw`: when the
        host that took the request has no attached PBD for the SR
        (Importexport.check_sr_availability), answer 302 to a host that has
        one, picked at random among them (find_host_for_sr, choose_host).  The
        Location is built from the chosen host's address, the request's path
        and its query (Importexport.return_302_redirect: scheme https, no port;
        here the member's listener port is added, as it is not 443; plain http
        only when the simulator runs without HTTPS).  The caller's task is left
        alone, still pending: xapi checks in a task of its own on purpose.
        No such host: 400, and the caller's task fails with NO_HOSTS_AVAILABLE.
        Returns True when the request has been answered."""
        import random
        sim = self.sim
        with sim.lock:
            local = self.local_host()

            def sees(host):
                return any(p in sim.db["PBD"] and sim.db["PBD"][p]["SR"] == sr
                           and sim.db["PBD"][p]["currently_attached"]
                           for p in sim.db["host"][host]["PBDs"])
            if sr not in sim.db["SR"] or sees(local):
                return False
            candidates = [h for h in sim.hosts if sees(h)]
            if candidates:
                target = random.choice(candidates)
                address = sim.db["host"][target]["address"]
                http_port, https_port = sim.host_ports.get(target, (None, None))
        if not candidates:
            if self.task:
                sim.finish_task(self.task, error=["NO_HOSTS_AVAILABLE"])
            self.h.wfile.write(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n"
                               b"Cache-Control: no-cache, no-store\r\n\r\n")
            self.h.wfile.flush()
            self.h.close_connection = True
            return True
        scheme, port = ("https", https_port) if https_port else ("http", http_port)
        host = "[%s]" % address if ":" in address else address
        path, _, query = self.h.path.partition("?")
        url = "%s://%s:%s%s%s" % (scheme, host, port, path, "?" + query if query else "")
        self.h.wfile.write(("HTTP/1.1 302 Found\r\nConnection: close\r\n"
                            "Cache-Control: no-cache, no-store\r\nLocation: %s\r\n\r\n"
                            % url).encode("latin-1"))
        self.h.wfile.flush()
        self.h.close_connection = True
        return True

    def stall(self):
        """Fault http_stall: after the headers, neither read nor write until the
        fault is cleared or the client hangs up."""
        import socket
        if not self.sim.faults.get("http_stall"):
            return
        sock = self.h.connection
        while self.sim.faults.get("http_stall"):
            try:
                # Linux TCP_INFO: the first byte is the state; 8 = CLOSE_WAIT
                # (the client closed its end), 7 = CLOSE.
                state = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0]
            except OSError:
                return
            if state in (7, 8):
                return
            time.sleep(0.05)

    def done(self):
        if self.temp_session:
            self.sim.logout(self.session)

    # ---- responses --------------------------------------------------------------------

    def raw_response(self, status, headers, body=b"", version="HTTP/1.1"):
        lines = ["%s %s" % (version, status), "Connection: close"]
        if self.task:
            lines.append("task-id: %s" % self.task)
        lines += ["%s: %s" % kv for kv in headers]
        self.h.wfile.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        self.h.wfile.flush()
        self.h.close_connection = True

    def fail(self, status, error):
        """Refuse before streaming: HTTP error and the task fails with `error`."""
        self.sim.finish_task(self.task, error=error)
        body = ("<html><body><h1>HTTP %s</h1>%s</body></html>"
                % (status, wire.escape(" ".join(error)))).encode()
        self.raw_response(status, [("content-type", "text/html"),
                                   ("Content-Length", str(len(body)))], body)

    def content_length(self):
        v = self.h.headers.get("Content-Length")
        return int(v) if v is not None and v.strip().isdigit() else None

    def read_body(self, n):
        """Read up to n bytes of the request body (fewer only at end of stream)."""
        return self.h.rfile.read(n)


# ---- export_metadata ------------------------------------------------------------------

def _strict_bool(value, name):
    if value in ("true", "false"):
        return value == "true"
    raise XapiError("INTERNAL_ERROR", "Invalid boolean value for %s: %s" % (name, value))


def build_ova_xml(sim, vm_refs, export_snapshots):
    """The metadata of the VMs as xapi's ova.xml: a struct with `version` and
    `objects` ({class, id, snapshot} for VMs, VBDs, VDIs, SRs, networks)."""
    with sim.lock:
        vms = []
        for ref in vm_refs:
            vms.append(ref)
            if export_snapshots:
                vms.extend(s for s in sim.db["VM"][ref]["snapshots"] if s in sim.db["VM"])
        objects, vbds, vdis, srs = [], [], [], []
        for ref in vms:
            vm_rec = copy.deepcopy(sim.db["VM"][ref])
            objects.append({"class": "VM", "id": ref, "snapshot": vm_rec})
            for vbd in sim.db["VM"][ref]["VBDs"]:
                vbds.append(vbd)
                vdi = sim.db["VBD"][vbd]["VDI"]
                if vdi in sim.db["VDI"] and vdi not in vdis:
                    vdis.append(vdi)
            # export.ml update_table: the metadata handler preserves the power
            # state, and a suspended VM brings its suspend image along
            # (make_vm: a reference left out of the export becomes NULL).
            sv = vm_rec["suspend_VDI"]
            if vm_rec["power_state"] == "Suspended" and sv in sim.db["VDI"]:
                if sv not in vdis:
                    vdis.append(sv)
            else:
                vm_rec["suspend_VDI"] = NULL
        for vbd in vbds:
            objects.append({"class": "VBD", "id": vbd,
                            "snapshot": copy.deepcopy(sim.db["VBD"][vbd])})
        for vdi in vdis:
            rec = sim.db["VDI"][vdi]
            objects.append({"class": "VDI", "id": vdi, "snapshot": copy.deepcopy(rec)})
            if rec["SR"] not in srs:
                srs.append(rec["SR"])
        for sr in srs:
            objects.append({"class": "SR", "id": sr, "snapshot": copy.deepcopy(sim.db["SR"][sr])})
        for net in sim.db["network"]:
            objects.append({"class": "network", "id": net,
                            "snapshot": copy.deepcopy(sim.db["network"][net])})
        host = sim.db["host"][sim.host]
        version = {"hostname": host["hostname"],
                   "date": datetime.date.today().isoformat(),
                   "product_version": host["software_version"]["product_version"],
                   "product_brand": host["software_version"]["product_brand"],
                   "build_number": host["software_version"]["build_number"],
                   "xapi_major": XAPI_MAJOR, "xapi_minor": XAPI_MINOR, "export_vsn": 2}
    return wire.to_xml({"version": version, "objects": objects})


def single_member_tar(name, data):
    """A ustar archive with one member, padded to 512 and ended by two zero
    blocks (not padded to tarfile's 10 KiB record size)."""
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    info.mtime = int(time.time())
    header = info.tobuf(format=tarfile.USTAR_FORMAT)
    pad = (-len(data)) % 512
    return header + data + bytes(pad) + bytes(1024)


def export_metadata(app, h, query):
    req = Request(app, h, query)
    if not req.authenticate("VM.export_metadata"):
        return
    sim = app.sim
    try:
        try:
            export_snapshots = _strict_bool(req.arg("export_snapshots", "true"), "export_snapshots")
            with sim.lock:
                if _strict_bool(req.arg("all", "false"), "all"):
                    refs = [r for r, v in sim.db["VM"].items()
                            if not v["is_a_template"] and not v["is_a_snapshot"]
                            and not v["is_control_domain"]]
                elif req.arg("uuid"):
                    refs = [sim.by_uuid("VM", req.arg("uuid"))]
                elif req.arg("ref"):
                    sim.get("VM", req.arg("ref"))
                    refs = [req.arg("ref")]
                else:
                    raise XapiError("INTERNAL_ERROR", "missing uuid or ref")
            data = single_member_tar("ova.xml", build_ova_xml(sim, refs, export_snapshots).encode())
        except XapiError as e:
            return req.fail("500 Internal Server Error", e.error)
        stalled = bool(sim.faults.get("http_stall"))
        req.raw_response("200 OK", [("Server", h.server_version),
                                    ("content-type", "application/octet-stream"),
                                    ("Content-Length", str(len(data))),
                                    ("Content-Disposition", 'attachment; filename="export.xva"')],
                         b"" if stalled else data, version="HTTP/1.0")
        if stalled:
            req.stall()
            try:
                h.wfile.write(data)
                h.wfile.flush()
            except OSError:
                return sim.finish_task(req.task, error=IO_ERROR)
        sim.finish_task(req.task, raw_result="")
    finally:
        req.done()


# ---- import_metadata ------------------------------------------------------------------

def _read_exact(req, n):
    parts, want = [], n
    while want > 0:
        chunk = req.read_body(min(want, 1 << 20))
        if not chunk:
            break
        parts.append(chunk)
        want -= len(chunk)
    return b"".join(parts)


def import_metadata(app, h, query):
    req = Request(app, h, query)
    if not req.authenticate("VM.import_metadata"):
        return
    try:
        if h.headers.get("Transfer-Encoding"):
            return req.fail("404 Not Found", ["INTERNAL_ERROR", "Cannot handle encoding: %s"
                                              % h.headers.get("Transfer-Encoding")])
        # Headers go out before the body is read; the outcome is in the task.
        req.raw_response("200 OK", [("content-type", "application/octet-stream")])
        req.stall()
        length = req.content_length() or 0
        body = _read_exact(req, length)
        try:
            if len(body) < length:
                raise XapiError("IMPORT_ERROR", "Truncated metadata stream")
            result = _import_ova(app.sim, body, req)
            app.sim.finish_task(req.task, result)
        except XapiError as e:
            app.sim.finish_task(req.task, error=e.error)
        except Exception as e:
            traceback.print_exc()
            app.sim.finish_task(req.task, error=["INTERNAL_ERROR", str(e)])
    finally:
        req.done()


def _parse_tar_first_member(body):
    if len(body) < 512:
        raise XapiError("IMPORT_ERROR", "Truncated tar header")
    try:
        info = tarfile.TarInfo.frombuf(body[:512], "utf-8", "surrogateescape")
    except tarfile.TarError as e:
        raise XapiError("IMPORT_ERROR", "Bad tar header: %s" % e)
    if info.name != "ova.xml":
        raise XapiError("IMPORT_ERROR", "First member of the archive is %s, expected ova.xml"
                        % info.name)
    data = body[512:512 + info.size]
    if len(data) < info.size:
        raise XapiError("IMPORT_ERROR", "Truncated ova.xml")
    return data


def _import_ova(sim, body, req):
    xml = _parse_tar_first_member(body)
    try:
        doc = wire.parse_value(ET.fromstring(xml))
        version = doc["version"]
        objects = doc["objects"]
    except (ET.ParseError, wire.ParseError, KeyError, TypeError) as e:
        raise XapiError("IMPORT_ERROR", "Cannot parse ova.xml: %s" % e)
    major = int(version.get("xapi_major", 0))
    minor = int(version.get("xapi_minor", 0))
    if (major, minor) > (XAPI_MAJOR, XAPI_MINOR):
        raise XapiError("IMPORT_INCOMPATIBLE_VERSION")
    force = req.arg("force") == "true"
    restore = req.arg("restore") == "true"
    dry_run = req.arg("dry_run") == "true"
    vdi_map = {k[4:]: v for k, v in req.pairs if k.startswith("vdi:")}
    by_class = {}
    for o in objects:
        by_class.setdefault(o["class"], {})[o["id"]] = o["snapshot"]
    vms = by_class.get("VM", {})
    # If only snapshot VMs are in the metadata those are imported, otherwise
    # only the non-snapshot ones.
    chosen = [r for r, v in vms.items() if not v.get("is_a_snapshot")]
    if not chosen:
        chosen = list(vms)
    with sim.lock:
        # import.ml: the VDI handler runs over every VDI of the metadata before
        # the VMs, so a suspend image must resolve even when no VM names it.
        suspend_images = {}
        for vid, v in by_class.get("VDI", {}).items():
            if v.get("type") == "suspend" and not _is_iso(v, by_class):
                suspend_images[vid] = _resolve_vdi(sim, v, vdi_map, by_class, force)
        plans = []
        for old_ref in chosen:
            old = vms[old_ref]
            disks = []
            for vbd_ref in old.get("VBDs", []):
                vbd = by_class.get("VBD", {}).get(vbd_ref)
                if vbd is None:
                    continue
                target = NULL
                old_vdi = by_class.get("VDI", {}).get(vbd.get("VDI"))
                if old_vdi is not None and _is_iso(old_vdi, by_class):
                    # import.ml VDI precheck: an ISO is looked up by location in
                    # the ISO SRs (the vdi: map is not consulted); a CD whose ISO
                    # is not found is ejected.
                    target = _find_iso(sim, old_vdi.get("location"))
                elif old_vdi is not None:
                    target = _resolve_vdi(sim, old_vdi, vdi_map, by_class, force)
                    if target is None:
                        continue  # forced import without this disk
                elif vbd.get("type") == "Disk" and not vbd.get("empty"):
                    continue
                disks.append((vbd, target))
            suspend = NULL
            if old.get("power_state") == "Suspended":
                # import.ml VM handler: a Suspended VM comes back Suspended on the
                # VDI its suspend_VDI resolved to (here: the original's image when
                # found by SR and location); if it did not resolve, the import
                # fails, unless forced, and then the VM stays Halted.
                sv = old.get("suspend_VDI", NULL)
                if sv in suspend_images or sv in by_class.get("VDI", {}):
                    if sv not in suspend_images:
                        suspend_images[sv] = _resolve_vdi(sim, by_class["VDI"][sv], vdi_map,
                                                          by_class, force)
                    suspend = suspend_images[sv] or NULL
                elif not force:
                    raise XapiError("IMPORT_ERROR_FAILED_TO_FIND_OBJECT", sv)
            plans.append((old, disks, suspend))
        if dry_run:
            return []
        result = []
        for old, disks, suspend in plans:
            result.append(_create_vm_from_metadata(sim, old, disks, restore, suspend))
        return result


def _is_iso(old_vdi, by_class):
    """Whether the exported VDI lives on an SR of content_type iso."""
    return by_class.get("SR", {}).get(old_vdi.get("SR"), {}).get("content_type") == "iso"


def _find_iso(sim, location):
    for ref, rec in sim.db["VDI"].items():
        sr = sim.db["SR"].get(rec["SR"])
        if sr is not None and sr["content_type"] == "iso" and sr["type"] != "udev" \
                and rec["location"] == location:
            return ref
    return NULL


def _resolve_vdi(sim, old_vdi, vdi_map, by_class, force):
    uuid = old_vdi.get("uuid")
    if uuid in vdi_map:
        target = vdi_map[uuid]
        for ref, rec in sim.db["VDI"].items():
            if rec["uuid"] == target:
                return ref
        raise XapiError("UUID_INVALID", "VDI", target)
    # Then by SR and location, as xapi does.
    sr_uuid = by_class.get("SR", {}).get(old_vdi.get("SR"), {}).get("uuid")
    for ref, rec in sim.db["VDI"].items():
        if rec["location"] == old_vdi.get("location") and \
                sim.db["SR"][rec["SR"]]["uuid"] == sr_uuid and rec["type"] != "cbt_metadata":
            return ref
    if force:
        return None
    raise XapiError("VDI_LOCATION_MISSING", old_vdi.get("SR", NULL), old_vdi.get("location", ""))


def _create_vm_from_metadata(sim, old, disks, restore, suspend=NULL):
    rec = copy.deepcopy(old)
    if restore:
        for ref, existing in list(sim.db["VM"].items()):
            if existing["uuid"] == old["uuid"]:
                if existing["power_state"] != "Halted":
                    raise XapiError("VM_BAD_POWER_STATE", ref, "halted",
                                    existing["power_state"].lower())
                sim.vm_destroy(None, ref)
    else:
        rec["uuid"] = new_uuid()
    is_snap = bool(old.get("is_a_snapshot"))
    rec.update({"power_state": "Halted", "resident_on": NULL, "domid": -1, "VBDs": [],
                "VIFs": [], "consoles": [], "snapshots": [], "current_operations": {},
                "snapshot_of": NULL if not is_snap else rec.get("snapshot_of", NULL),
                "scheduled_to_be_resident_on": NULL, "affinity": NULL, "metrics": NULL,
                "guest_metrics": NULL, "memory_target": 0, "parent": NULL, "children": [],
                "suspend_VDI": suspend,
                # import.ml: a suspend_SR this pool does not have is dropped.
                "suspend_SR": rec.get("suspend_SR", NULL)
                if rec.get("suspend_SR", NULL) in sim.db["SR"] else NULL})
    suspended = suspend != NULL
    if suspended:
        rec["power_state"] = "Suspended"
    # Fields our own records have but an older export might lack.
    from records import vm_record
    for k, v in vm_record("", NULL).items():
        rec.setdefault(k, v)
    vm_ref = new_ref()
    sim.db["VM"][vm_ref] = rec
    for vbd, target in disks:
        from records import vbd_record
        # import.ml VBD handler keeps currently_attached (it matters for
        # suspended VMs); a halted VM's VBDs are detached.
        attached = suspended and bool(vbd.get("currently_attached"))
        b = vbd_record(vm_ref, target, vbd.get("userdevice", "0"), vbd.get("type", "Disk"),
                       attached, vbd.get("mode", "RW"), bool(vbd.get("bootable", False)))
        b["other_config"] = dict(vbd.get("other_config", {}))
        b["empty"] = target == NULL
        sim._add_vbd(b)
    return vm_ref


# ---- import_raw_vdi -------------------------------------------------------------------

def import_raw_vdi(app, h, query):
    req = Request(app, h, query)
    if not req.authenticate("VDI.import_raw", create_task=False):
        return
    sim = app.sim
    try:
        fmt = (req.arg("format") or "raw").lower()
        chunked = "chunked" in req.q
        length = req.content_length()
        try:
            vdi = req.arg("vdi")
            with sim.lock:
                vdi_ref = sim.vdi_ref(vdi) if vdi else None
        except XapiError as e:
            req.ensure_task("VDI.import_raw")
            return req.fail("404 Not Found", e.error)
        if req.redirect_elsewhere(_import_target_sr(sim, req, vdi_ref)):
            return
        req.ensure_task("VDI.import_raw")
        if fmt not in ("raw", "vhd"):
            return req.fail("404 Not Found", ["INTERNAL_ERROR", "Unknown format %s" % fmt])
        if chunked and fmt != "raw":
            return req.fail("404 Not Found", ["INTERNAL_ERROR", "Cannot handle chunked VHD"])
        if h.headers.get("Transfer-Encoding"):
            return req.fail("404 Not Found", ["INTERNAL_ERROR", "Cannot handle encoding: %s"
                                              % h.headers.get("Transfer-Encoding")])
        if vdi_ref is None:
            if fmt != "raw":
                return req.fail("400 Bad Request", ["INTERNAL_ERROR", "Importing a VHD directly "
                                                    "into an SR not yet supported"])
            try:
                vdi_ref = _new_imported_vdi(sim, req, length)
            except XapiError as e:
                return req.fail("404 Not Found", e.error)
        with sim.lock:
            rec = sim.db["VDI"][vdi_ref]
            size = rec["virtual_size"]
            usable = sim.vdi_state[vdi_ref].path is not None
        # xapi answers before it consumes a single byte of the body.
        req.raw_response("200 OK", [("content-type", "application/octet-stream")])
        req.stall()
        try:
            if not usable:
                raise XapiError(*IO_ERROR)
            if length is None:
                length = size  # no Content-Length: the device size is assumed
            write = _writer(sim, vdi_ref, size)
            if fmt == "vhd":
                try:
                    vhd.apply_stream(req.h.rfile.readinto, length, write)
                except vhd.VhdError as e:
                    sys_log(app, "import_raw_vdi vhd: %s" % e)
                    raise XapiError(*IO_ERROR)
            elif chunked:
                _apply_chunked(req, length, write)
            else:
                _apply_raw(req, length, write)
            with sim.lock:
                if vdi_ref in sim.vdi_state:
                    sim._update_utilisation(vdi_ref)
            sim.finish_task(req.task, vdi_ref)
        except XapiError as e:
            sim.finish_task(req.task, error=e.error)
        except OSError as e:  # the client went away mid-body
            sys_log(app, "import_raw_vdi: %s" % e)
            sim.finish_task(req.task, error=IO_ERROR)
        except Exception:
            traceback.print_exc()
            sim.finish_task(req.task, error=IO_ERROR)
    finally:
        req.done()


def sys_log(app, msg):
    if app.verbose:
        import sys
        sys.stderr.write("xapisim: %s\n" % msg)


def _import_target_sr(sim, req, vdi_ref):
    """The SR an upload goes to: the VDI's, else sr_id / sr_uuid, else the
    pool's default SR (import_raw_vdi.ml `import`, sr_of_req)."""
    with sim.lock:
        if vdi_ref is not None:
            return sim.db["VDI"][vdi_ref]["SR"]
        sr = req.arg("sr_id")
        if sr:
            return sr
        if req.arg("sr_uuid"):
            for ref, rec in sim.db["SR"].items():
                if rec["uuid"] == req.arg("sr_uuid"):
                    return ref
            return None
        return sim.db["pool"][sim.pool]["default_SR"]


def _new_imported_vdi(sim, req, length):
    if length is None:
        raise XapiError("INTERNAL_ERROR", "Content-Length required to create a VDI")
    sr = req.arg("sr_id")
    with sim.lock:
        if sr:
            sim.get("SR", sr)
        elif req.arg("sr_uuid"):
            sr = sim.by_uuid("SR", req.arg("sr_uuid"))
        else:
            sr = sim.db["pool"][sim.pool]["default_SR"]
        size = (length + 511) // 512 * 512
        return sim._new_vdi("Imported VDI", sr, size)


def _writer(sim, vdi_ref, size):
    """write(offset, data) into the VDI as the block layer would (CBT-tracked);
    a write past the end is an I/O error, after writing what fits."""
    def write(offset, data):
        fits = max(0, min(len(data), size - offset))
        try:
            if fits:
                sim.guest_write(vdi_ref, offset, data[:fits], update=False)
        except XapiError:
            raise XapiError(*IO_ERROR)
        if fits < len(data):
            raise XapiError(*IO_ERROR)
    return write


def _apply_raw(req, length, write):
    pos = 0
    while pos < length:
        chunk = req.read_body(min(4 << 20, length - pos))
        if not chunk:
            raise XapiError(*IO_ERROR)  # body shorter than Content-Length
        write(pos, chunk)
        pos += len(chunk)


def _apply_chunked(req, length, write):
    """xapi's own framing (not HTTP chunking): {u64 offset; u32 length} little
    endian, then the data; a 0/0 header ends the stream."""
    while True:
        head = _read_exact(req, 12)
        if len(head) < 12:
            raise XapiError(*IO_ERROR)
        offset, n = struct.unpack("<QI", head)
        if offset == 0 and n == 0:
            return
        data = _read_exact(req, n)
        if len(data) < n:
            raise XapiError(*IO_ERROR)
        write(offset, data)


# ---- export_raw_vdi -------------------------------------------------------------------

def export_raw_vdi(app, h, query):
    req = Request(app, h, query)
    if not req.authenticate("VDI.export_raw", create_task=False):
        return
    sim = app.sim
    try:
        fmt = (req.arg("format") or "raw").lower()
        try:
            with sim.lock:
                vdi_ref = sim.vdi_ref(req.arg("vdi") or "")
                rec = sim.db["VDI"][vdi_ref]
                path = sim.vdi_state[vdi_ref].path
                size = rec["virtual_size"]
                uuid = rec["uuid"]
        except XapiError as e:
            req.ensure_task("VDI.export_raw")
            return req.fail("404 Not Found", e.error)
        # export_raw_vdi.ml export_raw: the same SR check and redirect as imports.
        if req.redirect_elsewhere(rec["SR"]):
            return
        req.ensure_task("VDI.export_raw")
        try:
            if path is None:
                raise XapiError("VDI_INCOMPATIBLE_TYPE", vdi_ref, "cbt_metadata")
        except XapiError as e:
            return req.fail("404 Not Found", e.error)
        if fmt not in ("raw", "vhd"):
            return req.fail("404 Not Found", ["INTERNAL_ERROR", "Unknown format %s" % fmt])
        if req.arg("base"):
            return req.fail("404 Not Found", ["INTERNAL_ERROR",
                                              "base= is not supported by this simulator"])
        ctype = "application/octet-stream" if fmt == "raw" else "application/vhd"
        req.raw_response("200 OK", [("content-type", ctype),
                                    ("Content-Disposition",
                                     'attachment; filename="%s.%s"' % (uuid, fmt))])
        req.stall()
        try:
            if fmt == "raw":
                with open(path, "rb") as f:
                    done = 0
                    while done < size:
                        data = f.read(min(4 << 20, size - done))
                        data = data or bytes(min(4 << 20, size - done))
                        h.wfile.write(data)
                        done += len(data)
            else:
                for piece in vhd.export_stream(path, size):
                    h.wfile.write(piece)
            h.wfile.flush()
            sim.finish_task(req.task, raw_result="")
        except (OSError, ConnectionError):
            sim.finish_task(req.task, error=IO_ERROR)
    finally:
        req.done()
