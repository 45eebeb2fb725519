#!/usr/bin/env python3
"""XAPI simulator: a stand-in for a XenServer pool master, for tests and demos.

Serves XML-RPC (and JSON-RPC) over HTTP and HTTPS, the HTTP disk/metadata
handlers, NBD through nbdkit, and a JSON control interface under /sim/.
See README.md in this directory.
"""

import argparse
import http.server
import ipaddress
import json
import os
import signal
import socket
import socketserver
import ssl
import subprocess
import sys
import threading
import traceback
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import handlers  # noqa: E402
import wire  # noqa: E402
from control import Control  # noqa: E402
from nbd import NbdManager  # noqa: E402
from sim import Ctx, Sim, XapiError  # noqa: E402

DEFAULT_PASSWORD = "xenroot"


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def handle_error(self, request, client_address):
        # A client that rejects our certificate or hangs up mid-request is
        # normal in fault tests; only real bugs deserve a traceback.
        exc = sys.exc_info()[1]
        if isinstance(exc, (ssl.SSLError, ConnectionError, TimeoutError)):
            return
        super().handle_error(request, client_address)


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"   # keep-alive on the RPC endpoints
    server_version = "xapi/24.19"
    sys_version = ""
    app = None                      # set by main(): the App

    def log_message(self, fmt, *args):
        if self.app.verbose:
            sys.stderr.write("xapisim: %s %s\n" % (self.address_string(), fmt % args))

    def setup(self):
        super().setup()
        # Responses go out as headers then body, two writes: with Nagle's
        # algorithm the body waits for the ACK of the headers, which the
        # client delays by 40 ms, so every call would take 40 ms more than
        # it does on xapi.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # HTTPS: the TLS handshake is deferred to this worker thread, so one slow
        # client cannot stall the accept loop.
        if isinstance(self.connection, ssl.SSLSocket):
            self.connection.do_handshake()

    # ---- routing ------------------------------------------------------------------

    def _split(self):
        u = urllib.parse.urlsplit(self.path)
        return u.path, u.query

    def do_POST(self):
        path, query = self._split()
        if path.startswith("/sim/"):
            return self._control("POST", path, query)
        if path.startswith("/jsonrpc"):
            return self._jsonrpc()
        # "/", "/RPC2", the legacy "/json" (which parses XML) and every other
        # unmatched path land on the XML-RPC handler (longest-prefix routing).
        return self._xmlrpc()

    def do_GET(self):
        path, query = self._split()
        if path.startswith("/sim/"):
            return self._control("GET", path, query)
        if path.startswith("/export_metadata"):
            return handlers.export_metadata(self.app, self, query)
        if path.startswith("/export_raw_vdi"):
            return handlers.export_raw_vdi(self.app, self, query)
        self._simple(404, "text/html", b"<html><body><h1>404 Not Found</h1></body></html>",
                     close=True)

    def do_PUT(self):
        path, query = self._split()
        if path.startswith("/import_raw_vdi"):
            return handlers.import_raw_vdi(self.app, self, query)
        if path.startswith("/import_metadata"):
            return handlers.import_metadata(self.app, self, query)
        self._simple(404, "text/html", b"<html><body><h1>404 Not Found</h1></body></html>",
                     close=True)

    def do_OPTIONS(self):
        self.send_response(200)
        self.send_header("Access-Control-Allow-Origin", "*")
        self.send_header("Access-Control-Allow-Headers", "X-Requested-With")
        self.send_header("Content-Length", "0")
        self.end_headers()

    # ---- helpers --------------------------------------------------------------------

    def _simple(self, status, ctype, body, close=False, extra=()):
        self.send_response(status)
        self.send_header("content-type", ctype)
        for k, v in extra:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(body)

    def _body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n > 0 else b""

    def _ctx(self):
        return Ctx(self.headers.get("Host", ""), getattr(self.server, "sim_member", None))

    def _xmlrpc(self):
        body = self._body()
        try:
            name, params = wire.parse_call(body)
        except wire.ParseError as e:
            # Unparsable requests are the only ones answered with HTTP 500.
            html = ("<html><body><h1>HTTP 500 internal server error</h1>An unexpected "
                    "error occurred; please wait a while and try again. If the problem "
                    "persists, please contact your support representative.<h1> Additional "
                    "information </h1>%s</body></html>" % wire.escape(str(e))).encode()
            return self._simple(500, "text/html", html, close=True)
        try:
            value = self.app.sim.dispatch(name, params, self._ctx())
            # xapi answers system.listMethods with the bare array (api_server.ml).
            text = (wire.response_bare(value) if name == "system.listMethods"
                    else wire.response_success(value))
        except XapiError as e:
            text = wire.response_failure(e.error)
        except Exception as e:
            traceback.print_exc()
            text = wire.response_failure(["INTERNAL_ERROR", str(e)])
        self._simple(200, "text/xml", text.encode("utf-8"),
                     extra=[("Access-Control-Allow-Origin", "*"),
                            ("Access-Control-Allow-Headers", "X-Requested-With")])

    def _jsonrpc(self):
        body = self._body()
        try:
            req = json.loads(body)
            name, params, req_id = req["method"], req.get("params", []), req["id"]
            v2 = req.get("jsonrpc") == "2.0"
            if not isinstance(params, list):
                raise ValueError("params must be a list")
        except (ValueError, KeyError, TypeError) as e:
            return self._simple(500, "text/html", ("<html><body>%s</body></html>"
                                                   % wire.escape(str(e))).encode(), close=True)
        try:
            text = wire.json_response(req_id, v2, self.app.sim.dispatch(name, params, self._ctx()))
        except XapiError as e:
            text = wire.json_response(req_id, v2, error=e.error)
        except Exception as e:
            traceback.print_exc()
            text = wire.json_response(req_id, v2, error=["INTERNAL_ERROR", str(e)])
        self._simple(200, "application/json", text.encode("utf-8"),
                     extra=[("Access-Control-Allow-Origin", "*")])

    def _control(self, method, path, query):
        body = self._body() if method == "POST" else b""
        status, obj = self.app.control.handle(method, path, query, body)
        self._simple(status, "application/json", (json.dumps(obj, indent=1) + "\n").encode())


