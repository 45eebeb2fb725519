// SPDX-License-Identifier: Apache-2.0
//
// XML-RPC values as the XenAPI writes and reads them (pugixml does the XML).
// XenAPI quirks handled here: strings arrive as bare text inside <value>
// (no <string> tag), 64-bit integers arrive as digit strings, booleans only
// as <boolean>, empty containers as <data/> or <struct/>.  Requests are
// written the way xapi itself accepts them.
//
// Thread-safety: values; the free functions are reentrant.
#ifndef CBT_XAPI_XMLRPC_H_
#define CBT_XAPI_XMLRPC_H_

#include "util/status.h"

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace cbt::xapi {

class Value {
 public:
  enum class Kind { kString, kInt, kBool, kDouble, kDateTime, kArray, kStruct, kNil };

  Value() : kind_(Kind::kString) {}
  Value(const char* s) : kind_(Kind::kString), str_(s) {}             // NOLINT: implicit by design
  Value(std::string s) : kind_(Kind::kString), str_(std::move(s)) {}  // NOLINT
  static Value Int(int64_t v);
  static Value Bool(bool v);
  static Value Double(double v);
  static Value Array(std::vector<Value> items = {});
  static Value Struct(std::map<std::string, Value> members = {});
  static Value Nil();
  static Value DateTime(std::string text);

  Kind kind() const { return kind_; }
  bool IsArray() const { return kind_ == Kind::kArray; }
  bool IsStruct() const { return kind_ == Kind::kStruct; }

  // Text of a string-like value (string, int written as text, datetime).
  const std::string& str() const { return str_; }
  // Integer value: an <int>/<i4>/<i8>, or a string of digits as xapi sends.
  Result<int64_t> AsInt() const;
  // Boolean: <boolean>1</boolean>; also accepts "true"/"false" strings.
  Result<bool> AsBool() const;
  const std::vector<Value>& items() const { return items_; }
  const std::map<std::string, Value>& members() const { return members_; }
  // Member `name` of a struct, or nullptr.
  const Value* Find(const std::string& name) const;
  // Member as string ("" if absent), as int/bool (error if absent or wrong).
  std::string GetString(const std::string& name) const;
  Result<int64_t> GetInt(const std::string& name) const;
  Result<bool> GetBool(const std::string& name) const;
  // Strings of an array member (empty if absent).
  std::vector<std::string> GetStrings(const std::string& name) const;

  void Add(Value v) { items_.push_back(std::move(v)); }
  void Set(const std::string& name, Value v) { members_[name] = std::move(v); }

 private:
  Kind kind_;
  std::string str_;
  bool bool_ = false;
  double double_ = 0;
  std::vector<Value> items_;
  std::map<std::string, Value> members_;
  friend std::string EncodeValue(const Value& v);
};

// XML text of one <value> element.
std::string EncodeValue(const Value& v);
// A complete <methodCall> document.
std::string EncodeCall(const std::string& method, const std::vector<Value>& params);

// Parses a <value> fragment (as found in task results: "<value>...</value>").
Result<Value> ParseValue(const std::string& xml);

// The outcome of a XenAPI call: either the Value of a Success envelope, or
// the ErrorDescription of a Failure envelope ([code, params...]).
struct Response {
  bool success = false;
  Value value;
  std::vector<std::string> error;
};
// Parses a <methodResponse>.  Corruption (with a short excerpt) if the body
// is not XML-RPC or not a XenAPI Status envelope.
Result<Response> ParseResponse(const std::string& body);

}  // namespace cbt::xapi

#endif  // CBT_XAPI_XMLRPC_H_
