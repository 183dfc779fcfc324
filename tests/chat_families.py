"""Tiny random models whose tokenizers carry the real chat templates and special-token
conventions of three instruct families (tests/test_chat_families.py).

Each family's model is a 2-layer Llama (hidden 128, head_dim 32: vLLM-CPU needs head_dim ≥ 32)
with a byte-level BPE trained here (as tests/tiny_model.py does) around the family's own special
tokens. What is real is what the encoding depends on: the template text, which special tokens
exist, which one the tokenizer adds itself when asked for special tokens (a BOS), eos and pad,
and generation_config's stop ids.

Where each template comes from (the "chat_template" field of the model's tokenizer_config.json):
- Llama 3: meta-llama/Meta-Llama-3-8B-Instruct;
- Qwen2.5: Qwen/Qwen2.5-*-Instruct (the same text in every size), kept whole, tool branches
  included, as that file's JSON string, so it can be compared with it character for character;
- Gemma 2: google/gemma-2-*-it (refuses a system turn; writes its own BOS).

The models are made stop-prone (`make_stops_likely`): a random model would almost never sample
one of the stop ids within a few tokens, and the EOS rule is checked on answers that end on one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from tiny_model import _TINY_CORPUS
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

LLAMA3_TEMPLATE = (
    r"{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + "
    r"message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    r"{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}"
    r"{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)

# The JSON string of Qwen2.5-Instruct's tokenizer_config.json "chat_template", cut into pieces
# (at its line breaks and spaces) to fit the line length; json.loads gives the template text.
QWEN25_TEMPLATE = json.loads('"' + (
    r"{%- if tools %}\n"
    r"    {{- '<|im_start|>system\\n"
    r"' }}\n"
    r"    {%- if messages[0]['role'] == 'system' %}\n"
    r"        {{- messages[0]['content'] }}\n"
    r"    {%- else %}\n"
    r"        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}\n"
    r"    {%- endif %}\n"
    r"    {{- \"\\n"
    r"\\n"
    r"# Tools\\n"
    r"\\n"
    r"You may call one or more functions to assist with the user query.\\n"
    r"\\n"
    r"You are provided with function signatures within <tools></tools> XML tags:\\n"
    r"<tools>\" }}\n"
    r"    {%- for tool in tools %}\n"
    r"        {{- \"\\n"
    r"\" }}\n"
    r"        {{- tool | tojson }}\n"
    r"    {%- endfor %}\n"
    r"    {{- \"\\n"
    r"</tools>\\n"
    r"\\n"
    r"For each function call, return a json object with function name and arguments within <tool_call></tool_call> XML "
    r"tags:\\n"
    r"<tool_call>\\n"
    r"{\\\"name\\\": <function-name>, \\\"arguments\\\": <args-json-object>}\\n"
    r"</tool_call><|im_end|>\\n"
    r"\" }}\n"
    r"{%- else %}\n"
    r"    {%- if messages[0]['role'] == 'system' %}\n"
    r"        {{- '<|im_start|>system\\n"
    r"' + messages[0]['content'] + '<|im_end|>\\n"
    r"' }}\n"
    r"    {%- else %}\n"
    r"        {{- '<|im_start|>system\\n"
    r"You are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n"
    r"' }}\n"
    r"    {%- endif %}\n"
    r"{%- endif %}\n"
    r"{%- for message in messages %}\n"
    r"    {%- if (message.role == \"user\") or (message.role == \"system\" and not loop.first) or (message.role == "
    r"\"assistant\" and not message.tool_calls) %}\n"
    r"        {{- '<|im_start|>' + message.role + '\\n"
    r"' + message.content + '<|im_end|>' + '\\n"
    r"' }}\n"
    r"    {%- elif message.role == \"assistant\" %}\n"
    r"        {{- '<|im_start|>' + message.role }}\n"
    r"        {%- if message.content %}\n"
    r"            {{- '\\n"
    r"' + message.content }}\n"
    r"        {%- endif %}\n"
    r"        {%- for tool_call in message.tool_calls %}\n"
    r"            {%- if tool_call.function is defined %}\n"
    r"                {%- set tool_call = tool_call.function %}\n"
    r"            {%- endif %}\n"
    r"            {{- '\\n"
    r"<tool_call>\\n"
    r"{\"name\": \"' }}\n"
    r"            {{- tool_call.name }}\n"
    r"            {{- '\", \"arguments\": ' }}\n"
    r"            {{- tool_call.arguments | tojson }}\n"
    r"            {{- '}\\n"
    r"</tool_call>' }}\n"
    r"        {%- endfor %}\n"
    r"        {{- '<|im_end|>\\n"
    r"' }}\n"
    r"    {%- elif message.role == \"tool\" %}\n"
    r"        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != \"tool\") %}\n"
    r"            {{- '<|im_start|>user' }}\n"
    r"        {%- endif %}\n"
    r"        {{- '\\n"
    r"<tool_response>\\n"
    r"' }}\n"
    r"        {{- message.content }}\n"
    r"        {{- '\\n"
    r"</tool_response>' }}\n"
    r"        {%- if loop.last or (messages[loop.index0 + 1].role != \"tool\") %}\n"
    r"            {{- '<|im_end|>\\n"
    r"' }}\n"
    r"        {%- endif %}\n"
    r"    {%- endif %}\n"
    r"{%- endfor %}\n"
    r"{%- if add_generation_prompt %}\n"
    r"    {{- '<|im_start|>assistant\\n"
    r"' }}\n"
    r"{%- endif %}\n"
) + '"')

GEMMA2_TEMPLATE = (
    r"{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
    r"{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    r"{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    r"{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}"
    r"{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}"
    r"{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}"
)

QWEN_DEFAULT_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."


@dataclass(frozen=True)
class Family:
    """One instruct family's chat conventions, as its tokenizer and generation_config carry them."""

    name: str
    template: str
    specials: tuple[str, ...]  # the special tokens, first in the vocabulary in this order
    bos: str | None  # the tokenizer's bos_token
    adds_bos: bool  # the tokenizer puts bos in front when asked for special tokens (its post-processor)
    eos: str  # the tokenizer's eos_token (vLLM's primary stop id)
    pad: str | None
    stops: tuple[str, ...]  # generation_config.json's eos_token_id: every token vLLM stops on
    generation_prompt: str  # what add_generation_prompt appends: the response starts right after it
    system_ok: bool  # the template accepts a system turn


