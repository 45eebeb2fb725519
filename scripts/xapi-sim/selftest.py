#!/usr/bin/env python3
"""Self-test of the XAPI simulator: starts one, drives it as a backup client
would (xmlrpc.client, raw HTTP, NBD over TLS) and checks the answers against
what XenServer does.  Exit status 0 when every check passed.
"""

import base64
import hashlib
import http.client
import json
import os
import random
import shutil
import signal
import ssl
import struct
import subprocess
import sys
import tarfile
import io
import tempfile
import time
import urllib.parse
import urllib.request
import xmlrpc.client

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import vhd  # noqa: E402
from nbdclient import NbdClient, NbdError  # noqa: E402

MiB = 1 << 20
BLOCK = 64 * 1024
failures = []
checks = 0


def check(cond, what):
    global checks
    checks += 1
    if not cond:
        failures.append(what)
        print("FAIL:", what, flush=True)


def ok(res):
    if res.get("Status") != "Success":
        raise AssertionError("call failed: %r" % (res,))
    return res["Value"]


def err(res):
    return res.get("ErrorDescription") if res.get("Status") == "Failure" else None


class Sim:
    def __init__(self, tmp, *extra):
        self.state = os.path.join(tmp, "state")
        self.proc = subprocess.Popen([sys.executable, os.path.join(HERE, "xapisim.py"),
                                      "--state", self.state, "--port", "0", "--https-port", "0",
                                      "--auth-delay", "0.3", "--vbd-wait", "0.5"] + list(extra))
        ready = os.path.join(self.state, "ready.json")
        for _ in range(200):
            if os.path.exists(ready):
                break
            time.sleep(0.05)
        with open(ready) as f:
            self.ready = json.load(f)
        self.url = self.ready["url"]
        self.x = xmlrpc.client.ServerProxy(self.url, allow_none=False)

    def ctl(self, method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + "/sim/" + path, data=data, method=method)
        with urllib.request.urlopen(req) as r:
            return json.load(r)

    def raw_post(self, body, path="/", host=None):
        c = http.client.HTTPConnection("127.0.0.1", self.ready["http_port"])
        headers = {"Content-Type": "text/xml"}
        if host:
            headers["Host"] = host
        c.request("POST", path, body=body, headers=headers)
        r = c.getresponse()
        out = (r.status, r.getheader("content-type"), r.read().decode())
        c.close()
        return out


def call_xml(method, *params):
    return xmlrpc.client.dumps(tuple(params), method)


