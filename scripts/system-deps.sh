#!/usr/bin/env bash
# System packages the book uses where apt is available and we are root (CI here is):
#  - dataset-fashion-mnist: the original Fashion-MNIST files, so nothing is downloaded;
#  - chromium: the headless browser the browser test drives;
#  - fonts-wqy-microhei: a CJK font, so the chapter titles' Chinese shows in the screenshots.
# Elsewhere it only says what is missing; the book still builds (digits is the offline fallback).
set -u
need=()
[ -e /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] || need+=(dataset-fashion-mnist)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
[ -e /usr/share/fonts/truetype/wqy/wqy-microhei.ttc ] || need+=(fonts-wqy-microhei)
[ ${#need[@]} -eq 0 ] && exit 0
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "installing system packages: ${need[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
else
  echo "note: cannot install ${need[*]} (needs apt-get as root); Fashion-MNIST chapters fall back" \
       "to digits and the browser test is skipped." >&2
fi
exit 0
