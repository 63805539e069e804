#!/usr/bin/env bash
# System packages the tests use: PostgreSQL (a real server per test session), headless
# Chromium with its driver (the dashboard test), docker-compose (validates the compose
# file) and SLURM with munge (a one-node cluster per test session). Installs only what is
# missing; needs root or sudo.
set -euo pipefail
missing=()
[ -x "$(ls /usr/lib/postgresql/*/bin/initdb 2>/dev/null | head -1)" ] || missing+=(postgresql)
command -v chromium >/dev/null || missing+=(chromium)
command -v chromedriver >/dev/null || missing+=(chromium-driver)
command -v docker-compose >/dev/null || missing+=(docker-compose)
have() { command -v "$1" >/dev/null || [ -x "/usr/sbin/$1" ]; }
have slurmctld && have slurmd && have sbatch || missing+=(slurm-wlm)  # the one-node cluster of tests/slurmcluster.py
have munged || missing+=(munge)
[ ${#missing[@]} -eq 0 ] && exit 0
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "installing ${missing[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
