// SPDX-License-Identifier: Apache-2.0
#include "cli.h"

#include "image/composed_image.h"
#include "repo/disk_file.h"
#include "stream/vhd_stream.h"
#include "util/file.h"

#include <nlohmann/json.hpp>

#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <iostream>

namespace cbt::cli {

namespace {

Status WriteAllFd(int fd, const char* p, size_t n, const std::string& what) {
  while (n > 0) {
    ssize_t w = ::write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return Status::FromErrno(errno, what);
    }
    p += w;
    n -= static_cast<size_t>(w);
  }
  return Status::Ok();
}

// Writes the whole image to `fd`: at its offsets, skipping holes, when
// `sparse`; as one stream otherwise (stdout).
Status WriteRaw(const image::ComposedImage& img, int fd, bool sparse, const std::string& what) {
  std::vector<char> buf(4 << 20);
  const uint64_t size = img.size();
  uint64_t pos = 0;
  while (pos < size) {
    if (sparse) {
      uint64_t data = img.NextData(pos);
      if (data >= size) break;
      pos = data;
    }
    uint64_t end = sparse ? img.NextHole(pos) : size;
    end = std::min<uint64_t>(end, pos + buf.size());
    CBT_ASSIGN_OR_RETURN(size_t n, img.Read(buf.data(), end - pos, pos));
    if (sparse) {
      CBT_RETURN_IF_ERROR(PwriteAll(fd, buf.data(), n, pos, what));
    } else {
      CBT_RETURN_IF_ERROR(WriteAllFd(fd, buf.data(), n, what));
    }
    pos += n;
  }
  return Status::Ok();
}

int Run(const Globals& g, const po::variables_map& vm) {
  if (MissingOption(
          "export", vm,
          {{"vm", "--vm"}, {"point", "--point"}, {"disk", "--disk"}, {"output", "--output"}})) {
    return kExitUsage;
  }
  const std::string format = vm["format"].as<std::string>();
  if (format != "raw" && format != "vhd") {
    std::fprintf(stderr, "cbt-backup export: --format must be raw or vhd\n");
    return kExitUsage;
  }
  auto repo = OpenRepo(g, /*create=*/false);
  if (!repo.ok()) return Fail(repo.status());
  WarnInterruptedDeletes(*repo);
  auto img =
      image::ComposedImage::Open(*repo, vm["vm"].as<std::string>(), vm["point"].as<std::string>(),
                                 vm["disk"].as<std::string>());
  if (!img.ok()) return Fail(img.status());
  const std::string out = vm["output"].as<std::string>();
  const bool to_stdout = out == "-";
  if (to_stdout && ::isatty(STDOUT_FILENO)) {
    std::fprintf(stderr, "cbt-backup export: refusing to write a disk image to a terminal\n");
    return kExitUsage;
  }
  int fd = STDOUT_FILENO;
  UniqueFd owner;
  // Written under a temporary name and renamed at the end, so a failed
  // export never leaves a file that looks complete.
  const std::string tmp = out + ".part";
  if (!to_stdout) {
    ::unlink(tmp.c_str());
    auto f = CreateExclusive(tmp);
    if (!f.ok()) return Fail(f.status());
    owner = std::move(*f);
    fd = owner.get();
  }
  Status s;
  uint64_t written = 0;
  if (format == "raw") {
    s = WriteRaw(**img, fd, !to_stdout, out);
    if (s.ok() && !to_stdout && ::ftruncate(fd, static_cast<off_t>((*img)->size())) != 0) {
      s = Status::FromErrno(errno, out);
    }
    written = (*img)->size();
  } else {
    auto src = stream::SourceFromImage(*img);
    std::vector<bool> carry(repo::BlockCount((*img)->size()));
    for (uint64_t b = 0; b < carry.size(); ++b) carry[b] = (*img)->IsDataBlock(b);
    auto vhd = stream::VhdStream::Create(*src, std::move(carry));
    if (!vhd.ok()) {
      s = vhd.status();
    } else {
      std::vector<char> buf(4 << 20);
      while (s.ok()) {
        auto n = (*vhd)->Next(buf.data(), buf.size());
        if (!n.ok()) {
          s = n.status();
          break;
        }
        if (*n == 0) break;
        s = WriteAllFd(fd, buf.data(), *n, out);
        written += *n;
      }
    }
  }
  if (s.ok() && !to_stdout) s = Fsync(fd, out);
  if (!to_stdout) {
    if (s.ok() && ::rename(tmp.c_str(), out.c_str()) != 0) s = Status::FromErrno(errno, out);
    if (!s.ok()) ::unlink(tmp.c_str());
  }
  if (!s.ok()) return Fail(s);
  if (g.json) {
    std::cout << nlohmann::json{{"output", out}, {"format", format}, {"bytes", written}}.dump(2)
              << "\n";
  } else if (!to_stdout) {
    Info(g, "wrote " + out + " (" + format + ", " + HumanBytes(written) + ")");
  }
  return 0;
}

}  // namespace

Command ExportCommand() {
  return {"export", "write one disk of a point to a local raw or VHD file",
          "--vm UUID --point TIMESTAMP --disk VDI-UUID --format raw|vhd --output FILE|-",
          [](po::options_description& d, po::positional_options_description&) {
            d.add_options()("vm", po::value<std::string>(), "VM UUID")(
                "point", po::value<std::string>(), "point (timestamp)")(
                "disk", po::value<std::string>(), "original VDI UUID of the disk")(
                "format", po::value<std::string>()->default_value("raw"), "raw or vhd")(
                "output", po::value<std::string>(), "output file, or - for stdout");
          },
          Run};
}

}  // namespace cbt::cli
