// SPDX-License-Identifier: Apache-2.0
#include "restore/vm_metadata.h"

#include <pugixml.hpp>

#include <cstdio>
#include <cstring>
#include <set>
#include <sstream>

namespace cbt::restore {

namespace {

constexpr size_t kBlock = 512;

// The text of an XML-RPC <value>: bare or inside <string>.
std::string ValueText(const pugi::xml_node& value) {
  pugi::xml_node str = value.child("string");
  return str ? str.text().get() : value.text().get();
}

void SetValueText(pugi::xml_node value, const std::string& text) {
  pugi::xml_node str = value.child("string");
  if (str) {
    str.text().set(text.c_str());
    return;
  }
  while (value.first_child()) value.remove_child(value.first_child());
  value.text().set(text.c_str());
}

// The <value> of member `name` of a <struct>, or an empty node.
pugi::xml_node Member(const pugi::xml_node& st, const char* name) {
  for (pugi::xml_node m : st.children("member")) {
    if (std::strcmp(m.child("name").text().get(), name) == 0) return m.child("value");
  }
  return {};
}

uint64_t ParseOctal(const char* p, size_t n) {
  uint64_t v = 0;
  for (size_t i = 0; i < n && p[i] != '\0' && p[i] != ' '; ++i) {
    if (p[i] < '0' || p[i] > '7') return UINT64_MAX;
    v = v * 8 + static_cast<uint64_t>(p[i] - '0');
  }
  return v;
}

}  // namespace

Result<HaltedMetadata> MakeHalted(const std::string& archive) {
  if (archive.size() < kBlock) return Status::Corruption("VM metadata: not a tar archive");
  std::string header = archive.substr(0, kBlock);
  const uint64_t size = ParseOctal(header.data() + 124, 12);
  if (size == UINT64_MAX || kBlock + size > archive.size() ||
      std::strncmp(header.data(), "ova.xml", 8) != 0) {
    return Status::Corruption("VM metadata: the archive does not start with ova.xml");
  }
  const std::string xml = archive.substr(kBlock, size);
  pugi::xml_document doc;
  if (!doc.load_buffer(xml.data(), xml.size())) {
    return Status::Corruption("VM metadata: ova.xml is not XML");
  }
  pugi::xml_node objects = Member(doc.child("value").child("struct"), "objects");
  pugi::xml_node data = objects.child("array").child("data");
  HaltedMetadata out;
  std::set<std::string> suspend_vdis;
  for (pugi::xml_node obj : data.children("value")) {
    pugi::xml_node st = obj.child("struct");
    if (ValueText(Member(st, "class")) != "VM") continue;
    pugi::xml_node snap = Member(st, "snapshot").child("struct");
    pugi::xml_node power = Member(snap, "power_state");
    if (!power || ValueText(power) != "Suspended") continue;
    out.was_suspended = true;
    SetValueText(power, "Halted");
    pugi::xml_node suspend = Member(snap, "suspend_VDI");
    if (suspend) {
      const std::string ref = ValueText(suspend);
      if (!ref.empty() && ref != "OpaqueRef:NULL") suspend_vdis.insert(ref);
      SetValueText(suspend, "OpaqueRef:NULL");
    }
  }
  if (!out.was_suspended) {
    out.archive = archive;
    return out;
  }
  // The suspend image's own object goes too: left in, import_metadata would
  // still look it up by SR and location.
  for (pugi::xml_node obj = data.child("value"); obj;) {
    pugi::xml_node next = obj.next_sibling("value");
    pugi::xml_node st = obj.child("struct");
    if (ValueText(Member(st, "class")) == "VDI" &&
        suspend_vdis.count(ValueText(Member(st, "id")))) {
      data.remove_child(obj);
    }
    obj = next;
  }
  std::ostringstream text;
  doc.save(text, "", pugi::format_raw | pugi::format_no_declaration);
  const std::string body = text.str();

  // Same header, new size and checksum; data padded to a block; two zero
  // blocks end the archive.
  std::snprintf(header.data() + 124, 12, "%011llo", static_cast<unsigned long long>(body.size()));
  std::memset(header.data() + 148, ' ', 8);
  unsigned sum = 0;
  for (unsigned char c : header) sum += c;
  std::snprintf(header.data() + 148, 8, "%06o", sum);
  header[155] = ' ';
  out.archive = header + body;
  out.archive.append((kBlock - body.size() % kBlock) % kBlock, '\0');
  out.archive.append(2 * kBlock, '\0');
  return out;
}

}  // namespace cbt::restore
