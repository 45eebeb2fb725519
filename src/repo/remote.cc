// SPDX-License-Identifier: Apache-2.0
#include "repo/remote.h"

#include "repo/block_store.h"
#include "repo/layout.h"
#include "util/file.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <functional>
#include <set>

namespace cbt::repo {

namespace {

constexpr int kWorkers = 16;        // ranged GETs in flight for read-ahead
constexpr size_t kMaxQueued = 256;  // read-ahead requests waiting
constexpr int kUploaders = 4;       // PUTs in flight for a commit
constexpr int kDownloaders = 8;     // points fetched at once by a sync

std::string Hex(const unsigned char* p, size_t n) {
  static const char* hex = "0123456789abcdef";
  std::string out;
  for (size_t i = 0; i < n; ++i) {
    out += hex[p[i] >> 4];
    out += hex[p[i] & 15];
  }
  return out;
}

// MD5 of a local file in hex, which is the ETag of an object written by one
// PUT; "" if it cannot be read.
std::string FileMd5(const std::string& path) {
  auto fd = OpenRead(path);
  if (!fd.ok()) return "";
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  if (!ctx || EVP_DigestInit_ex(ctx.get(), EVP_md5(), nullptr) != 1) return "";
  std::string buf(1 << 20, '\0');
  for (;;) {
    ssize_t n = ::read(fd->get(), buf.data(), buf.size());
    if (n < 0) return "";
    if (n == 0) break;
    EVP_DigestUpdate(ctx.get(), buf.data(), static_cast<size_t>(n));
  }
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_DigestFinal_ex(ctx.get(), md, &len);
  return Hex(md, len);
}

// True if the local file at `path` is the object `obj` (same size, and
// same MD5 as its ETag).
// The MD5 of a file of the working copy is kept in this extended attribute
// once known: a file is never changed in place (a new version is a new
// inode), so it stays true, and a sync need not read every file again.
constexpr char kMd5Attr[] = "user.cbt.md5";

void RememberMd5(const std::string& path, const std::string& md5) {
  (void)::lsetxattr(path.c_str(), kMd5Attr, md5.data(), md5.size(), 0);
}

bool SameAsObject(const std::string& path, const objstore::ObjectInfo& obj) {
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) return false;
  if (static_cast<uint64_t>(st.st_size) != obj.size) return false;
  char buf[64];
  const ssize_t n = ::lgetxattr(path.c_str(), kMd5Attr, buf, sizeof buf);
  if (n > 0) return std::string(buf, static_cast<size_t>(n)) == obj.etag;
  const std::string md5 = FileMd5(path);
  if (!md5.empty()) RememberMd5(path, md5);
  return md5 == obj.etag;
}

// Runs fn(i) for i in [0, n) on up to `threads` threads; returns the first
// error.
Status ParallelFor(size_t n, int threads, const std::function<Status(size_t)>& fn) {
  std::atomic<size_t> next{0};
  std::mutex mu;
  Status first;
  auto run = [&] {
    for (;;) {
      size_t i = next.fetch_add(1);
      if (i >= n) return;
      {
        std::lock_guard<std::mutex> g(mu);
        if (!first.ok()) return;
      }
      Status st = fn(i);
      if (!st.ok()) {
        std::lock_guard<std::mutex> g(mu);
        if (first.ok()) first = st;
      }
    }
  };
  std::vector<std::thread> pool;
  const size_t count = std::min<size_t>(n, static_cast<size_t>(threads));
  for (size_t t = 1; t < count; ++t) pool.emplace_back(run);
  run();
  for (auto& t : pool) t.join();
  return first;
}

// Holds an flock for its lifetime.
class FileLock {
 public:
  static Result<FileLock> Take(const std::string& path, bool wait) {
    int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) return Status::FromErrno(errno, path);
    UniqueFd owned(fd);
    if (::flock(fd, LOCK_EX | (wait ? 0 : LOCK_NB)) != 0) {
      if (errno == EWOULDBLOCK) return Status::Busy(path + " is locked");
      return Status::FromErrno(errno, path);
    }
    return FileLock(std::move(owned));
  }

