"""The prompt stream: shipped files, bad-row reporting, token limits, `limit`."""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path

import pytest

from cluster.data.prompts import SHIPPED_EVAL, SHIPPED_TRAIN, BadRow, Prompt, PromptFileError, load_prompts, read_prompt_rows
from core.chat import ChatEncoder
from judge.verifier import Instructions

MAX_TOKENS = 96  # model.max_prompt_tokens default


def _write(path: Path, lines: list[str | bytes]) -> Path:
    data = b"".join((l if isinstance(l, bytes) else l.encode("utf-8")) + b"\n" for l in lines)
    path.write_bytes(data)
    return path


def _row(pid: str, prompt: str) -> str:
    return json.dumps({"id": pid, "prompt": prompt})


# ---------------------------------------------------------------------------------------
# The shipped files.


@pytest.mark.parametrize("path, count, prefix", [(SHIPPED_TRAIN, 240, "train"), (SHIPPED_EVAL, 100, "eval")])
def test_shipped_file_loads_every_row(tiny_tokenizer, path, count, prefix):
    rows, bad = read_prompt_rows(path)
    assert bad == []
    assert len(rows) == count
    # ids are numbered in file order, one per line, no blank lines in between
    assert [r[1] for r in rows] == [f"{prefix}-{i:04d}" for i in range(1, count + 1)]
    assert [r[0] for r in rows] == list(range(1, count + 1))

    prompts = load_prompts(path, tiny_tokenizer, MAX_TOKENS)  # default on_bad_rows="error"
    assert len(prompts) == count
    assert len({p.prompt_id for p in prompts}) == count
    assert len({p.text for p in prompts}) == count
    for p in prompts:
        assert isinstance(p, Prompt)
        assert 5 <= len(p.text.split()) <= 30, p.text
        assert p.text == p.text.strip()
        assert list(p.tokens) == ChatEncoder(tiny_tokenizer).user_prompt(p.text)
        assert len(p.tokens) <= MAX_TOKENS


def test_shipped_train_and_eval_do_not_overlap():
    train_rows, _ = read_prompt_rows(SHIPPED_TRAIN)
    eval_rows, _ = read_prompt_rows(SHIPPED_EVAL)
    train_text = {r.text.strip().lower() for r in train_rows}
    eval_text = {r.text.strip().lower() for r in eval_rows}
    assert len(train_text) == 240 and len(eval_text) == 100
    assert train_text.isdisjoint(eval_text)
    assert {r.prompt_id for r in train_rows}.isdisjoint({r.prompt_id for r in eval_rows})


def test_broad_sets_hold_out_their_questions_and_check_every_kind():
    """The broad sets (experiments/broad-ifeval): each held-out row is built on a question (or writing
    task) that no training row holds, and every one of the verifier's kinds appears in each set.
    Catches a regenerated set that leaks training questions into a held-out set, or a kind the
    generator stopped drawing."""
    from cluster.data.prompts import DATA_DIR, SHIPPED
    from judge.verifier import INSTRUCTIONS, verify

    def texts(path):
        return [r.text for r in read_prompt_rows(path)[0]]

    train_q, eval_q = texts(SHIPPED_TRAIN), texts(SHIPPED_EVAL)
    tasks = texts(DATA_DIR / "writing_tasks.jsonl")
    sets = {name: read_prompt_rows(SHIPPED[name]) for name in ("broad", "broad-eval", "broad-tasks-eval")}
    assert {name: (len(rows), len(bad)) for name, (rows, bad) in sets.items()} == {
        "broad": (1200, 0), "broad-eval": (300, 0), "broad-tasks-eval": (150, 0)}
    own = {"broad": train_q, "broad-eval": eval_q, "broad-tasks-eval": tasks}
    for name, (rows, _) in sets.items():
        for r in rows:
            held = [q for q in train_q + eval_q + tasks if q in r.text]
            assert len(held) == 1 and held[0] in own[name], (name, r.prompt_id, held)
            verify("An answer.", r.instructions)  # IFEval's checkers accept the row's kwargs
        assert {k for r in rows for k in r.instructions.ids} == set(INSTRUCTIONS), name
    # The transfer set puts the instructions first in about a third of its rows.
    first = sum(not r.text.startswith(t) for r, t in zip(sets["broad-tasks-eval"][0], [t for t in tasks for _ in range(3)]))
    assert 30 <= first <= 70


