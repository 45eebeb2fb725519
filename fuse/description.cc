// SPDX-License-Identifier: Apache-2.0
//
// point.txt (description.h): assembled from the point's manifest and the
// volume view of its disks.
#include "description.h"

#include "util/text.h"

namespace cbt::cbtfs {

std::string PointDescription(const Filesystem& fs, const Node& n) {
  auto m = fs.Manifest(n.vm, n.point);
  if (!m) return "";
  // Names come from the server and from the guest: escaped, so that
  // printing point.txt cannot drive a terminal.
  std::string s = "VM:      " + m->vm_uuid +
                  (m->vm_name.empty() ? "" : " (" + cbt::Printable(m->vm_name) + ")") +
                  "\nPoint:   " + m->point + "\nSource:  " + m->source + "\nDisks:\n";
  for (const auto& d : m->disks) {
    s +=
        "  " + d.vdi_uuid + ".raw  " + std::to_string(d.virtual_size) + " bytes  " +
        (d.base ? "base" : "overlay on " + d.parent_point) +
        (d.layers.empty() ? "" : " (+" + std::to_string(d.layers.size()) + " taken-over file(s))") +
        (d.name.empty() ? "" : "  \"" + cbt::Printable(d.name) + "\"") + "\n";
  }
  for (const auto& d : m->skipped_disks) {
    s += "  " + d.vdi_uuid + "  not backed up: " + cbt::Printable(d.reason) +
         (d.name.empty() ? "" : "  \"" + cbt::Printable(d.name) + "\"") + "\n";
  }
  auto view = fs.Volumes(n.vm, n.point);
  if (view && !view->found.volumes.empty()) {
    s += "Volumes:\n";
    for (const auto& v : view->found.volumes) {
      s += "  " + v.path + "  " + std::to_string(v.size()) + " bytes  " +
           cbt::Printable(v.description) + "\n";
    }
  }
  if (view && !view->found.notes.empty()) {
    s += "Notes:\n";
    for (const auto& note : view->found.notes) s += "  " + cbt::Printable(note) + "\n";
  }
  return s;
}

}  // namespace cbt::cbtfs
