"""Judge kinds (judge/preferences.py) and the IFEval verifier: p on hand-written responses
against hand-computed values, and the accuracy statistics of cluster/evaluation/instruction_eval.py."""

from __future__ import annotations

import json
import math

import pytest
import torch

from cluster.data.prompts import SHIPPED, PromptFileError, load_prompts, read_prompt_rows
from cluster.evaluation import instruction_eval, intervals
from core.config import JudgeConfig
from judge.preferences import FlippedJudge, LMJudge, PythonJudge, RewardJudge, VerifierJudge, check_kind, make_preference, sigmoid
from judge.verifier import Instructions, Verdict, parse_instructions, verify
from learner.losses import hard_labels

NO_COMMA = "punctuation:no_comma"
FEW_WORDS = "length_constraints:number_words"
QUOTED = "startend:quotation"
BOTH = Instructions((NO_COMMA, FEW_WORDS), ({}, {"relation": "less than", "num_words": 5}))


def sig(x: float) -> float:
    return 1 / (1 + math.exp(-x))


# ---------------------------------------------------------------------------------------
# The verifier: IFEval's checkers, strict and loose.


def test_verify_strict_per_instruction():
    assert verify("short and sweet", BOTH) == Verdict((True, True), (True, True))
    assert verify("short, sweet", BOTH).strict == (False, True)
    assert verify("far too many words in this one here", BOTH).strict == (True, False)
    assert verify("a, b, c, d, e, f", BOTH).strict == (False, False)
    assert verify("   ", BOTH).strict == (False, False)  # IFEval: an empty answer follows nothing
    assert verify("short, sweet", BOTH).fraction == 0.5


def test_loose_drops_a_first_line_as_ifeval_does():
    quoted = Instructions((QUOTED,), ({},))
    answer = 'Sure! Here it is:\n"Tea is a drink."'
    assert verify(answer, quoted) == Verdict((False,), (True,))  # strict fails, loose passes
    assert verify('"Tea is a drink."', quoted) == Verdict((True,), (True,))


def test_every_ifeval_kind_is_checked_offline_the_sentence_counters_included():
    """The kinds that need nltk's punkt data count sentences the way punkt does (abbreviations
    are not sentence ends). Would catch missing punkt data (a LookupError) or a naive splitter."""
    from judge.verifier import INSTRUCTIONS, verify

    assert len(INSTRUCTIONS) == 25
    ins = parse_instructions(["length_constraints:number_sentences", "change_case:capital_word_frequency"],
                             [{"num_sentences": 4, "relation": "less than"},
                              {"capital_frequency": 2, "capital_relation": "at least"}])
    # Three sentences ("Dr." and "p.m." do not end one); THIS and BIG are capital words.
    assert verify("Dr. Smith came at 5 p.m. on Monday. THIS IS BIG. Was it fun?", ins).strict == (True, True)
    assert verify("One. Two. Three. Four. five", ins).strict == (False, False)
    repeat = parse_instructions(["combination:repeat_prompt"], [{"prompt_to_repeat": "Why is tea good?"}])
    assert verify("Why is tea good? Because it is warm.", repeat).strict == (True,)


def test_parse_instructions_refuses_what_cannot_be_checked():
    assert parse_instructions([NO_COMMA], None) == Instructions((NO_COMMA,), ({},))
    with pytest.raises(ValueError, match="unknown instruction id 'punctuation:no_colon'"):
        parse_instructions(["punctuation:no_colon"], [{}])
    with pytest.raises(ValueError, match=r"needs kwargs \['prompt_to_repeat'\], missing"):
        parse_instructions(["combination:repeat_prompt"], [{}])
    with pytest.raises(ValueError, match=r"takes kwargs \['num_words', 'relation'\], got unknown \['words'\]"):
        parse_instructions([FEW_WORDS], [{"words": 3}])
    with pytest.raises(ValueError, match="bad kwargs"):
        parse_instructions([FEW_WORDS], [{"relation": "about", "num_words": 3}])
    with pytest.raises(ValueError, match="kwargs must be a list of 2 objects"):
        parse_instructions([NO_COMMA, FEW_WORDS], [{}])
    with pytest.raises(ValueError, match="non-empty list of strings"):
        parse_instructions([], [])