def test_none_path_means_shipped_train(tiny_tokenizer):
    prompts = load_prompts(None, tiny_tokenizer, MAX_TOKENS)
    first_row = json.loads(SHIPPED_TRAIN.read_text(encoding="utf-8").splitlines()[0])
    assert len(prompts) == 240
    assert prompts[0].prompt_id == "train-0001" == first_row["id"]
    assert prompts[0].text == first_row["prompt"]


# ---------------------------------------------------------------------------------------
# The chat encoding (core/chat.py) of a prompt.


def test_a_prompt_is_encoded_with_the_chat_template(tiny_tokenizer):
    ids = ChatEncoder(tiny_tokenizer).user_prompt("Why is the sky blue?")
    assert all(isinstance(i, int) for i in ids)
    assert ids[0] == tiny_tokenizer.convert_tokens_to_ids("<|im_start|>")
    assert tiny_tokenizer.decode(ids) == "<|im_start|>user\nWhy is the sky blue?<|im_end|>\n<|im_start|>assistant\n"


def test_a_tokenizer_without_template_is_refused_unless_plain_is_chosen(tiny_tokenizer):
    """Would catch the old silent fallback: a tokenizer without a chat template encoded its
    prompts as plain text with nobody told."""
    from core.chat import ChatTemplateError

    bare = copy.deepcopy(tiny_tokenizer)
    bare.chat_template = None
    with pytest.raises(ChatTemplateError, match=r"^model.chat_template: the tokenizer of .* has no chat template; set "
                                                r"model.chat_template to a .jinja file .* or to 'plain'"):
        ChatEncoder(bare)
    with pytest.raises(ChatTemplateError, match="has no chat template"):
        load_prompts(SHIPPED_TRAIN, bare, MAX_TOKENS)
    ids = ChatEncoder(bare, "plain").user_prompt("Why is the sky blue?")
    assert ids == list(tiny_tokenizer("Why is the sky blue?", add_special_tokens=True)["input_ids"])
    assert bare.decode(ids) == "Why is the sky blue?"
    # plain ignores a template the tokenizer has: the choice is the config's, not the tokenizer's
    assert ChatEncoder(tiny_tokenizer, "plain").user_prompt("Why is the sky blue?") == ids


# ---------------------------------------------------------------------------------------
# Bad rows: reported by line, refused by default, skipped (loudly) on request.


@pytest.fixture
def messy_file(tmp_path) -> Path:
    return _write(
        tmp_path / "messy.jsonl",
        [
            _row("a", "How do I boil an egg?"),  # 1 ok
            b'{"id": "b", "prompt": "caf\xe9 au lait"}',  # 2 latin-1 byte: not UTF-8
            '{"id": "c", "prompt": "unterminated',  # 3 bad JSON
            "",  # 4 blank: layout, not a row
            json.dumps({"id": "d", "text": "wrong field name"}),  # 5 missing prompt
            _row("e", "   "),  # 6 empty prompt
            _row("a", "Same id as line one."),  # 7 duplicate id
            json.dumps(["not", "an", "object"]),  # 8 not an object
            json.dumps({"id": "g", "prompt": 42}),  # 9 prompt not a string
            _row("h", "Write a haiku about rain."),  # 10 ok
            json.dumps({"prompt": "A row without an id."}),  # 11 ok, id from its line
        ],
    )


def test_read_prompt_rows_reports_each_bad_row_with_its_line(messy_file):
    rows, bad = read_prompt_rows(messy_file)
    assert rows == [
        (1, "a", "How do I boil an egg?", None, None),
        (10, "h", "Write a haiku about rain.", None, None),
        (11, "line-11", "A row without an id.", None, None),
    ]
    assert [b.line for b in bad] == [2, 3, 5, 6, 7, 8, 9]
    reasons = {b.line: b.reason for b in bad}
    assert reasons[2] == "not valid UTF-8 (invalid continuation byte at byte 26)"
    assert reasons[3].startswith("not valid JSON (")  # wording is the json module's
    assert reasons[5] == "missing string field 'prompt'"
    assert reasons[6] == "empty prompt"
    assert reasons[7] == "duplicate id 'a' (first on line 1)"
    assert reasons[8] == "row is not a JSON object"
    assert reasons[9] == "missing string field 'prompt'"