def test_wire(sim):
    x = sim.x
    s = ok(x.session.login_with_password("root", "xenroot", "1.0", "selftest"))
    vm = ok(x.VM.get_by_name_label(s, "wire-vm"))
    # Raw response: one line, text/xml exactly, bare strings, ints as digit strings.
    body = ("<?xml version='1.0'?><methodCall><methodName>VDI.get_record</methodName><params>"
            "<param><value><string>%s</string></value></param><param><value>%s</value></param>"
            "</params></methodCall>")
    vbds = ok(x.VM.get_VBDs(s, vm[0]))
    vdi = ok(x.VBD.get_VDI(s, vbds[0]))
    status, ctype, text = sim.raw_post(body % (s, vdi))
    check(status == 200 and ctype == "text/xml", "XML-RPC answer is 200 text/xml")
    check("\n" not in text and text.startswith('<?xml version="1.0"?><methodResponse>'),
          "response on one line with declaration")
    check("<string>" not in text, "no <string> tags emitted")
    check("<member><name>Status</name><value>Success</value></member><member><name>Value</name>"
          in text, "Status before Value")
    check("<member><name>virtual_size</name><value>%d</value></member>" % (4 * MiB) in text,
          "int as digit string")
    check("<member><name>cbt_enabled</name><value><boolean>0</boolean></value></member>" in text,
          "boolean tag")
    check("<member><name>snapshot_time</name><value><dateTime.iso8601>19700101T00:00:00Z"
          "</dateTime.iso8601></value></member>" in text, "datetime default and format")
    check("<member><name>snapshots</name><value><array><data></data></array></value></member>"
          in text, "empty set")
    check("<member><name>xenstore_data</name><value><struct></struct></value></member>" in text,
          "empty map")
    # Other paths land on XML-RPC too.
    for path in ("/RPC2", "/xmlrpc", "/json"):
        st, ct, text = sim.raw_post(call_xml("pool.get_all", s), path)
        check(st == 200 and "Success" in text, "XML-RPC on POST %s" % path)
    st, ct, text = sim.raw_post("<methodCall><oops")
    check(st == 500 and ct == "text/html", "unparsable request gives HTTP 500 HTML")
    # Input forms: <i8>, whitespace, <value/>; a bare string where a bool is wanted fails.
    sr = ok(x.SR.get_by_uuid(s, sim.ready["sr_cbt"]))
    vdi_create = ("<methodCall><methodName>VDI.create</methodName><params>\n"
                  " <param><value>%s</value></param>\n <param><value><struct>\n"
                  "  <member><name>SR</name><value>%s</value></member>\n"
                  "  <member><name>virtual_size</name><value><i8>%d</i8></value></member>\n"
                  "  <member><name>type</name><value>user</value></member>\n"
                  "  <member><name>sharable</name><value>%s</value></member>\n"
                  "  <member><name>read_only</name><value><boolean>0</boolean></value></member>\n"
                  "  <member><name>other_config</name><value><struct/></value></member>\n"
                  "  <member><name>name_label</name><value/></member>\n"
                  " </struct></value></param>\n</params></methodCall>")
    st, ct, text = sim.raw_post(vdi_create % (s, sr, 3 * MiB + 1, "<boolean>0</boolean>"))
    check("Success" in text, "VDI.create accepts <i8>, <struct/>, <value/>, whitespace")
    new_vdi = xmlrpc.client.loads(text)[0][0]["Value"]
    check(ok(x.VDI.get_virtual_size(s, new_vdi)) == str(4 * MiB), "VDI.create rounds up to 2 MiB")
    st, ct, text = sim.raw_post(vdi_create % (s, sr, MiB, "0"))
    check("INTERNAL_ERROR" in text, "bare string where a bool is expected: INTERNAL_ERROR")
    r = x.VDI.create(s, {"SR": sr, "virtual_size": "1", "type": "cbt_metadata", "sharable": False,
                         "read_only": False, "other_config": {}})
    check(err(r) == ["VDI_INCOMPATIBLE_TYPE", "", "cbt_metadata"], "VDI.create cbt_metadata refused")
    ok(x.VDI.destroy(s, new_vdi))
    check(err(x.VDI.get_record(s, new_vdi)) == ["HANDLE_INVALID", "VDI", new_vdi],
          "destroyed VDI gives HANDLE_INVALID")
    # Dispatcher errors.
    check(err(x.VDI.frobnicate(s)) == ["MESSAGE_METHOD_UNKNOWN", "VDI.frobnicate"], "method unknown")
    check(err(getattr(x, "Async.VDI.get_nbd_info")(s, vdi)) ==
          ["MESSAGE_METHOD_UNKNOWN", "Async.VDI.get_nbd_info"], "no Async form of get_nbd_info")
    check(err(x.VDI.list_changed_blocks(s, vdi)) ==
          ["MESSAGE_PARAMETER_COUNT_MISMATCH", "VDI.list_changed_blocks", "2", "1"],
          "parameter count mismatch (counts without session)")
    check(err(x.VM.get_record(s, "OpaqueRef:00000000-0000-0000-0000-000000000000")) ==
          ["HANDLE_INVALID", "VM", "OpaqueRef:00000000-0000-0000-0000-000000000000"],
          "HANDLE_INVALID")
    check(err(x.SR.get_by_uuid(s, "nope")) == ["UUID_INVALID", "SR", "nope"], "UUID_INVALID")
    check(err(x.VM.get_all("OpaqueRef:dead")) == ["SESSION_INVALID", "OpaqueRef:dead"],
          "SESSION_INVALID")
    check(ok(x.VM.get_by_name_label(s, "no such VM")) == [], "get_by_name_label returns a set")
    recs = ok(x.VM.get_all_records(s))
    check(vm[0] in recs and recs[vm[0]]["name_label"] == "wire-vm", "get_all_records keyed by ref")
    check(len(ok(x.pool.get_all(s))) == 1, "one pool")
    host = ok(x.session.get_this_host(s, s))
    check(ok(x.pool.get_master(s, ok(x.pool.get_all(s))[0])) == host, "pool master is this host")
    check(ok(x.host.get_address(s, host)) == "127.0.0.1" and
          ok(x.host.get_hostname(s, host)) == "localhost", "host address and hostname")
    check("BEGIN CERTIFICATE" in ok(x.host.get_server_certificate(s, host)), "server certificate")
    srs = ok(x.SR.get_all_records(s))
    cbt_ops = {"vdi_enable_cbt", "vdi_disable_cbt", "vdi_data_destroy", "vdi_list_changed_blocks"}
    check(sum(1 for r in srs.values() if cbt_ops <= set(r["allowed_operations"])) == 1 and
          sum(1 for r in srs.values() if not cbt_ops & set(r["allowed_operations"])) == 1,
          "one SR with CBT ops, one without")
    check(not cbt_ops & set(ok(x.VDI.get_allowed_operations(s, vdi))), "VDI ops lack CBT ops")
    # JSON-RPC v1 and v2, sharing session refs.
    for v2 in (False, True):
        req = {"method": "VM.get_name_label", "params": [s, vm[0]], "id": 7}
        if v2:
            req["jsonrpc"] = "2.0"
        r = json.load(urllib.request.urlopen(urllib.request.Request(
            sim.url + "/jsonrpc", data=json.dumps(req).encode())))
        check(r["result"] == "wire-vm" and r["id"] == 7, "JSON-RPC v%d result" % (2 if v2 else 1))
        req["params"] = [s]
        r = json.load(urllib.request.urlopen(urllib.request.Request(
            sim.url + "/jsonrpc", data=json.dumps(req).encode())))
        expect = ({"code": 1, "message": "MESSAGE_PARAMETER_COUNT_MISMATCH",
                   "data": ["VM.get_name_label", "1", "0"]} if v2 else
                  ["MESSAGE_PARAMETER_COUNT_MISMATCH", "VM.get_name_label", "1", "0"])
        check(r["error"] == expect, "JSON-RPC v%d error shape" % (2 if v2 else 1))
    # HTTPS with the generated certificate, verified against "localhost".
    ctx = ssl.create_default_context(cafile=sim.ready["ca_cert"])
    xs = xmlrpc.client.ServerProxy(sim.ready["https_url"], context=ctx)
    check(ok(xs.VM.get_name_label(s, vm[0])) == "wire-vm", "HTTPS with the CA file")
    ctx2 = ssl.create_default_context(cafile=sim.ready["ca_cert"])
    xs2 = xmlrpc.client.ServerProxy("https://127.0.0.1:%d" % sim.ready["https_port"], context=ctx2)
    check(ok(xs2.VM.get_name_label(s, vm[0])) == "wire-vm", "HTTPS by IP (SAN has 127.0.0.1)")
    ok(x.session.logout(s))


