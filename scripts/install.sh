#!/usr/bin/env bash
# Install psvae-opt into ./.venv (idempotent); `install.sh test` adds the test tools; `install.sh here`
# chooses the build for this machine only (the demo's choice: it runs here).
#
# Torch comes first, at the version of constraints.txt, in the build this machine's GPUs can run:
#   - no NVIDIA driver (no working nvidia-smi): the CPU build; but where `sbatch` is on the PATH
#     (a SLURM login node, whose .venv the GPU nodes run) a plain install refuses to choose: give
#     --torch (`install.sh test` and `install.sh here` take the CPU build there, with a note: the
#     tests and the demo run on this machine);
#   - a driver: the newest CUDA build whose least driver and least compute capability this
#     machine meets (TORCH_CUDA_BUILDS): cu126 runs on any driver >= 525 (CUDA 12 minor-version
#     compatibility) and has kernels from capability 5.0 (V100s included); cu130 needs a driver
#     >= 580 and capability >= 7.5 (CUDA 13 dropped the V100); the smallest capability among the
#     GPUs decides. So drivers 525-579 and every V100 node get cu126.
# Builds come from the PyTorch wheel index; where it cannot be reached within seconds (a
# machine that reaches PyPI only), torch comes from PyPI (on Linux its default wheel carries CUDA).
#   --torch cpu|cu126|cu130|pypi           choose the build (same as PSVAE_OPT_TORCH)
#   PSVAE_OPT_TORCH=cpu|cu126|cu130|pypi   choose the build (pypi: PyPI's default wheel)
#   PSVAE_OPT_TORCH_INDEX=URL                    another wheel index (default the PyTorch one)
#   PSVAE_OPT_INSTALL_DRY_RUN=1                  print the choice and the pip command, change nothing
# An installed torch is kept unless it is another version, another build than the one chosen
# explicitly, or a CPU build on a machine with a driver (then it is replaced).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
TORCH_INDEX=${PSVAE_OPT_TORCH_INDEX:-https://download.pytorch.org/whl}
# The CUDA builds of the pinned torch on that index, oldest first, as TAG:LEAST_DRIVER:LEAST_CAPABILITY
# (driver branch that runs the build; smallest compute capability it has kernels for). Only builds
# PyTorch publishes for the pinned version: its release compatibility matrix (RELEASE.md in the
# PyTorch repository) lists CUDA 12.6 and 13.0 for torch 2.12-2.14 (13.2 experimental, left out);
# there is no CUDA 12.8 wheel of torch 2.13. When constraints.txt's torch changes, update this table
# and PUBLISHED_CUDA_BUILDS in psvae_opt/training/gpus.py from that matrix and the index itself
# (https://download.pytorch.org/whl/cuXYZ/torch/ lists the versions of each build; a build's
# torch.cuda.get_arch_list() gives its least capability); tests/test_install.py checks the two agree.
TORCH_CUDA_BUILDS="cu126:525:5.0 cu130:580:7.5"
torch_version=$(sed -n 's/^torch==\([^ ;#]*\).*/\1/p' constraints.txt)

note() { echo "install.sh: $*" >&2; }

target="."
for_here=""
while [ $# -gt 0 ]; do
  case "$1" in
    test) target=".[test]"; for_here=1 ;;
    here) for_here=1 ;;
    --torch) [ $# -ge 2 ] || { note "error: --torch needs a build (cpu, pypi, cu126, cu130)"; exit 1; }
      PSVAE_OPT_TORCH=$2; shift ;;
    --torch=*) PSVAE_OPT_TORCH=${1#--torch=} ;;
    *) note "error: unknown argument $1 (give test, here and/or --torch BUILD)"; exit 1 ;;
  esac
  shift
done