def test_bad_rows_refuse_the_file_by_default(messy_file, tiny_tokenizer):
    with pytest.raises(PromptFileError) as err:
        load_prompts(messy_file, tiny_tokenizer, MAX_TOKENS)
    msg = str(err.value)
    assert f"{messy_file}: 7 bad row(s): " in msg
    for line in (2, 3, 5, 6, 7, 8, 9):
        assert f"line {line}: " in msg
    assert "line 1:" not in msg and "line 10:" not in msg and "line 4:" not in msg
    assert "line 2: not valid UTF-8" in msg
    assert "line 7: duplicate id 'a' (first on line 1)" in msg
    assert msg.endswith("Fix them or set data.on_bad_rows=skip")
    # listed in line order
    assert msg.index("line 2:") < msg.index("line 3:") < msg.index("line 9:")


def test_bad_rows_are_skipped_and_reported_when_asked(messy_file, tiny_tokenizer, caplog):
    with caplog.at_level(logging.WARNING, logger="cluster.data.prompts"):
        prompts = load_prompts(messy_file, tiny_tokenizer, MAX_TOKENS, on_bad_rows="skip")
    assert [p.prompt_id for p in prompts] == ["a", "h", "line-11"]
    assert [p.text for p in prompts] == ["How do I boil an egg?", "Write a haiku about rain.", "A row without an id."]
    assert prompts[0].tokens == tuple(ChatEncoder(tiny_tokenizer).user_prompt("How do I boil an egg?"))
    warnings = [r for r in caplog.records if r.name == "cluster.data.prompts" and r.levelno == logging.WARNING]
    assert len(warnings) == 1
    msg = warnings[0].getMessage()
    assert f"{messy_file}: skipping 7 bad row(s): " in msg
    for line in (2, 3, 5, 6, 7, 8, 9):
        assert f"line {line}: " in msg


def test_clean_file_logs_no_warning(tmp_path, tiny_tokenizer, caplog):
    path = _write(tmp_path / "clean.jsonl",
                  [_row("x", "Define empathy in one sentence."), "", "  ", _row("y", "What is a noun?")])
    with caplog.at_level(logging.WARNING, logger="cluster.data.prompts"):
        prompts = load_prompts(path, tiny_tokenizer, MAX_TOKENS, on_bad_rows="skip")
    assert [p.prompt_id for p in prompts] == ["x", "y"]
    assert [r for r in caplog.records if r.name == "cluster.data.prompts"] == []


def test_more_than_twenty_bad_rows_are_summarised(tmp_path, tiny_tokenizer):
    lines = [_row("ok", "A usable prompt here.")] + [f"{{broken {i}" for i in range(25)]
    path = _write(tmp_path / "many.jsonl", lines)
    with pytest.raises(PromptFileError) as err:
        load_prompts(path, tiny_tokenizer, MAX_TOKENS)
    msg = str(err.value)
    assert "25 bad row(s)" in msg
    assert "line 21: " in msg  # the 20th bad row (lines 2..21 are listed)
    assert "line 22: " not in msg
    assert "(and 5 more)" in msg


def test_only_bad_rows_is_an_error_even_when_skipping(tmp_path, tiny_tokenizer):
    path = _write(tmp_path / "allbad.jsonl", ["{nope", _row("e", "")])
    with pytest.raises(PromptFileError, match=r"no usable prompts"):
        load_prompts(path, tiny_tokenizer, MAX_TOKENS, on_bad_rows="skip")


def test_empty_file_is_an_error(tmp_path, tiny_tokenizer):
    path = tmp_path / "empty.jsonl"
    path.write_text("\n\n")
    with pytest.raises(PromptFileError, match=r"empty\.jsonl: no usable prompts"):
        load_prompts(path, tiny_tokenizer, MAX_TOKENS)


def test_missing_file_is_an_error(tmp_path, tiny_tokenizer):
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(PromptFileError, match=r"does not exist") as err:
        load_prompts(missing, tiny_tokenizer, MAX_TOKENS)
    assert str(missing) in str(err.value)


