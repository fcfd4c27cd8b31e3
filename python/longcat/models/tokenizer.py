"""The longcat tokenizer: a 4096-id byte-level BPE trained in seconds on text the package makes.

The corpus (``build_corpus``) is generated deterministically from a seed: agent dialogues over
every environment domain of ``longcat.envs`` (the domain's policy as the system prompt, a user
request in the words of a tool's description, the tool call with arguments drawn from the
domain's generated rows, the tool's JSON result, a closing answer), arithmetic problems with
worked answers, all rendered through the chat template below. ``train_tokenizer(out_dir)`` trains
on it with Hugging Face ``tokenizers`` and writes ``tokenizer.json``, ``tokenizer_config.json``
(with ``chat_template``) and ``special_tokens_map.json``, so
``transformers.AutoTokenizer.from_pretrained(out_dir)`` loads it offline.

Ids: ``<pad>`` 0, ``<s>`` 1 (bos), ``</s>`` 2 (eos), then the chat and tool markers
(``SPECIAL_TOKENS``). ``<|im_start|>``/``<|im_end|>`` are special (dropped by
``skip_special_tokens``); the tool and think markers are added tokens that are not special, so
they survive decoding and the tool-call parser sees them (as Qwen's ``<tool_call>``). A chat
turn ends with ``<|im_end|>`` (``CHAT_STOP_TOKEN``), which chat generation adds as a stop token.
Plain ``encode`` adds no bos; the chat template starts with it.
"""
from __future__ import annotations

import functools
import json
import random
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

__all__ = ["VOCAB_SIZE", "SPECIAL_TOKENS", "CHAT_TEMPLATE", "CHAT_STOP_TOKEN", "TOOL_CALL_START",
           "TOOL_CALL_END", "MODEL_MAX_LENGTH", "build_corpus", "render_chat", "train_tokenizer"]

VOCAB_SIZE = 4096
MODEL_MAX_LENGTH = 4096
PAD, BOS, EOS = "<pad>", "<s>", "</s>"
IM_START, IM_END = "<|im_start|>", "<|im_end|>"
TOOL_CALL_START, TOOL_CALL_END = "<tool_call>", "</tool_call>"
TOOL_RESPONSE_START, TOOL_RESPONSE_END = "<tool_response>", "</tool_response>"
THINK_START, THINK_END = "<think>", "</think>"
CHAT_STOP_TOKEN = IM_END
# id order is fixed: pad 0, bos 1, eos 2, then the chat/tool markers
SPECIAL_TOKENS = [PAD, BOS, EOS, IM_START, IM_END, TOOL_CALL_START, TOOL_CALL_END,
                  TOOL_RESPONSE_START, TOOL_RESPONSE_END, THINK_START, THINK_END]
# markers the decoder keeps in text (the tool-call parser and reasoning readers need them)
_KEPT_MARKERS = {TOOL_CALL_START, TOOL_CALL_END, TOOL_RESPONSE_START, TOOL_RESPONSE_END,
                 THINK_START, THINK_END}

