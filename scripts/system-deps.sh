#!/usr/bin/env bash
# System packages the book uses where apt is available and we are root (CI here is):
#  - dataset-fashion-mnist: the original Fashion-MNIST files, so nothing is downloaded;
#  - fonts-wqy-microhei: a CJK font, so the chapter titles' Chinese shows in the figures and
#    screenshots;
#  - chromium: the headless browser the browser test drives (only with the argument `browser`).
# Usage: system-deps.sh [book|browser|all]   (default: all)
# Elsewhere it only says what is missing; the book still builds (digits is the offline fallback).
set -u
what=${1:-all}
need=()
if [ "$what" = book ] || [ "$what" = all ]; then
  [ -e /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] || need+=(dataset-fashion-mnist)
  [ -e /usr/share/fonts/truetype/wqy/wqy-microhei.ttc ] || need+=(fonts-wqy-microhei)
fi
if [ "$what" = browser ] || [ "$what" = all ]; then
  command -v chromium >/dev/null 2>&1 || need+=(chromium)
fi
[ ${#need[@]} -eq 0 ] && exit 0
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "installing system packages: ${need[*]}"
  # two of these scripts may run at once (make -j): apt's lock makes the second one wait
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
    -o DPkg::Lock::Timeout=600 "${need[@]}" >/dev/null
else
  echo "note: cannot install ${need[*]} (needs apt-get as root); Fashion-MNIST chapters fall back" \
       "to digits and the browser test is skipped." >&2
fi
exit 0