 private:
  explicit FileLock(UniqueFd fd) : fd_(std::move(fd)) {}
  UniqueFd fd_;
};

bool IsSyncTemp(const std::string& name) { return name.rfind(".sync-", 0) == 0; }

}  // namespace

std::string PackKey(uint64_t id) {
  const std::string hex = PackIdHex(id);
  return "packs/" + hex.substr(0, 2) + "/" + hex + ".pack";
}

Result<std::string> WorkingCopyDir(const objstore::S3Settings& settings,
                                   const objstore::S3Url& url) {
  std::string base;
  if (const char* d = std::getenv("CBT_CACHE_DIR"); d != nullptr && *d != '\0') {
    base = d;
  } else if (const char* x = std::getenv("XDG_CACHE_HOME"); x != nullptr && *x != '\0') {
    base = JoinPath(x, "cbt-backup");
  } else if (const char* h = std::getenv("HOME"); h != nullptr && *h != '\0') {
    base = JoinPath(JoinPath(h, ".cache"), "cbt-backup");
  } else {
    return Status::InvalidArgument("no place for the working copy: set CBT_CACHE_DIR or HOME");
  }
  const std::string id = settings.endpoint + "\n" + url.bucket + "\n" + url.prefix;
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(id.data(), id.size(), md, &len, EVP_sha256(), nullptr);
  const std::string dir = JoinPath(base, "s3-" + Hex(md, 8));
  CBT_RETURN_IF_ERROR(MakeDirs(dir));
  ::chmod(base.c_str(), 0700);
  ::chmod(dir.c_str(), 0700);
  if (!IsRealDirectory(dir)) return Status::Corruption(dir + " is not a directory (a link?)");
  return dir;
}

Remote::Remote(std::unique_ptr<objstore::S3Client> client, uint64_t cache_bytes)
    : client_(std::move(client)),
      cache_bytes_(std::max<uint64_t>(cache_bytes, 8 * kRemoteChunkSize)) {}

Remote::~Remote() {
  {
    std::lock_guard<std::mutex> g(mu_);
    stop_ = true;
  }
  work_cv_.notify_all();
  for (auto& t : workers_) t.join();
}

Result<uint64_t> Remote::SizeOf(const std::string& key) const {
  {
    std::lock_guard<std::mutex> g(mu_);
    auto it = sizes_.find(key);
    if (it != sizes_.end()) return it->second;
  }
  CBT_ASSIGN_OR_RETURN(auto head, client_->Head(key));
  if (!head.has_value()) {
    return Status::NotFound(client_->url().ToString() + "/" + key + " does not exist");
  }
  std::lock_guard<std::mutex> g(mu_);
  sizes_[key] = head->size;
  return head->size;
}

void Remote::EvictLocked() const {
  while (cached_bytes_ > cache_bytes_ && !lru_.empty()) {
    ChunkKey victim = lru_.back();
    lru_.pop_back();
    auto it = chunks_.find(victim);
    if (it != chunks_.end()) {
      cached_bytes_ -= it->second->data.size();
      chunks_.erase(it);
    }
  }
}

void Remote::Fetch(const std::string& key, uint64_t size, uint64_t index,
                   const std::shared_ptr<Chunk>& chunk) const {
  const uint64_t off = index * kRemoteChunkSize;
  const uint64_t len = std::min<uint64_t>(kRemoteChunkSize, size - off);
  std::string data(len, '\0');
  Status st = client_->GetRange(key, off, len, data.data());
  std::lock_guard<std::mutex> g(mu_);
  chunk->ready = true;
  chunk->status = st;
  auto it = chunks_.find({key, index});
  if (!st.ok()) {
    // Not kept: the next reader asks again.
    if (it != chunks_.end() && it->second == chunk) chunks_.erase(it);
  } else {
    chunk->data = std::move(data);
    if (it != chunks_.end() && it->second == chunk) {
      lru_.push_front({key, index});
      chunk->lru = lru_.begin();
      chunk->in_lru = true;
      cached_bytes_ += chunk->data.size();
      EvictLocked();
    }
  }
  cv_.notify_all();
}

