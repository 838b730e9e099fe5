#!/usr/bin/env bash
# Photo cut-outs and background photos for `densecl data scenes`, from Debian packages.
#
#   bash scripts/fetch-assets.sh        (or: make assets)
#
# Downloads three .deb files with `apt-get download` and unpacks them with `dpkg -x`
# under .cache/assets/ (git-ignored): nothing is installed system-wide. Needs a Debian
# or Ubuntu machine with the package lists loaded (`apt-get update` once, as root).
# Idempotent: a package already unpacked is not fetched again; the two folders below
# are rebuilt (hard links, or copies across file systems) on every run.
#
#   .cache/assets/objects/<class>/<stamp path with / -> __>.png
#       tuxpaint-stamps-default: the PNG stamps whose alpha really cuts an object out
#       (checked by densecl.scenes.photo.read_cutout), one class per top-level
#       stamp folder except `symbols` (letters, signs, money: not objects). Left out:
#       the `*_mirror.png` / `*_flip.png` twins (pre-flipped copies of another stamp,
#       which would leak across splits; the composer flips at random anyway), files
#       byte-identical to one already taken, and classes with fewer than MIN_CUTOUTS
#       (default 20) usable stamps, so val and test get >= 4 stamps of every class.
#       The stamps mix photos and cartoons (see docs/photo-scenes.md).
#   .cache/assets/backgrounds/{train,val,test}/
#       train: the 15 photos of lomiri-wallpapers-16.04; val and test: the 12 photos of
#       mate-backgrounds' `nature` folder, alternately in sorted order (its `abstract`
#       and `desktop` folders are graphics, not photos, and are left out).
#
# Licences: stamps GPL-2; lomiri wallpapers CC-BY / CC-BY-SA / CC0; mate photos GPL-2+ or CC-BY-SA-4.0 (see each package's
# usr/share/doc/<package>/copyright). Keep them and what is composed from them out of git.
set -euo pipefail
cd "$(dirname "$0")/.."

ASSETS=${ASSETS:-.cache/assets}
PYTHON=${PYTHON:-.venv/bin/python}
MIN_CUTOUTS=${MIN_CUTOUTS:-20}
STAMPS=tuxpaint-stamps-default
TRAIN_BACKGROUNDS=lomiri-wallpapers-16.04
HELD_OUT_BACKGROUNDS=mate-backgrounds

for tool in apt-get dpkg; do
    command -v "$tool" >/dev/null || { echo "fetch-assets: $tool not found; this script needs a Debian or Ubuntu system" >&2; exit 1; }
done
[ -x "$PYTHON" ] || { echo "fetch-assets: $PYTHON not found; run 'make install' first or set PYTHON=" >&2; exit 1; }

mkdir -p "$ASSETS/debs"
for package in "$STAMPS" "$TRAIN_BACKGROUNDS" "$HELD_OUT_BACKGROUNDS"; do
    if [ -e "$ASSETS/$package/.unpacked" ]; then
        continue
    fi
    if ! compgen -G "$ASSETS/debs/${package}_*.deb" >/dev/null; then
        echo "fetch-assets: downloading $package" >&2
        (cd "$ASSETS/debs" && apt-get download -q "$package") || {
            echo "fetch-assets: 'apt-get download $package' failed; run 'apt-get update' (as root) and retry" >&2
            exit 1
        }
    fi
    rm -rf "$ASSETS/$package"
    dpkg -x "$(compgen -G "$ASSETS/debs/${package}_*.deb" | sort | tail -n 1)" "$ASSETS/$package"
    touch "$ASSETS/$package/.unpacked"
done

"$PYTHON" - "$ASSETS" "$MIN_CUTOUTS" "$STAMPS" "$TRAIN_BACKGROUNDS" "$HELD_OUT_BACKGROUNDS" <<'EOF'
import hashlib
import os
import shutil
import sys
from pathlib import Path

from densecl.scenes.photo import read_cutout
from densecl.errors import InputError

assets, min_cutouts = Path(sys.argv[1]), int(sys.argv[2])
stamps = assets / sys.argv[3] / "usr/share/tuxpaint/stamps"
train_photos = sorted((assets / sys.argv[4] / "usr/share/backgrounds").glob("*.jpg"))
held_out_photos = sorted((assets / sys.argv[5] / "usr/share/backgrounds/mate/nature").glob("*.jpg"))
objects, backgrounds = assets / "objects", assets / "backgrounds"


def link(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


for folder in (objects, backgrounds):
    shutil.rmtree(folder, ignore_errors=True)

seen, kept, dropped = set(), {}, {}
for category in sorted(d for d in stamps.iterdir() if d.is_dir() and d.name != "symbols"):
    usable = []
    for png in sorted(category.rglob("*.png")):
        if png.stem.endswith(("_mirror", "_flip")):
            continue
        digest = hashlib.sha1(png.read_bytes()).hexdigest()
        if digest in seen:
            continue
        try:
            read_cutout(png)
        except InputError:
            continue
        seen.add(digest)
        usable.append(png)
    if len(usable) < min_cutouts:
        dropped[category.name] = len(usable)
        continue
    kept[category.name] = len(usable)
    for png in usable:
        link(png, objects / category.name / "__".join(png.relative_to(category).parts))

for photo in train_photos:
    link(photo, backgrounds / "train" / photo.name)
for k, photo in enumerate(held_out_photos):
    link(photo, backgrounds / ("val" if k % 2 == 0 else "test") / photo.name)

if not kept or not train_photos or len(held_out_photos) < 2:
    sys.exit(f"fetch-assets: the packages did not have the expected files under {assets}; delete it and retry")
print("classes (usable stamps): " + ", ".join(f"{name} {n}" for name, n in kept.items()))
print(f"dropped (< {min_cutouts} usable stamps): " + ", ".join(f"{name} {n}" for name, n in dropped.items()))
print(f"backgrounds: {len(train_photos)} train, {len(held_out_photos[0::2])} val, {len(held_out_photos[1::2])} test")
EOF

echo "objects:     $ASSETS/objects"
echo "backgrounds: $ASSETS/backgrounds"
echo "next:        densecl data scenes --objects $ASSETS/objects --backgrounds $ASSETS/backgrounds --out .cache/photo-scenes"
