"""The checklist judge (`judge.kind=checklist`): the SFT model judges each answer against the
prompt's instructions one at a time, instead of comparing two whole answers.

For every instruction of the prompt (IFEval's own wording of it, rebuilt from its id and
kwargs) the model reads one yes/no question about one answer:

    Rule: <the instruction>
    Text: <the answer>
    Does the text follow the rule? Answer Yes or No.

q = P("Yes") restricted to the two answer tokens; an answer's score s is the mean q over the
prompt's instructions, and p(a ≻ b) = σ((s_a − s_b)/τ), as the verifier's. Pointwise
questions have no presentation order, so there is no position bias to average away, and each
(answer, instruction) is asked once however many pairs the answer is in. It gives a small
model what the pairwise prompt does not: one narrow question at a time, in the words the
instruction was given in. Whether that is enough is measured by `python -m cluster.judge_report`.
"""

from __future__ import annotations

import torch

from core.chat import ChatEncoder, as_chat
from core.tokens import pad_token_id
from judge.strength import answer_token_ids, sigmoid
from judge.verifier import Instructions, describe

QUESTION = "Rule: {rule}\n\nText: {text}\n\nDoes the text follow the rule? Answer Yes or No."
# The answer tokens, in order of preference: the first pair the tokenizer keeps whole.
ANSWERS = (("Yes", "No"), ("yes", "no"), (" Yes", " No"), ("Y", "N"))


def yes_no_ids(tokenizer) -> tuple[int, int]:
    """Token ids of "Yes" and "No" (or the first variant the tokenizer does not split)."""
    for pair in ANSWERS:
        try:
            return answer_token_ids(tokenizer, pair)
        except ValueError:
            continue
    raise ValueError(f"the checklist judge needs single-token yes/no answers; this tokenizer splits all of {ANSWERS}")


class ChecklistJudge:
    name = "checklist"

    def __init__(self, model, chat: ChatEncoder, instructions: dict[str, Instructions], tau: float = 0.25,
                 batch_size: int = 8):
        """`chat`: the SFT model's ChatEncoder (core/chat.py; a bare tokenizer: its own template)."""
        self.chat = as_chat(chat)
        self.model, self.tokenizer, self.instructions, self.tau = model, self.chat.tokenizer, instructions, tau
        self.batch_size = batch_size
        self.answer_ids = yes_no_ids(self.tokenizer)
        self.pad_id = pad_token_id(self.tokenizer)
        self.cache: dict[tuple[str, str], float] = {}  # (rule, answer) → P(yes)

    def render(self, rule: str, text: str) -> list[int]:
        return self.chat.user_prompt(QUESTION.format(rule=rule, text=text))

    @torch.no_grad()
    def yes_probabilities(self, questions: list[tuple[str, str]]) -> list[float]:
        """P(yes) for each (rule, text), from the cache or one left-padded batched pass."""
        todo = [q for q in dict.fromkeys(questions) if q not in self.cache]
        device = next(self.model.parameters()).device
        for start in range(0, len(todo), self.batch_size):
            chunk = todo[start : start + self.batch_size]
            rendered = [self.render(rule, text) for rule, text in chunk]
            width = max(len(x) for x in rendered)
            ids = torch.full((len(chunk), width), self.pad_id, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for i, seq in enumerate(rendered):
                ids[i, width - len(seq):] = torch.tensor(seq)
                mask[i, width - len(seq):] = 1
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            logits = self.model(input_ids=ids.to(device), attention_mask=mask.to(device),
                                position_ids=positions.to(device), logits_to_keep=1).logits[:, -1].double().cpu()
            yes = torch.sigmoid(logits[:, self.answer_ids[0]] - logits[:, self.answer_ids[1]])
            self.cache.update(zip(chunk, yes.tolist()))
        return [self.cache[q] for q in questions]

    def score(self, prompt: str, answer: str) -> float:
        """s: the mean P(yes) over the prompt's instructions."""
        return self.scores([prompt], [answer])[0]

    def scores(self, prompts: list[str], answers: list[str]) -> list[float]:
        questions, spans = [], []
        for prompt, answer in zip(prompts, answers):
            if prompt not in self.instructions:
                raise KeyError(f"the checklist judge has no instructions for prompt {prompt[:80]!r}: "
                               "use a prompt file whose rows carry instruction_id_list and kwargs")
            ins = self.instructions[prompt]
            rules = [describe(i, kw) for i, kw in zip(ins.ids, ins.kwargs)]
            spans.append((len(questions), len(rules)))
            questions += [(rule, answer) for rule in rules]
        probs = self.yes_probabilities(questions)
        return [sum(probs[i : i + n]) / n for i, n in spans]

    def compare(self, prompts: list[str], a: list[str], b: list[str]) -> list[float]:
        sa, sb = self.scores(prompts, a), self.scores(prompts, b)
        return [sigmoid((x - y) / self.tau) for x, y in zip(sa, sb)]
