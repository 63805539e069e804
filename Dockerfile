# The psvae-opt image of the worker, init and dashboard services (docker-compose.yml).
#
#   docker compose build                                        # torch's CUDA 12.6 build
#   TORCH_BUILD=cu130 docker compose build                      # hosts with a driver >= 580, no V100
#   PSVAE_UID=$(id -u) PSVAE_GID=$(id -g) docker compose build  # run as you (see USER below)
#
# TORCH_BUILD is a build of the PyTorch wheel index (cpu, cu126, cu130) or "pypi" (PyPI's
# default wheel), at the version of constraints.txt: only the builds PyTorch publishes for it
# (scripts/install.sh's table says where the list comes from). The driver is the host's (NVIDIA
# Container Toolkit): cu126 runs on drivers >= 525 and GPUs of compute capability >= 5.0 (V100s
# included); cu130 needs a driver >= 580 and capability >= 7.5 (as scripts/install.sh picks on a
# machine without Docker).
FROM python:3.11-slim

ARG TORCH_BUILD=cu126
ARG TORCH_INDEX=https://download.pytorch.org/whl
# The services run as this user, not root. ./demo is bind-mounted at /work/demo and must be
# writable by it: create ./demo before `docker compose up` (Docker would create it owned by
# root) and build with your own ids (PSVAE_UID/PSVAE_GID in docker-compose.yml) when they are
# not 1000.
ARG UID=1000
ARG GID=1000

ENV TZ=UTC PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /work

# gcc: torch.compile (train.compile = true) builds small C launchers at run time
# tini: PID 1 of the container; it passes `docker stop`'s SIGTERM on to psvae-opt (which then
# re-queues its trial) and reaps the compile workers' orphans, which a Python PID 1 would not
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev tini \
 && rm -rf /var/lib/apt/lists/*

# Torch, then the other dependencies, each in a layer of its own before the source is
# copied: an edit of the code rebuilds only the last layers, without downloading them again.
COPY constraints.txt ./
RUN torch_version="$(sed -n 's/^torch==\([^ ;#]*\).*/\1/p' constraints.txt)" \
 && if [ "$TORCH_BUILD" = pypi ]; then \
      pip install -c constraints.txt torch; \
    else \
      pip install --index-url "$TORCH_INDEX/$TORCH_BUILD" "torch==$torch_version+$TORCH_BUILD"; \
    fi \
 && python -c "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda)"
COPY pyproject.toml ./
RUN python -c "import subprocess, sys, tomllib; \
deps = tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']; \
subprocess.check_call([sys.executable, '-m', 'pip', 'install', '-c', 'constraints.txt', *deps])"

COPY README.md ./
COPY psvae_opt ./psvae_opt
RUN pip install --no-deps -c constraints.txt . && rm -rf build psvae_opt.egg-info

COPY studies ./studies
RUN groupadd --gid "$GID" psvae \
 && useradd --uid "$UID" --gid "$GID" --create-home --shell /usr/sbin/nologin psvae \
 && mkdir -p /work/demo \
 && chown psvae:psvae /work /work/demo
USER psvae
# run folders, artifacts and data are volumes (see docker-compose.yml)
ENTRYPOINT ["/usr/bin/tini", "--", "psvae-opt"]
CMD ["--help"]
