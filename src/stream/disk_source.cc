// SPDX-License-Identifier: Apache-2.0
//
// The two disk sources: a repository point, read with a prefetch window
// ahead of the stream, and a raw file whose holes come from SEEK_DATA.
#include "stream/disk_source.h"

#include "repo/disk_file.h"
#include "util/file.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <deque>
#include <mutex>

namespace cbt::stream {

namespace {

// Reads a repository point.  A stream reads it in increasing block order; a
// window of the blocks it will read next is asked of the kernel ahead of it,
// or each block's read from the repository would wait on the disk while the
// upload stalls.  Only blocks the reader will read are asked for: a
// changed-blocks restore reads 1% of a point, scattered.
class ImageSource : public DiskSource {
 public:
  explicit ImageSource(std::shared_ptr<const image::ComposedImage> img) : img_(std::move(img)) {}
  uint64_t size() const override { return img_->size(); }
  Result<size_t> Read(void* buf, size_t len, uint64_t off) const override {
    Ahead(off / repo::kBlockSize);
    return img_->Read(buf, len, off);
  }
  bool MayHoldData(uint64_t block) const override { return img_->IsDataBlock(block); }
  void ExpectReads(std::vector<bool> blocks) const override {
    {
      std::lock_guard<std::mutex> g(mu_);
      wanted_ = std::move(blocks);
      advised_.clear();
      next_ = 0;
    }
    // The first window now: its reads then overlap the upload's connection
    // and TLS handshake.
    Ahead(0);
  }

 private:
  static constexpr size_t kWindow = (128u << 20) / repo::kBlockSize;

  // The reader is at `block`: forget what it passed, and when less than half
  // the window lies ahead, advise the next wanted data blocks up to a full
  // window.  Every block is scanned once over the whole stream.
  void Ahead(uint64_t block) const {
    std::lock_guard<std::mutex> g(mu_);
    while (!advised_.empty() && advised_.front() < block) advised_.pop_front();
    if (advised_.size() >= kWindow / 2) return;
    next_ = std::max(next_, block);
    const uint64_t blocks = repo::BlockCount(img_->size());
    uint64_t run_start = 0, run_end = 0;
    auto flush = [&] {
      if (run_end > run_start) {
        img_->Prefetch(run_start * repo::kBlockSize, (run_end - run_start) * repo::kBlockSize);
      }
      run_start = run_end = 0;
    };
    for (; next_ < blocks && advised_.size() < kWindow; ++next_) {
      if (!img_->IsDataBlock(next_)) continue;
      if (!wanted_.empty() && (next_ >= wanted_.size() || !wanted_[next_])) continue;
      advised_.push_back(next_);
      if (run_end != next_) {
        flush();
        run_start = next_;
      }
      run_end = next_ + 1;
    }
    flush();
  }

  std::shared_ptr<const image::ComposedImage> img_;
  mutable std::mutex mu_;
  mutable std::vector<bool> wanted_;      // empty: every block
  mutable std::deque<uint64_t> advised_;  // advised blocks the reader has not passed
  mutable uint64_t next_ = 0;             // first block not yet considered
};

class FileSource : public DiskSource {
 public:
  FileSource(std::string path, UniqueFd fd, uint64_t size, std::vector<bool> data)
      : path_(std::move(path)), fd_(std::move(fd)), size_(size), data_(std::move(data)) {}
  uint64_t size() const override { return size_; }
  Result<size_t> Read(void* buf, size_t len, uint64_t off) const override {
    if (off >= size_) return size_t{0};
    len = std::min<uint64_t>(len, size_ - off);
    CBT_RETURN_IF_ERROR(PreadAll(fd_.get(), buf, len, off, path_));
    return len;
  }
  bool MayHoldData(uint64_t block) const override { return data_[block]; }

 private:
  std::string path_;
  UniqueFd fd_;
  uint64_t size_;
  std::vector<bool> data_;
};

}  // namespace

std::unique_ptr<DiskSource> SourceFromImage(std::shared_ptr<const image::ComposedImage> image) {
  return std::make_unique<ImageSource>(std::move(image));
}

Result<std::unique_ptr<DiskSource>> SourceFromFile(const std::string& path) {
  CBT_ASSIGN_OR_RETURN(UniqueFd fd, OpenUserFile(path));
  CBT_ASSIGN_OR_RETURN(uint64_t size, FileSize(fd.get(), path));
  if (size == 0) return Status::InvalidArgument(path + " is empty");
  std::vector<bool> data(repo::BlockCount(size), false);
  // Data extents from SEEK_DATA/SEEK_HOLE; without support, all is data.
  uint64_t off = 0;
  while (off < size) {
    off_t d = ::lseek(fd.get(), static_cast<off_t>(off), SEEK_DATA);
    if (d < 0) {
      if (errno == ENXIO) break;
      std::fill(data.begin(), data.end(), true);
      break;
    }
    off_t h = ::lseek(fd.get(), d, SEEK_HOLE);
    uint64_t end = h < 0 ? size : static_cast<uint64_t>(h);
    for (uint64_t b = static_cast<uint64_t>(d) / repo::kBlockSize; b * repo::kBlockSize < end; ++b)
      data[b] = true;
    off = end;
  }
  return std::unique_ptr<DiskSource>(
      std::make_unique<FileSource>(path, std::move(fd), size, std::move(data)));
}

}  // namespace cbt::stream