capability_number() {  # "7.5" -> 75, "12.0" -> 120
  echo $((${1%%.*} * 10 + ${1#*.}))
}

published_tags() {  # "cu126 cu130": the tags of TORCH_CUDA_BUILDS
  local entry
  for entry in $TORCH_CUDA_BUILDS; do printf '%s ' "${entry%%:*}"; done
}

torch_build() {  # prints cpu, pypi or a CUDA tag such as cu126
  local choice=${PSVAE_OPT_TORCH:-} smi driver caps least cap best="" entry tag need_driver need_cap
  if [ -n "$choice" ]; then
    if [[ ! " cpu pypi $(published_tags)" == *" $choice "* ]]; then
      note "error: --torch $choice: torch $torch_version is published for cpu and $(published_tags)(as" \
        "TAG:LEAST_DRIVER:LEAST_CAPABILITY ${TORCH_CUDA_BUILDS}), or give pypi for PyPI's default wheel"
      return 1
    fi
    note "torch build $choice (PSVAE_OPT_TORCH)"
    echo "$choice"
    return
  fi
  if ! smi=$(timeout 30 nvidia-smi 2>/dev/null); then
    if command -v sbatch >/dev/null 2>&1; then
      if [ -n "$for_here" ]; then
        note "torch build cpu for this machine (no NVIDIA driver); sbatch is here: for GPU nodes that run this" \
          ".venv, install again with --torch cu126 (or cu130 where every node has a driver >= 580)"
        echo cpu
        return
      fi
      note "error: no NVIDIA driver here, but sbatch is: on a SLURM login node choose the build the GPU nodes" \
        "need, since they run this .venv: --torch cu126 (drivers >= 525, GPUs of compute capability >= 5.0," \
        "V100s included), --torch cu130 (drivers >= 580, capability >= 7.5) or --torch cpu" \
        "(CPU-only partitions); or run this script on a GPU node (srun --gres=gpu:1 bash scripts/install.sh)"
      return 1
    fi
    note "torch build cpu: no NVIDIA driver here (nvidia-smi missing or failing)"
    echo cpu
    return
  fi
  driver=$(sed -n 's/.*Driver Version: *\([0-9][0-9]*\)[.0-9]*.*/\1/p' <<<"$smi" | head -n 1)
  if [ -z "$driver" ]; then
    note "torch build cpu: nvidia-smi names no driver version; set PSVAE_OPT_TORCH=cu126 (or cu130) to choose"
    echo cpu
    return
  fi
  # one line per GPU ("7.0"); a driver too old to report it gets the build with the widest range
  caps=$(timeout 30 nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null \
    | sed -n 's/^ *\([0-9][0-9]*\.[0-9]\) *$/\1/p') || caps=""
  least=""
  for cap in $caps; do
    if [ -z "$least" ] || (($(capability_number "$cap") < $(capability_number "$least"))); then least=$cap; fi
  done
  for entry in $TORCH_CUDA_BUILDS; do
    IFS=: read -r tag need_driver need_cap <<<"$entry"
    if ((driver >= need_driver)) && { [ -z "$least" ] || (($(capability_number "$least") >= $(capability_number "$need_cap"))); }; then
      best=$tag
      [ -n "$least" ] || break  # capability unknown: the oldest build, whose kernels reach furthest back
    fi
  done
  if [ -z "$best" ]; then
    note "error: no CUDA build of torch $torch_version runs here (driver $driver, compute capability ${least:-unknown};" \
      "builds TAG:LEAST_DRIVER:LEAST_CAPABILITY ${TORCH_CUDA_BUILDS}); update the driver, or set PSVAE_OPT_TORCH=cpu for the CPU build"
    return 1
  fi
  note "torch build $best: NVIDIA driver $driver, compute capability ${least:-unknown} (the least of the GPUs)"
  echo "$best"
}

index_lists() {  # exit 0: the index's torch page ($1) answers within seconds and lists wheel $2
  # ("2.13.0+cu126", also URL-encoded); 2: it answers without that wheel; other: unreachable
  timeout 10 "$PYTHON" -c 'import sys, urllib.request
page = urllib.request.urlopen(sys.argv[1], timeout=5).read().decode("utf-8", "replace").lower()
wheel = "torch-" + sys.argv[2].lower()
sys.exit(0 if wheel in page or wheel.replace("+", "%2b") in page else 2)' "$1" "$2" >/dev/null 2>&1
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
  listed=0
  index_lists "$TORCH_INDEX/$build/torch/" "$torch_version+$build" || listed=$?
  if [ "$listed" -eq 0 ]; then
    pip_args=(--index-url "$TORCH_INDEX/$build" "torch==$torch_version+$build")
  elif [ "$listed" -eq 2 ]; then
    note "error: the PyTorch index $TORCH_INDEX/$build lists no torch $torch_version+$build; choose a build" \
      "published for it (--torch cpu, $(published_tags)or pypi) and update TORCH_CUDA_BUILDS if the index changed"
    exit 1
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
.venv/bin/python -m pip install -q -c constraints.txt -e "$target"
.venv/bin/psvae-opt --version