class App:
    """Everything the request handlers need."""

    def __init__(self, sim, nbd, control, verbose):
        self.sim = sim
        self.nbd = nbd
        self.control = control
        self.verbose = verbose


def make_certificate(tls_dir, subject, extra_names):
    """Self-signed certificate (its own CA) made with the openssl CLI.

    Returns the PEM text.  nbdkit wants ca-cert.pem, server-cert.pem and
    server-key.pem in one directory; clients are given ca-cert.pem (the same
    certificate) to trust, as XenServer hands out its self-signed certificate."""
    os.makedirs(tls_dir, mode=0o700, exist_ok=True)
    cert = os.path.join(tls_dir, "server-cert.pem")
    key = os.path.join(tls_dir, "server-key.pem")
    ca = os.path.join(tls_dir, "ca-cert.pem")
    if not (os.path.exists(cert) and os.path.exists(key)):
        san = ["DNS:" + subject]
        for n in extra_names:
            entry = ("IP:" + n) if n.replace(".", "").isdigit() or ":" in n else ("DNS:" + n)
            if entry not in san:
                san.append(entry)
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                        "-keyout", key, "-out", cert, "-days", "3650", "-subj", "/CN=" + subject,
                        "-addext", "subjectAltName=" + ",".join(san),
                        "-addext", "extendedKeyUsage=serverAuth"],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.chmod(key, 0o600)
    with open(cert) as f:
        pem = f.read()
    with open(ca, "w") as f:
        f.write(pem)
    return pem


def write_json_atomically(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1)
        f.write("\n")
    os.rename(tmp, path)


