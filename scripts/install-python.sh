#!/usr/bin/env bash
# Creates the virtual environment ($1, default .venv) and installs into it, with uv when it can be
# had, else with pip: by default requirements-dev.txt and cnnlab (editable); with more arguments,
# those (pip-style: package names, -r FILE, -c FILE, a wheel). UV=path/to/uv uses that uv instead
# of installing one into the environment (the Colab test's environment must hold nothing else).
#   scripts/install-python.sh .venv
#   UV=.venv/bin/uv scripts/install-python.sh /tmp/env torch matplotlib ipykernel
#
# Why uv: on this machine pip takes ~95 s for the ~6 GB of torch's CUDA wheels (one file after
# another, one core); uv unpacks in parallel and installs the same versions in ~20 s. uv does not
# read pip's configuration, so the indexes, find-links and constraints pip is configured with
# here (the local wheel indexes that hold torch, the torch<=2.14.1 cap) are handed to it; the local
# indexes come before PyPI, so torch comes from disk, not from a 3 GB download.
# Any failure of the uv path (no uv on the index, a resolution error) falls back to pip.
set -euo pipefail
venv=${1:-.venv}
[ $# -gt 0 ] && shift
[ $# -gt 0 ] || set -- -r requirements-dev.txt -e .
py=$venv/bin/python
python=${PYTHON:-python3}
test -x "$py" || "$python" -m venv "$venv"

# A key of pip's configuration (global, install or environment), e.g. `pip_config find-links`.
pip_config() {
  "$py" -m pip config list 2>/dev/null | sed -n "s/^\(global\|install\|:env:\)\.$1='\(.*\)'\$/\2/p" |
    tr ' ' '\n' | awk 'NF && !seen[$0]++'  # one value a line, in order, each once
}

with_uv() {
  local uv=${UV:-$venv/bin/uv}
  [ -n "${UV:-}" ] || "$py" -m pip install -qq uv || return 1
  local args=(--python "$py" --quiet --index-strategy unsafe-best-match)
  local url
  for url in $(pip_config extra-index-url); do
    args+=(--extra-index-url "$url")
  done
  for url in $(pip_config find-links); do
    args+=(--find-links "$url")
  done
  for url in $(pip_config constraint); do
    [ -e "$url" ] && args+=(--constraint "$url")
  done
  # The cache beside the venv (same file system): uv hard-links from it instead of copying.
  UV_CACHE_DIR=${UV_CACHE_DIR:-.cache/uv} UV_LINK_MODE=${UV_LINK_MODE:-hardlink} \
    "$uv" pip install "${args[@]}" "$@"
}

with_pip() {
  "$py" -m pip install --quiet --upgrade pip
  # --no-compile: pip would byte-compile every module of torch's wheels (~40 s here); Python
  # compiles the modules actually imported on first import instead, and keeps them.
  "$py" -m pip install --quiet --no-compile "$@"
}

if [ "${CNNLAB_INSTALLER:-uv}" = uv ] && with_uv "$@"; then
  echo "installed with uv"
else
  [ "${CNNLAB_INSTALLER:-uv}" = uv ] && echo "uv failed; installing with pip" >&2
  with_pip "$@"
fi
"$py" -m ipykernel install --sys-prefix --name python3 >/dev/null
