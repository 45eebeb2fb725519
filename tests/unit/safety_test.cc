// SPDX-License-Identifier: Apache-2.0
//
// Pieces that keep the backup host safe and real pools working: escaping of
// untrusted names, the repository id, symlinks in a repository, the
// suspended-VM metadata rewrite, get_nbd_info addresses.
#include "testutil.h"

#include "nbd/nbd_reader.h"
#include "repo/layout.h"
#include "repo/manifest.h"
#include "repo/repository.h"
#include "restore/vm_metadata.h"
#include "util/file.h"
#include "util/text.h"

#include <catch2/catch.hpp>

#include <unistd.h>

#include <cstring>
#include <set>
#include <thread>
#include <vector>

using namespace cbt;

TEST_CASE("Printable: control characters, C1 and bad UTF-8 are escaped", "[safety]") {
  CHECK(Printable("web01 root") == "web01 root");
  CHECK(Printable("caf\xc3\xa9") == "caf\xc3\xa9");  // valid UTF-8 stays
  CHECK(Printable("a\x1b[31mb") == "a\\x1b[31mb");
  CHECK(Printable("line\nforged") == "line\\x0aforged");
  CHECK(Printable("del\x7f") == "del\\x7f");
  CHECK(Printable("c1 \xc2\x9b") == "c1 \\xc2\\x9b");  // U+009B, a C1 CSI
  CHECK(Printable("bad \xff\xc3") == "bad \\xff\\xc3");
  CHECK(Printable("over \xc0\xaf") == "over \\xc0\\xaf");  // overlong '/'
  CHECK(Printable("back\\slash") == "back\\\\slash");
  const std::string out = Printable(std::string("\0\x01\x1f", 3));
  CHECK(out.find('\0') == std::string::npos);
  for (unsigned char c : Printable("\x1b\x9b\x07\r\t")) CHECK(c >= 0x20);
}

TEST_CASE("Repository id: made once, shared by concurrent creators, validated", "[safety]") {
  testing::TempDir dir;
  auto repo = repo::Repository::Open(dir.Sub("repo"), /*create=*/true);
  REQUIRE(repo.ok());
  CHECK(repo->Id(/*create=*/false).status().IsNotFound());
  std::vector<std::string> ids(8);
  std::vector<std::thread> threads;
  for (size_t i = 0; i < ids.size(); ++i) {
    threads.emplace_back([&, i] {
      auto id = repo->Id(/*create=*/true);
      if (id.ok()) ids[i] = *id;
    });
  }
  for (auto& t : threads) t.join();
  std::set<std::string> distinct(ids.begin(), ids.end());
  REQUIRE(distinct.size() == 1);
  CHECK(repo::IsUuid(*distinct.begin()));
  CHECK(*repo->Id(false) == *distinct.begin());
  REQUIRE(WriteFileAtomic(dir.Sub("repo/id"), "../../etc\n").ok());
  CHECK(repo->Id(true).status().code() == Status::Code::kCorruption);
}

TEST_CASE("NewUuid: random version 4 UUIDs", "[safety]") {
  auto a = repo::NewUuid();
  auto b = repo::NewUuid();
  REQUIRE(a.ok());
  REQUIRE(b.ok());
  CHECK(repo::IsUuid(*a));
  CHECK(*a != *b);
  CHECK((*a)[14] == '4');
}

TEST_CASE("Repository files are never read through a symbolic link", "[safety]") {
  testing::TempDir dir;
  REQUIRE(WriteNewFile(dir.Sub("secret"), "not yours").ok());
  REQUIRE(::symlink(dir.Sub("secret").c_str(), dir.Sub("link").c_str()) == 0);
  auto read = ReadFile(dir.Sub("link"));
  CHECK(read.status().code() == Status::Code::kCorruption);
  CHECK(read.status().message().find("symbolic link") != std::string::npos);
  CHECK(*ReadUserFile(dir.Sub("link")) == "not yours");  // a file the user named
  REQUIRE(MakeDir(dir.Sub("d")).ok());
  REQUIRE(::symlink(dir.Sub("d").c_str(), dir.Sub("dlink").c_str()) == 0);
  CHECK(IsDirectory(dir.Sub("dlink")));
  CHECK_FALSE(IsRealDirectory(dir.Sub("dlink")));
  CHECK(IsRealDirectory(dir.Sub("d")));
}