std::shared_ptr<Remote::Chunk> Remote::GetChunk(const std::string& key, uint64_t size,
                                                uint64_t index) const {
  std::unique_lock<std::mutex> lock(mu_);
  auto it = chunks_.find({key, index});
  if (it != chunks_.end()) {
    auto chunk = it->second;
    if (chunk->in_lru) lru_.splice(lru_.begin(), lru_, chunk->lru);
    cv_.wait(lock, [&] { return chunk->ready; });
    return chunk;
  }
  auto chunk = std::make_shared<Chunk>();
  chunks_.emplace(ChunkKey{key, index}, chunk);
  lock.unlock();
  Fetch(key, size, index, chunk);
  return chunk;
}

Status Remote::ReadAt(const std::string& key, uint64_t size, char* out, uint64_t len,
                      uint64_t off) const {
  if (off > size || len > size - off) {
    return Status::Corruption(client_->url().ToString() + "/" + key + ": read of " +
                              std::to_string(len) + " bytes at " + std::to_string(off) +
                              " beyond its " + std::to_string(size) + " bytes");
  }
  while (len > 0) {
    const uint64_t index = off / kRemoteChunkSize;
    const uint64_t in = off % kRemoteChunkSize;
    auto chunk = GetChunk(key, size, index);
    if (!chunk->status.ok()) return chunk->status;
    const uint64_t n = std::min<uint64_t>(len, chunk->data.size() - in);
    std::memcpy(out, chunk->data.data() + in, n);
    out += n;
    off += n;
    len -= n;
  }
  return Status::Ok();
}

void Remote::Worker() const {
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    work_cv_.wait(lock, [this] { return stop_ || !queue_.empty(); });
    if (stop_) return;
    auto [key, size, index, chunk] = queue_.front();
    queue_.pop_front();
    lock.unlock();
    Fetch(key, size, index, chunk);
    lock.lock();
  }
}

void Remote::Prefetch(const std::string& key, uint64_t size, uint64_t start, uint64_t end) const {
  end = std::min(end, size);
  if (start >= end) return;
  std::lock_guard<std::mutex> g(mu_);
  if (stop_) return;
  if (workers_.empty()) {
    for (int i = 0; i < kWorkers; ++i) workers_.emplace_back([this] { Worker(); });
  }
  for (uint64_t i = start / kRemoteChunkSize; i <= (end - 1) / kRemoteChunkSize; ++i) {
    if (queue_.size() >= kMaxQueued) break;
    if (chunks_.count({key, i}) != 0) continue;
    auto chunk = std::make_shared<Chunk>();
    chunks_.emplace(ChunkKey{key, i}, chunk);
    queue_.emplace_back(key, size, i, chunk);
  }
  work_cv_.notify_all();
}

objstore::PutOptions Remote::DataPut() const {
  objstore::PutOptions o;
  if (lock_days_ > 0) {
    o.lock_mode = lock_mode_;
    o.retain_until = objstore::FormatIsoTime(static_cast<int64_t>(::time(nullptr)) +
                                             int64_t{lock_days_} * 86400);
  }
  return o;
}

Result<std::string> Remote::RetainedUntil(const std::string& vm, const std::string& point) const {
  CBT_ASSIGN_OR_RETURN(auto head, client_->Head(vm + "/" + point + "/" + kManifestFile));
  if (!head.has_value() || head->retain_until.empty()) return std::string();
  auto until = objstore::ParseIsoTime(head->retain_until);
  const int64_t now = head->server_time != 0 ? head->server_time : ::time(nullptr);
  if (!until.has_value() || *until <= now) return std::string();
  return objstore::FormatIsoTime(*until);
}

Result<std::unique_ptr<objstore::Lease>> Remote::RegisterWriter(
    const std::string& holder_json) const {
  uint64_t id = 0;
  CBT_RETURN_IF_ERROR(RandomBytes(&id, sizeof id));
  const std::string key = "locks/writers/" + PackIdHex(id);
  // Registered first, then the collection's lock looked at: a collection
  // that starts meanwhile lists this registration (and skips), one that
  // was first is seen here (and waited for).
  for (int waited = 0;; ++waited) {
    CBT_ASSIGN_OR_RETURN(auto lease, objstore::Lease::Acquire(client_.get(), key, holder_json,
                                                              objstore::DefaultLeaseSeconds()));
    CBT_ASSIGN_OR_RETURN(auto gc, objstore::InspectLease(client_.get(), "locks/gc"));
    if (!gc.has_value() || !gc->live) return lease;
    lease.reset();
    if (waited >= 1800) {
      return Status::Busy("a garbage collection holds " + client_->url().ToString() +
                          "/locks/gc: " + gc->holder);
    }
    ::sleep(1);
  }
}

