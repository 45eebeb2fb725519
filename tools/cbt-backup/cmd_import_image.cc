// SPDX-License-Identifier: Apache-2.0
#include "cli.h"

#include "image/image_import.h"
#include "local/import_image.h"
#include "repo/layout.h"
#include "util/file.h"

#include <nlohmann/json.hpp>

#include <ctime>
#include <iostream>

namespace cbt::cli {

namespace {

int Run(const Globals& g, const po::variables_map& vm) {
  if (MissingOption("import-image", vm, {{"vm", "--vm"}, {"disk", "--disk"}, {"image", "IMAGE"}})) {
    return kExitUsage;
  }
  local::ImageImportRequest req;
  req.vm = vm["vm"].as<std::string>();
  req.vdi = vm["disk"].as<std::string>();
  req.image_path = vm["image"].as<std::string>();
  req.point =
      vm.count("point") ? vm["point"].as<std::string>() : repo::FormatTimestamp(std::time(nullptr));
  if (vm.count("metadata")) req.metadata_path = vm["metadata"].as<std::string>();
  req.full = vm.count("full") > 0;
  if (vm.count("changed-blocks")) {
    std::string file = vm["changed-blocks"].as<std::string>();
    auto text = ReadUserFile(file);
    if (!text.ok()) return Fail(text.status());
    auto blocks = image::ParseBlockList(*text, file);
    if (!blocks.ok()) return Fail(blocks.status());
    req.changed_blocks = std::move(*blocks);
  }
  auto repo = OpenRepo(g, /*create=*/true);
  if (!repo.ok()) return Fail(repo.status());
  auto r = local::ImportImage(*repo, req);
  if (!r.ok()) return Fail(r.status());
  if (g.json) {
    std::cout << nlohmann::json{{"vm", req.vm},
                                {"point", req.point},
                                {"disk", req.vdi},
                                {"kind", r->base ? "base" : "overlay"},
                                {"parent_point", r->parent_point},
                                {"reason", r->reason},
                                {"data_blocks", r->data_blocks},
                                {"zero_blocks", r->zero_blocks},
                                {"stored_bytes", r->stored_bytes}}
                     .dump(2)
              << "\n";
  } else {
    Info(g, "point " + req.point + ": disk " + req.vdi + " " +
                (r->base ? "base (" + r->reason + ")" : "overlay on " + r->parent_point) + ", " +
                HumanBytes(r->stored_bytes) + " stored");
  }
  return 0;
}

}  // namespace

Command ImportImageCommand() {
  return {"import-image", "add a point holding one disk read from a raw image file",
          "--vm UUID --disk VDI-UUID IMAGE [--point TS] [--changed-blocks FILE] [--full]",
          [](po::options_description& d, po::positional_options_description& p) {
            d.add_options()("vm", po::value<std::string>(), "VM UUID")(
                "disk", po::value<std::string>(), "original VDI UUID of the disk")(
                "image", po::value<std::string>(), "raw image of the whole disk")(
                "point", po::value<std::string>(), "point name (default: now, UTC)")(
                "changed-blocks", po::value<std::string>(),
                "read only these 64 KiB blocks (one number or FIRST-LAST per line)")(
                "metadata", po::value<std::string>(), "VM metadata file to keep with the point")(
                "full", "start a new chain (write a base)");
            p.add("image", 1);
          },
          Run};
}

}  // namespace cbt::cli
