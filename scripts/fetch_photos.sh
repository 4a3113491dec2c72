#!/usr/bin/env bash
# Fetch natural photographs from Debian's wallpaper packages into data/photos (git-ignored),
# without installing the packages: apt-get download, then dpkg -x into a scratch folder.
#
#     bash scripts/fetch_photos.sh [DEST]      # DEST defaults to data/photos
set -euo pipefail
dest="${1:-$(dirname "$0")/../data/photos}"
packages=(lomiri-wallpapers-16.04 lomiri-wallpapers-20.04 ukui-wallpapers)
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
mkdir -p "$dest"
dest="$(cd "$dest" && pwd)"
cd "$scratch"
if ! apt-get download "${packages[@]}" >/dev/null 2>&1; then
  apt-get update -qq
  apt-get download "${packages[@]}" >/dev/null
fi
for deb in ./*.deb; do
  dpkg -x "$deb" "$scratch/root"
done
count=0
while IFS= read -r -d '' photo; do
  package_dir="$(echo "$photo" | sed -E 's#^.*/share/(backgrounds|wallpapers)/##; s#/#_#g')"
  cp "$photo" "$dest/$package_dir"
  count=$((count + 1))
done < <(find "$scratch/root" -type f \( -iname '*.jpg' -o -iname '*.jpeg' -o -iname '*.png' \) -size +100k -print0)
echo "$count photos in $dest"
