#!/usr/bin/env bash
# so1s-predict and BentoML side by side on the same model and cores (see README.md).
# Not part of CI: it takes about 25 minutes (three cases) and a 5.6 GB venv.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
venv=${SO1S_COMPARE_VENV:-$root/.cache/venv-compare}

scripts/setup.sh >&2                       # libtorch and the MiniLM model
if ! command -v wrk >/dev/null; then
    echo "installing wrk" >&2
    apt-get install -y -q wrk >&2 || { apt-get update -q >&2 && apt-get install -y -q wrk >&2; }
fi
if ! "$venv/bin/python" -c "import bentoml, sentence_transformers" 2>/dev/null; then
    echo "making $venv (torch 2.4.0, sentence-transformers 3.0.1, bentoml 1.4.40: about 5.6 GB)" >&2
    python3 -m venv "$venv"
    # torch from the pip registry imports only with its nvidia-* packages, even on a CPU.
    "$venv/bin/pip" install -q --find-links "$root/.cache/wheels" \
        torch==2.4.0 transformers==4.44.2 numpy==1.26.4 \
        sentence-transformers==3.0.1 bentoml==1.4.40 >&2
fi
# The classifier and the reranker (random weights in the hub's shapes) in .cache/models.
"$venv/bin/python" benches/compare/make_models.py "$root/.cache/models/all-MiniLM-L6-v2" "$root/.cache/models" >&2
cargo build --release -q -p so1s-bin --bin so1s-predict >&2
exec python3 benches/compare/compare.py