Result<std::unique_ptr<objstore::Lease>> Remote::LockForCollection(const std::string& holder_json,
                                                                   std::string* busy) const {
  auto lease = objstore::Lease::Acquire(client_.get(), "locks/gc", holder_json,
                                        objstore::DefaultLeaseSeconds());
  if (!lease.ok()) {
    if (lease.status().code() != Status::Code::kBusy) return lease.status();
    *busy = lease.status().message();
    return std::unique_ptr<objstore::Lease>();
  }
  CBT_ASSIGN_OR_RETURN(auto writers, client_->List("locks/writers/"));
  for (const auto& w : writers) {
    CBT_ASSIGN_OR_RETURN(auto state, objstore::InspectLease(client_.get(), w.key));
    if (state.has_value() && state->live) {
      *busy = "a writer is registered: " + state->holder;
      return std::unique_ptr<objstore::Lease>();
    }
  }
  return std::move(*lease);
}

Result<std::string> Remote::PutRootFileIfAbsent(const std::string& name,
                                                const std::string& content) const {
  objstore::PutOptions opt;
  opt.if_none_match = true;
  auto put = client_->Put(name, content, opt);
  if (!put.ok() && put.status().code() != Status::Code::kExists) return put.status();
  return client_->Get(name);
}

Status Remote::SyncDown(const std::string& root, const std::string& only_vm,
                        bool vm_locked_by_caller) const {
  CBT_ASSIGN_OR_RETURN(FileLock sync, FileLock::Take(JoinPath(root, ".sync.lock"), true));
  CBT_ASSIGN_OR_RETURN(auto objects, client_->List(only_vm.empty() ? "" : only_vm + "/"));
  std::map<std::string, const objstore::ObjectInfo*> by_key;
  for (const auto& o : objects) by_key[o.key] = &o;
  {
    std::lock_guard<std::mutex> g(mu_);
    for (const auto& o : objects) {
      if (o.key.rfind("packs/", 0) == 0) sizes_[o.key] = o.size;
    }
  }
  auto fetch_to = [&](const objstore::ObjectInfo& o, const std::string& path) -> Status {
    if (SameAsObject(path, o)) return Status::Ok();
    CBT_ASSIGN_OR_RETURN(std::string data, client_->Get(o.key));
    // Through a temporary and a rename: a reader sees the old file or the new.
    CBT_RETURN_IF_ERROR(WriteFileAtomic(path, data));
    RememberMd5(path, o.etag);
    return Status::Ok();
  };

  if (only_vm.empty()) {
    for (const char* name : {kConfigFile, kIdFile}) {
      auto it = by_key.find(name);
      if (it != by_key.end()) CBT_RETURN_IF_ERROR(fetch_to(*it->second, JoinPath(root, name)));
    }
    // Index files: every one the store has.  A local one the store lacks
    // is either a writer's, about to be uploaded, or one a collection
    // removed from the store: only the old ones are removed here.  A stale
    // index costs nothing but a failed reuse check.
    const std::string index_dir = JoinPath(root, "index");
    std::set<std::string> remote_index;
    std::vector<const objstore::ObjectInfo*> missing;
    for (const auto& o : objects) {
      if (o.key.rfind("index/", 0) != 0 || o.key.find('/', 6) != std::string::npos) continue;
      remote_index.insert(o.key.substr(6));
      if (!PathExists(JoinPath(root, o.key))) missing.push_back(&o);
    }
    if (!missing.empty()) {
      CBT_RETURN_IF_ERROR(MakeDir(index_dir));
      CBT_RETURN_IF_ERROR(ParallelFor(missing.size(), kUploaders, [&](size_t i) {
        return fetch_to(*missing[i], JoinPath(root, missing[i]->key));
      }));
    }
    if (auto names = ListDir(index_dir); names.ok()) {
      for (const auto& n : *names) {
        const std::string p = JoinPath(index_dir, n);
        struct stat st;
        if (remote_index.count(n) == 0 && ::lstat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode) &&
            st.st_mtime + 3600 < ::time(nullptr)) {
          ::unlink(p.c_str());
        }
      }
    }
  }

  // Committed points of the store: VM -> point -> object names.
  std::map<std::string, std::map<std::string, std::vector<const objstore::ObjectInfo*>>> points;
  std::set<std::string> remote_vms;
  for (const auto& o : objects) {
    const auto slash = o.key.find('/');
    if (slash == std::string::npos) continue;
    const std::string vm = o.key.substr(0, slash);
    if (!IsUuid(vm)) continue;
    remote_vms.insert(vm);
    const auto slash2 = o.key.find('/', slash + 1);
    if (slash2 == std::string::npos) continue;
    const std::string point = o.key.substr(slash + 1, slash2 - slash - 1);
    const std::string file = o.key.substr(slash2 + 1);
    if (!IsTimestamp(point) || file.empty() || file.find('/') != std::string::npos ||
        file[0] == '.') {
      continue;
    }
    points[vm][point].push_back(&o);
  }
  std::set<std::string> vms = remote_vms;
  if (only_vm.empty()) {
    if (auto local = ListDir(root); local.ok()) {
      for (const auto& n : *local) {
        if (IsUuid(n) && IsRealDirectory(JoinPath(root, n))) vms.insert(n);
      }
    }
  } else {
    vms = {only_vm};
  }

  for (const std::string& vm : vms) {
    const std::string vm_dir = JoinPath(root, vm);
    CBT_RETURN_IF_ERROR(MakeDirs(vm_dir));
    if (!IsRealDirectory(vm_dir)) return Status::Corruption(vm_dir + " is not a directory");
    std::optional<FileLock> vm_lock;
    if (!vm_locked_by_caller || vm != only_vm) {
      auto taken = FileLock::Take(JoinPath(vm_dir, kLockFile), false);
      if (!taken.ok()) continue;  // a local writer keeps this VM in step itself
      vm_lock.emplace(std::move(*taken));
    }
    auto& remote_points = points[vm];
    // Points new to the working copy are fetched several at once (a first
    // sync of a long history is one round trip per object otherwise).
    std::vector<std::pair<std::string, std::vector<const objstore::ObjectInfo*>*>> fresh;
    for (auto& [point, files] : remote_points) {
      const bool committed =
          std::any_of(files.begin(), files.end(), [&](const objstore::ObjectInfo* o) {
            return o->key.substr(o->key.rfind('/') + 1) == kManifestFile;
          });
      if (!committed) continue;
      // The manifest last, so the point is whole before it is seen (or,
      // for an existing point, its new layers are there before the
      // manifest that names them).
      std::stable_partition(files.begin(), files.end(), [](const objstore::ObjectInfo* o) {
        return o->key.substr(o->key.rfind('/') + 1) != kManifestFile;
      });
      const std::string point_dir = JoinPath(vm_dir, point);
      if (!IsRealDirectory(point_dir)) {
        fresh.emplace_back(point, &files);
        continue;
      }
      for (const auto* o : files) {
        CBT_RETURN_IF_ERROR(
            fetch_to(*o, JoinPath(point_dir, o->key.substr(o->key.rfind('/') + 1))));
      }
    }
    Status fetched = ParallelFor(fresh.size(), kDownloaders, [&](size_t i) -> Status {
      const std::string& point = fresh[i].first;
      const auto& files = *fresh[i].second;
      const std::string point_dir = JoinPath(vm_dir, point);
      const std::string temp =
          JoinPath(vm_dir, ".sync-" + std::to_string(::getpid()) + "-" + point);
      (void)RemoveTree(temp);
      CBT_RETURN_IF_ERROR(MakeDir(temp));
      Status st;
      for (const auto* o : files) {
        auto data = client_->Get(o->key);
        if (!data.ok()) {
          st = data.status();
          break;
        }
        const std::string path = JoinPath(temp, o->key.substr(o->key.rfind('/') + 1));
        st = WriteNewFile(path, *data);
        if (!st.ok()) break;
        RememberMd5(path, o->etag);
      }
      if (st.ok() && ::rename(temp.c_str(), point_dir.c_str()) != 0) {
        st = Status::FromErrno(errno, point_dir);
      }
      if (!st.ok()) (void)RemoveTree(temp);
      return st;
    });
    CBT_RETURN_IF_ERROR(fetched);
    // Points the store no longer has (deleted by another host): out of the
    // working copy, by a rename first, so readers see them go at once.
    if (auto local = ListDir(vm_dir); local.ok()) {
      for (const auto& n : *local) {
        const std::string p = JoinPath(vm_dir, n);
        if (IsSyncTemp(n)) {
          (void)RemoveTree(p);
          continue;
        }
        if (!IsTimestamp(n) || !IsRealDirectory(p)) continue;
        auto it = remote_points.find(n);
        bool committed = false;
        if (it != remote_points.end()) {
          for (const auto* o : it->second) {
            if (o->key.substr(o->key.rfind('/') + 1) == kManifestFile) committed = true;
          }
        }
        if (committed) continue;
        const std::string gone =
            JoinPath(vm_dir, ".sync-del-" + std::to_string(::getpid()) + "-" + n);
        if (::rename(p.c_str(), gone.c_str()) == 0) (void)RemoveTree(gone);
      }
    }
  }
  return Status::Ok();
}

