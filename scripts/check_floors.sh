#!/usr/bin/env bash
# Proves the floors in requirements.txt: a throwaway virtualenv gets every runtime dependency at exactly
# its lower bound (">=" read as "=="), then runs the non-e2e core, engine and scorer tests (and the
# ShapesWorld evaluation tests, the only user of scipy). torch is the exception: it is installed at the
# version scripts/setup_env.sh uses (torch's own floor is not tested here), with torchvision and the
# same CPU shim, so the tests that compare against torchvision run instead of skipping.
#
#   bash scripts/check_floors.sh [extra pytest arguments]
#
# Takes about half an hour on two busy cores (less once pip has cached the downloads). Not part of CI,
# which tests the newest releases.
#
# Environment:
#   TTSVAR_FLOORS_VENV  virtualenv to (re)create  (default: a temporary folder, removed at the end)
#   TTSVAR_PYTHON       interpreter for it          (default: python3)
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${TTSVAR_PYTHON:-python3}
# torch and torchvision as the development environment has them: one place says which
TORCH_VERSION=$(sed -n 's/^TORCH_VERSION=\([^ ]*\).*/\1/p' "$REPO/scripts/setup_env.sh")
TORCHVISION_VERSION=$(sed -n 's/^TORCHVISION_VERSION=\([^ ]*\).*/\1/p' "$REPO/scripts/setup_env.sh")

if [ -n "${TTSVAR_FLOORS_VENV:-}" ]; then
  VENV=$(realpath -m "$TTSVAR_FLOORS_VENV")
  rm -rf "$VENV"
else
  TMP=$(mktemp -d)
  trap 'rm -rf "$TMP"' EXIT
  VENV=$TMP/venv
fi
VPY="$VENV/bin/python"
log() { echo "[floors] $*"; }

# requirements.txt's runtime lines with each floor as the exact version; torch is installed separately
FLOORS=()
while read -r line; do
  line=${line%%#*}
  line=${line//[[:space:]]/}
  [ -z "$line" ] && continue
  case "$line" in
    torch\>=*) continue ;;
    *\>=*) FLOORS+=("${line/>=/==}") ;;
    *) echo "[floors] ERROR: '$line' in requirements.txt has no floor (>=)" >&2; exit 1 ;;
  esac
done < "$REPO/requirements.txt"

"$PY" -m venv "$VENV"
CONSTRAINTS="$VENV/floors-constraints.txt"
# Every install goes through these pins, so no floor package can swap the torch build.
printf 'torch==%s\ntorchvision==%s\n' "$TORCH_VERSION" "$TORCHVISION_VERSION" > "$CONSTRAINTS"
pip_install() {
  "$VPY" -m pip install -q --progress-bar off -c "$CONSTRAINTS" "$@" 2> >(grep -v "^WARNING: Location '.*' is ignored" >&2)
}
log "venv $VENV ($("$VPY" --version))"
pip_install "torch==$TORCH_VERSION"
pip_install "torchvision==$TORCHVISION_VERSION" "${FLOORS[@]}" pytest
SITE=$("$VPY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
cp "$REPO/scripts/torchvision_cpu_shim.py" "$SITE/_ttsvar_torchvision_shim.py"
echo "import _ttsvar_torchvision_shim" > "$SITE/ttsvar_torchvision_shim.pth"

# pip resolved the exact pins or failed; print what was tested, and fail if a dependency moved anyway
"$VPY" - "${FLOORS[@]}" <<'PYEOF'
import sys
from importlib.metadata import version

from packaging.requirements import Requirement

for pin in sys.argv[1:]:
    req = Requirement(pin)
    installed = version(req.name)
    if installed not in req.specifier:
        sys.exit(f"[floors] {req.name} {installed} installed, expected {req.specifier}")
    print(f"[floors] {req.name} {installed}")
print(f"[floors] torch {version('torch')}, torchvision {version('torchvision')} (not floors)")
PYEOF

cd "$REPO"
log "tests"
"$VPY" -m pytest -q -p no:cacheprovider -m "not e2e" tests/core tests/engine tests/scorers \
  tests/shapesworld/test_evaluate.py tests/test_layering.py "$@"
log "all floors pass"
