// SPDX-License-Identifier: Apache-2.0
//
// The handlers of ops.h, each a function of what the path resolves to
// (tree.h), the open-file state behind fi->fh, the O_DIRECT bounce buffer
// policy of read, and the wrapper that keeps exceptions from libfuse.
#include "ops.h"

#include "description.h"
#include "readahead.h"

#include "repo/layout.h"
#include "util/file.h"
#include "util/text.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <syslog.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <memory>
#include <new>
#include <set>
#include <string>

namespace cbt::cbtfs {

namespace {

using cbt::image::ComposedImage;

// What an open file handle (fi->fh) points to.
struct OpenFile {
  std::shared_ptr<const ComposedImage> image;             // .raw
  std::shared_ptr<const cbt::image::VolumeImage> volume;  // partition or LV
  bool direct = false;                                    // image read with ReadDirect
  cbt::image::SequentialPrefetcher prefetch;              // image read through the page cache
  cbt::UniqueFd fd;                                       // VM_metadata
  std::string text;                                       // point.txt
};

Filesystem* Fs() { return &static_cast<Mount*>(fuse_get_context()->private_data)->fs; }

void LogError(const std::string& msg) {
  const std::string line = cbt::Printable(msg);
  syslog(LOG_ERR, "%s", line.c_str());
  std::fprintf(stderr, "cbtfs: %s\n", line.c_str());
}

// Runs a FUSE operation so that no exception reaches libfuse's C code (it
// would abort the daemon and leave a dead mount): out of memory becomes
// ENOMEM, anything else EIO, with a line in the log.
template <auto Op, typename... Args>
auto Guarded(Args... args) -> decltype(Op(args...)) {
  try {
    return Op(args...);
  } catch (const std::bad_alloc&) {
    LogError("out of memory");
    return -ENOMEM;
  } catch (const std::exception& e) {
    LogError(std::string("internal error: ") + e.what());
    return -EIO;
  } catch (...) {
    LogError("internal error");
    return -EIO;
  }
}

int DirAttr(const std::string& dir, struct stat* st) {
  struct stat real;
  if (::stat(dir.c_str(), &real) != 0) return -errno;
  st->st_mode = S_IFDIR | 0500;
  st->st_nlink = 2;
  st->st_mtim = real.st_mtim;
  st->st_ctim = real.st_mtim;
  st->st_atim = real.st_mtim;
  return 0;
}

int OpGetattr(const char* path, struct stat* st, struct fuse_file_info*) {
  Filesystem* fs = Fs();
  Node n = fs->Resolve(path);
  std::memset(st, 0, sizeof *st);
  st->st_uid = ::getuid();
  st->st_gid = ::getgid();
  const std::string& root = fs->repo().path();
  switch (n.kind) {
    case Node::Kind::kNone:
      return -ENOENT;
    case Node::Kind::kRoot:
      return DirAttr(root, st);
    case Node::Kind::kVm:
      return DirAttr(cbt::repo::VmDir(root, n.vm), st);
    case Node::Kind::kPoint:
      return DirAttr(cbt::repo::PointDir(root, n.vm, n.point), st);
    case Node::Kind::kLatest: {
      std::string target = fs->Newest(n.vm);
      int r = DirAttr(cbt::repo::PointDir(root, n.vm, target), st);
      if (r != 0) return r;
      st->st_mode = S_IFLNK | 0777;
      st->st_nlink = 1;
      st->st_size = static_cast<off_t>(target.size());
      return 0;
    }
    case Node::Kind::kMetadata: {
      int r = DirAttr(cbt::repo::PointDir(root, n.vm, n.point), st);
      struct stat real;
      std::string file =
          cbt::JoinPath(cbt::repo::PointDir(root, n.vm, n.point), cbt::repo::kMetadataFile);
      if (r != 0 || ::stat(file.c_str(), &real) != 0) return -ENOENT;
      st->st_mode = S_IFREG | 0400;
      st->st_nlink = 1;
      st->st_size = real.st_size;
      st->st_blocks = real.st_blocks;
      return 0;
    }
    case Node::Kind::kDescription: {
      int r = DirAttr(cbt::repo::PointDir(root, n.vm, n.point), st);
      st->st_mode = S_IFREG | 0400;
      st->st_nlink = 1;
      st->st_size = static_cast<off_t>(PointDescription(*fs, n).size());
      return r;
    }
    case Node::Kind::kVolumeDir:
      return DirAttr(cbt::repo::PointDir(root, n.vm, n.point), st);
    case Node::Kind::kVolume: {
      int r = DirAttr(cbt::repo::PointDir(root, n.vm, n.point), st);
      auto vol = fs->Volume(n);
      if (!vol) return -ENOENT;
      st->st_mode = S_IFREG | 0400;
      st->st_nlink = 1;
      st->st_size = static_cast<off_t>(vol->size());
      st->st_blocks = static_cast<blkcnt_t>(vol->size() / 512);
      st->st_blksize = cbt::repo::kBlockSize;
      return r;
    }
    case Node::Kind::kRaw: {
      // From the manifest: opening the image reads every index of its chain,
      // too much for an `ls -l` over many points of large disks.  Blocks are
      // exact once the image is open, an estimate before.
      int r = DirAttr(cbt::repo::PointDir(root, n.vm, n.point), st);
      auto m = fs->Manifest(n.vm, n.point);
      const cbt::repo::DiskRecord* d = m ? m->FindDisk(n.vdi) : nullptr;
      if (d == nullptr) return -ENOENT;
      auto img = fs->CachedImage(n);
      const uint64_t blocks =
          img ? img->DataBlockCount() : fs->EstimatedDataBlocks(n.vm, n.point, n.vdi);
      st->st_mode = S_IFREG | 0400;
      st->st_nlink = 1;
      st->st_size = static_cast<off_t>(d->virtual_size);
      st->st_blocks = static_cast<blkcnt_t>(blocks * (cbt::repo::kBlockSize / 512));
      st->st_blksize = cbt::repo::kBlockSize;
      return r;
    }
  }
  return -ENOENT;
}

int OpReadlink(const char* path, char* buf, size_t size) {
  Node n = Fs()->Resolve(path);
  if (n.kind != Node::Kind::kLatest) return -EINVAL;
  std::string target = Fs()->Newest(n.vm);
  if (size == 0) return -EINVAL;
  std::snprintf(buf, size, "%s", target.c_str());
  return 0;
}

int OpReaddir(const char* path, void* buf, fuse_fill_dir_t filler, off_t, struct fuse_file_info*,
              enum fuse_readdir_flags) {
  Filesystem* fs = Fs();
  Node n = fs->Resolve(path);
  auto add = [&](const std::string& name) {
    filler(buf, name.c_str(), nullptr, 0, static_cast<fuse_fill_dir_flags>(0));
  };
  add(".");
  add("..");
  switch (n.kind) {
    case Node::Kind::kRoot: {
      auto vms = fs->repo().ListVms();
      if (!vms.ok()) return vms.status().ToNegErrno();
      for (const auto& v : *vms) add(v);
      return 0;
    }
    case Node::Kind::kVm: {
      auto points = fs->repo().ListPoints(n.vm);
      if (!points.ok()) return points.status().ToNegErrno();
      for (const auto& p : *points) add(p);
      if (!points->empty()) add(kLatestName);
      return 0;
    }
    case Node::Kind::kPoint: {
      auto m = fs->Manifest(n.vm, n.point);
      if (!m) return -ENOENT;
      for (const auto& d : m->disks) add(d.vdi_uuid + kRawSuffix);
      add(cbt::repo::kMetadataFile);
      add(kDescriptionName);
      std::set<std::string> names;
      if (auto view = fs->Volumes(n.vm, n.point)) {
        for (const auto& v : view->found.volumes) names.insert(v.path.substr(0, v.path.find('/')));
      }
      for (const auto& name : names) add(name);
      return 0;
    }
    case Node::Kind::kVolumeDir: {
      std::set<std::string> names;
      if (auto view = fs->Volumes(n.vm, n.point)) {
        for (const auto& v : view->found.volumes) {
          if (v.path.rfind(n.rel + "/", 0) != 0) continue;
          std::string rest = v.path.substr(n.rel.size() + 1);
          names.insert(rest.substr(0, rest.find('/')));
        }
      }
      for (const auto& name : names) add(name);
      return 0;
    }
    case Node::Kind::kNone:
      return -ENOENT;
    default:
      return -ENOTDIR;
  }
}

int OpOpen(const char* path, struct fuse_file_info* fi) {
  if ((fi->flags & O_ACCMODE) != O_RDONLY) return -EROFS;
  Filesystem* fs = Fs();
  Node n = fs->Resolve(path);
  auto file = std::make_unique<OpenFile>();
  switch (n.kind) {
    case Node::Kind::kRaw: {
      auto img = fs->Image(n);
      if (!img.ok()) {
        LogError(img.status().message());
        // The point exists (its manifest names the disk): a data file of
        // its chain that is missing is damage, not a missing name.
        return img.status().IsNotFound() ? -EIO : img.status().ToNegErrno();
      }
      file->image = std::move(*img);
      file->direct = file->image->CanReadDirect();
      break;
    }
    case Node::Kind::kVolume: {
      file->volume = fs->Volume(n);
      if (!file->volume) return -ENOENT;
      break;
    }
    case Node::Kind::kMetadata: {
      auto fd = cbt::OpenRead(
          cbt::JoinPath(fs->repo().PointPath(n.vm, n.point), cbt::repo::kMetadataFile));
      if (!fd.ok()) return fd.status().ToNegErrno();
      file->fd = std::move(*fd);
      break;
    }
    case Node::Kind::kDescription:
      file->text = PointDescription(*fs, n);
      break;
    case Node::Kind::kNone:
      return -ENOENT;
    default:
      return -EISDIR;
  }
  // Disk contents and metadata are immutable: cached pages stay valid across
  // opens.  The description mentions the parent point, which a delete changes.
  fi->keep_cache = n.kind != Node::Kind::kDescription;
  fi->fh = reinterpret_cast<uint64_t>(file.release());
  return 0;
}

int OpRead(const char*, char* buf, size_t size, off_t off, struct fuse_file_info* fi) {
  auto* file = reinterpret_cast<OpenFile*>(fi->fh);
  if (off < 0) return -EINVAL;
  if (file->volume) {
    auto n = file->volume->Read(buf, size, static_cast<uint64_t>(off));
    if (!n.ok()) {
      LogError(n.status().message());
      return -EIO;
    }
    return static_cast<int>(*n);
  }
  if (file->direct) {
    const auto pos = static_cast<uint64_t>(off);
    if (file->image->AllHoles(pos, size)) {
      // A request over holes only (much of a thin disk) needs no device
      // read: zeros go straight into libfuse's buffer, with no copy.
      const uint64_t n =
          pos >= file->image->size() ? 0 : std::min<uint64_t>(size, file->image->size() - pos);
      std::memset(buf, 0, n);
      return static_cast<int>(n);
    }
    // libfuse hands us a buffer O_DIRECT cannot use (not aligned); a reused
    // aligned one per thread costs one copy and no allocation.  Reading into
    // buffers of our own that libfuse then frees was tried: glibc could not
    // reuse the freed aligned blocks, and cbtfs grew past 100 MiB.
    struct Free {
      void operator()(char* p) const { std::free(p); }
    };
    thread_local std::unique_ptr<char, Free> bounce;
    thread_local size_t bounce_size = 0;
    if (bounce_size < size) {
      const size_t want = (size + ComposedImage::kDirectAlign - 1) / ComposedImage::kDirectAlign *
                          ComposedImage::kDirectAlign;
      bounce.reset(static_cast<char*>(std::aligned_alloc(ComposedImage::kDirectAlign, want)));
      bounce_size = bounce ? want : 0;
      if (!bounce) return -ENOMEM;
    }
    auto n = file->image->ReadDirect(bounce.get(), size, pos);
    if (!n.ok()) {
      LogError(n.status().message());
      return -EIO;
    }
    std::memcpy(buf, bounce.get(), *n);
    return static_cast<int>(*n);
  }
  if (file->image) {
    file->prefetch.OnRead(*file->image, static_cast<uint64_t>(off), size);
    auto n = file->image->Read(buf, size, static_cast<uint64_t>(off));
    if (!n.ok()) {
      LogError(n.status().message());
      return -EIO;
    }
    return static_cast<int>(*n);
  }
  if (file->fd.valid()) {
    ssize_t n = ::pread(file->fd.get(), buf, size, off);
    return n < 0 ? -errno : static_cast<int>(n);
  }
  if (static_cast<size_t>(off) >= file->text.size()) return 0;
  size_t n = std::min(size, file->text.size() - static_cast<size_t>(off));
  std::memcpy(buf, file->text.data() + off, n);
  return static_cast<int>(n);
}

off_t OpLseek(const char*, off_t off, int whence, struct fuse_file_info* fi) {
  auto* file = reinterpret_cast<OpenFile*>(fi->fh);
  if (whence != SEEK_DATA && whence != SEEK_HOLE) return -EINVAL;
  uint64_t size = 0;
  if (file->volume) {
    size = file->volume->size();
  } else if (file->image) {
    size = file->image->size();
  } else if (file->fd.valid()) {
    struct stat st;
    if (::fstat(file->fd.get(), &st) != 0) return -errno;
    size = static_cast<uint64_t>(st.st_size);
  } else {
    size = file->text.size();
  }
  if (off < 0 || static_cast<uint64_t>(off) >= size) return -ENXIO;
  const auto pos = static_cast<uint64_t>(off);
  if (!file->image) return whence == SEEK_DATA ? off : static_cast<off_t>(size);
  uint64_t r = whence == SEEK_DATA ? file->image->NextData(pos) : file->image->NextHole(pos);
  if (whence == SEEK_DATA && r >= size) return -ENXIO;
  return static_cast<off_t>(r);
}

int OpRelease(const char*, struct fuse_file_info* fi) {
  delete reinterpret_cast<OpenFile*>(fi->fh);
  return 0;
}

int OpOpendir(const char* path, struct fuse_file_info*) {
  Node n = Fs()->Resolve(path);
  if (n.kind == Node::Kind::kNone) return -ENOENT;
  if (n.kind != Node::Kind::kRoot && n.kind != Node::Kind::kVm && n.kind != Node::Kind::kPoint &&
      n.kind != Node::Kind::kVolumeDir)
    return -ENOTDIR;
  return 0;
}

int OpStatfs(const char*, struct statvfs* st) {
  if (::statvfs(Fs()->repo().path().c_str(), st) != 0) return -errno;
  st->f_bavail = 0;
  st->f_bfree = 0;
  st->f_favail = 0;
  st->f_ffree = 0;
  return 0;
}

void* OpInit(struct fuse_conn_info* conn, struct fuse_config* cfg) {
  // New points must appear within a second; committed ones never change.
  cfg->entry_timeout = 1.0;
  cfg->attr_timeout = 1.0;
  cfg->negative_timeout = 0.0;
  cfg->kernel_cache = 1;
  auto* mount = static_cast<Mount*>(fuse_get_context()->private_data);
  conn->max_readahead = std::max<unsigned>(conn->max_readahead, mount->readahead_kb * 1024);
  RaiseReadahead(mount->mountpoint, mount->readahead_kb);
  return mount;
}

}  // namespace

fuse_operations Operations() {
  fuse_operations ops = {};
  ops.getattr = Guarded<OpGetattr, const char*, struct stat*, struct fuse_file_info*>;
  ops.readlink = Guarded<OpReadlink, const char*, char*, size_t>;
  ops.open = Guarded<OpOpen, const char*, struct fuse_file_info*>;
  ops.read = Guarded<OpRead, const char*, char*, size_t, off_t, struct fuse_file_info*>;
  ops.statfs = Guarded<OpStatfs, const char*, struct statvfs*>;
  ops.release = Guarded<OpRelease, const char*, struct fuse_file_info*>;
  ops.opendir = Guarded<OpOpendir, const char*, struct fuse_file_info*>;
  ops.readdir = Guarded<OpReaddir, const char*, void*, fuse_fill_dir_t, off_t,
                        struct fuse_file_info*, enum fuse_readdir_flags>;
  ops.lseek = Guarded<OpLseek, const char*, off_t, int, struct fuse_file_info*>;
  ops.init = OpInit;
  return ops;
}

}  // namespace cbt::cbtfs
