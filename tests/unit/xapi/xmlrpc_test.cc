// SPDX-License-Identifier: Apache-2.0
#include "xapi/xmlrpc.h"

#include "util/base64.h"
#include "xapi/cbt_bitmap.h"
#include "xapi/session.h"

#include <catch2/catch.hpp>

using namespace cbt;
using namespace cbt::xapi;

TEST_CASE("XmlRpc: a Success envelope with bare strings and digit-string ints", "[xapi]") {
  const std::string body =
      "<?xml version=\"1.0\"?><methodResponse><params><param><value><struct>"
      "<member><name>Status</name><value>Success</value></member>"
      "<member><name>Value</name><value><struct>"
      "<member><name>uuid</name><value>4b3e9a0c-1f2d-4c5b-8e7a-6d5c4b3a2f10</value></member>"
      "<member><name>virtual_size</name><value>10737418240</value></member>"
      "<member><name>cbt_enabled</name><value><boolean>1</boolean></value></member>"
      "<member><name>VBDs</name><value><array><data/></array></value></member>"
      "<member><name>other_config</name><value><struct/></value></member>"
      "<member><name>name_label</name><value><string>a &amp; b</string></value></member>"
      "<member><name>empty</name><value/></member>"
      "</struct></value></member></struct></value></param></params></methodResponse>";
  auto r = ParseResponse(body);
  REQUIRE(r.ok());
  REQUIRE(r->success);
  CHECK(r->value.GetString("uuid") == "4b3e9a0c-1f2d-4c5b-8e7a-6d5c4b3a2f10");
  CHECK(*r->value.GetInt("virtual_size") == 10737418240LL);
  CHECK(*r->value.GetBool("cbt_enabled"));
  CHECK(r->value.GetStrings("VBDs").empty());
  CHECK(r->value.GetString("name_label") == "a & b");
  CHECK(r->value.GetString("empty").empty());
}

TEST_CASE("XmlRpc: a Failure envelope gives the ErrorDescription", "[xapi]") {
  const std::string body =
      "<?xml version=\"1.0\"?><methodResponse><params><param><value><struct>"
      "<member><name>Status</name><value>Failure</value></member>"
      "<member><name>ErrorDescription</name><value><array><data><value>HOST_IS_SLAVE</value>"
      "<value>192.0.2.1</value></data></array></value></member>"
      "</struct></value></param></params></methodResponse>";
  auto r = ParseResponse(body);
  REQUIRE(r.ok());
  CHECK_FALSE(r->success);
  CHECK(r->error == std::vector<std::string>{"HOST_IS_SLAVE", "192.0.2.1"});
  CHECK(DescribeError(r->error, "session.login_with_password").find("192.0.2.1") !=
        std::string::npos);
}

TEST_CASE("XmlRpc: malformed bodies are errors, not crashes", "[xapi]") {
  CHECK(ParseResponse("").status().IsCorruption());
  CHECK(ParseResponse("<html>500</html>").status().IsCorruption());
  CHECK(ParseResponse("<methodResponse><params><param><value><struct><member><name>Status"
                      "</name><value>Weird</value></member></struct></value></param></params>"
                      "</methodResponse>")
            .status()
            .IsCorruption());
  CHECK(ParseResponse("<methodResponse><params><param><value><boolean>7</boolean></value>"
                      "</param></params></methodResponse>")
            .status()
            .IsCorruption());
  std::string deep;
  for (int i = 0; i < 200; ++i) deep += "<value><array><data>";
  CHECK_FALSE(ParseResponse("<methodResponse><params><param>" + deep).ok());
}

TEST_CASE("XmlRpc: calls encode ints as digit strings and escape text", "[xapi]") {
  std::string call = EncodeCall(
      "VDI.create", {Value("OpaqueRef:x"), Value::Struct({{"virtual_size", Value::Int(42)},
                                                          {"name_label", Value("<a&b>")},
                                                          {"sharable", Value::Bool(false)}})});
  CHECK(call.find("<value>42</value>") != std::string::npos);
  CHECK(call.find("&lt;a&amp;b&gt;") != std::string::npos);
  CHECK(call.find("<boolean>0</boolean>") != std::string::npos);
}

TEST_CASE("XmlRpc: task results are parsed as XML-RPC values", "[xapi]") {
  auto v = ParseValue("<value>OpaqueRef:5e2c</value>");
  REQUIRE(v.ok());
  CHECK(v->str() == "OpaqueRef:5e2c");
  auto a = ParseValue("<value><array><data><value>OpaqueRef:1</value></data></array></value>");
  REQUIRE(a.ok());
  CHECK(a->items().size() == 1);
}

TEST_CASE("Backup: base64 bitmaps decode and map MSB-first to extents", "[backup]") {
  // 1 MiB disk, blocks 0 and 9 written: bytes 80 40.
  auto bm = DecodeBase64("gEA=");
  REQUIRE(bm.ok());
  REQUIRE(bm->size() == 2);
  auto ex = xapi::ExtentsFromBitmap(*bm, 1 << 20);
  REQUIRE(ex.size() == 2);
  CHECK(ex[0].offset == 0);
  CHECK(ex[0].length == 65536);
  CHECK(ex[1].offset == 9 * 65536);
  // Consecutive blocks merge; the last block is clipped to the disk size.
  auto all = xapi::ExtentsFromBitmap(std::string("\xff\xc0", 2), 10 * 65536 - 512);
  REQUIRE(all.size() == 1);
  CHECK(all[0].length == 10 * 65536 - 512);
  CHECK_FALSE(DecodeBase64("gEA").ok());
  CHECK_FALSE(DecodeBase64("g*A=").ok());
}
