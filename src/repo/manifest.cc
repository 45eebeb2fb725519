// SPDX-License-Identifier: Apache-2.0
#include "repo/manifest.h"

#include "repo/disk_file.h"
#include "repo/layout.h"
#include "util/block_codec.h"
#include "util/text.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <optional>
#include <stdexcept>

namespace cbt::repo {

using nlohmann::json;

namespace {

// A field of the wrong type.  nlohmann's own conversions turn 1e300 into an
// integer with undefined behaviour, so numbers are checked by hand.
struct FieldError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

uint64_t Unsigned(const json& o, const char* key, std::optional<uint64_t> fallback) {
  if (!o.contains(key)) {
    if (fallback) return *fallback;
    throw FieldError(std::string("'") + key + "' is missing");
  }
  const json& v = o[key];
  if (!v.is_number_unsigned()) throw FieldError(std::string("'") + key + "' is not a count");
  return v.get<uint64_t>();
}

int64_t Integer(const json& o, const char* key) {
  if (!o.contains(key) || !o[key].is_number_integer()) {
    throw FieldError(std::string("'") + key + "' is missing or not an integer");
  }
  return o[key].get<int64_t>();
}

}  // namespace

std::vector<std::string> DiskRecord::Files() const {
  std::vector<std::string> names = {file};
  for (const auto& l : layers) names.push_back(l.file);
  return names;
}

const DiskRecord* Manifest::FindDisk(const std::string& vdi_uuid) const {
  for (const auto& d : disks) {
    if (d.vdi_uuid == vdi_uuid) return &d;
  }
  return nullptr;
}

Manifest NewManifest(const std::string& vm, const std::string& vm_name, const std::string& point,
                     const std::string& source) {
  Manifest m;
  m.vm_uuid = vm;
  m.vm_name = vm_name;
  m.point = point;
  m.created_by = std::string("cbt-backup ") + CBT_VERSION;
  m.source = source;
  return m;
}

DiskRecord NewDiskRecord(const std::string& vdi_uuid, const DiskFileWriter& w,
                         const std::string& parent_point, const std::string& reason) {
  DiskRecord d;
  d.vdi_uuid = vdi_uuid;
  d.virtual_size = w.virtual_size();
  d.file = DiskFileName(vdi_uuid);
  d.base = w.kind() == FileKind::kBase;
  d.parent_point = parent_point;
  d.data_blocks = w.data_blocks();
  d.zero_blocks = w.zero_blocks();
  d.stored_bytes = w.added_bytes();
  d.reason = d.base ? reason : "";
  return d;
}

std::string EncodeManifest(const Manifest& m) {
  json disks = json::array();
  int version = m.format_version;
  for (const auto& d : m.disks) {
    if (!d.layers.empty()) version = std::max(version, kManifestLayersVersion);
    json layers = json::array();
    for (const auto& l : d.layers) layers.push_back({{"file", l.file}, {"origin_point", l.origin}});
    disks.push_back({{"vdi_uuid", d.vdi_uuid},
                     {"name", d.name},
                     {"snapshot_vdi_uuid", d.snapshot_vdi_uuid},
                     {"userdevice", d.userdevice},
                     {"virtual_size", d.virtual_size},
                     {"block_size", kBlockSize},
                     {"file", d.file},
                     {"kind", d.base ? "base" : "overlay"},
                     {"parent_point", d.base ? json(nullptr) : json(d.parent_point)},
                     {"data_blocks", d.data_blocks},
                     {"zero_blocks", d.zero_blocks},
                     {"stored_bytes", d.stored_bytes},
                     {"reason", d.reason}});
    if (!d.layers.empty()) disks.back()["layers"] = layers;
  }
  json j = {{"format_version", version},      {"vm_uuid", m.vm_uuid},
            {"vm_name", m.vm_name},           {"point", m.point},
            {"created_by", m.created_by},     {"source", m.source},
            {"metadata_file", kMetadataFile}, {"disks", disks}};
  if (!m.power_state.empty()) j["power_state"] = m.power_state;
  if (!m.skipped_disks.empty()) {
    json skipped = json::array();
    for (const auto& d : m.skipped_disks) {
      skipped.push_back({{"vdi_uuid", d.vdi_uuid}, {"name", d.name}, {"reason", d.reason}});
    }
    j["skipped_disks"] = skipped;
  }
  // Names come from the server: invalid UTF-8 becomes U+FFFD, not an exception.
  return j.dump(2, ' ', false, json::error_handler_t::replace) + "\n";
}

Result<Manifest> DecodeManifest(const std::string& text, const std::string& what) {
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return Status::Corruption(what + ": manifest is not valid JSON");
  }
  try {
    Manifest m;
    const int64_t version = Integer(j, "format_version");
    if (version != kRepoFormatVersion && version != kManifestLayersVersion) {
      return Status::NotSupported(what + ": manifest format version " + std::to_string(version) +
                                  " is not supported");
    }
    m.format_version = static_cast<int>(version);
    m.vm_uuid = j.at("vm_uuid").get<std::string>();
    m.vm_name = j.value("vm_name", "");
    m.point = j.at("point").get<std::string>();
    m.created_by = j.value("created_by", "");
    m.source = j.value("source", "");
    m.power_state = j.value("power_state", "");
    if (j.contains("skipped_disks")) {
      if (!j["skipped_disks"].is_array()) {
        return Status::Corruption(what + ": 'skipped_disks' is not a list");
      }
      for (const auto& js : j["skipped_disks"]) {
        m.skipped_disks.push_back(
            {js.at("vdi_uuid").get<std::string>(), js.value("name", ""), js.value("reason", "")});
      }
    }
    if (!IsUuid(m.vm_uuid) || !IsTimestamp(m.point)) {
      return Status::Corruption(what + ": manifest has a malformed VM UUID or point name");
    }
    if (!j.at("disks").is_array()) return Status::Corruption(what + ": 'disks' is not a list");
    for (const auto& jd : j.at("disks")) {
      DiskRecord d;
      d.vdi_uuid = jd.at("vdi_uuid").get<std::string>();
      d.name = jd.value("name", "");
      d.snapshot_vdi_uuid = jd.value("snapshot_vdi_uuid", "");
      d.userdevice = jd.value("userdevice", "");
      d.virtual_size = Unsigned(jd, "virtual_size", std::nullopt);
      if (d.virtual_size > kMaxVirtualSize) throw FieldError("'virtual_size' is implausibly large");
      d.file = jd.at("file").get<std::string>();
      std::string kind = jd.at("kind").get<std::string>();
      if (kind != "base" && kind != "overlay") {
        return Status::Corruption(what + ": disk kind '" + kind + "' is unknown");
      }
      d.base = kind == "base";
      if (!d.base) d.parent_point = jd.at("parent_point").get<std::string>();
      d.data_blocks = Unsigned(jd, "data_blocks", 0);
      d.zero_blocks = Unsigned(jd, "zero_blocks", 0);
      d.stored_bytes = Unsigned(jd, "stored_bytes", 0);
      d.reason = jd.value("reason", "");
      if (jd.contains("layers")) {
        if (m.format_version < kManifestLayersVersion || !jd["layers"].is_array()) {
          return Status::Corruption(what + ": disk " + d.vdi_uuid + " has invalid layers");
        }
        // Layers are files of deleted points between the parent and this
        // point, newest first.
        std::string newer = m.point;
        for (const auto& jl : jd["layers"]) {
          Layer l{jl.at("file").get<std::string>(), jl.at("origin_point").get<std::string>()};
          if (!IsUuid(d.vdi_uuid) || !IsTimestamp(l.origin) || l.origin >= newer ||
              (!d.base && l.origin <= d.parent_point) ||
              l.file != LayerFileName(d.vdi_uuid, l.origin)) {
            return Status::Corruption(what + ": disk " + d.vdi_uuid + " has an invalid layer");
          }
          newer = l.origin;
          d.layers.push_back(std::move(l));
        }
      }
      if (Unsigned(jd, "block_size", kBlockSize) != kBlockSize || !IsUuid(d.vdi_uuid) ||
          d.file != DiskFileName(d.vdi_uuid) ||
          (!d.base && (!IsTimestamp(d.parent_point) || d.parent_point >= m.point))) {
        return Status::Corruption(what + ": disk record for '" + d.vdi_uuid + "' is invalid");
      }
      if (m.FindDisk(d.vdi_uuid) != nullptr) {
        return Status::Corruption(what + ": disk " + d.vdi_uuid + " is listed twice");
      }
      m.disks.push_back(std::move(d));
    }
    return m;
  } catch (const json::exception& e) {
    return Status::Corruption(what + ": manifest field missing or of the wrong type (" + e.what() +
                              ")");
  } catch (const FieldError& e) {
    return Status::Corruption(what + ": manifest field " + e.what());
  }
}