Status Remote::UploadPack(const std::string& root, uint64_t id) const {
  const std::string path = PackPath(root, id);
  CBT_ASSIGN_OR_RETURN(UniqueFd fd, OpenRead(path));
  CBT_ASSIGN_OR_RETURN(uint64_t size, FileSize(fd.get(), path));
  objstore::PutOptions opt = DataPut();
  opt.if_none_match = true;  // pack ids are random: an existing one is not ours
  auto put = client_->PutFile(PackKey(id), fd.get(), size, opt);
  if (!put.ok()) return put.status();
  {
    std::lock_guard<std::mutex> g(mu_);
    sizes_[PackKey(id)] = size;
  }
  // The store has it now; readers in this process that opened the local
  // file keep it, later ones read the store.
  ::unlink(path.c_str());
  return Status::Ok();
}

PackUploader::PackUploader(const Remote* remote, std::string root)
    : remote_(remote), root_(std::move(root)) {}

PackUploader::~PackUploader() {
  {
    std::lock_guard<std::mutex> g(mu_);
    stop_ = true;
    queue_.clear();
  }
  cv_.notify_all();
  for (auto& t : threads_) t.join();
}

void PackUploader::Enqueue(uint64_t id) {
  std::lock_guard<std::mutex> g(mu_);
  queue_.push_back(id);
  if (threads_.size() < static_cast<size_t>(kUploaders)) threads_.emplace_back([this] { Work(); });
  cv_.notify_all();
}

