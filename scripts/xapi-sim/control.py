"""The simulator's control interface: JSON over HTTP under /sim/.

Tests use it to do what a guest or an administrator would do on a real pool
(create VMs, write into disks, lose CBT, cut the network...) and to look
behind the curtain (disk file paths, NBD bytes read).  It is served on the
same ports as the API, only to 127.0.0.1, without authentication.
"""

import base64
import json
import os
import urllib.parse

from sim import XapiError, copy_file


def parse_size(v):
    """Bytes as an int or a string with an optional K, M, G or T suffix (powers of 1024)."""
    if isinstance(v, int):
        return v
    v = str(v).strip().upper().removesuffix("IB").removesuffix("B")
    mult = 1
    if v and v[-1] in "KMGT":
        mult = 1024 ** ("KMGT".index(v[-1]) + 1)
        v = v[:-1]
    return int(v) * mult


class ControlError(Exception):
    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


class Control:
    def __init__(self, sim, nbd, ready_info):
        self.sim = sim
        self.nbd = nbd
        self.ready_info = ready_info
        self.routes = {
            ("GET", "/sim/state"): self.state,
            ("GET", "/sim/vms"): self.list_vms,
            ("GET", "/sim/vdis"): self.list_vdis,
            ("GET", "/sim/vdi"): self.get_vdi,
            ("GET", "/sim/srs"): self.list_srs,
            ("POST", "/sim/vm"): self.create_vm,
            ("POST", "/sim/vms"): self.create_vms,
            ("POST", "/sim/vm/power"): self.vm_power,
            ("POST", "/sim/disk/write"): self.disk_write,
            ("POST", "/sim/disk/zero"): self.disk_zero,
            ("POST", "/sim/disk/replace"): self.disk_replace,
            ("POST", "/sim/disk/copy"): self.disk_copy,
            ("POST", "/sim/disk/cbt-lost"): self.cbt_lost,
            ("POST", "/sim/sr/cbt"): self.sr_cbt,
            ("GET", "/sim/faults"): self.get_faults,
            ("POST", "/sim/faults"): self.set_faults,
            ("GET", "/sim/nbd/stats"): self.nbd_stats,
            ("POST", "/sim/nbd/reset"): self.nbd_reset,
            ("POST", "/sim/nbd/drop"): self.nbd_drop,
            ("GET", "/sim/nbd/connections"): self.nbd_connections,
            ("GET", "/sim/sessions"): self.list_sessions,
        }

    def handle(self, method, path, query, body):
        """Returns (status, JSON-able object)."""
        fn = self.routes.get((method, path.rstrip("/")))
        if fn is None:
            return 404, {"error": "no such control endpoint: %s %s" % (method, path)}
        try:
            args = json.loads(body) if body else {}
            if not isinstance(args, dict):
                raise ControlError(400, "body must be a JSON object")
            for k, v in urllib.parse.parse_qsl(query):
                args.setdefault(k, v)
            return 200, fn(args)
        except ControlError as e:
            return e.status, {"error": str(e)}
        except XapiError as e:
            return 409, {"error": " ".join(e.error), "xapi_error": e.error}
        except (KeyError, ValueError, TypeError, OSError) as e:
            return 400, {"error": "%s: %s" % (type(e).__name__, e)}

    # ---- helpers ------------------------------------------------------------------------

    def _vdi(self, args):
        key = args.get("vdi")
        if not key:
            raise ControlError(400, "missing 'vdi' (uuid or ref)")
        with self.sim.lock:
            return self.sim.vdi_ref(key)

    def _vm(self, args):
        key = args.get("vm")
        if not key:
            raise ControlError(400, "missing 'vm' (uuid, ref or name)")
        with self.sim.lock:
            if key in self.sim.db["VM"]:
                return key
            for ref, rec in self.sim.db["VM"].items():
                if rec["uuid"] == key or rec["name_label"] == key:
                    return ref
        raise ControlError(404, "no VM %s" % key)

    def _fault_vdis(self, v):
        """VDI uuids named by a scoped fault: "vdi" (uuid or ref, or a list of
        them) and/or "vm" (uuid, ref or name: its disks, CD and suspend image
        left out)."""
        keys = v.get("vdi") or []
        if isinstance(keys, str):
            keys = [keys]
        with self.sim.lock:
            uuids = [self.sim.db["VDI"][self._vdi({"vdi": k})]["uuid"] for k in keys]
            if v.get("vm"):
                vm = self.sim.db["VM"][self._vm(v)]
                for vbd in vm["VBDs"]:
                    b = self.sim.db["VBD"][vbd]
                    if b["type"] == "Disk" and b["VDI"] in self.sim.db["VDI"]:
                        uuids.append(self.sim.db["VDI"][b["VDI"]]["uuid"])
        return uuids

    # ---- views --------------------------------------------------------------------------

    def state(self, args):
        return {"ready": self.ready_info, "vms": self.list_vms(args),
                "vdis": self.list_vdis(args), "srs": self.list_srs(args),
                "faults": self.get_faults(args), "nbd": self.nbd_stats(args)}

    def list_vms(self, args):
        with self.sim.lock:
            return [self.sim.describe_vm(r) for r in self.sim.db["VM"]]

    def list_vdis(self, args):
        with self.sim.lock:
            return [self.sim.describe_vdi(r) for r in self.sim.db["VDI"]]

    def get_vdi(self, args):
        ref = self._vdi(args)
        with self.sim.lock:
            return self.sim.describe_vdi(ref)

    def list_srs(self, args):
        with self.sim.lock:
            return [{"ref": r, "uuid": s["uuid"], "name_label": s["name_label"],
                     "type": s["type"], "cbt": self.sim.sr_has_cbt(r), "shared": s["shared"],
                     "hosts": [self.sim.host_name(self.sim.db["PBD"][p]["host"])
                               for p in s["PBDs"] if p in self.sim.db["PBD"]
                               and self.sim.db["PBD"][p]["host"] in self.sim.hosts],
                     "current_operations": dict(s["current_operations"]),
                     "allowed_operations": list(s["allowed_operations"])}
                    for r, s in self.sim.db["SR"].items()]

    def list_sessions(self, args):
        """Every session made since start; `valid` until logout or the cap."""
        with self.sim.lock:
            out = []
            for ref, e in self.sim.session_log.items():
                d = {k: v for k, v in e.items() if not k.startswith("_")}
                d["valid"] = ref in self.sim.db["session"]
                out.append(d)
            return out

    # ---- actions ------------------------------------------------------------------------

    def create_vm(self, args):
        disks = args.get("disks", [])
        for d in disks:
            if d.get("image") and not os.path.isfile(d["image"]):
                raise ControlError(400, "no such image file: %s" % d["image"])
        # "cd": true puts the ISO library's ISO in the drive, "empty" leaves it empty.
        cd = args.get("cd")
        cd = "empty" if cd == "empty" else bool(cd)
        ref = self.sim.create_vm(args.get("name", "test VM"), disks, cd,
                                 args.get("power_state", "Running"), host=args.get("host"),
                                 tags=args.get("tags"))
        return self._vm_answer(ref)

    def _vm_answer(self, ref):
        """A VM as POST /sim/vm answers: describe_vm plus its disk `vdis`."""
        with self.sim.lock:
            out = self.sim.describe_vm(ref)
            # Only the VM's own disks (not the ISO, not the suspend image).
            out["vdis"] = [self.sim.describe_vdi(self.sim.by_uuid("VDI", d["vdi"]))
                           for d in out["disks"] if d["vdi"] and d["type"] == "Disk"]
            return out

    def create_vms(self, args):
        """Many VMs in one call (a test control for pool-wide jobs): `count` VMs
        named <prefix>-01, <prefix>-02... each with `disks` disks of `size`
        bytes of generated content (`fill`, `seed`), made by create_vm."""
        count = int(args.get("count", 0))
        if not 1 <= count <= 1000:
            raise ControlError(400, "count must be between 1 and 1000")
        prefix = args.get("prefix") or "pool"
        first = int(args.get("start", 1))
        size = parse_size(args.get("size", 1 << 20))
        ndisks = int(args.get("disks", 1))
        if size <= 0 or ndisks < 0:
            raise ControlError(400, "size must be positive and disks not negative")
        fill = {"kind": args.get("fill") or "random", "seed": args.get("seed")}
        tags = args.get("tags") or []
        if isinstance(tags, str):
            tags = [tags]
        cd = args.get("cd")
        cd = "empty" if cd == "empty" else bool(cd)
        # hosts: true = every host of the pool (master first), or a list of
        # host names; VM i goes to the (i mod n)-th (resident_on when running,
        # affinity in any case, as create_vm does with `host`).
        hosts = args.get("hosts")
        with self.sim.lock:
            if hosts is True:
                hosts = [self.sim.host_name(h) for h in self.sim.hosts]
            elif isinstance(hosts, str):
                hosts = hosts.split(",")
            hosts = [self.sim.host_name(self.sim.host_by_name(h)) for h in hosts or []]
            width = max(2, len(str(first + count - 1)))
            names = ["%s-%0*d" % (prefix, width, first + i) for i in range(count)]
            taken = {r["name_label"] for r in self.sim.db["VM"].values()}
            clash = [n for n in names if n in taken]
            if clash:
                raise ControlError(409, "VM names already in use: %s (give another prefix "
                                   "or start)" % ", ".join(clash))
        out = []
        for i, name in enumerate(names):
            disks = [{"size": size, "sr": args.get("sr"), "cbt": bool(args.get("cbt")),
                      "fill": fill} for _ in range(ndisks)]
            ref = self.sim.create_vm(name, disks, cd, args.get("power_state", "Running"),
                                     host=hosts[i % len(hosts)] if hosts else None, tags=tags)
            out.append(self._vm_answer(ref))
        return out

    def vm_power(self, args):
        ref = self._vm(args)
        state = args.get("state")
        if state not in ("Running", "Halted"):
            raise ControlError(400, "state must be Running or Halted")
        with self.sim.lock:
            current = self.sim.db["VM"][ref]["power_state"]
            if current != state:
                if state == "Running" and current == "Suspended":
                    self.sim.vm_resume(None, ref, False, False)
                elif state == "Running":
                    self.sim.vm_start(None, ref, False, False)
                else:
                    self.sim.vm_shutdown(None, ref)
            return self.sim.describe_vm(ref)

    def disk_write(self, args):
        ref = self._vdi(args)
        offset = int(args.get("offset", 0))
        if "data_b64" in args:
            data = base64.b64decode(args["data_b64"])
        elif "file" in args:
            with open(args["file"], "rb") as f:
                f.seek(int(args.get("file_offset", 0)))
                length = args.get("length")
                data = f.read(int(length)) if length is not None else f.read()
        elif "pattern" in args:
            # A repeated byte value, handy for shell tests: {"pattern": 171, "length": N}
            data = bytes([int(args["pattern"]) & 0xFF]) * int(args["length"])
        else:
            raise ControlError(400, "need data_b64, file or pattern")
        self.sim.guest_write(ref, offset, data)
        return {"written": len(data), "offset": offset}

    def disk_zero(self, args):
        ref = self._vdi(args)
        self.sim.guest_zero(ref, int(args["offset"]), int(args["length"]))
        return {"zeroed": int(args["length"])}

    def disk_replace(self, args):
        ref = self._vdi(args)
        n = self.sim.guest_replace(ref, args["image"], bool(args.get("only_changed", True)))
        return {"blocks_written": n}

    def disk_copy(self, args):
        """Copy the disk's current content (e.g. a frozen snapshot) to `dest`."""
        ref = self._vdi(args)
        with self.sim.lock:
            path = self.sim.vdi_state[ref].path
            if path is None:
                raise ControlError(409, "VDI has no data (cbt_metadata)")
            copy_file(path, args["dest"])
        return {"dest": args["dest"], "size": os.path.getsize(args["dest"])}

    def cbt_lost(self, args):
        """CBT switched off by the system (e.g. inconsistent log after a crash)."""
        ref = self._vdi(args)
        with self.sim.lock:
            self.sim.drop_cbt(ref)
            return self.sim.describe_vdi(ref)

    def sr_cbt(self, args):
        """The SR loses (or regains) CBT by changing type: off makes it a
        `linstor` SR, whose SM has no VDI_CONFIG_CBT; on gives back its former
        type (`lvm`, or `nfs` if shared, for an SR that never had CBT).  So
        SR.type, the SM's features and allowed_operations agree."""
        from records import SR_OPS_CBT, sm_features
        key = args.get("sr")
        with self.sim.lock:
            sim = self.sim
            ref = sim.sr_alias(key)
            rec = sim.db["SR"][ref]
            if sm_features(rec["type"]) is not None:
                saved = sim.sr_cbt_types
                on = bool(args.get("enabled", True))
                if on and not sim.sr_has_cbt(ref):
                    rec["type"] = saved.pop(ref, "nfs" if rec["shared"] else "lvm")
                elif not on and sim.sr_has_cbt(ref):
                    saved[ref] = rec["type"]
                    rec["type"] = "linstor"
                sim.refresh_sr_operations(ref)
                return {"sr": rec["uuid"], "type": rec["type"], "cbt": sim.sr_has_cbt(ref),
                        "allowed_operations": list(rec["allowed_operations"])}
            ops = self.sim.db["SR"][ref]["allowed_operations"]
            ops[:] = [o for o in ops if o not in SR_OPS_CBT]
            if args.get("enabled", True):
                ops.extend(SR_OPS_CBT)
            return {"sr": self.sim.db["SR"][ref]["uuid"], "allowed_operations": list(ops)}

    def get_faults(self, args):
        with self.sim.lock:
            return {"host_is_slave": self.sim.faults.get("host_is_slave"),
                    "no_nbd": self.sim.nbd_mode() is None,
                    "nbd": self.nbd.fault_state(),
                    "auth_delay": self.sim.cfg["auth_delay"],
                    "task_stuck": self.sim.faults["task_stuck"],
                    "http_stall": self.sim.faults["http_stall"],
                    "sr_busy": {self.sim.db["SR"][sr]["uuid"]:
                                self.sim.db["SR"][sr]["current_operations"].get(t)
                                for sr, t in self.sim.faults["sr_busy"].items()}}

    def set_faults(self, args):
        sim = self.sim
        with sim.lock:
            if "host_is_slave" in args:
                v = args["host_is_slave"]
                if isinstance(v, str):
                    v = {"master": v}
                sim.faults["host_is_slave"] = v or None
            if "no_nbd" in args:
                # Like an administrator removing the "nbd" purpose from every
                # network; off gives each network back its purposes at start.
                for ref, n in sim.db["network"].items():
                    n["purpose"] = [] if args["no_nbd"] else \
                        list(getattr(sim, "default_purpose", {}).get(ref, ["nbd"]))
            if "task_stuck" in args:
                sim.faults["task_stuck"] = bool(args["task_stuck"])
            if "http_stall" in args:
                sim.faults["http_stall"] = bool(args["http_stall"])
            if "password" in args:
                sim.cfg["password"] = args["password"]
            if "auth_delay" in args:
                sim.cfg["auth_delay"] = float(args["auth_delay"])
        if "nbd_read_errors" in args:
            v = args["nbd_read_errors"]
            if isinstance(v, dict) and ("vdi" in v or "vm" in v):
                self.nbd.set_vdi_read_errors(self._fault_vdis(v), bool(v.get("on", True)),
                                             float(v["rate"]) if "rate" in v else None)
            elif isinstance(v, dict):
                self.nbd.set_read_errors(bool(v.get("on", True)), float(v.get("rate", 1.0)))
            else:
                self.nbd.set_read_errors(bool(v))
        if "nbd_delay_ms" in args:
            self.nbd.set_delay(int(args["nbd_delay_ms"]))
        if "nbd_wrong_cert" in args:
            self.nbd.set_wrong_cert(bool(args["nbd_wrong_cert"]))
        if "sr_busy" in args:
            v = args["sr_busy"]
            if not isinstance(v, dict) or "sr" not in v:
                raise ControlError(400, 'sr_busy wants {"sr": X, "on": true|false[, "op": OP]}')
            self.sim.set_sr_busy(self.sim.sr_alias(v["sr"]), bool(v.get("on", True)),
                                 v.get("op") or "scan")
        if "nbd_host_down" in args:
            v = args["nbd_host_down"]
            if v in (None, "", False, "off"):
                self.nbd.set_host_down(None)
            else:
                with self.sim.lock:
                    name = self.sim.host_name(self.sim.host_by_name(v))
                self.nbd.set_host_down(name)
        if "nbd_stall" in args:
            self.nbd.set_stall(bool(args["nbd_stall"]))
        if "nbd_drop_after" in args:
            v = args["nbd_drop_after"]
            if v is None:
                self.nbd.set_drop_after(None)
            elif isinstance(v, dict):
                self.nbd.set_drop_after(int(v["bytes"]), int(v.get("times", 1)))
            else:
                self.nbd.set_drop_after(int(v))
        return self.get_faults({})

    def nbd_stats(self, args):
        return self.nbd.snapshot_stats()

    def nbd_reset(self, args):
        self.nbd.reset_stats()
        return self.nbd.snapshot_stats()

    def nbd_drop(self, args):
        return {"dropped": self.nbd.drop_connections()}

    def nbd_connections(self, args):
        return self.nbd.connection_log()
