#!/usr/bin/env python3
"""An HTTP proxy in front of an S3 endpoint that injects faults, for tests.

usage: s3-fault-proxy.py UPSTREAM_PORT CONTROL_FILE READY_FILE

Listens on 127.0.0.1 (a free port, written to READY_FILE) and forwards every
request to 127.0.0.1:UPSTREAM_PORT unchanged (Host header included, so
signatures stay valid).  Before each request it reads CONTROL_FILE, a JSON
object of counters, and spends one unit of the first that is set:
  "drop":      close the connection without an answer
  "slowdown":  answer 503 SlowDown
  "internal":  answer 500 InternalError
  "full":      answer PUTs of more than 4 KiB (data, not locks) with 403
               QuotaExceeded (other requests pass)
and always sleeps "delay_ms" before forwarding.  Served faults are counted
in CONTROL_FILE under "served".
"""
import http.client
import http.server
import json
import os
import socket
import sys
import threading
import time

UPSTREAM = int(sys.argv[1])
CONTROL = sys.argv[2]
READY = sys.argv[3]
LOCK = threading.Lock()


def take_fault(method, length):
    with LOCK:
        try:
            with open(CONTROL) as f:
                ctl = json.load(f)
        except (OSError, ValueError):
            return None, 0
        fault = None
        for name in ("drop", "slowdown", "internal", "full"):
            if ctl.get(name, 0) > 0 and (name != "full" or (method == "PUT" and length > 4096)):
                ctl[name] -= 1
                served = ctl.setdefault("served", {})
                served[name] = served.get(name, 0) + 1
                fault = name
                break
        with open(CONTROL + ".tmp", "w") as f:
            json.dump(ctl, f)
        os.replace(CONTROL + ".tmp", CONTROL)
        return fault, ctl.get("delay_ms", 0)


ERRORS = {
    "slowdown": (503, "SlowDown", "Please reduce your request rate."),
    "internal": (500, "InternalError", "We encountered an internal error."),
    "full": (403, "QuotaExceeded", "The quota has been exceeded."),
}


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self, status, headers, body, head=False):
        self.send_response_only(status)
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def forward(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        fault, delay = take_fault(self.command, length)
        if fault == "drop":
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if fault in ERRORS:
            status, code, msg = ERRORS[fault]
            xml = ('<?xml version="1.0" encoding="UTF-8"?><Error><Code>%s</Code>'
                   '<Message>%s</Message></Error>' % (code, msg)).encode()
            self.answer(status, [("Content-Type", "application/xml"),
                                 ("Content-Length", str(len(xml)))], xml,
                        self.command == "HEAD")
            return
        if delay:
            time.sleep(delay / 1000.0)
        up = http.client.HTTPConnection("127.0.0.1", UPSTREAM, timeout=120)
        headers = {k: v for k, v in self.headers.items() if k.lower() != "connection"}
        up.request(self.command, self.path, body=body if length else None, headers=headers)
        resp = up.getresponse()
        data = resp.read()
        out = [(k, v) for k, v in resp.getheaders()
               if k.lower() not in ("transfer-encoding", "connection", "content-length")]
        if self.command == "HEAD":
            out.append(("Content-Length", resp.getheader("Content-Length", "0")))
        else:
            out.append(("Content-Length", str(len(data))))
        self.answer(resp.status, out, data, self.command == "HEAD")
        up.close()

    do_GET = do_PUT = do_HEAD = do_DELETE = do_POST = forward


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
server.daemon_threads = True
with open(READY + ".tmp", "w") as f:
    f.write(str(server.server_address[1]))
os.replace(READY + ".tmp", READY)
server.serve_forever()
