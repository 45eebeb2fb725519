// SPDX-License-Identifier: Apache-2.0
#include "testutil.h"

#include "repo/disk_file.h"
#include "util/file.h"

#include <cstdlib>
#include <stdexcept>

namespace cbt::testing {

TempDir::TempDir() {
  std::string tmpl = TempRoot() + "/cbt-unit-XXXXXX";
  if (::mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
  path_ = tmpl;
}

TempDir::~TempDir() { (void)RemoveTree(path_); }

ScopedEnv::ScopedEnv(const char* name, const std::string& value) : name_(name) {
  const char* old = std::getenv(name);
  had_ = old != nullptr;
  if (had_) old_ = old;
  ::setenv(name, value.c_str(), 1);
}

ScopedEnv::~ScopedEnv() {
  if (had_) {
    ::setenv(name_, old_.c_str(), 1);
  } else {
    ::unsetenv(name_);
  }
}

TempRepository::TempRepository(const std::string& name) {
  auto r = repo::Repository::Open(dir.Sub(name), true);
  if (!r.ok()) throw std::runtime_error(r.status().message());
  repo = std::make_unique<repo::Repository>(*r);
}

std::vector<char> Block(uint32_t seed) {
  std::vector<char> b(repo::kBlockSize);
  uint32_t x = seed * 2654435761u + 1;
  for (auto& c : b) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    c = static_cast<char>(x);
  }
  b[0] = 1;
  return b;
}

std::shared_ptr<const repo::DiskFile> WriteDiskFile(
    const std::string& path, repo::FileKind kind, uint64_t size,
    const std::function<void(repo::DiskFileWriter&)>& fill) {
  auto w = repo::DiskFileWriter::Create(path, kind, size);
  if (!w.ok()) throw std::runtime_error(w.status().message());
  fill(**w);
  Status s = (*w)->Finish();
  if (!s.ok()) throw std::runtime_error(s.message());
  auto f = repo::DiskFile::Open(path);
  if (!f.ok()) throw std::runtime_error(f.status().message());
  return *f;
}

void TempChain::Add(const std::string& name, repo::FileKind kind, uint64_t size,
                    const std::function<void(repo::DiskFileWriter&)>& fill) {
  paths.push_back(dir.Sub(name));
  files.push_back(WriteDiskFile(paths.back(), kind, size, fill));
}

void TempChain::Compose() {
  std::vector<std::string> points;
  for (size_t i = 0; i < files.size(); ++i) points.push_back("p" + std::to_string(i));
  auto composed = image::ComposedImage::FromChain(files, points, {"vm", points.back(), "vdi"});
  if (!composed.ok()) throw std::runtime_error(composed.status().message());
  img = *composed;
}

}  // namespace cbt::testing
