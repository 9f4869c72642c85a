#!/usr/bin/env bash
# Install the Debian packages dsa needs; does nothing when all are present.
set -euo pipefail
pkgs=(build-essential pkg-config libhdf5-dev hdf5-tools libzstd-dev libcjson-dev libcmocka-dev
      libopenblas-openmp-dev zlib1g-dev python3-venv
      libopenmpi-dev openmpi-bin) # Open MPI: multi-rank dsa train (mpirun; kernels/comm_mpi.c)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# python3-venv is only needed when the python3 on PATH has no working venv module.
if [ ${#missing[@]} -gt 0 ] && python3 -c 'import venv, ensurepip' 2>/dev/null; then
  missing=("${missing[@]/python3-venv}")
  read -r -a missing <<< "${missing[*]}"
fi
if [ ${#missing[@]} -eq 0 ]; then
  echo "deps: all packages present"
  exit 0
fi
echo "deps: installing ${missing[*]}"
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "deps: done"