void PackUploader::Work() {
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    cv_.wait(lock, [this] { return stop_ || !queue_.empty(); });
    if (queue_.empty()) return;  // stopped
    const uint64_t id = queue_.front();
    queue_.pop_front();
    ++busy_;
    const bool skip = !failed_.ok();
    lock.unlock();
    Status st = skip ? Status::Ok() : remote_->UploadPack(root_, id);
    lock.lock();
    --busy_;
    if (!st.ok() && failed_.ok()) failed_ = st;
    cv_.notify_all();
  }
}

Status PackUploader::Wait() {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [this] { return queue_.empty() && busy_ == 0; });
  return failed_;
}

Status Remote::PublishIndex(const std::string& index_file) const {
  CBT_ASSIGN_OR_RETURN(std::string data, ReadFile(index_file));
  const std::string name = index_file.substr(index_file.rfind('/') + 1);
  return client_->Put("index/" + name, data, DataPut()).status();
}

Status Remote::PublishPoint(const std::string& vm, const std::string& point,
                            const std::string& temp_dir,
                            const std::function<Status()>& before_manifest) const {
  CBT_ASSIGN_OR_RETURN(auto names, ListDir(temp_dir));
  std::vector<std::string> files;
  for (const auto& n : names) {
    if (n != kManifestFile) files.push_back(n);
  }
  const std::string prefix = vm + "/" + point + "/";
  CBT_RETURN_IF_ERROR(ParallelFor(files.size(), kUploaders, [&](size_t i) -> Status {
    const std::string path = JoinPath(temp_dir, files[i]);
    CBT_ASSIGN_OR_RETURN(UniqueFd fd, OpenRead(path));
    CBT_ASSIGN_OR_RETURN(uint64_t size, FileSize(fd.get(), path));
    return client_->PutFile(prefix + files[i], fd.get(), size, DataPut()).status();
  }));
  CBT_ASSIGN_OR_RETURN(std::string manifest, ReadFile(JoinPath(temp_dir, kManifestFile)));
  CBT_RETURN_IF_ERROR(before_manifest());
  objstore::PutOptions opt = DataPut();
  opt.if_none_match = true;
  auto put = client_->Put(prefix + kManifestFile, manifest, opt);
  if (!put.ok() && put.status().code() == Status::Code::kExists) {
    return Status::Exists("point " + point + " of VM " + vm + " already exists in " +
                          client_->url().ToString());
  }
  return put.status();
}

