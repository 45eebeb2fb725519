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
import socket
import ssl
import struct
import subprocess
import sys
import tarfile
import io
import tempfile
import time
import urllib.error
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

    # A Sim used in a with statement is stopped at its end.
    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.stop()

    def stop(self):
        """SIGTERM, then SIGKILL if the simulator has not exited in 20 s."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

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
    ok(x.VM.add_tags(s, vm[0], "nightly"))
    ok(x.VM.add_tags(s, vm[0], "nightly"))
    check(ok(x.VM.get_tags(s, vm[0])) == ["nightly"], "add_tags keeps a tag once")
    ok(x.VM.remove_tags(s, vm[0], "nightly"))
    check(ok(x.VM.get_tags(s, vm[0])) == [], "remove_tags")
    check(len(ok(x.pool.get_all(s))) == 1, "one pool")
    host = ok(x.session.get_this_host(s, s))
    check(ok(x.pool.get_master(s, ok(x.pool.get_all(s))[0])) == host, "pool master is this host")
    check(ok(x.host.get_address(s, host)) == "127.0.0.1" and
          ok(x.host.get_hostname(s, host)) == "localhost", "host address and hostname")
    check("BEGIN CERTIFICATE" in ok(x.host.get_server_certificate(s, host)), "server certificate")
    srs = {r: v for r, v in ok(x.SR.get_all_records(s)).items() if v["content_type"] != "iso"}
    cbt_ops = {"vdi_enable_cbt", "vdi_disable_cbt", "vdi_data_destroy", "vdi_list_changed_blocks"}
    # "Local storage" and "Shared storage" can do CBT, the linstor SR cannot.
    check(sum(1 for r in srs.values() if cbt_ops <= set(r["allowed_operations"])) == 2 and
          sum(1 for r in srs.values() if not cbt_ops & set(r["allowed_operations"])) == 1,
          "two SRs with CBT ops, one without")
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


def test_events(sim):
    """system.listMethods and event.from / event.inject as xapi answers them."""
    import re
    import threading
    x = sim.x
    efrom = getattr(x.event, "from")
    st, ct, text = sim.raw_post(call_xml("system.listMethods", "ignored", "params"))
    check(text.startswith('<?xml version="1.0"?><methodResponse><params><param><value><array>')
          and "Status" not in text, "system.listMethods: bare array, no session needed")
    names = x.system.listMethods()
    check("event.from" in names and "event.inject" in names and "VM.get_all_records" in names
          and not any(n.startswith(("Async.", "system.")) for n in names),
          "system.listMethods lists the synchronous names")
    st, ct, text = sim.raw_post(json.dumps({"jsonrpc": "2.0", "id": 7, "method":
                                            "system.listMethods", "params": []}), "/jsonrpc")
    check(ct == "application/json" and "VDI.checksum" in json.loads(text)["result"],
          "system.listMethods over JSON-RPC")
    s = ok(x.session.login_with_password("root", "xenroot"))
    vm = ok(x.VM.get_by_name_label(s, "wire-vm"))[0]
    check(err(efrom(s, ["*"], "12", 0.0)) == ["EVENT_FROM_TOKEN_PARSE_FAILURE", "12"],
          "event.from: token parse failure")
    r = ok(efrom(s, ["*"], "", 0.0))
    tok = r["token"]
    check(re.fullmatch(r"\d{20},\d{20}", tok) is not None, "event.from: token format")
    vms = [e for e in r["events"] if e["class"] == "vm" and e["ref"] == vm]
    check(len(vms) == 1 and vms[0]["operation"] == "add" and
          vms[0]["snapshot"]["name_label"] == "wire-vm" and vms[0]["timestamp"] == "0.0",
          "event.from '': an add event with the record for every object")
    check(not any(e["class"] == "session" for e in r["events"]), "no events for sessions")
    counts = r["valid_ref_counts"]
    check(counts.get("vm") == len(ok(x.VM.get_all(s))) and counts.get("session", 0) >= 1,
          "valid_ref_counts: lower-case classes, all tables")
    st, ct, text = sim.raw_post(call_xml("event.from", s, ["task"], tok, 0.0))
    check("<member><name>vm</name><value><i4>" in text, "valid_ref_counts are <i4>")
    t = time.monotonic()
    r = ok(efrom(s, ["VM", "VDI"], tok, 0.4))
    check(r["events"] == [] and r["token"] == tok and time.monotonic() - t >= 0.39,
          "event.from: timeout with no change keeps the token")
    # A change made through the control interface wakes a waiting call.
    got = {}

    def wait():
        px = xmlrpc.client.ServerProxy(sim.url)
        got["r"] = getattr(px.event, "from")(s, ["vm/" + vm], tok, 10.0)
        got["t"] = time.monotonic()
    th = threading.Thread(target=wait)
    th.start()
    time.sleep(0.3)
    t = time.monotonic()
    sim.ctl("POST", "vm/power", {"vm": vm, "state": "Halted"})
    th.join(15)
    ev = ok(got["r"])["events"] if "r" in got else []
    check(len(ev) == 1 and ev[0]["operation"] == "mod" and ev[0]["ref"] == vm and
          ev[0]["snapshot"]["power_state"] == "Halted" and got["t"] - t < 1.0,
          "event.from wakes up with the VM's mod event")
    tok2 = ok(got["r"])["token"]
    check(tok2 > tok and int(ev[0]["id"]) == int(tok2.split(",")[0]),
          "token moves to the event's generation")
    # Add, delete, and an object created and deleted in between (nothing).
    sr = ok(x.SR.get_by_uuid(s, sim.ready["sr_cbt"]))
    vdi = ok(x.VDI.create(s, {"SR": sr, "virtual_size": str(MiB), "type": "user",
                              "sharable": False, "read_only": False, "other_config": {},
                              "name_label": "evt"}))
    r = ok(efrom(s, ["vdi"], tok2, 5.0))
    check([(e["operation"], e["ref"]) for e in r["events"]] == [("add", vdi)],
          "VDI.create gives an add event")
    tok3 = r["token"]
    ok(x.VDI.destroy(s, vdi))
    tmp_task = ok(x.task.create(s, "short", ""))
    ok(x.task.destroy(s, tmp_task))
    r = ok(efrom(s, ["vdi", "task"], tok3, 5.0))
    check([(e["operation"], e["ref"], "snapshot" in e) for e in r["events"]] ==
          [("del", vdi, False)], "VDI.destroy gives a del event without snapshot; a task "
          "created and destroyed in between gives none")
    # event.inject: exact class name, then a mod event after the returned token.
    check(err(x.event.inject(s, "vm", vm)) == ["HANDLE_INVALID", "vm", vm],
          "event.inject: HANDLE_INVALID for another class name")
    itok = ok(x.event.inject(s, "VM", vm))
    r = ok(efrom(s, ["VM"], itok, 5.0))
    check([(e["operation"], e["ref"]) for e in r["events"]] == [("mod", vm)] and
          r["token"] > itok, "event.inject: a mod event after its token")
    # Logout ends a waiting call with SESSION_INVALID.
    got.clear()

    def wait2():
        px = xmlrpc.client.ServerProxy(sim.url)
        got["r"] = getattr(px.event, "from")(s, ["*"], r["token"], 10.0)
    th = threading.Thread(target=wait2)
    th.start()
    time.sleep(0.3)
    ok(x.session.logout(s))
    th.join(5)
    check(err(got.get("r", {})) == ["SESSION_INVALID", s],
          "logout wakes event.from: SESSION_INVALID")
    sim.ctl("POST", "vm/power", {"vm": vm, "state": "Running"})


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
    vm_desc = sim.ctl("POST", "vm", {"name": "flow-vm", "cd": "empty", "disks": [
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


def ova_from_export(data):
    """The ova.xml of an export_metadata answer, as a Python struct."""
    xml = tarfile.open(fileobj=io.BytesIO(data)).extractfile("ova.xml").read().decode()
    (doc,), _ = xmlrpc.client.loads("<methodResponse><params><param>%s</param></params>"
                                    "</methodResponse>" % xml)
    return doc


def ova_tar(doc):
    xml = xmlrpc.client.dumps((doc,), methodresponse=True)
    xml = xml[xml.index("<value>"):xml.rindex("</param>")].encode()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as t:
        info = tarfile.TarInfo("ova.xml")
        info.size = len(xml)
        t.addfile(info, io.BytesIO(xml))
    return buf.getvalue()


def test_iso_suspend(tmp):
    """ISO library and CD drives, disks that cannot be snapshotted, suspended
    VMs; on a pool of their own, since the ISO is destroyed at the end."""
    root = os.path.join(tmp, "pool-iso")
    img = os.path.join(tmp, "iso-test.img")
    with open(img, "wb") as f:
        f.write(b"\x5a" * MiB)
        f.truncate(2 * MiB)
    with Sim(root, "--vm", "boot-vm=" + img) as sim:
        _test_iso_suspend(sim, img)


def _test_iso_suspend(sim, img):
    x = sim.x
    s = ok(x.session.login_with_password("root", "xenroot"))
    rd = sim.ready
    # ISO library: SR, PBD, the ISO VDI and its file.
    sr_iso = ok(x.SR.get_by_uuid(s, rd.get("sr_iso", "")))
    srr = ok(x.SR.get_record(s, sr_iso))
    check(srr["type"] == "iso" and srr["content_type"] == "iso" and srr["shared"] and
          "vdi_enable_cbt" not in srr["allowed_operations"] and
          sorted(ok(x.PBD.get_host(s, p)) for p in srr["PBDs"]) == sorted(ok(x.host.get_all(s))),
          "ISO library SR with a PBD on the host")
    iso = ok(x.VDI.get_by_uuid(s, rd["iso_vdi"]))
    ir = ok(x.VDI.get_record(s, iso))
    ctl_iso = sim.ctl("GET", "vdi?vdi=" + rd["iso_vdi"])
    check(ir["type"] == "user" and ir["read_only"] and ir["location"] == "tools.iso" and
          ir["SR"] == sr_iso and ir["virtual_size"] == str(os.path.getsize(ctl_iso["path"])),
          "ISO VDI record")
    check(ctl_iso["exists"] and ctl_iso["path"].endswith("isos/tools.iso"), "ISO file listed")
    # --vm VMs have the ISO in their CD drive.
    boot = ok(x.VM.get_by_uuid(s, rd["vms"]["boot-vm"]["uuid"]))
    cds = [ok(x.VBD.get_record(s, b)) for b in ok(x.VM.get_VBDs(s, boot))]
    cds = [b for b in cds if b["type"] == "CD"]
    check(len(cds) == 1 and cds[0]["VDI"] == iso and not cds[0]["empty"] and
          cds[0]["mode"] == "RO" and cds[0]["currently_attached"], "--vm: CD drive with the ISO")
    check(len(rd["vms"]["boot-vm"]["vdis"]) == 1, "ready file lists only the disks")
    e = sim.ctl("POST", "vm", {"name": "empty-cd", "cd": "empty", "disks": [{"image": img}]})
    check([d["empty"] for d in e["disks"] if d["type"] == "CD"] == [True], "cd: empty")
    # Snapshot: the CD keeps the original ISO, no copy of it.
    snap = ok(x.VM.snapshot(s, boot, "with-iso"))
    scds = [ok(x.VBD.get_record(s, b)) for b in ok(x.VM.get_VBDs(s, snap))]
    scds = [b for b in scds if b["type"] == "CD"]
    check(len(scds) == 1 and scds[0]["VDI"] == iso and not scds[0]["empty"],
          "snapshot's CD drive points at the original ISO")
    check(ok(x.SR.get_VDIs(s, sr_iso)) == [iso], "no copy of the ISO")
    check(err(x.VDI.snapshot(s, iso)) == ["SR_OPERATION_NOT_SUPPORTED", sr_iso],
          "VDI.snapshot of an ISO: SR_OPERATION_NOT_SUPPORTED")
    # Metadata round trip: the ISO is found again by location.
    buuid = ok(x.VM.get_uuid(s, boot))
    r, data = http_req(sim, "GET", "/export_metadata?session_id=%s&uuid=%s&export_snapshots=false"
                       % (s, buuid))

    def import_meta(body, query=""):
        t = ok(x.task.create(s, "meta", ""))
        http_req(sim, "PUT", "/import_metadata?session_id=%s&task_id=%s%s" % (s, t, query),
                 body=body)
        rec = wait_task(x, s, t)
        if rec["status"] != "success":
            return None, rec["error_info"]
        return rec["result"].split("<value>")[2].split("</value>")[0], None

    new, e = import_meta(data)
    check(new and [ok(x.VBD.get_VDI(s, b)) for b in ok(x.VM.get_VBDs(s, new))
                   if ok(x.VBD.get_type(s, b)) == "CD"] == [iso], "import finds the ISO by location")

    # Disks that cannot be snapshotted.
    vm_desc = sim.ctl("POST", "vm", {"name": "shr-vm", "cd": "empty", "disks": [
        {"image": img}, {"image": img, "sharable": True}, {"image": img, "on_boot": "reset"}]})
    vm = vm_desc["ref"]
    d0, dsh, drs = [ok(x.VDI.get_by_uuid(s, v["uuid"])) for v in vm_desc["vdis"]]
    check(ok(x.VDI.get_sharable(s, dsh)) is True and ok(x.VDI.get_on_boot(s, drs)) == "reset" and
          "snapshot" not in ok(x.VDI.get_allowed_operations(s, dsh)) and
          "snapshot" not in ok(x.VDI.get_allowed_operations(s, drs)), "sharable / reset records")
    check(err(x.VDI.snapshot(s, dsh)) == ["VDI_IS_SHARABLE", dsh], "VDI.snapshot: VDI_IS_SHARABLE")
    check(err(x.VDI.snapshot(s, drs)) == ["VDI_ON_BOOT_MODE_INCOMPATIBLE_WITH_OPERATION"],
          "VDI.snapshot of an on_boot=reset VDI")
    check(err(x.VDI.enable_cbt(s, drs)) == ["VDI_ON_BOOT_MODE_INCOMPATIBLE_WITH_OPERATION"],
          "no CBT on a reset VDI")
    n_vdis = len(ok(x.VDI.get_all(s)))
    check(err(x.VM.snapshot(s, vm, "a")) == ["VDI_IS_SHARABLE", dsh] and
          err(x.VM.snapshot(s, vm, "b", [dsh])) == ["VDI_ON_BOOT_MODE_INCOMPATIBLE_WITH_OPERATION"]
          and len(ok(x.VDI.get_all(s))) == n_vdis, "VM.snapshot fails as a whole, nothing left")
    sv = ok(x.VM.snapshot(s, vm, "c", [dsh, drs]))
    sb = [ok(x.VBD.get_record(s, b)) for b in ok(x.VM.get_VBDs(s, sv))]
    check(sorted(b["userdevice"] for b in sb) == ["0", "3"] and
          ok(x.VDI.get_snapshot_of(s, [b["VDI"] for b in sb if b["type"] == "Disk"][0])) == d0,
          "ignored disks have no VBD in the snapshot VM")
    env = dict(os.environ, XAPISIM_READY=os.path.join(sim.state, "ready.json"))
    out = subprocess.run([os.path.join(HERE, "simctl"), "create-vm", "cli2", "--sharable-disk", img,
                          "--reset-disk", img, "--empty-cd", "--suspended"], env=env,
                         capture_output=True, text=True)
    c2 = json.loads(out.stdout) if out.returncode == 0 else {}
    check([(v["sharable"], v["on_boot"]) for v in c2.get("vdis", [])] ==
          [(True, "persist"), (False, "reset")] and c2["power_state"] == "Suspended" and
          c2["suspend_vdi"] and [d["empty"] for d in c2["disks"] if d["type"] == "CD"] == [True],
          "simctl --sharable-disk --reset-disk --empty-cd --suspended")

    # Suspended VMs.
    def suspended(name):
        d = sim.ctl("POST", "vm", {"name": name, "power_state": "Suspended", "disks": [
            {"image": img, "sr": rd["sr_nocbt"]}]})
        return d["ref"], ok(x.VDI.get_by_uuid(s, d["vdis"][0]["uuid"])), d
    sus, sdisk, desc = suspended("sus-vm")
    vr = ok(x.VM.get_record(s, sus))
    sus_vdi = vr["suspend_VDI"]
    svr = ok(x.VDI.get_record(s, sus_vdi))
    with open(sim.ctl("GET", "vdi?vdi=" + svr["uuid"])["path"], "rb") as f:
        head = f.read(16)
    check(vr["power_state"] == "Suspended" and vr["resident_on"] == "OpaqueRef:NULL" and
          svr["type"] == "suspend" and svr["SR"] == ok(x.VDI.get_SR(s, sdisk)) and
          head.startswith(b"XenSavedDomain") and desc["suspend_vdi"] == svr["uuid"],
          "suspended VM with its suspend image")
    check(all(ok(x.VBD.get_currently_attached(s, b)) for b in vr["VBDs"]),
          "a suspended VM's VBDs stay currently_attached")
    check(err(x.VM.start(s, sus, False, False)) == ["VM_BAD_POWER_STATE", sus, "halted", "suspended"]
          and err(x.VM.clean_shutdown(s, sus)) ==
          ["VM_BAD_POWER_STATE", sus, "running", "suspended"], "start / clean_shutdown refused")
    n_susp = sum(1 for v in ok(x.VDI.get_all_records(s)).values() if v["type"] == "suspend")
    snap = ok(x.VM.snapshot(s, sus, "of-suspended"))
    sr_ = ok(x.VM.get_record(s, snap))
    check(sr_["power_state"] == "Halted" and sr_["suspend_VDI"] == "OpaqueRef:NULL" and
          sr_["snapshot_info"].get("power-state-at-snapshot") == "Suspended" and
          n_susp == sum(1 for v in ok(x.VDI.get_all_records(s)).values() if v["type"] == "suspend"),
          "snapshot of a suspended VM: halted, no suspend image")
    uuid = vr["uuid"]
    r, data = http_req(sim, "GET", "/export_metadata?session_id=%s&uuid=%s&export_snapshots=false"
                       % (s, uuid))
    doc = ova_from_export(data)
    ovm = [o["snapshot"] for o in doc["objects"] if o["class"] == "VM"][0]
    ovdis = {o["id"]: o["snapshot"] for o in doc["objects"] if o["class"] == "VDI"}
    check(ovm["power_state"] == "Suspended" and ovdis.get(ovm["suspend_VDI"], {}).get("type") ==
          "suspend", "export_metadata keeps Suspended and the suspend image")
    new, e = import_meta(data)
    nr = ok(x.VM.get_record(s, new)) if new else {}
    check(nr.get("power_state") == "Suspended" and nr.get("suspend_VDI") == sus_vdi and
          all(ok(x.VBD.get_currently_attached(s, b)) for b in nr["VBDs"]),
          "import: Suspended on the original's suspend image (%r)" % (e,))
    halted = dict(doc)
    halted["objects"] = [dict(o) for o in doc["objects"]]
    for o in halted["objects"]:
        if o["class"] == "VM":
            o["snapshot"] = dict(o["snapshot"], power_state="Halted", suspend_VDI="OpaqueRef:NULL")
    h, e = import_meta(ova_tar(halted))
    check(h and ok(x.VM.get_power_state(s, h)) == "Halted" and
          ok(x.VM.get_suspend_VDI(s, h)) == "OpaqueRef:NULL", "import of an ova.xml edited to Halted")
    nosv = dict(doc, objects=[o for o in doc["objects"] if o["id"] != ovm["suspend_VDI"]])
    h, e = import_meta(ova_tar(nosv))
    check(e == ["IMPORT_ERROR_FAILED_TO_FIND_OBJECT", ovm["suspend_VDI"]],
          "import without the suspend image object: %r" % (e,))
    h, e = import_meta(ova_tar(nosv), "&force=true")
    check(h and ok(x.VM.get_power_state(s, h)) == "Halted", "forced: imported Halted")
    moved = dict(doc, objects=[dict(o, snapshot=dict(o["snapshot"], location="gone"))
                               if o["id"] == ovm["suspend_VDI"] else o for o in doc["objects"]])
    h, e = import_meta(ova_tar(moved))
    check(e == ["VDI_LOCATION_MISSING", svr["SR"], "gone"], "unresolved suspend image: %r" % (e,))
    # hard_shutdown of the imported copy destroys the image both VMs share.
    ok(x.VM.hard_shutdown(s, new))
    check(err(x.VDI.get_record(s, sus_vdi)) == ["HANDLE_INVALID", "VDI", sus_vdi] and
          ok(x.VM.get_power_state(s, new)) == "Halted" and
          ok(x.VM.get_suspend_VDI(s, sus)) == "OpaqueRef:NULL" and
          ok(x.VM.get_power_state(s, sus)) == "Suspended", "hard_shutdown destroys the suspend image")
    check(err(x.VM.resume(s, sus, False, False)) == ["VM_HAS_NO_SUSPEND_VDI", "VM", sus] and
          ok(x.VM.get_power_state(s, sus)) == "Halted", "resume without a suspend image")
    sus2, _, _ = suspended("sus-vm2")
    sv2 = ok(x.VM.get_suspend_VDI(s, sus2))
    ok(x.VM.resume(s, sus2, False, False))
    check(ok(x.VM.get_power_state(s, sus2)) == "Running" and
          ok(x.VM.get_suspend_VDI(s, sus2)) == "OpaqueRef:NULL" and
          err(x.VDI.get_type(s, sv2)) is not None, "resume: Running, image destroyed")
    check(err(x.VM.destroy(s, sus2)) == ["VM_BAD_POWER_STATE", sus2, "halted, suspended", "running"],
          "VM.destroy power states")

    # VDI.destroy of the ISO: refused while a running VM has it, then the file goes.
    check(err(x.VDI.destroy(s, iso)) == ["VDI_IN_USE", iso, "destroy"], "ISO in use")
    ok(x.VM.hard_shutdown(s, boot))
    ok(x.VDI.destroy(s, iso))
    check(not os.path.exists(ctl_iso["path"]) and
          rd["iso_vdi"] not in [v["uuid"] for v in sim.ctl("GET", "vdis")],
          "ISO destroyed with its file")
    check(all(ok(x.VBD.get_type(s, b)) != "CD" for b in ok(x.VM.get_VBDs(s, ok(x.VM.get_by_name_label(
        s, "with-iso"))[0]))), "the snapshot's CD drive went with the ISO")
    after = sim.ctl("POST", "vm", {"name": "late", "cd": True, "disks": [{"image": img}]})
    check([d["empty"] for d in after["disks"] if d["type"] == "CD"] == [True],
          "without the ISO a new CD drive is empty")


def _cert_text(pem):
    return subprocess.run(["openssl", "x509", "-noout", "-subject", "-ext", "subjectAltName"],
                          input=pem, capture_output=True, text=True).stdout


def _nbd_connect(tmp, info, server_name=None):
    cafile = os.path.join(tmp, "ca-%s.pem" % info["subject"])
    with open(cafile, "w") as f:
        f.write(info["cert"])
    return NbdClient(info["address"].split("/")[0], info["port"], info["exportname"],
                     cafile=cafile, server_name=server_name or info["subject"], timeout=5)


def _refused(fn):
    try:
        fn()
        return False
    except (NbdError, OSError):
        return True


def test_pool_defaults(sim):
    """One host (no options): the shared SR is there, get_nbd_info as before."""
    x = sim.x
    s = ok(x.session.login_with_password("root", "xenroot", "1.0", "selftest-defaults"))
    rd = sim.ready
    check(len(rd["hosts"]) == 1 and rd["hosts"][0]["name"] == "localhost" and
          rd["hosts"][0]["https_port"] == rd["https_port"] and rd["sr_local_host1"] is None,
          "ready.json hosts[] with one host")
    sr = ok(x.SR.get_by_uuid(s, rd["sr_shared"]))
    rec = ok(x.SR.get_record(s, sr))
    check(rec["type"] == "nfs" and rec["shared"] and len(rec["PBDs"]) == 1,
          "shared SR with one PBD on a one-host pool")
    vdi = ok(x.VDI.create(s, {"SR": sr, "virtual_size": str(2 * MiB), "type": "user",
                              "sharable": False, "read_only": False, "other_config": {}}))
    info = ok(x.VDI.get_nbd_info(s, vdi))
    check(len(info) == 1 and info[0]["address"] == "127.0.0.1" and info[0]["subject"] == "localhost",
          "shared SR VDI on one host: one NBD record")
    ok(x.VDI.destroy(s, vdi))
    sms = ok(x.SM.get_all_records(s))
    by_type = {r["type"]: r for r in sms.values()}
    check({"ext", "nfs", "lvm", "iso", "linstor"} <= set(by_type), "SM records per SR type")
    ext = by_type["ext"]
    check(ext["features"].get("VDI_CONFIG_CBT") == "1" and
          ext["features"].get("VDI_RESET_ON_BOOT") == "2" and
          "VDI_CONFIG_CBT" in ext["capabilities"], "SM features map with versions (ext)")
    check("VDI_CONFIG_CBT" not in by_type["iso"]["features"] and
          "VDI_CONFIG_CBT" not in by_type["linstor"]["features"] and
          "VDI_CONFIG_CBT" in by_type["nfs"]["features"], "no VDI_CONFIG_CBT for iso and linstor")
    sm_ref = [r for r, v in sms.items() if v["type"] == "nfs"][0]
    check(ok(x.SM.get_by_uuid(s, sms[sm_ref]["uuid"])) == sm_ref and
          ok(x.SM.get_features(s, sm_ref)) == sms[sm_ref]["features"], "SM getters")
    nocbt = ok(x.SR.get_by_uuid(s, rd["sr_nocbt"]))
    check(ok(x.SR.get_type(s, nocbt)) == "linstor", "the no-CBT SR's type lacks VDI_CONFIG_CBT")
    ok(x.session.logout(s))


def test_pool(tmp):
    """A three-host pool with a dedicated NBD network."""
    root = os.path.join(tmp, "pool3")
    with Sim(root, "--hosts", "3", "--nbd-network", "dedicated", "--session-cap", "3",
             "--anon-session-cap", "2") as sim:
        _test_pool(sim, root)


def _test_pool(sim, tmp):
    x = sim.x
    rd = sim.ready
    s = ok(x.session.login_with_password("root", "xenroot", "1.0", "selftest-pool"))
    hosts = rd["hosts"]
    check([h["name"] for h in hosts] == ["localhost", "host1", "host2"] and
          [h["address"] for h in hosts] == ["127.0.0.1", "127.0.0.2", "127.0.0.3"] and
          [h["nbd_address"] for h in hosts] == ["127.0.1.1", "127.0.1.2", "127.0.1.3"] and
          rd["sr_local_host1"], "ready.json hosts[] of a three-host pool")
    href = {h["name"]: ok(x.host.get_by_uuid(s, h["uuid"])) for h in hosts}
    certs = {}
    for h in hosts:
        with open(h["ca_cert"]) as f:
            certs[h["name"]] = f.read()
    check(ok(x.host.get_server_certificate(s, href["host1"])) == certs["host1"] and
          certs["host1"] != certs["localhost"] and certs["host2"] != certs["host1"],
          "each host has its own certificate")
    text = _cert_text(certs["host1"])
    check("CN = host1" in text and "DNS:host1" in text and "IP Address:127.0.0.2" in text and
          "127.0.1.2" not in text, "member certificate names its management address only")
    check(ok(x.host.get_hostname(s, href["host1"])) == "host1" and
          ok(x.host.get_address(s, href["host2"])) == "127.0.0.3", "member host records")
    # Member listeners: HOST_IS_SLAVE for API calls; own certificate on HTTPS.
    xm = xmlrpc.client.ServerProxy("http://127.0.0.2:%d" % hosts[1]["http_port"])
    check(err(xm.session.login_with_password("root", "xenroot")) == ["HOST_IS_SLAVE", "127.0.0.1"],
          "login on a member: HOST_IS_SLAVE")
    ctx = ssl.create_default_context(cafile=hosts[1]["ca_cert"])
    xms = xmlrpc.client.ServerProxy("https://127.0.0.2:%d" % hosts[1]["https_port"], context=ctx)
    check(err(xms.VM.get_all(s)) == ["HOST_IS_SLAVE", "127.0.0.1"],
          "member HTTPS with its own cert")
    # SRs and PBDs.
    shared = ok(x.SR.get_by_uuid(s, rd["sr_shared"]))
    local1 = ok(x.SR.get_by_uuid(s, rd["sr_local_host1"]))
    pbd_hosts = {ok(x.PBD.get_host(s, p)) for p in ok(x.SR.get_PBDs(s, shared))}
    check(pbd_hosts == set(href.values()) and ok(x.SR.get_shared(s, shared)),
          "shared SR has a PBD on every host")
    check([ok(x.PBD.get_host(s, p)) for p in ok(x.SR.get_PBDs(s, local1))] == [href["host1"]] and
          ok(x.SR.get_type(s, local1)) == "ext", "local SR of host1")
    nets = ok(x.network.get_all_records(s))
    nbd_nets = [n for n, r in nets.items() if "nbd" in r["purpose"]]
    pifs = ok(x.PIF.get_all_records(s))
    check(len(nbd_nets) == 1 and len(pifs) == 6 and
          sorted(p["IP"] for p in pifs.values() if p["network"] == nbd_nets[0]) ==
          ["127.0.1.1", "127.0.1.2", "127.0.1.3"], "dedicated NBD network with a PIF per host")
    # A VM on host1 with a shared and a local disk (simctl, SR aliases, --host).
    img = os.path.join(tmp, "pool.img")
    with open(img, "wb") as f:
        f.write(b"\xa5" * MiB)
        f.truncate(4 * MiB)
    env = dict(os.environ, XAPISIM_READY=os.path.join(sim.state, "ready.json"))
    out = subprocess.run([os.path.join(HERE, "simctl"), "create-vm", "pool-vm", "--host", "host1",
                          "--disk", img + "@shared", "--disk", img + "@local-host1"],
                         env=env, capture_output=True, text=True)
    vmd = json.loads(out.stdout) if out.returncode == 0 else {}
    check(vmd.get("vdis") and vmd["vdis"][0]["sr"] == rd["sr_shared"] and
          vmd["vdis"][1]["sr"] == rd["sr_local_host1"], "simctl create-vm @shared @local-host1")
    vm = ok(x.VM.get_by_uuid(s, vmd["uuid"]))
    check(ok(x.VM.get_resident_on(s, vm)) == href["host1"] and
          vm in ok(x.host.get_resident_VMs(s, href["host1"])), "VM resident on host1")
    v_shared = ok(x.VDI.get_by_uuid(s, vmd["vdis"][0]["uuid"]))
    v_local = ok(x.VDI.get_by_uuid(s, vmd["vdis"][1]["uuid"]))
    # get_nbd_info: one record per host with the SR attached, in descending PBD ref order.
    info = ok(x.VDI.get_nbd_info(s, v_shared))
    order = [ok(x.PBD.get_host(s, p)) for p in sorted(ok(x.SR.get_PBDs(s, shared)), reverse=True)]
    name_of = {v: k for k, v in href.items()}
    check([i["subject"] for i in info] == [name_of[h] for h in order],
          "get_nbd_info: a record per host, in the PBD table's order")
    check(all(i["cert"] == certs[i["subject"]] and
              i["address"] == hosts[[h["name"] for h in hosts].index(i["subject"])]["nbd_address"]
              for i in info) and len({i["port"] for i in info}) == 3,
          "each record: that host's certificate, NBD address and port")
    sim.ctl("POST", "nbd/reset", {})
    conns = [_nbd_connect(tmp, i) for i in info]
    check(all(c.pread(0, 4096) == b"\xa5" * 4096 for c in conns), "every host's endpoint reads")
    i1 = [i for i in info if i["subject"] == "host1"][0]
    check(_refused(lambda: _nbd_connect(tmp, i1, server_name=i1["address"])),
          "dedicated NBD address is not in the certificate")
    check(_refused(lambda: socket.create_connection(("127.0.0.1", i1["port"]), timeout=2)),
          "a member's nbdkit listens on its own NBD address only")
    extra = _nbd_connect(tmp, i1)
    for c in conns:
        c.close()
    extra.close()
    time.sleep(0.3)
    st = sim.ctl("GET", "nbd/stats")["per_host"]
    check(st["host1"] == {"connections": 2, "active": 0, "max_active": 2} and
          st["host2"]["connections"] == 1 and st["localhost"]["connections"] == 1,
          "per-host NBD connection counts (%r)" % st)
    st = sim.ctl("POST", "nbd/reset", {})["per_host"]
    check(st["host1"] == {"connections": 0, "active": 0, "max_active": 0},
          "nbd-reset clears per_host")
    linfo = ok(x.VDI.get_nbd_info(s, v_local))
    check(len(linfo) == 1 and linfo[0]["subject"] == "host1" and
          linfo[0]["address"] == "127.0.1.2", "local SR VDI: one record, its host")
    # A host whose NBD endpoints are down: refused; the others still serve; back on the same port.
    out = subprocess.run([os.path.join(HERE, "simctl"), "fault", "nbd_host_down", "host1"],
                         env=env, capture_output=True, text=True)
    check(out.returncode == 0 and _refused(lambda: _nbd_connect(tmp, i1)), "nbd_host_down refuses")
    i0 = [i for i in info if i["subject"] != "host1"][0]
    c = _nbd_connect(tmp, i0)
    check(c.pread(0, 512) == b"\xa5" * 512, "other hosts serve while host1 is down")
    c.close()
    subprocess.run([os.path.join(HERE, "simctl"), "fault", "nbd_host_down", "off"], env=env,
                   capture_output=True)
    c = _nbd_connect(tmp, i1)
    check(c.pread(0, 512) == b"\xa5" * 512, "host1 serves again on the same port")
    c.close()
    # Import redirect: the master cannot see host1's local SR.
    data = bytes([0x3c]) * MiB
    t = ok(x.task.create(s, "upload", ""))
    query = "session_id=%s&vdi=%s&task_id=%s&format=raw" % (s, vmd["vdis"][1]["uuid"], t)
    # (The answer comes before the body is read, and the connection is closed:
    # send the headers, then read.)
    mctx = ssl.create_default_context(cafile=rd["ca_cert"])
    so = mctx.wrap_socket(socket.create_connection(("127.0.0.1", rd["https_port"])),
                          server_hostname="localhost")
    so.sendall(("PUT /import_raw_vdi?%s HTTP/1.1\r\nHost: localhost\r\nContent-Length: %d"
                "\r\n\r\n" % (query, len(data))).encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = so.recv(4096)
        if not chunk:
            break
        head += chunk
    so.close()
    lines = head.decode("latin-1").split("\r\n")
    loc = [ln[len("Location: "):] for ln in lines if ln.startswith("Location: ")]
    loc = loc[0] if loc else ""
    check(lines[0] == "HTTP/1.1 302 Found" and loc == "https://127.0.0.2:%d/import_raw_vdi?%s"
          % (hosts[1]["https_port"], query) and not any(ln.startswith("task-id") for ln in lines),
          "import_raw_vdi: 302 to the host with the SR")
    time.sleep(0.2)
    check(ok(x.task.get_status(s, t)) == "pending", "redirect leaves the task pending")
    u = urllib.parse.urlsplit(loc)
    c = http.client.HTTPSConnection(u.hostname, u.port, context=ctx, timeout=10)
    c.request("PUT", u.path + "?" + u.query, body=data)
    r = c.getresponse()
    r.read()
    c.close()
    rec = wait_task(x, s, t)
    check(r.status == 200 and rec["status"] == "success", "upload on the member (its cert) works")
    copy_path = os.path.join(tmp, "local.raw")
    sim.ctl("POST", "disk/copy", {"vdi": vmd["vdis"][1]["uuid"], "dest": copy_path})
    with open(copy_path, "rb") as f:
        check(f.read(MiB) == data, "redirected upload content")
    r, _ = http_req(sim, "GET", "/export_raw_vdi?session_id=%s&vdi=%s"
                    % (s, vmd["vdis"][1]["uuid"]))
    check(r.status == 302 and r.getheader("Location", "").startswith("https://127.0.0.2:"),
          "export_raw_vdi redirects too")
    # From a member, a VDI on the master's local SR goes back to the master.
    main_vdi = ok(x.VDI.create(s, {"SR": ok(x.SR.get_by_uuid(s, rd["sr_cbt"])),
                                   "virtual_size": str(2 * MiB), "type": "user",
                                   "sharable": False, "read_only": False, "other_config": {}}))
    c = http.client.HTTPConnection("127.0.0.3", hosts[2]["http_port"], timeout=10)
    c.request("PUT", "/import_raw_vdi?session_id=%s&vdi=%s" % (s, main_vdi), body=b"")
    r = c.getresponse()
    r.read()
    c.close()
    check(r.status == 302 and r.getheader("Location", "").startswith(
        "https://127.0.0.1:%d/import_raw_vdi?" % rd["https_port"]),
        "member redirects to the master")
    # Shared SR: no redirect.
    t = ok(x.task.create(s, "upload2", ""))
    r, _ = http_req(sim, "PUT", "/import_raw_vdi?session_id=%s&vdi=%s&task_id=%s"
                    % (s, vmd["vdis"][0]["uuid"], t), body=bytes(4096))
    check(r.status == 200 and wait_task(x, s, t)["status"] == "success", "shared SR: no redirect")
    # SR loses CBT by changing type; the SM's features say so.
    cbt_ops = {"vdi_enable_cbt", "vdi_disable_cbt", "vdi_data_destroy", "vdi_list_changed_blocks"}
    out = sim.ctl("POST", "sr/cbt", {"sr": rd["sr_shared"], "enabled": False})
    check(out["type"] == "linstor" and not cbt_ops & set(ok(x.SR.get_allowed_operations(s, shared)))
          and err(x.VDI.enable_cbt(s, v_shared)) == ["SR_OPERATION_NOT_SUPPORTED", shared],
          "sr/cbt off: type without VDI_CONFIG_CBT, no CBT ops")
    out = sim.ctl("POST", "sr/cbt", {"sr": "shared", "enabled": True})
    check(out["type"] == "nfs" and cbt_ops <= set(ok(x.SR.get_allowed_operations(s, shared))),
          "sr/cbt on: former type back")
    # A busy SR: current_operations, allowed_operations empty, CBT calls wait.
    out = subprocess.run([os.path.join(HERE, "simctl"), "fault", "sr_busy", "shared", "on"],
                         env=env, capture_output=True, text=True)
    cur = ok(x.SR.get_current_operations(s, shared))
    check(out.returncode == 0 and list(cur.values()) == ["scan"] and
          ok(x.SR.get_allowed_operations(s, shared)) == [] and
          ok(x.task.get_status(s, list(cur)[0])) == "pending", "sr_busy: scan running, no ops allowed")
    t = ok(getattr(x, "Async.VDI.enable_cbt")(s, v_shared))
    time.sleep(0.5)
    check(ok(x.task.get_status(s, t)) == "pending", "VDI.enable_cbt waits while the SR is busy")
    sim.ctl("POST", "faults", {"sr_busy": {"sr": rd["sr_shared"], "on": False}})
    check(wait_task(x, s, t, 5)["status"] == "success" and
          ok(x.SR.get_current_operations(s, shared)) == {} and
          cbt_ops <= set(ok(x.SR.get_allowed_operations(s, shared))), "then runs once it is free")
    sim.ctl("POST", "faults", {"sr_busy": {"sr": "shared", "on": True, "op": "plug"}})
    check(ok(x.SR.get_allowed_operations(s, shared)) == ["plug"], "a running plug leaves plug allowed")
    sim.ctl("POST", "faults", {"sr_busy": {"sr": "shared", "on": False}})
    # Stuck tasks.
    sim.ctl("POST", "faults", {"task_stuck": True})
    t = ok(getattr(x, "Async.VDI.checksum")(s, v_shared))
    time.sleep(0.4)
    check(ok(x.task.get_status(s, t)) == "pending" and ok(x.task.get_progress(s, t)) == 0.0,
          "task_stuck: an Async task stays pending")
    sim.ctl("POST", "faults", {"task_stuck": False})
    t2 = ok(getattr(x, "Async.VDI.checksum")(s, v_shared))
    check(wait_task(x, s, t2)["status"] == "success" and ok(x.task.get_status(s, t)) == "pending",
          "later tasks run; the stuck one stays stuck")
    # HTTP stall: headers, then nothing until the fault is cleared or the client goes.
    sim.ctl("POST", "faults", {"http_stall": True})
    c = http.client.HTTPConnection("127.0.0.1", rd["http_port"], timeout=1)
    c.request("GET", "/export_raw_vdi?session_id=%s&vdi=%s" % (s, vmd["vdis"][0]["uuid"]))
    r = c.getresponse()
    try:
        r.read(512)
        stalled = False
    except (TimeoutError, socket.timeout):
        stalled = True
    c.close()
    check(r.status == 200 and stalled, "http_stall: export headers, then no body")
    t = ok(x.task.create(s, "stalled", ""))
    so = socket.create_connection(("127.0.0.1", rd["http_port"]))
    so.sendall(("PUT /import_raw_vdi?session_id=%s&vdi=%s&task_id=%s HTTP/1.1\r\nHost: x\r\n"
                "Content-Length: 4096\r\n\r\n" % (s, vmd["vdis"][0]["uuid"], t)).encode()
               + bytes(100))
    head = so.recv(100)
    time.sleep(0.5)
    pending = ok(x.task.get_status(s, t)) == "pending"
    so.close()
    check(head.startswith(b"HTTP/1.1 200 OK") and pending, "http_stall: upload answered, not read")
    rec = wait_task(x, s, t, 5)
    check(rec["error_info"] == ["VDI_IO_ERROR", "Device I/O errors"],
          "stalled upload ends when the client hangs up")
    t = ok(x.task.create(s, "stall-then-go", ""))
    c = http.client.HTTPConnection("127.0.0.1", rd["http_port"], timeout=10)
    c.request("GET", "/export_raw_vdi?session_id=%s&vdi=%s&task_id=%s"
              % (s, vmd["vdis"][0]["uuid"], t))
    r = c.getresponse()
    time.sleep(0.3)
    sim.ctl("POST", "faults", {"http_stall": False})
    body = r.read()
    c.close()
    check(len(body) == 4 * MiB and wait_task(x, s, t)["status"] == "success",
          "clearing http_stall lets the transfer finish")
    # Sessions: per-originator cap 3, anonymous cap 2; busy sessions are spared.
    busy = ok(x.session.login_with_password("root", "xenroot", "1.0", "capper"))
    ok(x.task.create(busy, "keeps me", ""))
    capped = [ok(x.session.login_with_password("root", "xenroot", "1.0", "capper"))
              for _ in range(5)]
    check([err(x.VM.get_all(c)) is None for c in capped] == [False, False, True, True, True] and
          err(x.VM.get_all(busy)) is None, "per-originator cap destroys the oldest idle sessions")
    anon = [ok(x.session.login_with_password("root", "xenroot")) for _ in range(3)]
    check([err(x.VM.get_all(a)) is None for a in anon] == [False, True, True] and
          err(x.VM.get_all(s)) is None, "anonymous sessions share their own cap")
    out = subprocess.run([os.path.join(HERE, "simctl"), "sessions"], env=env,
                         capture_output=True, text=True)
    lst = {e["ref"]: e for e in json.loads(out.stdout)} if out.returncode == 0 else {}
    check(lst.get(capped[0], {}).get("valid") is False and lst[capped[0]]["ended"] == "cap" and
          lst[capped[4]]["valid"] and lst[capped[4]]["originator"] == "capper" and
          lst[s]["uname"] == "root" and lst[s]["created"], "GET /sim/sessions")
    ok(x.session.logout(s))


def test_pool_ipv6(tmp):
    """--nbd-network ipv6: addresses in CIDR form, nbdkit on ::1."""
    root = os.path.join(tmp, "pool6")
    with Sim(root, "--hosts", "2", "--nbd-network", "ipv6") as sim:
        x = sim.x
        s = ok(x.session.login_with_password("root", "xenroot", "1.0", "selftest-ipv6"))
        sr = ok(x.SR.get_by_uuid(s, sim.ready["sr_shared"]))
        vdi = ok(x.VDI.create(s, {"SR": sr, "virtual_size": str(2 * MiB), "type": "user",
                                  "sharable": False, "read_only": False, "other_config": {}}))
        info = ok(x.VDI.get_nbd_info(s, vdi))
        check(sorted(i["subject"] for i in info) == ["host1", "localhost"] and
              all(i["address"] == "::1/128" for i in info), "IPv6 NBD addresses as ::1/128")
        good = True
        for i in info:
            c = _nbd_connect(tmp, i)
            good = good and c.pread(0, 512) == bytes(512)
            c.close()
        check(good, "nbdkit serves on ::1")
        ok(x.session.logout(s))


def _simctl(sim, *args):
    """Runs simctl against `sim`: (exit status, parsed JSON output or None)."""
    env = dict(os.environ, XAPISIM_READY=os.path.join(sim.state, "ready.json"))
    out = subprocess.run([os.path.join(HERE, "simctl")] + list(args), env=env,
                         capture_output=True, text=True)
    try:
        return out.returncode, json.loads(out.stdout)
    except ValueError:
        return out.returncode, None


def _ctl_status(sim, method, path, body):
    try:
        sim.ctl(method, path, body)
        return 200
    except urllib.error.HTTPError as e:
        return e.code


def test_pool_jobs(tmp):
    """Controls for pool-wide jobs: many VMs in one call, VDI-scoped read
    errors, the NBD connection log, NBD delay from the start."""
    root = os.path.join(tmp, "jobs")
    with Sim(root, "--hosts", "3", "--nbd-delay-ms", "200") as sim:
        _test_pool_jobs(sim, root)


def _test_pool_jobs(sim, tmp):
    x = sim.x
    s = ok(x.session.login_with_password("root", "xenroot", "1.0", "selftest-jobs"))
    # ---- POST /sim/vms --------------------------------------------------------------
    size = 3 * MiB + 1000
    vms = sim.ctl("POST", "vms", {"count": 5, "prefix": "job", "size": size, "disks": 2,
                                  "seed": "s1", "tags": ["nightly", "pool", "nightly"],
                                  "hosts": True, "sr": "shared", "cbt": True})
    check([v["name_label"] for v in vms] == ["job-01", "job-02", "job-03", "job-04", "job-05"],
          "create vms: names prefix-01...")
    check([v["resident_on"] for v in vms] == ["localhost", "host1", "host2", "localhost", "host1"]
          and [v["affinity"] for v in vms] == [v["resident_on"] for v in vms],
          "create vms: round-robin over the hosts (resident_on, affinity)")
    check(all(v["power_state"] == "Running" and v["tags"] == ["nightly", "pool"] and
              len(v["vdis"]) == 2 and
              all(d["virtual_size"] == 3 * MiB + 1024 and d["cbt_enabled"] and
                  d["live_log_blocks"] == 0 and d["sr"] == sim.ready["sr_shared"] and
                  os.path.getsize(d["path"]) == d["virtual_size"] for d in v["vdis"])
              for v in vms), "create vms: shape as POST /sim/vm, disks, CBT, tags")
    vref = ok(x.VM.get_by_uuid(s, vms[1]["uuid"]))
    check(ok(x.VM.get_tags(s, vref)) == ["nightly", "pool"] and
          ok(x.VM.get_name_label(s, vref)) == "job-02", "create vms: XenAPI sees them")

    def content(v, k):
        with open(v["vdis"][k]["path"], "rb") as f:
            return f.read()
    want = b"".join(hashlib.shake_128(b"s1/job-02/1/%d" % i).digest(min(MiB, 3 * MiB + 1024 - i * MiB))
                    for i in range(4))
    d10, d11, d20 = content(vms[1], 0), content(vms[1], 1), content(vms[2], 0)
    check(d11 == want, "fill random with a seed: SHAKE-128 of seed/name/disk/chunk")
    check(len({d10, d11, d20}) == 3 and d10[:4096] != bytes(4096), "every disk different")
    status = _ctl_status(sim, "POST", "vms", {"count": 2, "prefix": "job", "start": 5})
    names = [v["name_label"] for v in sim.ctl("GET", "vms")]
    check(status == 409 and "job-06" not in names and names.count("job-05") == 1,
          "a name already in use: 409, nothing created")
    rc, pat = _simctl(sim, "create-vms", "--count", "2", "--prefix", "pat", "--size", "256K",
                      "--fill", "pattern", "--tag", "t1", "--hosts", "host2", "--halted")
    ok_pat = rc == 0 and len(pat) == 2
    if ok_pat:
        p1, p2 = content(pat[0], 0), content(pat[1], 0)
        ok_pat = (len(p1) == 256 * 1024 and p1[3 * 4096:].startswith(b"pat-01/0 offset 0x000000003000\n")
                  and p2[3 * 4096:].startswith(b"pat-02/0 offset 0x000000003000\n") and
                  p1[4000:4096] == bytes([p1[4000]]) * 96 and p1[4000] != 0 and
                  pat[0]["power_state"] == "Halted" and pat[0]["resident_on"] is None and
                  pat[1]["affinity"] == "host2" and pat[0]["tags"] == ["t1"])
    check(ok_pat, "simctl create-vms --fill pattern --size 256K --hosts host2 --halted")
    rc, zer = _simctl(sim, "create-vms", "--count", "1", "--prefix", "zero", "--fill", "zero",
                      "--disks", "3")
    check(rc == 0 and zer[0]["name_label"] == "zero-01" and len(zer[0]["vdis"]) == 3 and
          all(os.stat(d["path"]).st_blocks == 0 and d["virtual_size"] == MiB
              for d in zer[0]["vdis"]), "fill zero: sparse 1 MiB disks (the defaults)")
    t0 = time.monotonic()
    many = sim.ctl("POST", "vms", {"count": 16, "prefix": "many", "size": 8 * MiB})
    took = time.monotonic() - t0
    check(len(many) == 16 and many[15]["name_label"] == "many-16" and took < 20,
          "16 VMs x 8 MiB of random data in %.1f s" % took)

    # ---- NBD delay given at start: every export, also those made later -----------------
    info = {}

    def snapshot_disks(v):
        """VM.snapshot of VM `v`: its snapshot VDIs (refs), disk order."""
        sv = ok(x.VM.snapshot(s, ok(x.VM.get_by_uuid(s, v["uuid"])), "job-snap"))
        return [ok(x.VBD.get_VDI(s, b)) for b in ok(x.VM.get_VBDs(s, sv))
                if ok(x.VBD.get_type(s, b)) == "Disk"]

    def connect(vdi, host="host1"):
        i = [r for r in ok(x.VDI.get_nbd_info(s, vdi)) if r["subject"] == host][0]
        info[vdi] = i
        return _nbd_connect(tmp, i)

    def timed_read(c):
        t = time.monotonic()
        c.pread(0, 4096)
        return time.monotonic() - t
    check(sim.ctl("GET", "faults")["nbd"]["delay_ms"] == 200, "--nbd-delay-ms shows as delay_ms")
    s0 = snapshot_disks(vms[0])
    c = connect(s0[0])
    check(timed_read(c) >= 0.18, "--nbd-delay-ms: reads delayed from the start")
    c.close()
    sim.ctl("POST", "faults", {"nbd_delay_ms": 0})
    c = connect(s0[1])
    check(timed_read(c) < 0.15, "nbd_delay_ms 0: a new export reads at once")
    c.close()
    sim.ctl("POST", "faults", {"nbd_delay_ms": 200})
    s3 = snapshot_disks(vms[3])
    c = connect(s3[0], "host2")
    check(timed_read(c) >= 0.18, "nbd_delay_ms: an export started later is delayed too")
    c.close()
    sim.ctl("POST", "faults", {"nbd_delay_ms": 0})

    # ---- VDI-scoped read errors --------------------------------------------------------
    a, b = vms[0], vms[1]
    a0, a1 = a["vdis"][0]["uuid"], a["vdis"][1]["uuid"]
    f = sim.ctl("POST", "faults", {"nbd_read_errors": {"vdi": a0, "on": True}})["nbd"]
    check(f["read_error_vdis"] == [a0] and f["read_errors"] is False,
          "faults show the VDI-scoped read errors")

    def reads(vdi, host="host1"):
        """True if a read works, the errno if it fails."""
        c = connect(vdi, host)
        try:
            c.pread(0, 4096)
            return True
        except NbdError as e:
            return getattr(e, "errno", None)
        finally:
            c.close()
    sa = snapshot_disks(a)     # the backup's snapshot, taken after the fault was set
    sb = snapshot_disks(b)
    check(reads(sa[0]) == 5 and reads(sa[0], "localhost") == 5,
          "scoped read errors follow the disk to its snapshot (EIO, every host)")
    check(reads(ok(x.VDI.get_by_uuid(s, a0))) == 5, "and hit the disk itself")
    check(reads(sa[1]) is True and reads(sb[0]) is True and reads(s0[0]) == 5,
          "other disks read fine; an older snapshot of the disk fails too")
    # A connection open before the fault: reads fail at once, then work again.
    c = connect(sb[1])
    first = c.pread(0, 4096)
    rc, out = _simctl(sim, "fault", "nbd_read_errors", "on", "--vm", b["name_label"])
    check(rc == 0 and sorted(out["nbd"]["read_error_vdis"]) ==
          sorted([a0] + [d["uuid"] for d in b["vdis"]]), "simctl fault nbd_read_errors on --vm")
    try:
        c.pread(0, 4096)
        failed = False
    except NbdError as e:
        failed = getattr(e, "errno", None) == 5
    check(failed, "VM-scoped read errors reach an open connection of its snapshot")
    rc, out = _simctl(sim, "fault", "nbd_read_errors",
                      json.dumps({"vm": b["uuid"], "on": False}))
    check(rc == 0 and out["nbd"]["read_error_vdis"] == [a0] and c.pread(0, 4096) == first,
          "simctl fault nbd_read_errors JSON off: the same connection reads again")
    c.close()
    rc, out = _simctl(sim, "fault", "nbd_read_errors", "on", "--vdi", a1)
    check(rc == 0 and out["nbd"]["read_error_vdis"] == sorted([a0, a1]) and reads(sa[1]) == 5,
          "simctl fault nbd_read_errors on --vdi")
    rc, _ = _simctl(sim, "fault", "nbd_read_errors", "on", "--vdi", "no-such-vdi")
    check(rc == 1, "scoped read errors on an unknown VDI: an error")
    sim.ctl("POST", "faults", {"nbd_read_errors": True})
    check(reads(sb[0]) == 5, "the global form still fails every export")
    sim.ctl("POST", "faults", {"nbd_read_errors": False})
    f = sim.ctl("GET", "faults")["nbd"]
    check(f["read_errors"] is False and f["read_error_vdis"] == [] and reads(sa[0]) is True and
          reads(sb[0]) is True, "global off clears the scoped ones too")

    # ---- GET /sim/nbd/connections ------------------------------------------------------
    # (Connections still open at the reset are counted in, and their
    # disconnections logged after it: wait for the last ones to go.)
    for _ in range(100):
        if sim.ctl("GET", "nbd/stats")["active_connections"] == 0:
            break
        time.sleep(0.05)
    sim.ctl("POST", "nbd/reset", {})

    def pause():
        time.sleep(0.15)   # let nbdkit log each step before the next
    c1 = connect(sb[0])
    pause()
    c2 = connect(sb[1])
    pause()
    c1.close()
    pause()
    c3 = connect(sa[0])
    pause()
    c2.close()
    pause()
    c0 = connect(sa[1], "localhost")
    pause()
    c3.close()
    c0.close()
    pause()
    uuid_of = {r: ok(x.VDI.get_uuid(s, r)) for r in (sa[0], sa[1], sb[0], sb[1])}
    log = sim.ctl("GET", "nbd/connections")
    ev = log["events"]
    h1 = [(e["event"], e["vdi"], e["active_on_host"]) for e in ev if e["host"] == "host1"]
    check(h1 == [("connect", uuid_of[sb[0]], 1), ("connect", uuid_of[sb[1]], 2),
                 ("disconnect", uuid_of[sb[0]], 1), ("connect", uuid_of[sa[0]], 2),
                 ("disconnect", uuid_of[sb[1]], 1), ("disconnect", uuid_of[sa[0]], 0)],
          "connection log: host1's events in order, with the open count (%r)" % h1)
    h0 = [(e["event"], e["active_on_host"]) for e in ev if e["host"] == "localhost"]
    ts = [e["t"] for e in ev]
    check(h0 == [("connect", 1), ("disconnect", 0)] and ts == sorted(ts) and
          0 < ts[0] and ts[-1] <= log["since_reset"] and ts[-1] - ts[0] >= 0.5 and len(ev) == 8,
          "connection log: time-ordered, seconds since the reset")
    st = sim.ctl("GET", "nbd/stats")["per_host"]
    check(log["per_host"]["host1"] == {"connections": 3, "active": 0, "max_active": 2} and
          log["per_host"]["localhost"]["max_active"] == 1 and
          log["per_host"]["host2"]["max_active"] == 0 and st == log["per_host"],
          "connection log: peaks per host, the same as nbd/stats")
    c1 = connect(sb[0])
    pause()
    sim.ctl("POST", "nbd/drop", {})
    rc, log = _simctl(sim, "nbd-connections")
    last = log["events"][-1] if rc == 0 else {}
    check(last.get("event") == "disconnect" and last["active_on_host"] == 0 and
          log["per_host"]["host1"]["active"] == 0, "simctl nbd-connections; a cut connection "
          "is logged as a disconnection")
    c1.close()
    log = sim.ctl("POST", "nbd/reset", {})
    log = sim.ctl("GET", "nbd/connections")
    check(log["events"] == [] and log["per_host"]["host1"]["max_active"] == 0,
          "nbd/reset empties the connection log")
    ok(x.session.logout(s))


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
        test_events(sim)
        vm, disk, size = test_backup_flow(sim, tmp)
        test_http(sim, tmp, vm, disk, size)
        test_iso_suspend(tmp)
        test_pool_defaults(sim)
        test_pool(tmp)
        test_pool_ipv6(tmp)
        test_pool_jobs(tmp)
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
