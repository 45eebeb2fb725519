// SPDX-License-Identifier: Apache-2.0
#include "xapi/xmlrpc.h"

#include <pugixml.hpp>

#include <charconv>
#include <cstdio>
#include <cstring>

namespace cbt::xapi {

Value Value::Int(int64_t v) {
  Value x;
  x.kind_ = Kind::kInt;
  x.str_ = std::to_string(v);
  return x;
}
Value Value::Bool(bool v) {
  Value x;
  x.kind_ = Kind::kBool;
  x.bool_ = v;
  x.str_ = v ? "1" : "0";
  return x;
}
Value Value::Double(double v) {
  Value x;
  x.kind_ = Kind::kDouble;
  x.double_ = v;
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.16g", v);
  x.str_ = buf;
  return x;
}
Value Value::Array(std::vector<Value> items) {
  Value x;
  x.kind_ = Kind::kArray;
  x.items_ = std::move(items);
  return x;
}
Value Value::Struct(std::map<std::string, Value> members) {
  Value x;
  x.kind_ = Kind::kStruct;
  x.members_ = std::move(members);
  return x;
}
Value Value::Nil() {
  Value x;
  x.kind_ = Kind::kNil;
  return x;
}
Value Value::DateTime(std::string text) {
  Value x;
  x.kind_ = Kind::kDateTime;
  x.str_ = std::move(text);
  return x;
}

Result<int64_t> Value::AsInt() const {
  if (kind_ == Kind::kInt || kind_ == Kind::kString) {
    int64_t v = 0;
    auto [p, ec] = std::from_chars(str_.data(), str_.data() + str_.size(), v);
    if (ec == std::errc() && p == str_.data() + str_.size() && !str_.empty()) return v;
  }
  if (kind_ == Kind::kDouble) return static_cast<int64_t>(double_);
  return Status::Corruption("expected an integer, got '" + str_.substr(0, 40) + "'");
}

Result<bool> Value::AsBool() const {
  if (kind_ == Kind::kBool) return bool_;
  if (kind_ == Kind::kString && (str_ == "true" || str_ == "false")) return str_ == "true";
  return Status::Corruption("expected a boolean, got '" + str_.substr(0, 40) + "'");
}

const Value* Value::Find(const std::string& name) const {
  auto it = members_.find(name);
  return it == members_.end() ? nullptr : &it->second;
}

std::string Value::GetString(const std::string& name) const {
  const Value* v = Find(name);
  return v ? v->str() : "";
}

Result<int64_t> Value::GetInt(const std::string& name) const {
  const Value* v = Find(name);
  if (v == nullptr) return Status::Corruption("field '" + name + "' is missing");
  auto r = v->AsInt();
  if (!r.ok()) return r.status().WithContext("field '" + name + "'");
  return r;
}

Result<bool> Value::GetBool(const std::string& name) const {
  const Value* v = Find(name);
  if (v == nullptr) return Status::Corruption("field '" + name + "' is missing");
  auto r = v->AsBool();
  if (!r.ok()) return r.status().WithContext("field '" + name + "'");
  return r;
}

std::vector<std::string> Value::GetStrings(const std::string& name) const {
  std::vector<std::string> out;
  const Value* v = Find(name);
  if (v == nullptr) return out;
  for (const auto& item : v->items()) out.push_back(item.str());
  return out;
}

namespace {

std::string Escape(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    switch (c) {
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '&':
        out += "&amp;";
        break;
      case '"':
        out += "&quot;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

Result<Value> FromNode(const pugi::xml_node& value_node, int depth) {
  if (depth > 64) return Status::Corruption("XML-RPC value nested too deeply");
  pugi::xml_node inner;
  for (pugi::xml_node c = value_node.first_child(); c; c = c.next_sibling()) {
    if (c.type() == pugi::node_element) {
      inner = c;
      break;
    }
  }
  if (!inner) return Value(std::string(value_node.text().get()));  // bare text: a string
  std::string tag = inner.name();
  if (tag == "string") return Value(std::string(inner.text().get()));
  if (tag == "int" || tag == "i4" || tag == "i8") {
    Value v = Value(std::string(inner.text().get()));
    auto i = v.AsInt();
    if (!i.ok()) return i.status();
    return Value::Int(*i);
  }
  if (tag == "boolean") {
    std::string t = inner.text().get();
    if (t != "0" && t != "1") return Status::Corruption("bad XML-RPC boolean '" + t + "'");
    return Value::Bool(t == "1");
  }
  if (tag == "double") return Value::Double(std::strtod(inner.text().get(), nullptr));
  if (tag == "dateTime.iso8601") return Value::DateTime(inner.text().get());
  if (tag == "nil") return Value::Nil();
  if (tag == "array") {
    Value arr = Value::Array();
    pugi::xml_node data = inner.child("data");
    if (!data) return Status::Corruption("XML-RPC array without <data>");
    for (pugi::xml_node v = data.child("value"); v; v = v.next_sibling("value")) {
      CBT_ASSIGN_OR_RETURN(Value item, FromNode(v, depth + 1));
      arr.Add(std::move(item));
    }
    return arr;
  }
  if (tag == "struct") {
    Value st = Value::Struct();
    for (pugi::xml_node m = inner.child("member"); m; m = m.next_sibling("member")) {
      pugi::xml_node v = m.child("value");
      if (!m.child("name") || !v) return Status::Corruption("XML-RPC struct member malformed");
      CBT_ASSIGN_OR_RETURN(Value item, FromNode(v, depth + 1));
      st.Set(m.child("name").text().get(), std::move(item));
    }
    return st;
  }
  return Status::Corruption("unknown XML-RPC type <" + tag + ">");
}

std::string Excerpt(const std::string& body) {
  std::string e = body.substr(0, 120);
  for (char& c : e) {
    if (c == '\n' || c == '\r') c = ' ';
  }
  return e;
}

}  // namespace

std::string EncodeValue(const Value& v) {
  switch (v.kind_) {
    case Value::Kind::kString:
      return "<value>" + Escape(v.str_) + "</value>";
    case Value::Kind::kInt:
      // xapi reads 64-bit ints from strings; <i8> is accepted as well, but
      // the digit string is what every XenAPI client sends.
      return "<value>" + v.str_ + "</value>";
    case Value::Kind::kBool:
      return std::string("<value><boolean>") + (v.bool_ ? "1" : "0") + "</boolean></value>";
    case Value::Kind::kDouble:
      return "<value><double>" + v.str_ + "</double></value>";
    case Value::Kind::kDateTime:
      return "<value><dateTime.iso8601>" + Escape(v.str_) + "</dateTime.iso8601></value>";
    case Value::Kind::kNil:
      return "<value><nil/></value>";
    case Value::Kind::kArray: {
      std::string s = "<value><array><data>";
      for (const auto& item : v.items_) s += EncodeValue(item);
      return s + "</data></array></value>";
    }
    case Value::Kind::kStruct: {
      std::string s = "<value><struct>";
      for (const auto& [name, item] : v.members_) {
        s += "<member><name>" + Escape(name) + "</name>" + EncodeValue(item) + "</member>";
      }
      return s + "</struct></value>";
    }
  }
  return "<value></value>";
}

std::string EncodeCall(const std::string& method, const std::vector<Value>& params) {
  std::string s =
      "<?xml version=\"1.0\"?><methodCall><methodName>" + Escape(method) + "</methodName><params>";
  for (const auto& p : params) s += "<param>" + EncodeValue(p) + "</param>";
  return s + "</params></methodCall>";
}

Result<Value> ParseValue(const std::string& xml) {
  pugi::xml_document doc;
  if (!doc.load_buffer(xml.data(), xml.size(), pugi::parse_default, pugi::encoding_utf8)) {
    return Status::Corruption("task result is not XML: " + Excerpt(xml));
  }
  pugi::xml_node v = doc.child("value");
  if (!v) return Status::Corruption("task result is not an XML-RPC value: " + Excerpt(xml));
  return FromNode(v, 0);
}

Result<Response> ParseResponse(const std::string& body) {
  pugi::xml_document doc;
  if (!doc.load_buffer(body.data(), body.size(), pugi::parse_default, pugi::encoding_utf8)) {
    return Status::Corruption("malformed XML-RPC response: " + Excerpt(body));
  }
  pugi::xml_node resp = doc.child("methodResponse");
  if (!resp) return Status::Corruption("not an XML-RPC response: " + Excerpt(body));
  if (resp.child("fault")) {
    auto fault = FromNode(resp.child("fault").child("value"), 0);
    std::string msg = fault.ok() ? fault->GetString("faultString") : "";
    return Status::Corruption("server answered with an XML-RPC fault: " + msg);
  }
  pugi::xml_node v = resp.child("params").child("param").child("value");
  if (!v) return Status::Corruption("XML-RPC response without a value: " + Excerpt(body));
  CBT_ASSIGN_OR_RETURN(Value envelope, FromNode(v, 0));
  if (!envelope.IsStruct() || envelope.Find("Status") == nullptr) {
    return Status::Corruption("XML-RPC response is not a XenAPI envelope: " + Excerpt(body));
  }
  Response r;
  const std::string status = envelope.GetString("Status");
  if (status == "Success") {
    r.success = true;
    if (const Value* value = envelope.Find("Value")) r.value = *value;
    return r;
  }
  if (status != "Failure") {
    return Status::Corruption("XenAPI envelope has Status '" + status + "'");
  }
  const Value* err = envelope.Find("ErrorDescription");
  if (err == nullptr || !err->IsArray() || err->items().empty()) {
    return Status::Corruption("XenAPI failure without an ErrorDescription");
  }
  for (const auto& item : err->items()) r.error.push_back(item.str());
  return r;
}

}  // namespace cbt::xapi