LLAMA3 = Family("llama3", LLAMA3_TEMPLATE,
                ("<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"),
                bos="<|begin_of_text|>", adds_bos=True, eos="<|eot_id|>", pad=None,
                stops=("<|end_of_text|>", "<|eot_id|>"),
                generation_prompt="<|start_header_id|>assistant<|end_header_id|>\n\n", system_ok=True)
QWEN25 = Family("qwen2.5", QWEN25_TEMPLATE, ("<|endoftext|>", "<|im_start|>", "<|im_end|>"),
                bos=None, adds_bos=False, eos="<|im_end|>", pad="<|endoftext|>", stops=("<|im_end|>", "<|endoftext|>"),
                generation_prompt="<|im_start|>assistant\n", system_ok=True)
GEMMA2 = Family("gemma2", GEMMA2_TEMPLATE, ("<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"),
                bos="<bos>", adds_bos=True, eos="<eos>", pad="<pad>", stops=("<eos>", "<end_of_turn>"),
                generation_prompt="<start_of_turn>model\n", system_ok=False)
FAMILIES = (LLAMA3, QWEN25, GEMMA2)


def family_tokenizer(family: Family, vocab_size: int = 512) -> PreTrainedTokenizerFast:
    """A byte-level BPE with the family's special tokens, BOS behaviour, eos/pad and template."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(family.specials),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(_TINY_CORPUS * 20, trainer=trainer)
    if family.adds_bos:  # as Llama 3's and Gemma's tokenizers: the trap a template's own BOS falls into
        bos = tok.token_to_id(family.bos)
        tok.post_processor = processors.TemplateProcessing(single=f"{family.bos} $A", pair=f"{family.bos} $A {family.bos} $B",
                                                           special_tokens=[(family.bos, bos)])
    named = {family.bos, family.eos, family.pad, "<unk>"}
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=family.bos, eos_token=family.eos,
                                   pad_token=family.pad, unk_token="<unk>" if "<unk>" in family.specials else None,
                                   additional_special_tokens=[t for t in family.specials if t not in named])
    fast.chat_template = family.template
    return fast


def make_stops_likely(model: LlamaForCausalLM, stop_ids: list[int], strength: float, offset: float = 8.0) -> None:
    """Make every stop token likely in every context: the residual stream's first dimension is
    set to a constant (`offset` on every input embedding, nothing written there by the layers),
    so after the final norm it is positive everywhere, and the stop tokens' output rows read
    only it (the head is untied for this)."""
    with torch.no_grad():
        model.get_input_embeddings().weight[:, 0] = offset
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight[0].zero_()
            layer.mlp.down_proj.weight[0].zero_()
        head = model.get_output_embeddings().weight
        for i in stop_ids:
            head[i].zero_()
            head[i, 0] = strength


def build_family_model(family: Family, target: str | Path, seed: int = 0, stop_strength: float = 0.8) -> Path:
    """Save a random 2-layer Llama with `family`'s tokenizer and generation_config in `target`."""
    target = Path(target)
    tokenizer = family_tokenizer(family)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in family.specials}
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=32, max_position_embeddings=1024, tie_word_embeddings=False,
        bos_token_id=ids.get(family.bos), eos_token_id=ids[family.eos], pad_token_id=ids.get(family.pad))
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).to(torch.float32)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.08)
    make_stops_likely(model, [ids[t] for t in family.stops], stop_strength)
    model.generation_config = GenerationConfig(bos_token_id=config.bos_token_id, eos_token_id=[ids[t] for t in family.stops],
                                               pad_token_id=config.pad_token_id)
    target.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)
    return target