# Hermes/Qwen-style ChatML with tools. Tool calls are JSON objects {"name", "arguments"} inside
# <tool_call> tags (the format of vLLM's longcat/hermes parsers); tool results go back in a
# `tool` turn inside <tool_response> tags. `arguments` may be an object or OpenAI's JSON string.
CHAT_TEMPLATE = (
    "{{- bos_token }}"
    "{%- if messages and messages[0].role == 'system' %}"
    "{%- set system = messages[0].content %}{%- set rest = messages[1:] %}"
    "{%- else %}{%- set system = none %}{%- set rest = messages %}{%- endif %}"
    "{%- if tools %}"
    "{{- '<|im_start|>system\\n' }}"
    "{%- if system %}{{- system + '\\n\\n' }}{%- endif %}"
    "{{- '# Tools\\n\\nYou may call one or more functions. Their signatures are inside <tools></tools>:\\n<tools>' }}"
    "{%- for tool in tools %}{{- '\\n' + (tool | tojson) }}{%- endfor %}"
    "{{- '\\n</tools>\\n\\nTo call a function, write a JSON object with its name and arguments inside "
    "<tool_call></tool_call> tags:\\n<tool_call>\\n{\"name\": <function-name>, \"arguments\": <arguments-object>}"
    "\\n</tool_call><|im_end|>\\n' }}"
    "{%- elif system is not none %}"
    "{{- '<|im_start|>system\\n' + system + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for m in rest %}"
    "{%- if m.role == 'assistant' %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- if m.content %}{{- m.content }}{%- endif %}"
    "{%- for tc in (m.tool_calls or []) %}"
    "{%- set fn = tc.function if tc.function is defined else tc %}"
    "{%- if m.content or not loop.first %}{{- '\\n' }}{%- endif %}"
    "{{- '<tool_call>\\n{\"name\": ' + (fn.name | tojson) + ', \"arguments\": ' }}"
    "{%- if fn.arguments is string %}{{- fn.arguments }}{%- else %}{{- fn.arguments | tojson }}{%- endif %}"
    "{{- '}\\n</tool_call>' }}"
    "{%- endfor %}"
    "{{- '<|im_end|>\\n' }}"
    "{%- elif m.role == 'tool' %}"
    "{{- '<|im_start|>tool\\n<tool_response>\\n' + (m.content or '') + '\\n</tool_response><|im_end|>\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>' + m.role + '\\n' + (m.content or '') + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


@functools.lru_cache(maxsize=1)
def _compiled_template():
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.filters["tojson"] = lambda x: json.dumps(x, ensure_ascii=False)
    return env.from_string(CHAT_TEMPLATE)


def render_chat(messages: Sequence[Mapping], tools: Sequence[Mapping] | None = None,
                add_generation_prompt: bool = False) -> str:
    """Renders ``CHAT_TEMPLATE`` with jinja2 the way ``apply_chat_template`` does (same
    environment options and ``tojson``), for building the corpus before a tokenizer exists."""
    return _compiled_template().render(
        messages=list(messages), tools=list(tools) if tools else None,
        add_generation_prompt=add_generation_prompt, bos_token=BOS, eos_token=EOS)


# ------------------------------------------------------------------------------------ corpus
_ASKS = ["Hi, I need to {}.", "Hello! Could you {}?", "Please {}.", "Can you help me {}?",
         "I'd like to {}.", "Hey, I want to {}, thanks."]
_DONE = ["Done: {}.", "All set. {}.", "I have taken care of it: {}.", "Here is the result: {}."]


def _arg_value(param, rows: Mapping[str, list[dict]], rng: random.Random) -> Any:
    """A plausible argument value: from the generated rows when the parameter is a field of an
    entity, else from its JSON schema."""
    if param.field:
        pool = [r.get(param.field[1]) for r in rows.get(param.field[0], [])]
        pool = [v for v in pool if v is not None]
        if pool:
            return rng.choice(pool)
    s = param.schema
    kind = s.get("type")
    kind = next((k for k in kind if k != "null"), "string") if isinstance(kind, list) else kind
    enum = [v for v in s.get("enum", []) if v is not None]
    if enum:
        return rng.choice(enum)
    if kind == "integer":
        return rng.randint(int(s.get("minimum", 1)), int(min(s.get("maximum", 50), 10_000)))
    if kind == "number":
        return round(rng.uniform(float(s.get("minimum", 1)), 500.0), 2)
    if kind == "boolean":
        return rng.random() < 0.5
    if s.get("format") == "date":
        return f"2026-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
    return rng.choice(["standard", "weekly", "window seat", "premium", "express", "late checkout"])


def _sentence(description: str) -> str:
    d = description.strip().rstrip(".")
    return d[:1].lower() + d[1:]


def _domain_dialogues(domain, seed: int, rng: random.Random) -> Iterable[str]:
    from longcat.envs.datagen import generate_rows
    from longcat.envs.schemas import openai_tool

    rows = generate_rows(domain, seed, rows=3)
    tools = list(domain.tools.values())
    schemas = {t.name: openai_tool(t) for t in tools}
    system = (domain.policy or domain.description).strip()
    for i, tool in enumerate(tools):
        args = {p.name: _arg_value(p, rows, rng) for p in tool.params.values()
                if p.required or rng.random() < 0.3}
        entity_rows = rows.get(tool.entity or "", [])
        result = rng.choice(entity_rows) if entity_rows else {"ok": True}
        # schemas are long: every fourth dialogue shows its tool's, so they do not crowd out the rest
        shown = [schemas[tool.name]] if i % 4 == 0 else None
        call = {"id": f"call_{i}", "type": "function",
                "function": {"name": tool.name, "arguments": json.dumps(args, ensure_ascii=False)}}
        messages = [{"role": "system", "content": system if i % 8 == 0 else domain.description},
                    {"role": "user", "content": rng.choice(_ASKS).format(_sentence(tool.description))},
                    {"role": "assistant", "content": "" if rng.random() < 0.6 else
                     f"{THINK_START}The user wants to {_sentence(tool.description)}; "
                     f"I will call {tool.name}.{THINK_END}", "tool_calls": [call]},
                    {"role": "tool", "tool_call_id": call["id"],
                     "content": json.dumps(result, ensure_ascii=False, default=str)},
                    {"role": "assistant", "content": rng.choice(_DONE).format(
                        ", ".join(f"{k} is {v}" for k, v in list(result.items())[:3]))}]
        yield render_chat(messages, tools=shown)


def _arithmetic(rng: random.Random) -> str:
    a, b = rng.randint(0, 999), rng.randint(1, 999)
    op = rng.choice("+-*")
    value = {"+": a + b, "-": a - b, "*": a * b}[op]
    messages = [{"role": "user", "content": f"What is {a} {op} {b}?"},
                {"role": "assistant",
                 "content": f"{THINK_START}{a} {op} {b} = {value}{THINK_END}The answer is {value}."}]
    return render_chat(messages)


def build_corpus(seed: int = 0, domains: Sequence[str] | None = None,
                 arithmetic: int = 2000) -> list[str]:
    """The training texts for (seed, domains): one rendered dialogue per tool of every domain
    (all domains when ``domains`` is None) and ``arithmetic`` worked arithmetic problems."""
    from longcat.envs import load_all

    rng = random.Random(seed)
    texts: list[str] = []
    for domain in load_all(list(domains) if domains is not None else None):
        texts.append(domain.description)
        texts.extend(_domain_dialogues(domain, seed, rng))
    texts.extend(_arithmetic(rng) for _ in range(arithmetic))
    return texts


# ---------------------------------------------------------------------------------- training
def train_tokenizer(out_dir: str | Path, seed: int = 0, vocab_size: int = VOCAB_SIZE,
                    domains: Sequence[str] | None = None,
                    model_max_length: int = MODEL_MAX_LENGTH) -> Path:
    """Trains the byte-level BPE on ``build_corpus(seed, domains)`` and writes the Hugging Face
    tokenizer files into ``out_dir`` (created if needed); returns ``out_dir``. The same seed
    gives byte-identical files."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    if not isinstance(vocab_size, int) or vocab_size < len(SPECIAL_TOKENS) + 256:
        raise ValueError(f"vocab_size: expected an int >= {len(SPECIAL_TOKENS) + 256} "
                         f"(specials + 256 bytes), got {vocab_size!r}")
    if not isinstance(model_max_length, int) or model_max_length < 1:
        raise ValueError(f"model_max_length: expected an int >= 1, got {model_max_length!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  min_frequency=2, show_progress=False)
    tok.train_from_iterator(build_corpus(seed, domains), trainer=trainer)
    if tok.get_vocab_size() != vocab_size:
        raise RuntimeError(f"the corpus yielded {tok.get_vocab_size()} ids, not vocab_size={vocab_size}: "
                           "too few distinct merges; lower vocab_size or add domains")

    spec = json.loads(tok.to_str())
    for added in spec["added_tokens"]:
        added["special"] = added["content"] not in _KEPT_MARKERS
    (out / "tokenizer.json").write_text(json.dumps(spec, ensure_ascii=False, indent=1) + "\n")

    specials = {"bos_token": BOS, "eos_token": EOS, "pad_token": PAD}
    extra = [t for t in SPECIAL_TOKENS[3:] if t not in _KEPT_MARKERS]
    config = {"tokenizer_class": "PreTrainedTokenizerFast", **specials, "unk_token": None,
              "additional_special_tokens": extra, "model_max_length": model_max_length,
              "add_bos_token": False, "add_eos_token": False, "clean_up_tokenization_spaces": False,
              "padding_side": "left", "chat_template": CHAT_TEMPLATE}
    (out / "tokenizer_config.json").write_text(json.dumps(config, ensure_ascii=False, indent=1) + "\n")
    (out / "special_tokens_map.json").write_text(
        json.dumps({**specials, "additional_special_tokens": extra}, indent=1) + "\n")
    return out