def main(argv=None):
    p = argparse.ArgumentParser(description="XAPI (XenServer pool master) simulator")
    p.add_argument("--state", required=True, help="state directory (disks, certificate, logs)")
    p.add_argument("--port", type=int, default=0, help="HTTP port (0: pick a free one)")
    p.add_argument("--https-port", type=int, default=None,
                   help="HTTPS port (0: pick a free one; default: no HTTPS)")
    p.add_argument("--bind", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    p.add_argument("--user", default="root")
    p.add_argument("--password-file", help="file whose first line is the password "
                   "(default password: %s)" % DEFAULT_PASSWORD)
    p.add_argument("--hostname", default="localhost", help="host.hostname and certificate name")
    p.add_argument("--address", default="127.0.0.1", help="host.address")
    p.add_argument("--nbd-address", default=None, help="address in get_nbd_info (default: --address)")
    p.add_argument("--auth-delay", type=float, default=0.2,
                   help="seconds to wait before refusing a login (xapi: about 5)")
    p.add_argument("--vbd-wait", type=float, default=4.0,
                   help="seconds data_destroy waits for VBDs to go (xapi: 4)")
    p.add_argument("--vm", action="append", default=[], metavar="NAME=IMAGE[@SR][,IMAGE...]",
                   help="create a running VM at start with these disk images (copied) and "
                   "a CD drive holding the ISO library's ISO; SR is a uuid or cbt/nocbt; "
                   "repeatable")
    p.add_argument("--hosts", type=int, default=1,
                   help="hosts in the pool (default 1); member i is host<i> at 127.0.0.<i+1>")
    p.add_argument("--nbd-network", choices=["management", "dedicated", "ipv6"],
                   default="management",
                   help="where get_nbd_info points: the management network (default), a "
                   "dedicated network 127.0.1.<i+1>, or IPv6 ::1 (reported as ::1/128)")
    p.add_argument("--session-cap", type=int, default=500,
                   help="sessions kept per originator / user name (xapi: 500)")
    p.add_argument("--anon-session-cap", type=int, default=400,
                   help="sessions kept for root logins without an originator (xapi: 400)")
    p.add_argument("--nbd-delay-ms", type=int, default=0,
                   help="delay every NBD read by this many ms from the start (the fault "
                   "nbd_delay_ms; default 0)")
    p.add_argument("--ready-file", help="where to write the ready JSON (default STATE/ready.json)")
    p.add_argument("--verbose", action="store_true")
    a = p.parse_args(argv)
    if a.hosts < 1 or a.hosts > 200:
        p.error("--hosts must be between 1 and 200")
    if a.nbd_delay_ms < 0:
        p.error("--nbd-delay-ms must not be negative")

    state = os.path.abspath(a.state)
    os.makedirs(state, exist_ok=True)
    ready_file = os.path.abspath(a.ready_file or os.path.join(state, "ready.json"))
    if os.path.exists(ready_file):
        os.unlink(ready_file)  # never let a waiting test see a stale one
    password = DEFAULT_PASSWORD
    if a.password_file:
        with open(a.password_file) as f:
            password = f.readline().rstrip("\r\n")

    tls_dir = os.path.join(state, "tls")
    cert_pem = make_certificate(tls_dir, a.hostname, ["localhost", "127.0.0.1", a.address])
    # Addresses on the NBD network: the management address, 127.0.1.<i+1> on a
    # dedicated network (not in the certificates, as on real pools), or ::1 in
    # the CIDR form xapi stores PIF IPv6 addresses in.
    def nbd_address_of(i, mgmt):
        return {"management": mgmt, "dedicated": "127.0.1.%d" % (i + 1),
                "ipv6": "::1/128"}[a.nbd_network]

    def bind_of(address):
        return address.split("/")[0]
    master_nbd = a.nbd_address or nbd_address_of(0, a.address)
    members = []
    for i in range(1, a.hosts):
        name, address = "host%d" % i, "127.0.0.%d" % (i + 1)
        mdir = os.path.join(state, "tls-host%d" % i)
        members.append({"name": name, "address": address, "tls_dir": mdir,
                        "nbd_address": nbd_address_of(i, address),
                        "cert_pem": make_certificate(mdir, name, [address])})
    cfg = {"user": a.user, "password": password, "hostname": a.hostname, "address": a.address,
           "nbd_address": master_nbd, "subject": a.hostname,
           "auth_delay": a.auth_delay, "vbd_wait": a.vbd_wait, "members": members,
           "nbd_network": a.nbd_network, "session_cap": a.session_cap,
           "anon_session_cap": a.anon_session_cap}
    master_bind = a.bind
    if a.nbd_network != "management":
        try:
            master_bind = str(ipaddress.ip_address(bind_of(master_nbd)))
        except ValueError:
            pass  # a name: keep --bind
    nbd = NbdManager(state, tls_dir, master_bind, master_name=a.hostname)
    nbd.set_delay(a.nbd_delay_ms)   # applies to every nbdkit started from now on
    for m in members:
        nbd.add_host(m["name"], bind_of(m["nbd_address"]), m["tls_dir"])
    sim = Sim(cfg, state, cert_pem, nbd)

    vms = {}
    for spec in a.vm:
        name, _, images = spec.partition("=")
        disks = []
        for item in filter(None, images.split(",")):
            image, _, sr = item.partition("@")
            disks.append({"image": os.path.abspath(image), "sr": sr or None})
        try:
            vref = sim.create_vm(name, disks, cd=True)
        except (OSError, XapiError) as e:
            nbd.shutdown()
            sys.exit("xapisim: cannot create VM %s: %s" % (name, e))
        desc = sim.describe_vm(vref)
        vms[name] = {"uuid": desc["uuid"],
                     "vdis": [d["vdi"] for d in desc["disks"] if d["vdi"] and d["type"] == "Disk"]}

    servers = []
    http_srv = Server((a.bind, a.port), Handler)
    servers.append(http_srv)
    https_srv = None
    if a.https_port is not None:
        https_srv = Server((a.bind, a.https_port), Handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(os.path.join(tls_dir, "server-cert.pem"),
                            os.path.join(tls_dir, "server-key.pem"))
        https_srv.socket = ctx.wrap_socket(https_srv.socket, server_side=True,
                                           do_handshake_on_connect=False)
        servers.append(https_srv)

    http_port = http_srv.server_address[1]
    https_port = https_srv.server_address[1] if https_srv else None
    for srv in servers:
        srv.sim_host, srv.sim_member = sim.host, None
    sim.host_ports[sim.host] = (http_port, https_port)

    # Each pool member has its own HTTP (and HTTPS, with its own certificate)
    # listener on its own address, on the master's port numbers when free.
    def member_server(address, port, tls_dir=None):
        try:
            srv = Server((address, port or 0), Handler)
        except OSError:
            srv = Server((address, 0), Handler)
        if tls_dir:
            mctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            mctx.load_cert_chain(os.path.join(tls_dir, "server-cert.pem"),
                                 os.path.join(tls_dir, "server-key.pem"))
            srv.socket = mctx.wrap_socket(srv.socket, server_side=True,
                                          do_handshake_on_connect=False)
        return srv
    hosts_info = [{"name": a.hostname, "uuid": sim.db["host"][sim.host]["uuid"],
                   "address": a.address, "nbd_address": master_nbd, "http_port": http_port,
                   "https_port": https_port, "ca_cert": os.path.join(tls_dir, "ca-cert.pem")}]
    for m, href in zip(members, sim.hosts[1:]):
        msrv = [member_server(m["address"], http_port)]
        if https_srv:
            msrv.append(member_server(m["address"], https_port, m["tls_dir"]))
        for srv in msrv:
            srv.sim_host, srv.sim_member = href, m["name"]
        servers.extend(msrv)
        ports = tuple(srv.server_address[1] for srv in msrv) + (None,)
        sim.host_ports[href] = ports[:2]
        hosts_info.append({"name": m["name"], "uuid": sim.db["host"][href]["uuid"],
                           "address": m["address"], "nbd_address": m["nbd_address"],
                           "http_port": ports[0], "https_port": ports[1],
                           "ca_cert": os.path.join(m["tls_dir"], "ca-cert.pem")})
    ready = {
        "pid": os.getpid(),
        "address": a.bind,
        "http_port": http_port,
        "https_port": https_port,
        "url": "http://%s:%d" % (a.bind, http_port),
        "https_url": ("https://%s:%d" % (a.hostname, https_port)) if https_srv else None,
        "control_url": "http://%s:%d/sim" % (a.bind, http_port),
        "ca_cert": os.path.join(tls_dir, "ca-cert.pem"),
        "tls_dir": tls_dir,
        "hostname": a.hostname,
        "user": a.user,
        "state_dir": state,
        "sr_cbt": sim.db["SR"][sim.sr_main]["uuid"],
        "sr_nocbt": sim.db["SR"][sim.sr_nocbt]["uuid"],
        "sr_iso": sim.db["SR"][sim.sr_iso]["uuid"],
        "iso_vdi": sim.db["VDI"][sim.iso_vdi]["uuid"],
        "vms": vms,
        "hosts": hosts_info,
        "sr_shared": sim.db["SR"][sim.sr_shared]["uuid"],
        "sr_local_host1": (sim.db["SR"][sim.sr_local_host1]["uuid"]
                           if sim.sr_local_host1 else None),
    }
    Handler.app = App(sim, nbd, Control(sim, nbd, ready), a.verbose)

    threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in servers]
    for t in threads:
        t.start()

    stop = threading.Event()

    def on_signal(signum, frame):
        stop.set()
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    write_json_atomically(ready_file, ready)
    if a.verbose:
        sys.stderr.write("xapisim: ready %s\n" % json.dumps(ready))
    try:
        while not stop.wait(1):
            pass
    finally:
        for s in servers:
            s.shutdown()
            s.server_close()
        nbd.shutdown()  # our nbdkit children go with us
        if os.path.exists(ready_file):
            os.unlink(ready_file)
    return 0


if __name__ == "__main__":
    sys.exit(main())