def test_login(sim):
    x = sim.x
    t = time.monotonic()
    r = x.session.login_with_password("root", "wrong")
    check(err(r) == ["SESSION_AUTHENTICATION_FAILED", "root", "Authentication failure"],
          "bad password error shape")
    check(time.monotonic() - t >= 0.25, "failed login is delayed")
    check(err(x.session.login_with_password("root")) ==
          ["MESSAGE_PARAMETER_COUNT_MISMATCH", "session.login_with_password", "2", "1"],
          "login needs 2 params")
    s = ok(x.session.login_with_password("root", "xenroot"))
    rec = ok(x.session.get_record(s, s))
    check(rec["auth_user_name"] == "root", "session record")
    # Non-master: refused when reached as 127.0.0.1, served when reached as localhost.
    sim.ctl("POST", "faults", {"host_is_slave": {"master": "localhost"}})
    st, ct, text = sim.raw_post(call_xml("session.login_with_password", "root", "xenroot"),
                                host="127.0.0.1:%d" % sim.ready["http_port"])
    check("<value>HOST_IS_SLAVE</value><value>localhost</value>" in text, "HOST_IS_SLAVE on login")
    st, ct, text = sim.raw_post(call_xml("VM.get_all", s),
                                host="127.0.0.1:%d" % sim.ready["http_port"])
    check("HOST_IS_SLAVE" in text, "HOST_IS_SLAVE for an existing session")
    st, ct, text = sim.raw_post(call_xml("session.login_with_password", "root", "xenroot"),
                                host="localhost:%d" % sim.ready["http_port"])
    check("Success" in text, "login on the master name works")
    sim.ctl("POST", "faults", {"host_is_slave": None})
    # Password change through the control interface.
    sim.ctl("POST", "faults", {"password": "other"})
    check(err(x.session.login_with_password("root", "xenroot")) is not None, "old password refused")
    ok(x.session.login_with_password("root", "other"))
    sim.ctl("POST", "faults", {"password": "xenroot"})
    ok(x.session.logout(s))
    check(err(x.VM.get_all(s)) == ["SESSION_INVALID", s], "logout invalidates the session")


def wait_task(x, s, t, timeout=20):
    end = time.monotonic() + timeout
    while ok(x.task.get_status(s, t)) == "pending":
        if time.monotonic() > end:
            raise AssertionError("task did not finish")
        time.sleep(0.05)
    return ok(x.task.get_record(s, t))


def nbd_open(sim, x, s, vdi):
    info = ok(x.VDI.get_nbd_info(s, vdi))
    i = info[0]
    cafile = os.path.join(sim.tmp, "nbd-ca.pem")
    with open(cafile, "w") as f:
        f.write(i["cert"])
    return NbdClient(i["address"], i["port"], i["exportname"], cafile=cafile,
                     server_name=i["subject"]), i