def test_prompt_file_with_bad_instructions_names_file_and_line(tiny_tokenizer, tmp_path):
    path = tmp_path / "p.jsonl"
    rows = [
        {"id": "a", "prompt": "Say hi.", "instruction_id_list": [NO_COMMA], "kwargs": [{}]},
        {"id": "b", "prompt": "Say bye.", "instruction_id_list": ["nope:nothing"], "kwargs": [{}]},
        {"id": "c", "prompt": "Say yes.", "instruction_id_list": [FEW_WORDS], "kwargs": [{"relation": "less than"}]},
        {"id": "d", "prompt": "Plain question."},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(PromptFileError) as err:
        load_prompts(path, tiny_tokenizer, 96)
    message = str(err.value)
    assert message.startswith(f"{path}: 2 bad row(s): line 2: unknown instruction id 'nope:nothing'")
    assert ("line 3: instruction 'length_constraints:number_words' needs kwargs ['num_words', 'relation'], "
            "missing ['num_words']") in message
    good, _ = read_prompt_rows(path)
    assert good[0][3] == Instructions((NO_COMMA,), ({},)) and good[-1][3] is None


@pytest.mark.parametrize("name, at_least", [("instructions", 300), ("instructions-eval", 150)])
def test_shipped_instruction_sets(name, at_least, tiny_tokenizer):
    prompts = load_prompts(name, tiny_tokenizer, 256)
    assert len(prompts) >= at_least
    assert all(p.instructions is not None and 1 <= len(p.instructions.ids) <= 2 for p in prompts)
    assert len({p.text for p in prompts}) == len(prompts)


def test_shipped_train_and_held_out_instruction_questions_differ(tiny_tokenizer):
    train = {p.text.split("?")[0] for p in load_prompts(SHIPPED["instructions"], tiny_tokenizer, 256)}
    held = {p.text.split("?")[0] for p in load_prompts(SHIPPED["instructions-eval"], tiny_tokenizer, 256)}
    assert train.isdisjoint(held)


# ---------------------------------------------------------------------------------------
# Judge kinds: p by hand.


def test_verifier_judge_p_is_sigmoid_of_share_difference():
    judge = VerifierJudge({"q": BOTH}, tau=0.25)
    full, half, none = "short and sweet", "short, sweet", "a, b, c, d, e, f"
    p = judge.compare(["q"] * 4, [full, full, half, half], [none, half, full, "tiny, one"])
    assert p == pytest.approx([sig(4.0), sig(2.0), sig(-2.0), 0.5], abs=1e-12)
    assert p[0] == pytest.approx(0.98201379, abs=1e-8)
    with pytest.raises(KeyError, match="no instructions for prompt"):
        judge.compare(["unknown"], ["a"], ["b"])


def test_python_judge_calls_the_users_function_and_checks_its_range():
    judge = PythonJudge("judge_fixtures:prefer_marker")
    # "see" has two e's more than "pop": p = σ(2 / 0.5); equal counts tie
    assert judge.compare(["q", "q"], ["see", "pop"], ["pop", "top"]) == pytest.approx([sig(4.0), 0.5])
    with pytest.raises(ValueError, match=r"returned 1.5 .* must be in \[0, 1\]"):
        PythonJudge("judge_fixtures:out_of_range").compare(["q"], ["a"], ["b"])
    with pytest.raises(ValueError, match="cannot load 'missing' from module 'judge_fixtures'"):
        PythonJudge("judge_fixtures:missing")


def test_flipped_judge_flips_a_share_deterministically_and_symmetrically():
    base = VerifierJudge({"q": BOTH}, tau=0.25)
    noisy = FlippedJudge(base, prob=0.35, seed=3)
    a = [f"short {i}" for i in range(400)]
    b = [f"a, b, c, d, e {i}" for i in range(400)]
    p = noisy.compare(["q"] * 400, a, b)
    flipped = sum(x < 0.5 for x in p) / 400
    assert 0.28 < flipped < 0.42  # ε = 0.35 of comparisons report 1 − p
    assert p == noisy.compare(["q"] * 400, a, b)  # the same comparisons flip the same way
    reverse = noisy.compare(["q"] * 400, b, a)
    assert [x + y for x, y in zip(p, reverse)] == pytest.approx([1.0] * 400)
    assert FlippedJudge(base, 0.35, seed=4).compare(["q"] * 400, a, b) != p


def test_logit_noise_is_gaussian_in_logit_space_antisymmetric_and_wrong_mostly_on_close_pairs():
    """p = σ((s_a − s_b)/τ + ε), ε ~ N(0, σ²). Would catch: noise that breaks p(b≻a) = 1 − p(a≻b),
    draws that change between calls, a scale that is not σ, and a noise that is as often wrong
    on a clear pair as on a close one (the flip model's behaviour, not an LLM judge's)."""
    import statistics

    from judge.preferences import LogitNoiseJudge

    base = VerifierJudge({"q": BOTH}, tau=0.5)
    noisy = LogitNoiseJudge(base, scale=2.0, seed=3)
    n = 2000
    clear_a, clear_b = [f"short {i}" for i in range(n)], [f"a, b, c, d, e {i}" for i in range(n)]  # shares 1 vs 0
    close_a, close_b = [f"a, b {i}" for i in range(n)], [f"a, b, c, d, e {i}" for i in range(n)]   # shares 0.5 vs 0
    p = noisy.compare(["q"] * n, clear_a, clear_b)
    eps = [math.log(x / (1 - x)) - 2.0 for x in p]  # logit p − (1 − 0)/0.5
    assert abs(statistics.mean(eps)) < 0.15 and statistics.stdev(eps) == pytest.approx(2.0, rel=0.06)
    assert p == noisy.compare(["q"] * n, clear_a, clear_b)
    assert [x + y for x, y in zip(p, noisy.compare(["q"] * n, clear_b, clear_a))] == pytest.approx([1.0] * n)
    wrong_clear = sum(x < 0.5 for x in p) / n  # P(ε < −2) = Φ(−1) = 0.159
    wrong_close = sum(x < 0.5 for x in noisy.compare(["q"] * n, close_a, close_b)) / n  # P(ε < −1) = Φ(−0.5) = 0.309
    assert wrong_clear == pytest.approx(0.159, abs=0.025) and wrong_close == pytest.approx(0.309, abs=0.03)
    # A tie becomes a coin flip: right half the time.
    ties = noisy.compare(["q"] * n, [f"short {i}" for i in range(n)], [f"tiny {i}" for i in range(n)])
    assert sum(x > 0.5 for x in ties) / n == pytest.approx(0.5, abs=0.035)


def test_noise_is_chosen_by_config_and_refused_when_unknown():
    from judge.preferences import LogitNoiseJudge, with_noise

    base = VerifierJudge({"q": BOTH}, tau=0.5)
    assert with_noise(base, "none", 2.0, 0) is base and with_noise(base, "logit", 0.0, 0) is base
    assert isinstance(with_noise(base, "logit", 1.0, 0), LogitNoiseJudge)
    assert isinstance(with_noise(base, "flip", 0.2, 0), FlippedJudge)
    with pytest.raises(ValueError, match="unknown judge.noise 'gauss'"):
        with_noise(base, "gauss", 1.0, 0)


def test_temperature_softens_a_judge_by_hand_keeps_ties_and_verdicts_and_is_wired_from_config():
    """p ← σ(logit(p)/T). A one-instruction pass against a fail gives p = σ(2) for the verifier
    (τ = 0.5); at T = 4 it is σ(0.5) = 0.6225 exactly. Would catch a temperature that multiplies
    instead of divides, one applied before the noise (the noisy p would stay overconfident), a
    tie moved off ½, a verdict flipped, or a config value that never reaches the judge."""
    from judge.preferences import LogitNoiseJudge, TemperedJudge, base_judge

    base = VerifierJudge({"q": BOTH}, tau=0.5)
    cool = make_preference(JudgeConfig(kind="verifier", tau=0.5, temperature=4.0), instructions={"q": BOTH})
    assert isinstance(cool, TemperedJudge) and base_judge(cool).__class__ is VerifierJudge
    assert cool.compare(["q"], ["short"], ["a, b, c, d, e"]) == pytest.approx([1 / (1 + math.exp(-0.5))], abs=1e-12)
    assert cool.compare(["q"], ["short"], ["tiny"]) == [0.5]  # both pass: a tie stays a tie
    assert make_preference(JudgeConfig(kind="verifier", tau=0.5), instructions={"q": BOTH}).__class__ is VerifierJudge  # T = 1
    # After the noise: logit(p) = (2 + ε)/T, the same ε as the untempered noisy judge.
    noisy = make_preference(JudgeConfig(kind="verifier", tau=0.5, noise="logit", noise_scale=3.0, temperature=7.0),
                            instructions={"q": BOTH}, seed=5)
    assert isinstance(noisy.inner, LogitNoiseJudge)
    raw = LogitNoiseJudge(base, 3.0, seed=5)
    a, b = [f"short {i}" for i in range(50)], [f"a, b, c, d, e {i}" for i in range(50)]
    for x, y in zip(noisy.compare(["q"] * 50, a, b), raw.compare(["q"] * 50, a, b)):
        assert math.log(x / (1 - x)) == pytest.approx(math.log(y / (1 - y)) / 7.0, abs=1e-9)
        assert (x > 0.5) == (y > 0.5)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        make_preference(JudgeConfig(kind="verifier", temperature=0.0), instructions={"q": BOTH})


def test_reward_judge_is_sigmoid_of_reward_difference_over_tau(tiny_model_dir, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=1)
    model.save_pretrained(tmp_path / "rm")
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(tmp_path / "rm")
    judge = make_preference(JudgeConfig(kind=f"reward:{tmp_path / 'rm'}", tau=2.0))
    assert isinstance(judge, RewardJudge)
    prompts, a, b = ["Say hi."] * 2, ["hello there", "hi"], ["hi", "hello there"]
    ra, rb = judge.rewards(prompts, a), judge.rewards(prompts, b)
    assert ra[0] != rb[0]
    assert judge.compare(prompts, a, b) == pytest.approx([sig((x - y) / 2.0) for x, y in zip(ra, rb)], abs=1e-12)


def test_lm_judge_swap_average_is_complementary_and_batch_invariant(tiny_model_dir, tiny_tokenizer):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    judge = LMJudge(model, tiny_tokenizer, "self-judge", batch_size=3)
    prompts = ["Say hi.", "Name a fruit.", "Why is the sky blue?"]
    a, b = ["hello", "apple", "Light scatters."], ["hi there friend", "a pear, maybe", "It just is."]
    forward = judge.compare(prompts, a, b)
    backward = judge.compare(prompts, b, a)
    # exact in exact arithmetic; float32 logits of differently padded batches differ by ~1e-8
    assert [x + y for x, y in zip(forward, backward)] == pytest.approx([1.0] * 3, abs=1e-6)
    alone = [judge.compare([p], [x], [y])[0] for p, x, y in zip(prompts, a, b)]  # other padding, batch of 1
    assert alone == pytest.approx(forward, abs=1e-5)
    # Position consistency, by hand from the raw first-is-better probabilities of both orders.
    rendered = [judge.template.render(tiny_tokenizer, prompts[0], a[0], b[0]),
                judge.template.render(tiny_tokenizer, prompts[0], b[0], a[0])]
    p_ab, p_ba = judge.first_better_probs(rendered).tolist()
    judge.position_gap_sum, judge.position_gap_count = 0.0, 0
    judge.compare(prompts[:1], a[:1], b[:1])
    assert judge.position_gap_count == 1
    assert judge.position_gap_sum == pytest.approx(abs(p_ab - (1 - p_ba)), abs=1e-6)
    assert any(abs(x - 0.5) > 1e-4 for x in forward)


def test_judge_kind_is_checked():
    for ok in ("self", "verifier", "lm:/m", "reward:/m", "python:pkg.mod:fn"):
        check_kind(ok)
    for bad in ("oracle", "lm", "lm:", "python:mod", "python::fn", "reward"):
        with pytest.raises(ValueError, match="unknown judge kind"):
            check_kind(bad)
    with pytest.raises(ValueError, match="needs prompts with verifiable instructions"):
        make_preference(JudgeConfig(kind="verifier"), instructions={})


def test_sigmoid_is_stable_for_large_arguments():
    assert sigmoid(800.0) == 1.0 and sigmoid(-800.0) == 0.0 and sigmoid(0.0) == 0.5


def test_hard_labels_keep_ties_at_one_half():
    p = torch.tensor([0.5, 0.5000001, 0.98, 1.0], dtype=torch.float64)
    assert hard_labels(p).tolist() == [0.5, 1.0, 1.0, 1.0]


# ---------------------------------------------------------------------------------------
# IFEval accuracy with bootstrap intervals.


def _v(*strict: bool, loose: tuple[bool, ...] | None = None) -> Verdict:
    return Verdict(tuple(strict), tuple(loose if loose is not None else strict))


def test_prompt_and_instruction_level_accuracy_by_hand():
    vs = [_v(True, True), _v(True, False, loose=(True, True)), _v(False)]
    acc = instruction_eval.accuracy(vs)
    assert acc["prompt_strict"]["value"] == pytest.approx(1 / 3)
    assert acc["prompt_loose"]["value"] == pytest.approx(2 / 3)
    assert acc["instruction_strict"]["value"] == pytest.approx(3 / 5)  # pooled: 3 of 5 instructions
    assert acc["instruction_loose"]["value"] == pytest.approx(4 / 5)
    for m in acc.values():
        assert 0.0 <= m["ci_low"] <= m["value"] <= m["ci_high"] <= 1.0
    same = instruction_eval.accuracy([_v(True)] * 20)
    assert same["prompt_strict"] == {"value": 1.0, "ci_low": 1.0, "ci_high": 1.0}


def test_paired_gain_and_its_interval():
    base = [_v(False)] * 50 + [_v(True)] * 50
    policy = [_v(True)] * 80 + [_v(False)] * 20  # 30 more prompts followed
    g = instruction_eval.gain(policy, base)["prompt_strict"]
    assert g["value"] == pytest.approx(0.30)
    assert 0.0 < g["ci_low"] < 0.30 < g["ci_high"]
    assert instruction_eval.gain(base, base)["prompt_strict"] == {"value": 0.0, "ci_low": 0.0, "ci_high": 0.0}
    import numpy as np

    diff = np.array([1.0] * 50 + [0.0] * 30 + [-1.0] * 20)  # policy − base, prompt by prompt
    assert intervals.mean_with_interval(diff) == pytest.approx(g)


def test_pooled_over_runs_equals_the_prompt_interval_when_runs_agree():
    """Identical runs: resampling them changes nothing, so the two-stage interval is exactly
    the prompt bootstrap's (same prompt draws), and the between-run SD is 0. Would catch a
    pooled interval that draws prompts differently, or averages runs wrongly."""
    import numpy as np

    diff = np.array([1.0] * 50 + [0.0] * 30 + [-1.0] * 20)
    pooled = intervals.pooled_over_runs([(1.0, np.stack([diff, diff, diff]))], np.ones(100))
    single = intervals.mean_with_interval(diff)
    assert (pooled["value"], pooled["ci_low"], pooled["ci_high"]) == pytest.approx(
        (single["value"], single["ci_low"], single["ci_high"]), abs=1e-12)
    assert pooled["between_run_sd"] == 0.0 and pooled["runs"] == [[0.3, 0.3, 0.3]]


def test_pooled_over_runs_spans_run_to_run_variance_by_hand():
    """Two runs that differ and prompts that do not: a replicate's mean is run A's (0.2), the
    average (0.3) or run B's (0.4), with chances 1/4, 1/2, 1/4, so the 95% interval is [0.2, 0.4];
    the prompt-only bootstrap of the pooled answers would say [0.3, 0.3]. SD of (0.2, 0.4) = 0.1414."""
    import numpy as np

    a, b = np.full(10, 0.2), np.full(10, 0.4)
    pooled = intervals.pooled_over_runs([(1.0, np.stack([a, b]))], np.ones(10))
    assert pooled["value"] == pytest.approx(0.3)
    assert (pooled["ci_low"], pooled["ci_high"]) == pytest.approx((0.2, 0.4))
    assert pooled["between_run_sd"] == pytest.approx(2 ** 0.5 / 10)
    assert intervals.mean_with_interval((a + b) / 2)["ci_high"] == pytest.approx(0.3)
    # A difference of two methods: groups resampled separately, weights +1 and −1.
    diff = intervals.pooled_over_runs([(1.0, np.stack([a, b])), (-1.0, np.stack([a, a]))], np.ones(10))
    assert diff["value"] == pytest.approx(0.1) and (diff["ci_low"], diff["ci_high"]) == pytest.approx((0.0, 0.2))
    assert diff["between_run_sd"] == [pytest.approx(2 ** 0.5 / 10), 0.0]


def test_per_kind_table():
    ins = [BOTH, Instructions((NO_COMMA,), ({},))]
    table = instruction_eval.per_kind(ins, [_v(True, False), _v(False)])
    assert table == {FEW_WORDS: {"n": 1, "strict": 0.0, "loose": 0.0},
                     NO_COMMA: {"n": 2, "strict": 0.5, "loose": 0.5}}


def test_lm_kind_loads_another_model_and_judges_like_the_self_judge_on_it(tiny_model_dir, tiny_tokenizer, tmp_path):
    from tiny_model import build_tiny_model
    from transformers import AutoModelForCausalLM

    other = build_tiny_model(tmp_path / "judge", seed=5)
    judge = make_preference(JudgeConfig(kind=f"lm:{other}"))
    assert isinstance(judge, LMJudge) and judge.name == f"lm:{other}"
    direct = LMJudge(AutoModelForCausalLM.from_pretrained(other).eval(), tiny_tokenizer, "x")
    self_judge = LMJudge(AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval(), tiny_tokenizer, "self-judge")
    args = (["Say hi."], ["hello"], ["hi there friend"])
    assert judge.compare(*args) == pytest.approx(direct.compare(*args), abs=1e-6)
    assert judge.compare(*args) != pytest.approx(self_judge.compare(*args), abs=1e-6)  # another model, other p


# ---------------------------------------------------------------------------------------
# The real JudgeActor path: comparisons per anchor mode, the SFT model's greedy anchor.


def _rollout(tokenizer, k: int = 4, cut: tuple[int, ...] = ()):
    """Two prompts with K fixed answers; the answers at indices `cut` hit max_tokens."""
    from core.chat import ChatEncoder
    from core.records import rollout_batch

    rows = []
    for i, (prompt, answers) in enumerate([("Say hi.", ["hi", "hello there", "hey", "good day to you"]),
                                           ("Name a fruit.", ["apple", "a pear", "plum, ripe", "fig"])]):
        answers = answers[:k]
        rows.append({
            "prompt_id": f"p{i}", "prompt_index": i, "prompt_text": prompt,
            "prompt_tokens": ChatEncoder(tokenizer).user_prompt(prompt),
            "response_tokens": [tokenizer(a, add_special_tokens=False)["input_ids"] for a in answers],
            "response_texts": answers, "response_logprobs": [-1.0] * k,
            "finish_reasons": ["length" if j in cut else "stop" for j in range(k)],
            "policy_version": 0, "actor": "test",
        })
    return rollout_batch(rows)


def judge_actor(model_path: str, max_tokens: int = 24, **judge):
    """A JudgeActor in this process, for the run config whose judge section has `judge` (and
    whose answers are at most `max_tokens` long: the sft_greedy anchor's length), with that
    config's method (the driver passes both)."""
    from cluster.methods import method_of
    from core.config import Config
    from judge.judge_actor import JudgeActor

    cfg = Config(judge=JudgeConfig(**judge))
    cfg.rollout.k, cfg.rollout.max_tokens = 4, max_tokens
    return JudgeActor(model_path, cfg, method_of(cfg))


@pytest.mark.parametrize("anchor", ["round_robin", "sample0", "sft_greedy"])
def test_judge_worker_makes_the_documented_comparisons_and_never_judges_a_response_with_itself(
        anchor, tiny_model_dir, tiny_tokenizer, monkeypatch):
    from judge.pairing import comparisons_per_prompt

    worker = judge_actor(tiny_model_dir, max_tokens=4, anchor=anchor)
    seen = []
    compare = worker.preference.compare
    monkeypatch.setattr(worker.preference, "compare", lambda p, a, b: seen.extend(zip(a, b)) or compare(p, a, b))
    table, stats = worker.score(_rollout(tiny_tokenizer))
    assert worker.comparisons == 2 * comparisons_per_prompt(4, anchor) == len(seen)
    assert all(a != b for a, b in seen)
    assert table.num_rows == 4 and stats["pairs"] == 4.0
    assert all(p >= 0.5 for p in table["strength"].to_pylist())
    assert stats["position_gap_count"] == worker.comparisons and stats["position_gap_sum"] > 0


def test_sft_greedy_anchor_comes_from_the_sft_model_when_another_lm_judges(tiny_model_dir, tmp_path):
    from tiny_model import build_tiny_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from core.chat import ChatEncoder

    other = build_tiny_model(tmp_path / "judge", seed=3)
    worker = judge_actor(tiny_model_dir, max_tokens=5, kind=f"lm:{other}", anchor="sft_greedy")
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokens = ChatEncoder(tokenizer).user_prompt("Say hi.")

    def greedy(path):
        model = AutoModelForCausalLM.from_pretrained(path).eval()
        out = model.generate(torch.tensor([tokens]), max_new_tokens=5, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id)
        return tokenizer.decode(out[0, len(tokens):], skip_special_tokens=True)

    assert worker.greedy_answers([tokens]) == [greedy(tiny_model_dir)]
    assert greedy(tiny_model_dir) != greedy(other)  # the premise: the two models answer differently


def test_truncated_pairs_are_kept_dropped_or_lose_as_configured(tiny_model_dir, tiny_tokenizer):
    batch = _rollout(tiny_tokenizer, cut=(1,))  # "hello there" and "a pear" were cut at max_tokens
    kept, stats = judge_actor(tiny_model_dir).score(batch)
    assert stats["pairs_with_truncated"] == 2.0 and stats["truncated"] == 2.0 and kept.num_rows == 4
    cut_texts = {"hello there", "a pear"}
    with_cut = [r for r in kept.to_pylist() if {r["chosen_text"], r["rejected_text"]} & cut_texts]
    dropped, _ = judge_actor(tiny_model_dir, truncated="drop").score(batch)
    assert dropped.num_rows == 2
    assert not any({r["chosen_text"], r["rejected_text"]} & cut_texts for r in dropped.to_pylist())
    lost, _ = judge_actor(tiny_model_dir, truncated="lose").score(batch)
    lost_rows = [r for r in lost.to_pylist() if {r["chosen_text"], r["rejected_text"]} & cut_texts]
    assert len(lost_rows) == len(with_cut) == 2
    assert all(r["rejected_text"] in cut_texts and r["strength"] == 1.0 for r in lost_rows)
    with pytest.raises(ValueError, match="judge truncated must be one of"):
        judge_actor(tiny_model_dir, truncated="trim")


def test_checklist_judge_asks_each_instruction_in_ifevals_words_once(tiny_model_dir, tiny_tokenizer):
    """One yes/no question per (instruction, answer), IFEval's own wording of the rule, cached
    across the pairs an answer is in; p(b ≻ a) = 1 − p(a ≻ b); s is the mean P(yes). Would catch
    a question about the wrong rule, or scores that depend on the presentation order."""
    from transformers import AutoModelForCausalLM

    from judge.checklist import ChecklistJudge
    from judge.verifier import describe

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    judge = ChecklistJudge(model, tiny_tokenizer, {"q": BOTH}, tau=0.5)
    answers = ["short answer", "a, b, c and d and e", "x"]
    p = judge.compare(["q", "q"], answers[:2], answers[1:])
    assert judge.compare(["q", "q"], answers[1:], answers[:2]) == pytest.approx([1 - x for x in p], abs=1e-12)
    rules = [describe(i, kw) for i, kw in zip(BOTH.ids, BOTH.kwargs)]
    assert set(judge.cache) == {(rule, a) for rule in rules for a in answers}  # 2 rules × 3 answers, each once
    s0 = judge.score("q", answers[0])
    assert s0 == pytest.approx(sum(judge.cache[(rule, answers[0])] for rule in rules) / 2)
    assert p[0] == pytest.approx(sig((s0 - judge.score("q", answers[1])) / 0.5))
