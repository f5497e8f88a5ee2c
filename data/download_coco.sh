#!/usr/bin/env bash
# Fetch MS-COCO images, official caption annotations and Karpathy's split files, verify them, unpack them.
#
#   bash data/download_coco.sh [2014|2017] [DIR]        (default: 2014 into data/coco)
#
# 2014 is the Karpathy-split setting of the papers (captioning prepare coco --root DIR); 2017 is the official
# 2017 split (captioning prepare coco2017 --root DIR). About 19 GB of downloads (2014) or 19 GB (2017), twice that
# while unpacking. Downloads resume (curl -C -) and are checked against the MD5 sums below before unpacking.
#
# Checksums: COCO publishes none itself; these are the MD5 sums that the major toolkits (LAVIS, PaddleDetection,
# FiftyOne, pystiche, ...) verify these exact URLs against. Karpathy's caption_datasets.zip has no published sum:
# `captioning prepare` records the SHA-256 of every annotation file it reads in manifest.json instead.
set -euo pipefail

YEAR="${1:-2014}"
DIR="${2:-data/coco}"
case "$YEAR" in
  2014) FILES=(
          "zips/train2014.zip 0da8c0bd3d6becc4dcb32757491aca88"
          "zips/val2014.zip a3d79f5ed8d289b7a7554ce06a5782b3"
          "annotations/annotations_trainval2014.zip 0a379cfc70b0e71301e0f377548639bd") ;;
  2017) FILES=(
          "zips/train2017.zip cced6f7f71b7629ddf16f17bbcfab6b2"
          "zips/val2017.zip 442b8da7639aecaf257c1dceb8ba8c80"
          "annotations/annotations_trainval2017.zip f4bbac642086de4f52a3fdda2de5fa2c") ;;
  *) echo "usage: $0 [2014|2017] [DIR]" >&2; exit 2 ;;
esac

mkdir -p "$DIR/downloads"
for entry in "${FILES[@]}"; do
  read -r path md5 <<<"$entry"
  name="$(basename "$path")"
  echo "== $name"
  curl -fL --retry 3 -C - -o "$DIR/downloads/$name" "http://images.cocodataset.org/$path"
  if ! echo "$md5  $DIR/downloads/$name" | md5sum -c -; then
    rm -f "$DIR/downloads/$name"   # a resumed download would only extend the bad file
    echo "$name: checksum mismatch; removed it, run the script again" >&2
    exit 1
  fi
  unpacked="$DIR/downloads/.$name.unpacked"   # written after a complete unzip: an interrupted one is redone
  [ -f "$unpacked" ] || { unzip -q -o "$DIR/downloads/$name" -d "$DIR" && touch "$unpacked"; }
done

if [ "$YEAR" = 2014 ]; then
  echo "== caption_datasets.zip (Karpathy splits: dataset_coco.json, dataset_flickr8k.json, dataset_flickr30k.json)"
  curl -fL --retry 3 -C - -o "$DIR/downloads/caption_datasets.zip" \
    https://cs.stanford.edu/people/karpathy/deepimagesent/caption_datasets.zip
  unzip -q -o "$DIR/downloads/caption_datasets.zip" dataset_coco.json -d "$DIR"
fi

echo "done. Next: captioning prepare $([ "$YEAR" = 2014 ] && echo coco || echo coco2017) --root $DIR"