def bitmap_of(blocks, size):
    n = (size + BLOCK - 1) // BLOCK
    b = bytearray((n + 7) // 8)
    for k in blocks:
        b[k // 8] |= 0x80 >> (k % 8)
    return base64.b64encode(bytes(b)).decode()


def test_backup_flow(sim, tmp):
    x = sim.x
    s = ok(x.session.login_with_password("root", "xenroot"))
    size = 8 * MiB
    rnd = random.Random(42)
    image = bytearray(rnd.randbytes(3 * MiB)) + bytearray(size - 3 * MiB)
    img_path = os.path.join(tmp, "disk0.img")
    with open(img_path, "wb") as f:
        f.write(image)
    vm_desc = sim.ctl("POST", "vm", {"name": "flow-vm", "cd": True, "disks": [
        {"image": img_path}, {"size": 2 * MiB, "sr": sim.ready["sr_nocbt"]}]})
    vm = vm_desc["ref"]
    vdis = [ok(x.VBD.get_VDI(s, b)) for b in ok(x.VM.get_VBDs(s, vm))]
    check(vdis[2] == "OpaqueRef:NULL" and ok(x.VBD.get_empty(s, ok(x.VM.get_VBDs(s, vm))[2])),
          "empty CD drive")
    disk, other = vdis[0], vdis[1]
    check(err(x.VDI.enable_cbt(s, other)) == ["SR_OPERATION_NOT_SUPPORTED",
                                              ok(x.VDI.get_SR(s, other))], "no CBT on the plain SR")
    ok(x.VDI.enable_cbt(s, disk))
    ok(x.VDI.enable_cbt(s, disk))  # idempotent
    check(ok(x.VDI.get_cbt_enabled(s, disk)) is True, "cbt_enabled set")

    # Baseline snapshot (Async form): halted snapshot VM with its own VBDs.
    t = ok(getattr(x, "Async.VM.snapshot")(s, vm, "backup-1"))
    rec = wait_task(x, s, t)
    check(rec["status"] == "success" and rec["result"].startswith("<value>OpaqueRef:"),
          "Async.VM.snapshot result is an XML ref")
    snap_vm = rec["result"][len("<value>"):-len("</value>")]
    ok(x.task.destroy(s, t))
    check(err(x.task.get_status(s, t)) == ["HANDLE_INVALID", "task", t], "task.destroy")
    svm = ok(x.VM.get_record(s, snap_vm))
    check(svm["is_a_snapshot"] and svm["snapshot_of"] == vm and svm["power_state"] == "Halted",
          "snapshot VM fields")
    check(snap_vm in ok(x.VM.get_snapshots(s, vm)), "snapshot listed on the VM")
    svdis = [ok(x.VBD.get_VDI(s, b)) for b in svm["VBDs"]]
    snap1 = svdis[0]
    r1 = ok(x.VDI.get_record(s, snap1))
    check(r1["is_a_snapshot"] and r1["snapshot_of"] == disk and r1["cbt_enabled"] and
          r1["type"] == "user" and snap1 in ok(x.VDI.get_snapshots(s, disk)),
          "snapshot VDI fields")
    check(ok(x.VDI.get_cbt_enabled(s, svdis[1])) is False, "snapshot of a non-CBT disk")
    check(err(x.VDI.enable_cbt(s, snap1)) == ["OPERATION_NOT_ALLOWED", "VDI is a snapshot: " + snap1],
          "no enable_cbt on snapshots")

    # Guest writes after the snapshot; the snapshot stays frozen.
    live = bytearray(image)

    def gwrite(off, data):
        sim.ctl("POST", "disk/write", {"vdi": ok(x.VDI.get_uuid(s, disk)), "offset": off,
                                       "data_b64": base64.b64encode(data).decode()})
        live[off:off + len(data)] = data
    gwrite(0, b"\x01")
    gwrite(9 * BLOCK + 65000, b"\x02" * 1000)          # blocks 9 and 10
    gwrite(100 * BLOCK, b"\x03" * (2 * BLOCK))         # blocks 100, 101
    sim.ctl("POST", "disk/zero", {"vdi": ok(x.VDI.get_uuid(s, disk)), "offset": 20 * BLOCK,
                                  "length": 100})       # block 20
    live[20 * BLOCK:20 * BLOCK + 100] = bytes(100)
    written1 = [0, 9, 10, 20, 100, 101]

    # Read the whole baseline snapshot over NBD/TLS.
    sim.ctl("POST", "nbd/reset", {})
    c, info = nbd_open(sim, x, s, snap1)
    check(info["port"].isdigit() if isinstance(info["port"], str) else False,
          "NBD port travels as digit string")
    check(info["exportname"] == "/%s?session_id=%s" % (r1["uuid"], s), "exportname format")
    check(info["subject"] == "localhost" and "BEGIN CERTIFICATE" in info["cert"], "cert/subject")
    check(c.size == size and c.flags & 2, "export size and read-only flag")
    data = b"".join(c.pread(o, 2 * MiB) for o in range(0, size, 2 * MiB))
    check(data == bytes(image), "NBD reads the frozen baseline")
    try:
        c.pread(1, 512)
        check(False, "unaligned read must fail")
    except NbdError as e:
        check(getattr(e, "errno", None) == 22, "unaligned read fails with EINVAL")
    # While connected, the snapshot is "attached": data_destroy waits then fails.
    ok(x.VM.destroy(s, snap_vm))
    check(err(x.VM.get_record(s, snap_vm)) is not None and
          ok(x.VDI.get_is_a_snapshot(s, snap1)), "VM.destroy keeps the VDIs")
    check(err(x.VDI.data_destroy(s, snap1)) == ["VDI_IN_USE", snap1, "data_destroy"],
          "data_destroy refused during an NBD connection")
    c.close()
    time.sleep(0.2)
    st = sim.ctl("GET", "nbd/stats")
    check(st["bytes_read"] == size, "NBD bytes counter after a full read (%d)" % st["bytes_read"])
    # Wrong export names are refused, also with a valid session.
    try:
        NbdClient(info["address"], info["port"], info["exportname"].replace(r1["uuid"],
                  ok(x.VDI.get_uuid(s, disk))), cafile=os.path.join(sim.tmp, "nbd-ca.pem"),
                  server_name="localhost")
        check(False, "other export name must be refused")
    except (NbdError, OSError):
        pass
    # Without TLS the export is not reachable.
    try:
        NbdClient(info["address"], info["port"], info["exportname"])
        check(False, "plain NBD must be refused")
    except (NbdError, OSError):
        pass
    ok(x.VDI.data_destroy(s, snap1))
    r1 = ok(x.VDI.get_record(s, snap1))
    check(r1["type"] == "cbt_metadata" and r1["cbt_enabled"] and r1["is_a_snapshot"] and
          snap1 in ok(x.VDI.get_snapshots(s, disk)), "data_destroy result")
    ok(x.VDI.data_destroy(s, snap1))  # idempotent
    check(err(x.VDI.get_nbd_info(s, snap1)) == ["VDI_INCOMPATIBLE_TYPE", snap1, "cbt_metadata"],
          "no NBD for cbt_metadata")
    check(err(x.VDI.data_destroy(s, disk)) == ["OPERATION_NOT_ALLOWED", "VDI is not a snapshot: "
                                               + disk], "data_destroy on a live VDI")

    # Incremental: list_changed_blocks between the two snapshots.
    snap_vm2 = ok(x.VM.snapshot(s, vm, "backup-2"))
    snap2 = ok(x.VBD.get_VDI(s, ok(x.VM.get_VBDs(s, snap_vm2))[0]))
    frozen2 = bytes(live)
    gwrite(50 * BLOCK, b"\x04" * 10)  # after snapshot 2: must not show in snap2
    bm = ok(x.VDI.list_changed_blocks(s, snap1, snap2))
    check(bm == bitmap_of(written1, size), "list_changed_blocks bitmap (%s)" % bm)
    check(len(base64.b64decode(bm)) == (size // BLOCK + 7) // 8, "bitmap length")
    e = err(x.VDI.list_changed_blocks(s, snap2, snap1))
    check(e and e[0] == "SR_BACKEND_FAILURE_460" and "unrelated" in e[2], "reversed order: 460")
    e = err(x.VDI.list_changed_blocks(s, snap2, snap2))
    check(e and e[0] == "SR_BACKEND_FAILURE_460" and "same" in e[2], "same VDI: 460")
    check(err(x.VDI.list_changed_blocks(s, snap1, disk)) ==
          ["VDI_IN_USE", disk, "list_changed_blocks"], "live VDI attached to a running VM")
    sim.ctl("POST", "vm/power", {"vm": vm, "state": "Halted"})
    check(ok(x.VDI.list_changed_blocks(s, snap2, disk)) == bitmap_of([50], size),
          "list up to the live VDI of a halted VM")
    sim.ctl("POST", "vm/power", {"vm": vm, "state": "Running"})
    # Read only the changed blocks of snap2: content and NBD byte count.
    sim.ctl("POST", "nbd/reset", {})
    c, _ = nbd_open(sim, x, s, snap2)
    good = all(c.pread(k * BLOCK, BLOCK) == frozen2[k * BLOCK:(k + 1) * BLOCK] for k in written1)
    c.close()
    check(good, "changed blocks of snapshot 2 read back as at snapshot time")
    time.sleep(0.2)
    st = sim.ctl("GET", "nbd/stats")
    check(st["bytes_read"] == len(written1) * BLOCK, "incremental read counted exactly")
    copy = os.path.join(tmp, "snap2.raw")
    sim.ctl("POST", "disk/copy", {"vdi": ok(x.VDI.get_uuid(s, snap2)), "dest": copy})
    with open(copy, "rb") as f:
        check(f.read() == frozen2, "disk/copy of the snapshot equals the content at snapshot time")
    # Checksum task.
    t = ok(getattr(x, "Async.VDI.checksum")(s, snap2))
    rec = wait_task(x, s, t)
    check(rec["result"] == "<value>%s</value>" % hashlib.md5(frozen2).hexdigest() and
          ok(x.task.get_progress(s, t)) == 1.0, "Async.VDI.checksum result")
    check(ok(x.task.get_result(s, t)) == rec["result"] and ok(x.task.get_error_info(s, t)) == [],
          "task getters")
    t = ok(getattr(x, "Async.VDI.checksum")(s, snap1))
    rec = wait_task(x, s, t)
    check(rec["status"] == "failure" and rec["error_info"][0] == "VDI_INCOMPATIBLE_TYPE",
          "failed task carries error_info")

    # Third snapshot, then destroy the middle one: the chain stays answerable.
    ok(x.VM.destroy(s, snap_vm2))
    ok(x.VDI.data_destroy(s, snap2))
    snap_vm3 = ok(x.VM.snapshot(s, vm, "backup-3"))
    snap3 = ok(x.VBD.get_VDI(s, ok(x.VM.get_VBDs(s, snap_vm3))[0]))
    check(ok(x.VDI.list_changed_blocks(s, snap2, snap3)) == bitmap_of([50], size), "snap2..snap3")
    ok(x.VDI.destroy(s, snap2))
    check(ok(x.VDI.list_changed_blocks(s, snap1, snap3)) == bitmap_of(written1 + [50], size),
          "destroying a middle snapshot merges its bitmap")
    # data_destroy while the snapshot VM still exists: VDI_IN_USE after the wait.
    check(err(x.VDI.data_destroy(s, snap3)) == ["VDI_IN_USE", snap3, "data_destroy"],
          "data_destroy with VBDs left")
    check(ok(x.VDI.get_type(s, snap3)) == "user", "type restored after a failed data_destroy")

    # CBT lost on the disk: next snapshot has no CBT and is unrelated.
    sim.ctl("POST", "disk/cbt-lost", {"vdi": ok(x.VDI.get_uuid(s, disk))})
    check(ok(x.VDI.get_cbt_enabled(s, disk)) is False, "cbt-lost clears cbt_enabled")
    snap_vm4 = ok(x.VM.snapshot(s, vm, "backup-4"))
    snap4 = ok(x.VBD.get_VDI(s, ok(x.VM.get_VBDs(s, snap_vm4))[0]))
    check(ok(x.VDI.get_cbt_enabled(s, snap4)) is False, "snapshot after CBT loss has no CBT")
    e = err(x.VDI.list_changed_blocks(s, snap3, snap4))
    check(e and e[0] == "SR_BACKEND_FAILURE_460", "chain broken after CBT loss")
    ok(x.VM.destroy(s, snap_vm4))
    check(err(x.VDI.data_destroy(s, snap4)) == ["VDI_NO_CBT_METADATA", snap4],
          "data_destroy without CBT")
    # Re-enable: a new chain starts; enable/disable through the API.
    ok(x.VDI.enable_cbt(s, disk))
    snap_vm5 = ok(x.VM.snapshot(s, vm, "backup-5"))
    snap5 = ok(x.VBD.get_VDI(s, ok(x.VM.get_VBDs(s, snap_vm5))[0]))
    gwrite(7 * BLOCK, b"\x07")
    snap_vm6 = ok(x.VM.snapshot(s, vm, "backup-6"))
    snap6 = ok(x.VBD.get_VDI(s, ok(x.VM.get_VBDs(s, snap_vm6))[0]))
    check(ok(x.VDI.list_changed_blocks(s, snap5, snap6)) == bitmap_of([7], size), "new chain")
    check(err(x.VDI.list_changed_blocks(s, snap3, snap6))[0] == "SR_BACKEND_FAILURE_460",
          "old chain unrelated to the new one")
    ok(x.VDI.disable_cbt(s, disk))
    ok(x.VDI.disable_cbt(s, disk))
    check(ok(x.VDI.get_cbt_enabled(s, disk)) is False, "disable_cbt")

    # An export must outlive the HTTP connection (and server thread) that made it.
    y = xmlrpc.client.ServerProxy(sim.url)
    ok(y.VDI.get_nbd_info(s, snap6))
    pid = [e["pid"] for e in sim.ctl("GET", "nbd/stats")["exports"]
           if e["vdi"] == ok(x.VDI.get_uuid(s, snap6))]
    y("close")()
    time.sleep(0.5)
    pid2 = [e["pid"] for e in sim.ctl("GET", "nbd/stats")["exports"]
            if e["vdi"] == ok(x.VDI.get_uuid(s, snap6))]
    check(pid and pid == pid2, "nbdkit survives the end of the request's connection")
    # libnbd (nbdcopy) reads the same content, with the name percent-encoded.
    if shutil.which("nbdcopy"):
        i = ok(x.VDI.get_nbd_info(s, snap6))[0]
        uri = "nbds://%s:%s/%s?tls-certificates=%s" % (
            i["subject"], i["port"], urllib.parse.quote(i["exportname"], safe=""),
            sim.ready["tls_dir"])
        out = os.path.join(tmp, "nbdcopy.raw")
        rc = subprocess.run(["nbdcopy", uri, out]).returncode
        with open(out, "rb") as f:
            check(rc == 0 and f.read() == bytes(live), "nbdcopy over TLS reads the snapshot")
    # Storage migration is refused while CBT is on.
    sr2 = ok(x.SR.get_by_uuid(s, sim.ready["sr_nocbt"]))
    ok(x.VDI.enable_cbt(s, disk))
    check(err(x.VDI.pool_migrate(s, disk, sr2, {})) == ["VDI_CBT_ENABLED", disk],
          "pool_migrate refused with CBT on")
    ok(x.VDI.disable_cbt(s, disk))

    # Faults on the NBD side.
    c, info = nbd_open(sim, x, s, snap6)
    check(c.pread(0, 4096) == bytes(live[:4096]), "read before the fault")
    sim.ctl("POST", "faults", {"nbd_read_errors": True})
    try:
        c.pread(0, 4096)
        check(False, "read must fail with the error fault on")
    except NbdError as e:
        check(getattr(e, "errno", None) == 5, "read error EIO mid-connection")
    sim.ctl("POST", "faults", {"nbd_read_errors": False})
    check(c.pread(0, 4096) == bytes(live[:4096]), "reads work again after the fault")
    n = sim.ctl("POST", "nbd/drop", {})["dropped"]
    check(n >= 1, "nbd/drop reports dropped connections")
    try:
        c.pread(0, 4096)
        check(False, "dropped connection must fail")
    except (NbdError, OSError):
        pass
    c, info = nbd_open(sim, x, s, snap6)
    check(c.pread(0, 512) == bytes(live[:512]), "reconnect after a drop")
    c.close()
    sim.ctl("POST", "faults", {"nbd_drop_after": {"bytes": 3 * BLOCK, "times": 1}})
    c, info = nbd_open(sim, x, s, snap6)
    dropped = False
    try:
        for k in range(64):
            c.pread(k * BLOCK, BLOCK)
            time.sleep(0.02)
    except (NbdError, OSError):
        dropped = True
    check(dropped, "connection dropped after N bytes")
    sim.ctl("POST", "faults", {"nbd_delay_ms": 300})
    c, info = nbd_open(sim, x, s, snap6)
    t0 = time.monotonic()
    c.pread(0, 512)
    check(time.monotonic() - t0 >= 0.25, "slow NBD (delay filter)")
    c.close()
    sim.ctl("POST", "faults", {"nbd_delay_ms": 0})
    sim.ctl("POST", "faults", {"no_nbd": True})
    check(ok(x.VDI.get_nbd_info(s, snap6)) == [], "no NBD network: get_nbd_info is []")
    net = ok(x.network.get_all(s))[0]
    check(ok(x.network.get_purpose(s, net)) == [], "network purpose cleared")
    sim.ctl("POST", "faults", {"no_nbd": False})
    # A logged-out session's export is gone.
    s2 = ok(x.session.login_with_password("root", "xenroot"))
    i2 = ok(x.VDI.get_nbd_info(s2, snap6))[0]
    ok(x.session.logout(s2))
    try:
        NbdClient(i2["address"], i2["port"], i2["exportname"],
                  cafile=os.path.join(sim.tmp, "nbd-ca.pem"), server_name="localhost")
        check(False, "dead session must not read")
    except (NbdError, OSError):
        pass
    ok(x.session.logout(s))
    return vm, disk, size


def http_req(sim, method, path, body=None, headers=None):
    c = http.client.HTTPConnection("127.0.0.1", sim.ready["http_port"], timeout=30)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        data = r.read()
    except (BrokenPipeError, ConnectionResetError):
        # The server stops reading a body it has rejected and closes the
        # connection, as xapi does; the outcome is in the task.
        return None, b""
    finally:
        c.close()
    return r, data


def make_vhd(disk_size, blocks, block_size=2 * MiB):
    """Our own dynamic VHD writer for tests: blocks = {index: (bitmap bytes, data)}."""
    entries = (disk_size + block_size - 1) // block_size
    out = bytearray(vhd.make_footer(disk_size, creator=b"tap\0"))
    out += vhd.make_header(1536, entries, block_size)
    bat_bytes = (entries * 4 + 511) // 512 * 512
    pos = 1536 + bat_bytes
    bat = [0xFFFFFFFF] * entries
    for i in sorted(blocks):
        bat[i] = pos // 512
        pos += 512 + block_size
    batbuf = bytearray(b"\xff" * bat_bytes)
    struct.pack_into(">%dI" % entries, batbuf, 0, *bat)
    out += batbuf
    for i in sorted(blocks):
        bitmap, data = blocks[i]
        out += bitmap + data
    out += out[:512]
    return bytes(out)


def test_http(sim, tmp, vm, disk, size):
    x = sim.x
    s = ok(x.session.login_with_password("root", "xenroot"))
    vm_uuid = ok(x.VM.get_uuid(s, vm))
    disk_uuid = ok(x.VDI.get_uuid(s, disk))
    # export_metadata: a tar with a single ova.xml.
    r, data = http_req(sim, "GET", "/export_metadata?session_id=%s&uuid=%s&export_snapshots=false"
                       % (s, vm_uuid))
    check(r.status == 200 and r.version == 10 and r.getheader("content-type") ==
          "application/octet-stream" and r.getheader("task-id", "").startswith("OpaqueRef:"),
          "export_metadata headers")
    check(len(data) % 512 == 0 and data[-1024:] == bytes(1024), "tar framing")
    names = tarfile.open(fileobj=io.BytesIO(data)).getnames()
    check(names == ["ova.xml"], "single ova.xml member")
    r401, _ = http_req(sim, "GET", "/export_metadata?session_id=OpaqueRef:bad&uuid=" + vm_uuid)
    check(r401.status == 401 and "Basic" in (r401.getheader("WWW-Authenticate") or ""),
          "401 without a valid session")
    basic = base64.b64encode(b"root:xenroot").decode()
    rb, _ = http_req(sim, "GET", "/export_metadata?uuid=" + vm_uuid,
                     headers={"Authorization": "Basic " + basic})
    check(rb.status == 200, "Basic auth accepted")

    # Restore: a new VDI, raw upload, then import_metadata mapping the disk.
    sr = ok(x.SR.get_by_uuid(s, sim.ready["sr_cbt"]))
    new = ok(x.VDI.create(s, {"SR": sr, "virtual_size": str(size), "type": "user",
                              "sharable": False, "read_only": False, "other_config": {},
                              "name_label": "restored"}))
    new_uuid = ok(x.VDI.get_uuid(s, new))
    src = os.path.join(tmp, "disk-now.raw")
    sim.ctl("POST", "disk/copy", {"vdi": disk_uuid, "dest": src})
    with open(src, "rb") as f:
        content = f.read()
    t = ok(x.task.create(s, "upload", ""))
    r, _ = http_req(sim, "PUT", "/import_raw_vdi?session_id=%s&vdi=%s&format=raw&task_id=%s"
                    % (s, new_uuid, t), body=content)
    rec = wait_task(x, s, t)
    check(r.status == 200 and rec["status"] == "success" and
          rec["result"] == "<value>%s</value>" % new, "import_raw_vdi raw task result")
    t = ok(getattr(x, "Async.VDI.checksum")(s, new))
    check(wait_task(x, s, t)["result"] == "<value>%s</value>" % hashlib.md5(content).hexdigest(),
          "raw import content")
    t = ok(x.task.create(s, "meta", ""))
    r, _ = http_req(sim, "PUT", "/import_metadata?session_id=%s&task_id=%s&vdi:%s=%s"
                    % (s, t, disk_uuid, new_uuid), body=data)
    rec = wait_task(x, s, t)
    check(rec["status"] == "success" and rec["result"].startswith(
        "<value><array><data><value>OpaqueRef:"), "import_metadata result is a set of refs")
    new_vm = rec["result"].split("<value>")[2].split("</value>")[0]
    nv = ok(x.VM.get_record(s, new_vm))
    disks = [ok(x.VBD.get_VDI(s, b)) for b in nv["VBDs"]]
    check(nv["uuid"] != vm_uuid and new in disks and "OpaqueRef:NULL" in disks and
          nv["name_label"] == "flow-vm", "imported VM has VBDs to the mapped VDI and the CD")

    # VHD upload: only sectors with bitmap bits set are written.
    target = ok(x.VDI.create(s, {"SR": sr, "virtual_size": str(4 * MiB), "type": "user",
                                 "sharable": False, "read_only": False, "other_config": {}}))
    tu = ok(x.VDI.get_uuid(s, target))
    sim.ctl("POST", "disk/write", {"vdi": tu, "offset": 0, "pattern": 0xEE, "length": 4 * MiB})
    bitmap = bytearray(512)
    bitmap[0] = 0x80          # sector 0
    bitmap[1] = 0xFF          # sectors 8..15
    data1 = bytes([0x11]) * (2 * MiB)
    bitmap2 = bytearray(512)
    bitmap2[511] = 0x01       # last sector of block 1
    blob = make_vhd(4 * MiB, {0: (bytes(bitmap), data1), 1: (bytes(bitmap2), bytes([0x22]) * (2 * MiB))})
    t = ok(x.task.create(s, "vhd", ""))
    r, _ = http_req(sim, "PUT", "/import_raw_vdi?session_id=%s&vdi=%s&format=vhd&task_id=%s"
                    % (s, target, t), body=blob)
    rec = wait_task(x, s, t)
    check(rec["status"] == "success", "VHD import succeeded (%r)" % rec["error_info"])
    expect = bytearray([0xEE]) * (4 * MiB)
    expect[0:512] = bytes([0x11]) * 512
    expect[8 * 512:16 * 512] = bytes([0x11]) * (8 * 512)
    expect[4 * MiB - 512:] = bytes([0x22]) * 512
    out = os.path.join(tmp, "vhd-target.raw")
    sim.ctl("POST", "disk/copy", {"vdi": tu, "dest": out})
    with open(out, "rb") as f:
        check(f.read() == bytes(expect), "VHD import wrote exactly the sectors with bits set")
    # Corrupted checksum, truncated body, chunked encoding, unknown format.
    bad = bytearray(blob)
    bad[600] ^= 0xFF  # inside the dynamic header
    t = ok(x.task.create(s, "bad", ""))
    http_req(sim, "PUT", "/import_raw_vdi?session_id=%s&vdi=%s&format=vhd&task_id=%s"
             % (s, target, t), body=bytes(bad))
    check(wait_task(x, s, t)["error_info"] == ["VDI_IO_ERROR", "Device I/O errors"],
          "bad VHD header checksum: VDI_IO_ERROR")
    t = ok(x.task.create(s, "big", ""))
    http_req(sim, "PUT", "/import_raw_vdi?session_id=%s&vdi=%s&task_id=%s"
             % (s, target, t), body=bytes(4 * MiB + 512))
    check(wait_task(x, s, t)["error_info"] == ["VDI_IO_ERROR", "Device I/O errors"],
          "raw body past the end: VDI_IO_ERROR")
    t = ok(x.task.create(s, "chunked", ""))
    r, _ = http_req(sim, "PUT", "/import_raw_vdi?session_id=%s&vdi=%s&task_id=%s"
                    % (s, target, t), body=iter([b"x" * 512]),
                    headers={"Transfer-Encoding": "chunked"})
    rec = wait_task(x, s, t)
    check(r.status == 404 and rec["error_info"] == ["INTERNAL_ERROR", "Cannot handle encoding: chunked"],
          "chunked upload refused")
    t = ok(x.task.create(s, "fmt", ""))
    r, _ = http_req(sim, "PUT", "/import_raw_vdi?session_id=%s&vdi=%s&format=zip&task_id=%s"
                    % (s, target, t), body=b"")
    check(r.status == 404 and wait_task(x, s, t)["error_info"] == ["INTERNAL_ERROR",
                                                                   "Unknown format zip"],
          "unknown format refused")
    # Truncated body: send fewer bytes than Content-Length, then close.
    t = ok(x.task.create(s, "short", ""))
    import socket
    so = socket.create_connection(("127.0.0.1", sim.ready["http_port"]))
    so.sendall(("PUT /import_raw_vdi?session_id=%s&vdi=%s&task_id=%s HTTP/1.1\r\nHost: x\r\n"
                "Content-Length: 4096\r\n\r\n" % (s, target, t)).encode() + b"y" * 100)
    head = so.recv(100)
    so.close()
    check(head.startswith(b"HTTP/1.1 200 OK"), "200 sent before the body is read")
    check(wait_task(x, s, t)["error_info"] == ["VDI_IO_ERROR", "Device I/O errors"],
          "short raw body: VDI_IO_ERROR")
    # qemu-img made VHD, if qemu-img is installed.
    if shutil.which("qemu-img"):
        qraw = os.path.join(tmp, "q.raw")
        with open(qraw, "wb") as f:
            f.write(bytes(2 * MiB) + random.Random(1).randbytes(MiB) + bytes(MiB))
        qv = os.path.join(tmp, "q.vhd")
        subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "vpc", "-o",
                        "subformat=dynamic", qraw, qv], check=True)
        qt = ok(x.VDI.create(s, {"SR": sr, "virtual_size": str(4 * MiB), "type": "user",
                                 "sharable": False, "read_only": False, "other_config": {}}))
        with open(qv, "rb") as f:
            blob = f.read()
        t = ok(x.task.create(s, "qemu", ""))
        http_req(sim, "PUT", "/import_raw_vdi?session_id=%s&vdi=%s&format=vhd&task_id=%s"
                 % (s, qt, t), body=blob)
        rec = wait_task(x, s, t)
        check(rec["status"] == "success", "qemu-img VHD accepted (%r)" % rec["error_info"])
        out = os.path.join(tmp, "q.out")
        sim.ctl("POST", "disk/copy", {"vdi": ok(x.VDI.get_uuid(s, qt)), "dest": out})
        with open(out, "rb") as f, open(qraw, "rb") as g:
            check(f.read() == g.read(), "qemu-img VHD content")
    # export_raw_vdi raw and vhd, of the restored disk.
    r, raw = http_req(sim, "GET", "/export_raw_vdi?session_id=%s&vdi=%s&format=raw" % (s, new))
    check(r.status == 200 and raw == content, "export_raw_vdi raw")
    r, vblob = http_req(sim, "GET", "/export_raw_vdi?session_id=%s&vdi=%s&format=vhd"
                        % (s, new_uuid))
    got = bytearray(size)

    def put(off, d):
        got[off:off + len(d)] = d
    vhd.apply_stream(io.BytesIO(vblob).readinto, len(vblob), put)
    check(r.getheader("content-type") == "application/vhd" and got == content,
          "export_raw_vdi vhd round trip")
    # The same fed in short pieces, as a socket does.
    src = io.BytesIO(vblob)

    def short_readinto(view):
        return src.readinto(view[:1000])
    got[:] = bytes(size)
    vhd.apply_stream(short_readinto, len(vblob), put)
    check(got == content, "vhd importer, readinto in short pieces")
    ok(x.session.logout(s))


def test_sector_runs():
    """The VHD importer's byte-at-a-time run finder agrees with a bit-by-bit
    scan, on full, empty, mixed and odd-length bitmaps."""
    def slow(bitmap, n):
        runs, j = [], 0
        while j < n:
            if bitmap[j >> 3] & (0x80 >> (j & 7)):
                k = j
                while k < n and bitmap[k >> 3] & (0x80 >> (k & 7)):
                    k += 1
                runs.append((j, k))
                j = k
            else:
                j += 1
        return runs
    rng = random.Random(7)
    for _ in range(2000):
        n = rng.choice([4096, 4095, 128, 13, 8, 1])
        nb = (n + 7) // 8
        pick = rng.randrange(4)
        if pick == 0:
            bm = bytes(rng.choice([0, 0xFF, rng.randrange(256)]) for _ in range(nb))
        elif pick == 1:
            bm = b"\xff" * nb
        elif pick == 2:
            bm = bytes(nb)
        else:
            bm = bytes(rng.randrange(256) for _ in range(nb))
        bm += bytes(rng.randrange(256) for _ in range(rng.randrange(3)))  # padding bytes
        if list(vhd.set_runs(bm, n)) != slow(bm, n):
            check(False, "VHD sector runs of %r (%d sectors)" % (bm, n))
    check(True, "VHD sector runs")


def main():
    test_sector_runs()
    tmp = tempfile.mkdtemp(prefix="xapisim-selftest.")
    sim = None
    try:
        sim = Sim(tmp)
        sim.tmp = tmp
        img = os.path.join(tmp, "wire.img")
        with open(img, "wb") as f:
            f.truncate(4 * MiB)
        sim.ctl("POST", "vm", {"name": "wire-vm", "disks": [{"image": img}]})
        # The CLI wrapper of the control interface.
        env = dict(os.environ, XAPISIM_READY=os.path.join(sim.state, "ready.json"))
        out = subprocess.run([os.path.join(HERE, "simctl"), "create-vm", "cli-vm", "--empty-disk",
                              str(MiB), "--cd", "--cbt"], env=env, capture_output=True, text=True)
        vm = json.loads(out.stdout) if out.returncode == 0 else {}
        check(vm.get("name_label") == "cli-vm" and vm["vdis"][0]["cbt_enabled"], "simctl create-vm")
        vdi_uuid = vm["vdis"][0]["uuid"]
        out = subprocess.run([os.path.join(HERE, "simctl"), "write-pattern", vdi_uuid, str(BLOCK),
                              "10", "7"], env=env, capture_output=True, text=True)
        info = sim.ctl("GET", "vdi?vdi=" + vdi_uuid)
        check(out.returncode == 0 and info["live_log_blocks"] == 1, "simctl write-pattern marks CBT")
        out = subprocess.run([os.path.join(HERE, "simctl"), "vdi", "no-such"], env=env,
                             capture_output=True, text=True)
        check(out.returncode == 1, "simctl exits 1 on errors")
        test_wire(sim)
        test_login(sim)
        vm, disk, size = test_backup_flow(sim, tmp)
        test_http(sim, tmp, vm, disk, size)
        # Clean shutdown: nbdkit children go too, the ready file disappears.
        pids = [e["pid"] for e in sim.ctl("GET", "nbd/stats")["exports"] if e["pid"]]
        sim.proc.send_signal(signal.SIGTERM)
        check(sim.proc.wait(20) == 0, "clean exit on SIGTERM")
        alive = [p for p in pids if os.path.exists("/proc/%d" % p) and
                 "Z" not in open("/proc/%d/stat" % p).read().split()[2]]
        check(not alive, "nbdkit children stopped")
        check(not os.path.exists(os.path.join(sim.state, "ready.json")), "ready file removed")
    except Exception:
        import traceback
        traceback.print_exc()
        failures.append("exception")
    finally:
        if sim and sim.proc.poll() is None:
            sim.proc.kill()
            sim.proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)
    print("%d checks, %d failed" % (checks, len(failures)))
    for f in failures:
        print("  failed:", f)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
