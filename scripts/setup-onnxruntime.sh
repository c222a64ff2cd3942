#!/usr/bin/env bash
# Provides the ONNX Runtime shared library the runtime loads at start-up (ort `load-dynamic`).
#
# The library is taken from the PyPI wheel `onnxruntime==1.32.0` (a registry package, so no
# model-hub or GitHub download is needed), pinned by version and by the wheel's sha256, and only
# `onnxruntime/capi/libonnxruntime.so.1.32.0` is unpacked into <repo>/.tools/onnxruntime/
# (git-ignored). Re-running is quick: an existing library with the pinned checksum is kept.
#
# Environment: FACEKEY_ORT_DIR overrides the destination directory; PYTHON the interpreter used
# for `python -m pip`.
set -euo pipefail

ORT_VERSION="1.32.0"
LIB_NAME="libonnxruntime.so.${ORT_VERSION}"

# One wheel per platform; the Python tag is pinned so the checksum does not depend on the local
# interpreter (the C library inside is the same for every tag).
case "$(uname -s)-$(uname -m)" in
  Linux-x86_64)
    PLATFORM="manylinux_2_28_x86_64"
    WHEEL="onnxruntime-${ORT_VERSION}-cp311-cp311-${PLATFORM}.whl"
    WHEEL_SHA256="5a34fc4dfeb5a7b4a74c95dcba1e773d722abda720b474edf1b0c419dc6d163d"
    LIB_SHA256="6c1585d1bbf45b0712ea4a21b705c5fcb4ba04ff2e30f1fbf81a49faf658638f"
    ;;
  *)
    echo "setup-onnxruntime: no pinned onnxruntime wheel for $(uname -s)-$(uname -m);" >&2
    echo "  install ONNX Runtime ${ORT_VERSION} yourself and set FACEKEY_ORT_LIBRARY to the library." >&2
    exit 1
    ;;
esac

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="${FACEKEY_ORT_DIR:-${repo_root}/.tools/onnxruntime}"
python="${PYTHON:-python3}"

sha256_of() { sha256sum "$1" | cut -d' ' -f1; }

# The wheel's licence and third-party notices travel with the library (MIT asks for the notice).
NOTICES=(LICENSE ThirdPartyNotices.txt)
notices_present() {
  local n
  for n in "${NOTICES[@]}"; do [[ -s "${dest}/onnxruntime-${n}" ]] || return 1; done
}

if [[ -f "${dest}/${LIB_NAME}" ]] && [[ "$(sha256_of "${dest}/${LIB_NAME}")" == "${LIB_SHA256}" ]] \
  && notices_present; then
  ln -sfn "${LIB_NAME}" "${dest}/libonnxruntime.so"
  echo "setup-onnxruntime: ${dest}/${LIB_NAME} already present"
  exit 0
fi

mkdir -p "${dest}"
cache="${dest}/wheel-cache"
mkdir -p "${cache}"
wheel_path="${cache}/${WHEEL}"

if [[ ! -f "${wheel_path}" ]] || [[ "$(sha256_of "${wheel_path}")" != "${WHEEL_SHA256}" ]]; then
  rm -f "${wheel_path}"
  echo "setup-onnxruntime: downloading ${WHEEL} from PyPI"
  "${python}" -m pip download --quiet --no-deps --only-binary=:all: \
    --platform "${PLATFORM}" --python-version 3.11 --implementation cp --abi cp311 \
    "onnxruntime==${ORT_VERSION}" -d "${cache}"
fi

actual="$(sha256_of "${wheel_path}")"
if [[ "${actual}" != "${WHEEL_SHA256}" ]]; then
  echo "setup-onnxruntime: checksum mismatch for ${wheel_path}" >&2
  echo "  expected ${WHEEL_SHA256}" >&2
  echo "  got      ${actual}" >&2
  rm -f "${wheel_path}"
  exit 1
fi

tmp="${dest}/${LIB_NAME}.tmp.$$"
trap 'rm -f "${tmp}"' EXIT
# extract MEMBER OUT: one file of the wheel.
extract() {
  "${python}" - "${wheel_path}" "$1" "$2" <<'PY'
import shutil, sys, zipfile
wheel, member, out = sys.argv[1:4]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(out, "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
}
extract "onnxruntime/capi/${LIB_NAME}" "${tmp}"

if [[ "$(sha256_of "${tmp}")" != "${LIB_SHA256}" ]]; then
  echo "setup-onnxruntime: unexpected checksum of ${LIB_NAME} inside the wheel" >&2
  exit 1
fi
chmod 0755 "${tmp}"
mv -f "${tmp}" "${dest}/${LIB_NAME}"
for n in "${NOTICES[@]}"; do
  extract "onnxruntime/${n}" "${dest}/onnxruntime-${n}"
done
ln -sfn "${LIB_NAME}" "${dest}/libonnxruntime.so"
echo "setup-onnxruntime: installed ${dest}/${LIB_NAME}"