# ---------------------------------------------------------------------------------------
# Over-long prompts: longer than max_prompt_tokens (after the chat template) is a bad row.


def test_over_long_prompt_is_a_bad_row(tmp_path, tiny_tokenizer, caplog):
    short, long = "Name a red fruit.", "Explain, slowly and in great detail, " * 6 + "how a river forms."
    chat = ChatEncoder(tiny_tokenizer)
    n_short, n_long = len(chat.user_prompt(short)), len(chat.user_prompt(long))
    assert n_short < n_long
    path = _write(tmp_path / "long.jsonl", [_row("s", short), _row("l", long)])

    # exactly at the limit is allowed
    assert [p.prompt_id for p in load_prompts(path, tiny_tokenizer, n_long)] == ["s", "l"]

    limit = n_long - 1
    with pytest.raises(PromptFileError) as err:
        load_prompts(path, tiny_tokenizer, limit)
    assert f"1 bad row(s): line 2: prompt is {n_long} tokens, over model.max_prompt_tokens={limit}" in str(err.value)

    with caplog.at_level(logging.WARNING, logger="cluster.data.prompts"):
        kept = load_prompts(path, tiny_tokenizer, limit, on_bad_rows="skip")
    assert [p.prompt_id for p in kept] == ["s"]
    assert f"line 2: prompt is {n_long} tokens" in caplog.text


def test_over_long_and_malformed_rows_are_listed_together_in_line_order(tmp_path, tiny_tokenizer):
    long = "word " * 80
    n_long = len(ChatEncoder(tiny_tokenizer).user_prompt(long))
    path = _write(tmp_path / "mix.jsonl", [_row("long", long), "{bad", _row("ok", "Hello there, friend.")])
    with pytest.raises(PromptFileError) as err:
        load_prompts(path, tiny_tokenizer, MAX_TOKENS)
    msg = str(err.value)
    assert n_long > MAX_TOKENS
    assert (f"2 bad row(s): line 1: prompt is {n_long} tokens, over model.max_prompt_tokens={MAX_TOKENS}; "
            "line 2: not valid JSON") in msg


# ---------------------------------------------------------------------------------------
# limit.


def test_limit_keeps_the_first_usable_prompts_in_file_order(tiny_tokenizer):
    three = load_prompts(SHIPPED_EVAL, tiny_tokenizer, MAX_TOKENS, limit=3)
    assert [p.prompt_id for p in three] == ["eval-0001", "eval-0002", "eval-0003"]
    assert len(load_prompts(SHIPPED_TRAIN, tiny_tokenizer, MAX_TOKENS, limit=200)) == 200
    assert len(load_prompts(SHIPPED_EVAL, tiny_tokenizer, MAX_TOKENS, limit=1000)) == 100
    assert len(load_prompts(SHIPPED_EVAL, tiny_tokenizer, MAX_TOKENS, limit=None)) == 100


def test_limit_counts_usable_rows_after_skipping(messy_file, tiny_tokenizer):
    prompts = load_prompts(messy_file, tiny_tokenizer, MAX_TOKENS, on_bad_rows="skip", limit=2)
    assert [p.prompt_id for p in prompts] == ["a", "h"]


def test_limit_does_not_hide_bad_rows_past_it(messy_file, tiny_tokenizer):
    # the whole file is validated even if only the first prompt is wanted
    with pytest.raises(PromptFileError, match=r"7 bad row\(s\)"):
        load_prompts(messy_file, tiny_tokenizer, MAX_TOKENS, limit=1)


def test_bad_row_is_a_plain_record():
    assert BadRow(3, "empty prompt") == BadRow(3, "empty prompt")
    assert issubclass(PromptFileError, ValueError)


# -- prompt sets the way TRL / OpenRLHF / veRL users hold them ---------------------------
IFEVAL_ROWS = [  # IFEval's own shape: an integer key, every kwarg named, unused ones None
    {"key": 1000, "prompt": "Write a note about tea. Do not use any commas.",
     "instruction_id_list": ["punctuation:no_comma"],
     "kwargs": [{"num_words": None, "relation": None, "postscript_marker": None}]},
    {"key": 1001, "prompt": "Describe rain in under 30 words.",
     "instruction_id_list": ["length_constraints:number_words"],
     "kwargs": [{"num_words": 30, "relation": "less than", "postscript_marker": None}]},
]


