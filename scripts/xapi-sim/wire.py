"""XML-RPC and JSON-RPC encoding the way xapi does it.

xapi's printer differs from Python's xmlrpc.client in ways clients depend on:
strings are bare text inside <value> (never <string>), 64-bit ints are bare
digit strings (so they look like strings on the wire), the response is one
line, and API failures are a normal response with Status=Failure instead of an
XML-RPC <fault>.  So we write our own small printer and a lenient parser that
accepts every input form xapi accepts.
"""

import datetime
import json
import re
import xml.etree.ElementTree as ET


class DateTime:
    """A datetime value; kept distinct from str so it prints with its tag."""

    def __init__(self, when=None):
        if when is None:
            when = datetime.datetime.now(datetime.timezone.utc)
        elif isinstance(when, (int, float)):
            when = datetime.datetime.fromtimestamp(when, datetime.timezone.utc)
        self.when = when.replace(microsecond=0)

    def __str__(self):
        # xapi prints YYYYMMDDTHH:MM:SSZ (no dashes in the date, colons in the time).
        return self.when.strftime("%Y%m%dT%H:%M:%SZ")

    def __repr__(self):
        return "DateTime(%s)" % self

    def __eq__(self, other):
        return isinstance(other, DateTime) and self.when == other.when


EPOCH = DateTime(0)  # xapi's default for unset datetime fields


class I4(int):
    """An Int32 value (event.from's valid_ref_counts): ocaml-rpc prints it
    as <i4>, unlike the bare digit strings of int64 fields."""


def parse_datetime(text):
    text = text.strip()
    for fmt in ("%Y%m%dT%H:%M:%SZ", "%Y%m%dT%H:%M:%S", "%Y-%m-%dT%H:%M:%SZ",
                "%Y-%m-%dT%H:%M:%S"):
        try:
            d = datetime.datetime.strptime(text, fmt)
            return DateTime(d.replace(tzinfo=datetime.timezone.utc))
        except ValueError:
            pass
    raise ValueError("bad dateTime.iso8601 value %r" % text)


# Control characters other than TAB, LF and CR cannot be represented in XML 1.0;
# xapi drops them silently rather than failing the whole response.
_CTRL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f]")


def escape(text):
    text = _CTRL.sub("", text)
    return (text.replace("&", "&amp;").replace("<", "&lt;")
            .replace(">", "&gt;").replace('"', "&quot;"))


def to_xml(value):
    """Serialise one value as xapi does: '<value>...</value>' without declaration."""
    out = []
    _emit(value, out)
    return "".join(out)


def _emit(v, out):
    if isinstance(v, bool):  # before int: bool is a subclass of int
        out.append("<value><boolean>%d</boolean></value>" % (1 if v else 0))
    elif isinstance(v, I4):
        out.append("<value><i4>%d</i4></value>" % v)
    elif isinstance(v, int):
        out.append("<value>%d</value>" % v)
    elif isinstance(v, float):
        out.append("<value><double>%s</double></value>" % ("%.16g" % v))
    elif isinstance(v, DateTime):
        out.append("<value><dateTime.iso8601>%s</dateTime.iso8601></value>" % v)
    elif isinstance(v, str):
        out.append("<value>%s</value>" % escape(v))
    elif v is None:
        out.append("<value></value>")
    elif isinstance(v, (list, tuple, set)):
        out.append("<value><array><data>")
        for item in v:
            _emit(item, out)
        out.append("</data></array></value>")
    elif isinstance(v, dict):
        out.append("<value><struct>")
        for k, item in v.items():
            out.append("<member><name>%s</name>" % escape(str(k)))
            _emit(item, out)
            out.append("</member>")
        out.append("</struct></value>")
    else:
        raise TypeError("cannot serialise %r" % (v,))


def response_success(value):
    return ('<?xml version="1.0"?><methodResponse><params><param><value><struct>'
            "<member><name>Status</name><value>Success</value></member>"
            "<member><name>Value</name>" + to_xml(value) + "</member>"
            "</struct></value></param></params></methodResponse>")


def response_bare(value):
    """system.listMethods: the value without the Status/Value struct (api_server.ml)."""
    return ('<?xml version="1.0"?><methodResponse><params><param>' + to_xml(value) +
            "</param></params></methodResponse>")


def response_failure(error):
    return ('<?xml version="1.0"?><methodResponse><params><param><value><struct>'
            "<member><name>Status</name><value>Failure</value></member>"
            "<member><name>ErrorDescription</name>" + to_xml([str(e) for e in error]) +
            "</member></struct></value></param></params></methodResponse>")


class ParseError(Exception):
    pass


def parse_call(body):
    """Parse a methodCall; returns (method name, [params]). Raises ParseError."""
    try:
        root = ET.fromstring(body)
    except ET.ParseError as e:
        raise ParseError("XML parse error: %s" % e)
    if root.tag != "methodCall":
        raise ParseError("expected methodCall, got %s" % root.tag)
    name_el = root.find("methodName")
    if name_el is None or not (name_el.text or "").strip():
        raise ParseError("missing methodName")
    params = []
    params_el = root.find("params")
    if params_el is not None:
        for p in params_el:
            if p.tag != "param":
                raise ParseError("unexpected element %s in params" % p.tag)
            v = p.find("value")
            if v is None:
                raise ParseError("param without value")
            params.append(parse_value(v))
    return name_el.text.strip(), params


def parse_value(el):
    """Parse a <value> element into Python: str, int, bool, float, DateTime, list, dict, None."""
    children = list(el)
    if not children:
        # Bare text is a string; xapi keeps it verbatim (no stripping).
        return el.text or ""
    if len(children) != 1:
        raise ParseError("value with several children")
    c = children[0]
    tag, text = c.tag, c.text or ""
    if tag == "string":
        return text
    if tag in ("int", "i4", "i8"):
        try:
            return int(text.strip())
        except ValueError:
            raise ParseError("bad integer %r" % text)
    if tag == "boolean":
        # xapi: "1" is true, anything else false.
        return text.strip() == "1"
    if tag == "double":
        try:
            return float(text.strip())
        except ValueError:
            raise ParseError("bad double %r" % text)
    if tag == "dateTime.iso8601":
        try:
            return parse_datetime(text)
        except ValueError as e:
            raise ParseError(str(e))
    if tag == "base64":
        return text.strip()
    if tag == "nil":
        return None
    if tag == "array":
        data = c.find("data")
        if data is None:
            return []
        return [parse_value(v) for v in data if v.tag == "value"]
    if tag == "struct":
        result = {}
        for m in c:
            if m.tag != "member":
                raise ParseError("unexpected element %s in struct" % m.tag)
            n, v = m.find("name"), m.find("value")
            if n is None or v is None:
                raise ParseError("struct member without name or value")
            result[n.text or ""] = parse_value(v)
        return result
    raise ParseError("unknown value type %s" % tag)


# ---- JSON-RPC -----------------------------------------------------------------

def _json_ready(v):
    if isinstance(v, DateTime):
        return str(v)
    if isinstance(v, (list, tuple, set)):
        return [_json_ready(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _json_ready(x) for k, x in v.items()}
    return v


def json_response(req_id, version2, value=None, error=None):
    if version2:
        doc = {"jsonrpc": "2.0", "id": req_id}
        if error is None:
            doc["result"] = _json_ready(value)
        else:
            # The numeric code is always 1 in xapi's JSON-RPC v2 errors.
            doc["error"] = {"code": 1, "message": error[0], "data": list(error[1:])}
    else:
        doc = {"result": _json_ready(value) if error is None else None,
               "error": None if error is None else list(error), "id": req_id}
    return json.dumps(doc)
