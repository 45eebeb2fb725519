#!/usr/bin/env bash
# Fails when a quoted #include crosses the layering of src/ that
# docs/ARCHITECTURE.md draws: a folder may include itself and the folders
# below it, never one above or beside it, so that each layer can be read,
# tested and changed without the ones that use it.  fuse/ and tools/ sit on
# top and may include any src/ folder (and their own files); src/ never
# includes them.  Prints one line per violation (file:line: what it
# includes) and exits 1, or exits 0 when there is none.
set -euo pipefail
cd "$(dirname "$0")/.."

# Folder -> the src/ folders it may include besides itself.
declare -A allowed=(
  [util]=""
  [repo]="objstore util"
  [image]="repo objstore util"
  [local]="image repo util"
  [objstore]="util"
  [xapi]="util"
  [nbd]="util"
  [stream]="image repo util"
  [backup]="image nbd repo util xapi"
  [restore]="stream image repo util xapi"
)
src_folders="util objstore repo image local xapi nbd stream backup restore"
allowed[fuse]="$src_folders"
allowed[tools]="$src_folders"

violations=0
report() {
  echo "$1"
  violations=$((violations + 1))
}

while IFS= read -r hit; do
  file=${hit%%:*}
  rest=${hit#*:}
  line=${rest%%:*}
  target=$(sed -E 's/^[^"]*"([^"]*)".*/\1/' <<<"${rest#*:}")
  case "$file" in
    src/*/*) from=$(cut -d/ -f2 <<<"$file") ;;
    fuse/* | tools/*) from=${file%%/*} ;;
    *) from="" ;;
  esac
  if [[ -z "$from" || ! -v "allowed[$from]" ]]; then
    report "$file:$line: folder '${from:-src}' has no place in the layering (add it to scripts/check-layers.sh and docs/ARCHITECTURE.md)"
    continue
  fi
  [[ "$target" == */* ]] || continue  # a file of the same folder
  to=${target%%/*}
  if [[ "$to" == ".." || "$to" == "." ]]; then
    report "$file:$line: includes \"$target\" by a relative path; name the folder"
    continue
  fi
  [[ "$to" == "$from" ]] && continue
  if [[ " ${allowed[$from]} " != *" $to "* ]]; then
    report "$file:$line: $from/ may not include $to/ (\"$target\")"
  fi
done < <(grep -rnE --include='*.h' --include='*.cc' '^[[:space:]]*#[[:space:]]*include[[:space:]]*"' \
  src fuse tools | sort -t: -k1,1 -k2,2n)

if ((violations > 0)); then
  echo "check-layers: $violations include(s) break the layering (docs/ARCHITECTURE.md)" >&2
  exit 1
fi