def test_ifeval_rows_with_integer_keys_and_none_kwargs_are_read_as_they_are(tiny_tokenizer, tmp_path):
    """Would catch refusing IFEval's own rows (None kwargs of other kinds read as unknown
    arguments) or dropping their integer keys."""
    path = tmp_path / "ifeval.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in IFEVAL_ROWS))
    prompts = load_prompts(path, tiny_tokenizer, MAX_TOKENS)
    assert [p.prompt_id for p in prompts] == ["1000", "1001"]
    assert prompts[0].instructions == Instructions(("punctuation:no_comma",), ({},))
    assert prompts[1].instructions.kwargs == ({"num_words": 30, "relation": "less than"},)


def test_a_parquet_file_and_a_saved_datasets_folder_give_the_same_prompts(tiny_tokenizer, tmp_path):
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    jsonl = tmp_path / "rows.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in IFEVAL_ROWS))
    pq.write_table(pa.Table.from_pylist(IFEVAL_ROWS), tmp_path / "rows.parquet")
    datasets.Dataset.from_list(IFEVAL_ROWS).save_to_disk(str(tmp_path / "saved"))
    datasets.DatasetDict({"train": datasets.Dataset.from_list(IFEVAL_ROWS[:1]),
                          "test": datasets.Dataset.from_list(IFEVAL_ROWS[1:])}).save_to_disk(str(tmp_path / "dict"))
    expected = load_prompts(jsonl, tiny_tokenizer, MAX_TOKENS)
    assert load_prompts(tmp_path / "rows.parquet", tiny_tokenizer, MAX_TOKENS) == expected
    assert load_prompts(tmp_path / "saved", tiny_tokenizer, MAX_TOKENS) == expected
    assert load_prompts(tmp_path / "dict", tiny_tokenizer, MAX_TOKENS, split="test") == expected[1:]
    with pytest.raises(PromptFileError, match=r"no split 'validation' \(it has train, test\); set data.split"):
        load_prompts(tmp_path / "dict", tiny_tokenizer, MAX_TOKENS, split="validation")


def test_a_chat_column_is_encoded_as_a_chat_without_the_answer(tiny_tokenizer, tmp_path):
    """TRL's conversational prompts: the last user turn is what judges read; a trailing
    assistant turn (an answer in the data) is not part of the prompt."""
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Why is the sky blue?"},
            {"role": "assistant", "content": "Rayleigh scattering."}]
    path = tmp_path / "chat.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in [
        {"messages": chat}, {"messages": [{"role": "assistant", "content": "x"}]}, {"messages": 3}]))
    with pytest.raises(PromptFileError) as err:
        load_prompts(path, tiny_tokenizer, MAX_TOKENS, prompt_column="messages")
    assert "line 2: chat in 'messages' has no user turn; line 3: field 'messages' is neither a string" in str(err.value)
    [prompt] = load_prompts(path, tiny_tokenizer, MAX_TOKENS, on_bad_rows="skip", prompt_column="messages")
    assert prompt.text == "Why is the sky blue?" and prompt.prompt_id == "line-1"
    assert list(prompt.tokens) == ChatEncoder(tiny_tokenizer).prompt(chat[:2])


def test_bad_rows_of_a_parquet_file_are_refused_by_row_number(tiny_tokenizer, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"key": 1, "prompt": "Fine."}, {"key": 2, "prompt": ""}, {"key": 1, "prompt": "Again."}]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "bad.parquet")
    with pytest.raises(PromptFileError, match=r"2 bad row\(s\): line 2: empty prompt; line 3: duplicate id '1'"):
        load_prompts(tmp_path / "bad.parquet", tiny_tokenizer, MAX_TOKENS)


def test_a_dataset_name_that_is_not_in_the_local_cache_is_refused_clearly(tiny_tokenizer, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # an empty cache
    with pytest.raises(PromptFileError, match=r"'nobody/nothing': not a file or folder, and not a dataset in the "
                                              r"local Hugging Face cache \(split 'train'\)"):
        load_prompts("nobody/nothing", tiny_tokenizer, MAX_TOKENS)