TEST_CASE("Manifest: skipped disks and power state round-trip", "[safety]") {
  repo::Manifest m;
  m.vm_uuid = "0f4b6c1e-2b7a-4c59-9d4e-6a3b2c1d0e9f";
  m.point = "20261126T184505Z";
  m.power_state = "Suspended";
  m.skipped_disks.push_back({"1f4b6c1e-2b7a-4c59-9d4e-6a3b2c1d0e9f", "shared\x1b", "sharable"});
  m.vm_name = std::string("bad \xff utf-8");  // encoded, not thrown on
  auto back = repo::DecodeManifest(repo::EncodeManifest(m), "test");
  REQUIRE(back.ok());
  CHECK(back->power_state == "Suspended");
  REQUIRE(back->skipped_disks.size() == 1);
  CHECK(back->skipped_disks[0].name == "shared\x1b");
  CHECK(back->skipped_disks[0].reason == "sharable");
}

TEST_CASE("get_nbd_info addresses: the IPv6 prefix length goes", "[safety]") {
  CHECK(nbd::HostOfAddress("fd00::5/64") == "fd00::5");
  CHECK(nbd::HostOfAddress("::1/128") == "::1");
  CHECK(nbd::HostOfAddress("192.168.0.7") == "192.168.0.7");
  CHECK(nbd::HostOfAddress("[fd00::5]") == "fd00::5");
}

namespace {

// A ustar archive with one member, as export_metadata sends it.
std::string Tar(const std::string& name, const std::string& body) {
  std::string h(512, '\0');
  std::memcpy(h.data(), name.data(), name.size());
  std::memcpy(h.data() + 100, "0000600", 7);
  std::snprintf(h.data() + 124, 12, "%011o", static_cast<unsigned>(body.size()));
  h[156] = '0';
  std::memcpy(h.data() + 257, "ustar", 5);
  std::memset(h.data() + 148, ' ', 8);
  unsigned sum = 0;
  for (unsigned char c : h) sum += c;
  std::snprintf(h.data() + 148, 8, "%06o", sum);
  std::string out = h + body;
  out.append((512 - body.size() % 512) % 512, '\0');
  out.append(1024, '\0');
  return out;
}

std::string Object(const std::string& cls, const std::string& id, const std::string& members) {
  return "<value><struct><member><name>class</name><value>" + cls +
         "</value></member><member><name>id</name><value>" + id +
         "</value></member><member><name>snapshot</name><value><struct>" + members +
         "</struct></value></member></struct></value>";
}

std::string Member(const std::string& name, const std::string& value) {
  return "<member><name>" + name + "</name><value>" + value + "</value></member>";
}

std::string Ova(const std::string& power, const std::string& suspend_vdi) {
  return "<value><struct><member><name>objects</name><value><array><data>" +
         Object("VM", "Ref:1",
                Member("power_state", power) + Member("suspend_VDI", suspend_vdi) +
                    Member("name_label", "web &amp; db")) +
         Object("VDI", "Ref:9", Member("name_label", "Suspend image")) +
         Object("VDI", "Ref:2", Member("name_label", "root")) +
         "</data></array></value></member></struct></value>";
}

}  // namespace

TEST_CASE("Metadata of a suspended VM is rewritten to a halted VM", "[safety]") {
  auto halted = restore::MakeHalted(Tar("ova.xml", Ova("Suspended", "Ref:9")));
  REQUIRE(halted.ok());
  CHECK(halted->was_suspended);
  const std::string& a = halted->archive;
  REQUIRE(a.size() % 512 == 0);
  // The header still checks out, and the member is the rewritten XML.
  unsigned sum = 0;
  for (size_t i = 0; i < 512; ++i)
    sum += (i >= 148 && i < 156) ? ' ' : static_cast<unsigned char>(a[i]);
  CHECK(std::strtoul(a.substr(148, 7).c_str(), nullptr, 8) == sum);
  const size_t size = std::strtoul(a.substr(124, 12).c_str(), nullptr, 8);
  const std::string xml = a.substr(512, size);
  CHECK(xml.find("Suspended") == std::string::npos);
  CHECK(xml.find("Halted") != std::string::npos);
  CHECK(xml.find("OpaqueRef:NULL") != std::string::npos);
  CHECK(xml.find("Suspend image") == std::string::npos);  // the image's VDI object is gone
  CHECK(xml.find("root") != std::string::npos);           // the disks stay
  CHECK(xml.find("web &amp; db") != std::string::npos);   // escapes kept

  const std::string running = Tar("ova.xml", Ova("Running", "OpaqueRef:NULL"));
  auto same = restore::MakeHalted(running);
  REQUIRE(same.ok());
  CHECK_FALSE(same->was_suspended);
  CHECK(same->archive == running);

  CHECK_FALSE(restore::MakeHalted("short").ok());
  CHECK_FALSE(restore::MakeHalted(Tar("other.xml", "<value/>")).ok());
}
