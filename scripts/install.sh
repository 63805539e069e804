#!/usr/bin/env bash
# Install psvae-opt into ./.venv (idempotent); `install.sh test` adds the test tools.
#
# Torch comes first, at the version of constraints.txt, in the build this machine can use:
#   - no NVIDIA driver (no working nvidia-smi): the CPU build;
#   - a driver: the newest CUDA build of that torch not newer than the CUDA version the driver
#     supports (nvidia-smi's "CUDA Version"); a driver older than every build is refused.
# Builds come from the PyTorch wheel index; where it cannot be reached within seconds (a
# machine that reaches PyPI only), torch comes from PyPI (on Linux its default wheel carries CUDA).
#   PSVAE_OPT_TORCH=cpu|cu126|cu128|cu130|pypi   choose the build (pypi: PyPI's default wheel)
#   PSVAE_OPT_TORCH_INDEX=URL                    another wheel index (default the PyTorch one)
#   PSVAE_OPT_INSTALL_DRY_RUN=1                  print the choice and the pip command, change nothing
# An installed torch is kept unless it is another version, another build than PSVAE_OPT_TORCH
# asks for, or a CPU build on a machine with a driver (then it is replaced).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
TORCH_INDEX=${PSVAE_OPT_TORCH_INDEX:-https://download.pytorch.org/whl}
# The CUDA builds of the pinned torch on that index, oldest first (TAG:CUDA); update with constraints.txt.
TORCH_CUDA_BUILDS="cu126:12.6 cu128:12.8 cu130:13.0"
torch_version=$(sed -n 's/^torch==\([^ ;#]*\).*/\1/p' constraints.txt)

note() { echo "install.sh: $*" >&2; }

version_le() {  # MAJOR.MINOR $1 <= $2
  local a_major=${1%%.*} a_minor=${1#*.} b_major=${2%%.*} b_minor=${2#*.}
  ((a_major < b_major || (a_major == b_major && a_minor <= b_minor)))
}

torch_build() {  # prints cpu, pypi or a CUDA tag such as cu128
  local choice=${PSVAE_OPT_TORCH:-} smi driver best="" entry
  if [ -n "$choice" ]; then
    if [[ ! "$choice" =~ ^(cpu|pypi|cu[0-9]{2,3})$ ]]; then
      note "error: PSVAE_OPT_TORCH=$choice: give cpu, pypi or a CUDA build (torch $torch_version: ${TORCH_CUDA_BUILDS})"
      return 1
    fi
    note "torch build $choice (PSVAE_OPT_TORCH)"
    echo "$choice"
    return
  fi
  if ! smi=$(timeout 30 nvidia-smi 2>/dev/null); then
    note "torch build cpu: no NVIDIA driver here (nvidia-smi missing or failing)"
    echo cpu
    return
  fi
  driver=$(sed -n 's/.*CUDA Version: *\([0-9][0-9]*\.[0-9][0-9]*\).*/\1/p' <<<"$smi" | head -n 1)
  if [ -z "$driver" ]; then
    note "torch build cpu: nvidia-smi names no CUDA version; set PSVAE_OPT_TORCH=cu128 (or another) to choose"
    echo cpu
    return
  fi
  for entry in $TORCH_CUDA_BUILDS; do
    if version_le "${entry#*:}" "$driver"; then best=${entry%%:*}; fi
  done
  if [ -z "$best" ]; then
    note "error: the NVIDIA driver supports CUDA up to $driver, older than every CUDA build of torch $torch_version" \
      "(${TORCH_CUDA_BUILDS}); update the driver, or set PSVAE_OPT_TORCH=cpu for the CPU build"
    return 1
  fi
  note "torch build $best: the NVIDIA driver supports CUDA up to $driver"
  echo "$best"
}

index_reachable() {  # the index's page of torch answers within seconds
  timeout 10 "$PYTHON" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=5).read(1)' \
    "$1" >/dev/null 2>&1
}

build=$(torch_build) || exit 1
installed=""
[ ! -x .venv/bin/python ] || installed=$(.venv/bin/python -c "from importlib.metadata import version; print(version('torch'))" 2>/dev/null || true)
have=${installed#*+}
[ "$have" != "$installed" ] || have=pypi  # a version without +TAG is PyPI's default wheel
action=keep
if [ -z "$installed" ]; then
  action=install
elif [ "${installed%%+*}" != "$torch_version" ] || { [ -n "${PSVAE_OPT_TORCH:-}" ] && [ "$have" != "$build" ]; }; then
  action=replace
elif [[ "$build" == cu* && "$have" == cpu ]]; then
  action=replace  # a CPU build on a machine with a driver
fi

pip_args=(-c constraints.txt torch)  # PyPI
if [ "$build" != pypi ] && { [ "$action" != keep ] || [ -n "${PSVAE_OPT_INSTALL_DRY_RUN:-}" ]; }; then
  if index_reachable "$TORCH_INDEX/$build/torch/"; then
    pip_args=(--index-url "$TORCH_INDEX/$build" "torch==$torch_version+$build")
  else
    note "the PyTorch index $TORCH_INDEX/$build cannot be reached: torch $torch_version from PyPI instead"
    if [ "$action" = replace ] && [ "$have" = cpu ] && [ -z "${PSVAE_OPT_TORCH:-}" ]; then
      action=keep  # PyPI's build would be no better than the CPU build already there
    fi
  fi
fi

if [ -n "${PSVAE_OPT_INSTALL_DRY_RUN:-}" ]; then
  echo "build: $build"
  echo "pip: install ${pip_args[*]}"
  echo "installed: ${installed:-none}"
  echo "action: $action"
  exit 0
fi

if [ ! -x .venv/bin/python ]; then
  if ! "$PYTHON" -c "import ensurepip" 2>/dev/null; then  # Debian/Ubuntu split venv out
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    echo "installing python3-venv"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
  fi
  "$PYTHON" -m venv .venv
fi
if [ "$action" = replace ]; then
  note "replacing torch $installed by the $build build"
  .venv/bin/python -m pip uninstall -q -y torch
fi
if [ "$action" != keep ]; then
  .venv/bin/python -m pip install -q "${pip_args[@]}"
fi
target="."
[ "${1:-}" = "test" ] && target=".[test]"
.venv/bin/python -m pip install -q -c constraints.txt -e "$target"
.venv/bin/psvae-opt --version