std::string EncodeConfig(const RepoConfig& config) {
  json j = {{"format", "cbt-backup repository"}, {"version", config.version}};
  if (config.version >= kStoreRepoFormatVersion) {
    j["compression"] = config.compress ? json{{"algorithm", "zstd"}, {"level", config.level}}
                                       : json{{"algorithm", "none"}};
    j["content_key"] = config.key == KeyAlgorithm::kBlake3 ? "blake3" : "sha256";
    if (config.lock_days > 0) {
      j["object_lock"] = {{"mode", config.lock_mode}, {"days", config.lock_days}};
    }
  }
  return j.dump(2) + "\n";
}

Result<RepoConfig> ParseConfig(const std::string& text, const std::string& what) {
  json j = json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object() || !j.contains("version") ||
      !j["version"].is_number_integer()) {
    return Status::Corruption(what + ": repository config is not valid");
  }
  RepoConfig c;
  const int64_t version = j["version"].get<int64_t>();
  if (version != kRepoFormatVersion && version != kStoreRepoFormatVersion) {
    return Status::NotSupported(what + ": repository format version " + std::to_string(version) +
                                " is not supported by this build (it reads versions " +
                                std::to_string(kRepoFormatVersion) + " and " +
                                std::to_string(kStoreRepoFormatVersion) + ")");
  }
  c.version = static_cast<int>(version);
  if (version == kRepoFormatVersion) return c;
  if (j.contains("object_lock")) {
    const json& lock = j["object_lock"];
    if (!lock.is_object() || !lock.contains("mode") || !lock["mode"].is_string() ||
        !lock.contains("days") || !lock["days"].is_number_integer()) {
      return Status::Corruption(what + ": repository config has no valid object_lock");
    }
    const std::string mode = lock["mode"].get<std::string>();
    const int64_t days = lock["days"].get<int64_t>();
    if ((mode != "GOVERNANCE" && mode != "COMPLIANCE") || days < 1 || days > 36500) {
      return Status::Corruption(what +
                                ": object_lock needs mode GOVERNANCE or COMPLIANCE and "
                                "1 to 36500 days");
    }
    c.lock_mode = mode;
    c.lock_days = static_cast<int>(days);
  }
  // Written before BLAKE3 keys: those repositories keep SHA-256, since
  // their stored blocks are found by it.
  c.key = KeyAlgorithm::kSha256;
  if (j.contains("content_key")) {
    if (!j["content_key"].is_string()) {
      return Status::Corruption(what + ": repository config has no valid content_key");
    }
    const std::string key = j["content_key"].get<std::string>();
    if (key == "blake3") {
      c.key = KeyAlgorithm::kBlake3;
    } else if (key != "sha256") {
      return Status::NotSupported(what + ": content key '" + Printable(key) +
                                  "' is not supported (blake3 or sha256)");
    }
  }
  const json* comp = j.contains("compression") ? &j["compression"] : nullptr;
  if (comp == nullptr || !comp->is_object() || !comp->contains("algorithm") ||
      !(*comp)["algorithm"].is_string()) {
    return Status::Corruption(what + ": repository config has no valid compression");
  }
  const std::string algo = (*comp)["algorithm"].get<std::string>();
  if (algo == "none") {
    c.compress = false;
    return c;
  }
  if (algo != "zstd") {
    return Status::NotSupported(what + ": compression '" + Printable(algo) +
                                "' is not supported (zstd or none)");
  }
  if (!comp->contains("level") || !(*comp)["level"].is_number_integer()) {
    return Status::Corruption(what + ": repository config has no valid zstd level");
  }
  const int64_t level = (*comp)["level"].get<int64_t>();
  if (level < kMinZstdLevel || level > kMaxZstdLevel || level == 0) {
    return Status::Corruption(what + ": zstd level " + std::to_string(level) + " is outside " +
                              std::to_string(kMinZstdLevel) + ".." + std::to_string(kMaxZstdLevel) +
                              " (0 excluded)");
  }
  c.level = static_cast<int>(level);
  return c;
}

}  // namespace cbt::repo
