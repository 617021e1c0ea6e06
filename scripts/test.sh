#!/usr/bin/env bash
# Install everything on a fresh machine and run the whole test suite (README, command 2).
#
# 1. On Debian/Ubuntu, installs Xvfb and the Qt xcb libraries napari needs (apt-get, as root or
#    with sudo) when they are missing; the napari tests run in a virtual X server (pytest-xvfb).
# 2. Creates .venv, installs the CPU build of torch first (an unpinned torch would pull a
#    multi-GB CUDA build), then the package with its test extras.
# 3. Runs ruff (lint and format check) and pytest.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

SYSTEM_PACKAGES=(
    xvfb libxkbcommon-x11-0 libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-randr0
    libxcb-render-util0 libxcb-xinerama0 libxcb-xinput0 libxcb-xfixes0 libxcb-shape0
    libxcb-cursor0 libegl1 libopengl0 libdbus-1-3 libgl1
)

if command -v apt-get >/dev/null && ! dpkg -s "${SYSTEM_PACKAGES[@]}" >/dev/null 2>&1; then
    echo "Installing Xvfb and the Qt xcb libraries with apt-get…"
    sudo=()
    if [ "$(id -u)" -ne 0 ]; then sudo=(sudo); fi
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends \
        "${SYSTEM_PACKAGES[@]}" >/dev/null
elif ! command -v apt-get >/dev/null; then
    echo "Not a Debian/Ubuntu machine: install Xvfb and Qt's xcb libraries yourself." >&2
fi

python3 -m venv .venv
# shellcheck disable=SC1091
. .venv/bin/activate
pip install torch==2.13.0
pip install -e ".[test]"

ruff check .
ruff format --check .
pytest
