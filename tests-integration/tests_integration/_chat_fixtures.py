"""Chat fixtures: real chat templates (Llama 3's, Qwen2's, Qwen2.5's, as their model repos ship
them), the same templates with ``{% generation %}`` markers around what the assistant writes
(content and end-of-turn token), tokenizer folders for each family, and conversations.

The tokenizers are small byte-level BPEs trained here on a fixed text, with each family's special
tokens added (and Llama's BOS post-processor), so merges cross word and newline boundaries the
way real vocabularies do; transformers loads the same folders with ``AutoTokenizer``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import tokenizers as hf

LLAMA3 = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
    "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim "
    "+ '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
    "{{ content }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
LLAMA3_TAGGED = (
    "{% for message in messages %}{% if loop.index0 == 0 %}{{ bos_token }}{% endif %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' }}"
    "{% if message['role'] == 'assistant' %}{% generation %}"
    "{{ message['content'] | trim + '<|eot_id|>' }}{% endgeneration %}"
    "{% else %}{{ message['content'] | trim + '<|eot_id|>' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}"
    "{% endif %}"
)
QWEN2 = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
QWEN2_TAGGED = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' }}{% if message['role'] == 'assistant' %}"
    "{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}"
    "{% else %}{{ message['content'] + '<|im_end|>' }}{% endif %}{{ '\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
_QWEN25_HEAD = """{%- if tools %}
    {{- '<|im_start|>system\\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}
    {%- endif %}
    {{- "\\n\\n# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\nYou are provided with function signatures within <tools></tools> XML tags:\\n<tools>" }}
    {%- for tool in tools %}
        {{- "\\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\"name\\": <function-name>, \\"arguments\\": <args-json-object>}\\n</tool_call><|im_end|>\\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}
    {%- else %}
        {{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
"""  # noqa: E501
_QWEN25_TOOLS = """    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role }}
        {%- if message.content %}
            {{- '\\n' + message.content }}
        {%- endif %}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}
                {%- set tool_call = tool_call.function %}
            {%- endif %}
            {{- '\\n<tool_call>\\n{"name": "' }}
            {{- tool_call.name }}
            {{- '", "arguments": ' }}
            {{- tool_call.arguments | tojson }}
            {{- '}\\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\\n' }}
    {%- elif message.role == "tool" %}
        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\\n<tool_response>\\n' }}
        {{- message.content }}
        {{- '\\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
{%- endif %}
"""
QWEN25 = (
    _QWEN25_HEAD
    + """    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}
"""  # noqa: E501
    + _QWEN25_TOOLS
)
QWEN25_TAGGED = (
    _QWEN25_HEAD
    + """    {%- if (message.role == "user") or (message.role == "system" and not loop.first) %}
        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}
    {%- elif message.role == "assistant" and not message.tool_calls %}
        {{- '<|im_start|>' + message.role + '\\n' }}
        {%- generation %}{{- message.content + '<|im_end|>' }}{%- endgeneration %}
        {{- '\\n' }}
"""
    + _QWEN25_TOOLS
)

#: family → (special tokens, tokenizer_config entries)
FAMILIES: dict[str, tuple[list[str], dict[str, Any]]] = {
    "llama3": (
        ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
         "<|eot_id|>"],  # fmt: skip
        {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>", "pad_token": None},
    ),
    "qwen2": (
        ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        {"bos_token": None, "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"},
    ),
}
#: name → (family, template, its tagged twin)
TEMPLATES = {
    "llama3": ("llama3", LLAMA3, LLAMA3_TAGGED),
    "qwen2": ("qwen2", QWEN2, QWEN2_TAGGED),
    "qwen2.5": ("qwen2", QWEN25, QWEN25_TAGGED),
}

_CORPUS = (
    "The quick brown fox jumps over the lazy dog. What is the capital of France? Paris is. "
    "How many legs does a spider have? Eight legs, and a fly has six.\n\n"
    "You are a helpful assistant. Answer briefly. I think so; thank you!\n"
    "user assistant system: hello, world. 12 + 30 = 42. Café, naïve, 東京.\n"
)
CONVERSATIONS: list[list[dict[str, str]]] = [
    [{"role": "user", "content": "What is the capital of France?"},
     {"role": "assistant", "content": "Paris."}],
    [{"role": "system", "content": "Answer briefly."},
     {"role": "user", "content": "How many legs does a spider have?"},
     {"role": "assistant", "content": "  Eight legs.\n"},
     {"role": "user", "content": "And a fly?"},
     {"role": "assistant", "content": "Six, I think; thank you!"}],
    [{"role": "user", "content": "12 + 30 = ?"},
     {"role": "assistant", "content": "42"},
     {"role": "user", "content": "Café in 東京?"},
     {"role": "assistant", "content": "naïve question:\n\nyes."}],
]  # fmt: skip


def make_tokenizer_folder(folder: Path, family: str, template: str) -> Path:
    """A tokenizer folder of ``family`` (tokenizer.json + tokenizer_config.json) with
    ``template`` as its chat template."""
    specials, config = FAMILIES[family]
    model = hf.ByteLevelBPETokenizer()
    model.train_from_iterator([_CORPUS] * 4, vocab_size=400, min_frequency=2,
                              special_tokens=specials, show_progress=False)  # fmt: skip
    tok = model._tokenizer
    if family == "llama3":  # Llama 3's post-processor puts BOS before plain text
        bos = tok.token_to_id("<|begin_of_text|>")
        tok.post_processor = hf.processors.TemplateProcessing(
            single="<|begin_of_text|> $A", special_tokens=[("<|begin_of_text|>", bos)]
        )
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    entries = {k: v for k, v in config.items()}
    entries |= {"tokenizer_class": "PreTrainedTokenizerFast", "chat_template": template}
    entries["model_max_length"] = 4096
    (folder / "tokenizer_config.json").write_text(json.dumps(entries, indent=1))
    return folder