Status Remote::PublishVm(const std::string& root, const std::string& vm) const {
  CBT_ASSIGN_OR_RETURN(auto objects, client_->List(vm + "/"));
  std::map<std::string, const objstore::ObjectInfo*> remote;
  for (const auto& o : objects) remote[o.key] = &o;
  const std::string vm_dir = JoinPath(root, vm);
  std::set<std::string> local_keys;
  std::vector<std::pair<std::string, std::string>> uploads, manifest_uploads;  // key, path
  CBT_ASSIGN_OR_RETURN(auto points, ListDir(vm_dir));
  for (const auto& p : points) {
    const std::string dir = JoinPath(vm_dir, p);
    if (!IsTimestamp(p) || !IsRealDirectory(dir)) continue;
    CBT_ASSIGN_OR_RETURN(auto files, ListDir(dir));
    for (const auto& f : files) {
      if (f.find(".tmp") != std::string::npos) continue;
      const std::string key = vm + "/" + p + "/" + f;
      const std::string path = JoinPath(dir, f);
      local_keys.insert(key);
      auto it = remote.find(key);
      if (it != remote.end() && SameAsObject(path, *it->second)) continue;
      (f == kManifestFile ? manifest_uploads : uploads).emplace_back(key, path);
    }
  }
  auto upload = [&](const std::vector<std::pair<std::string, std::string>>& list) {
    return ParallelFor(list.size(), kUploaders, [&](size_t i) -> Status {
      CBT_ASSIGN_OR_RETURN(UniqueFd fd, OpenRead(list[i].second));
      CBT_ASSIGN_OR_RETURN(uint64_t size, FileSize(fd.get(), list[i].second));
      return client_->PutFile(list[i].first, fd.get(), size, DataPut()).status();
    });
  };
  CBT_RETURN_IF_ERROR(upload(uploads));
  CBT_RETURN_IF_ERROR(upload(manifest_uploads));
  // Removed points: manifests first (the point is gone for every reader),
  // then the rest; the lock object is not a point's.
  std::vector<std::string> gone_manifests, gone_rest;
  for (const auto& o : objects) {
    if (local_keys.count(o.key) != 0) continue;
    const auto slash = o.key.find('/', vm.size() + 1);
    if (slash == std::string::npos) continue;  // <vm>/lock and other VM-level objects
    const std::string point = o.key.substr(vm.size() + 1, slash - vm.size() - 1);
    if (!IsTimestamp(point)) continue;
    (o.key.substr(slash + 1) == kManifestFile ? gone_manifests : gone_rest).push_back(o.key);
  }
  for (const auto& k : gone_manifests) CBT_RETURN_IF_ERROR(client_->Delete(k));
  return ParallelFor(gone_rest.size(), kUploaders,
                     [&](size_t i) { return client_->Delete(gone_rest[i]); });
}

}  // namespace cbt::repo
