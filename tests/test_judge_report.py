"""The judge report card: agreement, calibration and the CLI on real engines (tiny model)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cluster.evaluation.judge_card import fit_temperature, parse_judge_spec, report_card, tempered


def test_report_card_by_hand():
    """Four comparisons over two prompts. Gold prefers a, a, ties, prefers b; the judge says
    0.9 (right), 0.2 (wrong), 0.5 (gold's tie: not scored), 0.7 (wrong): agreement 1/3.
    Read both ways, every bin holds one point except ½ (two, p = y = ½): ECE =
    (0.1 + 0.8 + 0.7 + 0.1 + 0.8 + 0.7) / 8 = 0.4. Would catch an agreement that scores gold's
    ties, or an ECE read one way only (it would not be symmetric in a and b)."""
    card = report_card(np.array([0.9, 0.2, 0.5, 0.7]), np.array([1.0, 1.0, 0.0, -0.5]), np.array([0, 0, 1, 1]))
    assert card["agreement"] == pytest.approx(1 / 3)
    assert card["ece"] == pytest.approx(0.4)
    assert card["near_half_share"] == 0.25 and card["gold_decided"] == 3 and card["pairs"] == 4
    assert {"p": 0.5, "gold": 0.5, "n": 2} in card["reliability"]
    assert sum(b["n"] for b in card["reliability"]) == 8
    lo, hi = card["agreement_ci"]
    assert 0.0 <= lo <= 1 / 3 <= hi <= 1.0


def test_a_judge_that_says_its_own_odds_is_calibrated_and_a_mute_one_agrees_by_half():
    rng = np.random.default_rng(0)
    p = rng.uniform(0, 1, 20000)
    gold = np.where(rng.uniform(0, 1, 20000) < p, 1.0, -1.0)  # gold prefers a with probability p
    card = report_card(p, gold, np.arange(20000) % 500)
    assert card["ece"] < 0.02 and card["agreement"] == pytest.approx(0.75, abs=0.01)  # E[max(p, 1 − p)]
    mute = report_card(np.full(100, 0.5), gold[:100], np.arange(100) % 10)
    assert mute["agreement"] == 0.5 and mute["near_half_share"] == 1.0


def test_fitted_temperature_recovers_the_overconfidence_of_a_judge():
    """A judge whose logits are 4× what its accuracy supports (gold prefers a with probability
    σ(z), the judge says σ(4z)): the fitted T is 4 and calibrates it (ECE falls to the
    sampling floor); a calibrated judge gets T ≈ 1. Would catch a fit that minimises the wrong
    loss (e.g. agreement, which T cannot change), a T applied as a multiplier, or a fit blind
    to gold's ties."""
    rng = np.random.default_rng(1)
    z = rng.normal(0, 1.5, 40000)
    gold = np.where(rng.uniform(0, 1, z.size) < 1 / (1 + np.exp(-z)), 1.0, -1.0)
    over = 1 / (1 + np.exp(-4 * z))
    t = fit_temperature(over, gold)
    assert t == pytest.approx(4.0, rel=0.06)
    owner = np.arange(z.size) % 400
    assert report_card(over, gold, owner)["ece"] > 0.1 > 0.02 > report_card(tempered(over, t), gold, owner)["ece"]
    assert fit_temperature(1 / (1 + np.exp(-z)), gold) == pytest.approx(1.0, rel=0.06)
    # Ties count as y = ½: a judge that is confident on gold's ties must be cooled further.
    tie_gold = np.concatenate([gold, np.zeros(z.size)])
    assert fit_temperature(np.concatenate([over, over]), tie_gold) > 1.2 * t


def test_judge_specs():
    assert parse_judge_spec("self") == ("self", "none", 0.0)
    assert parse_judge_spec("verifier+logit:2.5") == ("verifier", "logit", 2.5)
    assert parse_judge_spec("lm:/models/x+flip:0.2") == ("lm:/models/x", "flip", 0.2)
    with pytest.raises(ValueError, match=r"\+flip:<share> or \+logit:<σ>"):
        parse_judge_spec("verifier+gauss:1")
    with pytest.raises(ValueError, match="unknown judge kind 'oracle'"):
        parse_judge_spec("oracle")


@pytest.mark.engine
@pytest.mark.timeout(600)
def test_report_card_cli_on_real_answers(ray_cluster, tiny_model_dir, tmp_path):
    """Sampled answers, then judges: the verifier judged against itself agrees on every pair
    gold decides (a bug pairing answers with the wrong prompt's instructions breaks that);
    the self-judge has a position gap; every output file is written."""
    from cluster.judge_report import main

    rows = [{"id": f"q{i}", "prompt": f"Tell me about {w}. Do not use any commas.",
             "instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}]}
            for i, w in enumerate(["tea", "rain", "bread", "maps", "snow", "salt"])]
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "card"
    assert main(["--judges", "verifier", "verifier+flip:0.5", "self", "checklist", "--model", tiny_model_dir,
                 "--prompts", str(prompts), "--k", "4", "--max-tokens", "8", "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["meta"]["comparisons"] == 6 * 6
    cards = report["judges"]
    if cards["verifier"]["agreement"] is not None:  # at least one pair where gold decides
        assert cards["verifier"]["agreement"] == 1.0
    assert cards["self"]["position_gap"] is not None and cards["verifier"]["position_gap"] is None
    assert (out / "reliability.png").stat().st_size > 1000 and (out / "answers.json").exists()
    assert all(c["temperature"] > 0 and 0 <= c["ece_at_temperature"] <= 1 for c in cards.values())
    assert "calibrating T" in (out / "report.md").read_text()
    # Judging the saved answers again gives the same card (nothing is resampled).
    assert main(["--judges", "verifier", "--model", tiny_model_dir, "--prompts", str(prompts),
                 "--answers", str(out / "answers.json"), "--out", str(tmp_path / "again")]) == 0
    again = json.loads((tmp_path / "again" / "report.json").read_text())["judges"]["verifier"]
    assert again["agreement"] == cards["verifier"]["agreement"] and again["ece"] == cards["verifier"]["ece"]
