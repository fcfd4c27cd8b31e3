"""The trained tokenizer: 4096 ids, fixed special ids, deterministic files, offline loading,
the chat template rendered by transformers equal to our jinja rendering."""
import hashlib
import json

import pytest

from longcat.models.tokenizer import (CHAT_TEMPLATE, SPECIAL_TOKENS, VOCAB_SIZE, build_corpus,
                                      render_chat, train_tokenizer)

FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
DOMAINS = ["airline", "retail", "banking"]


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    return train_tokenizer(tmp_path_factory.mktemp("tok"), seed=0)


@pytest.fixture(scope="module")
def tok(tok_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tok_dir)


def _digest(d):
    return {f: hashlib.sha256((d / f).read_bytes()).hexdigest() for f in FILES}


def test_files_and_ids(tok_dir, tok):
    for f in FILES:
        assert (tok_dir / f).is_file()
    assert len(tok) == VOCAB_SIZE
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id) == (0, 1, 2)
    assert tok.convert_tokens_to_ids(SPECIAL_TOKENS) == list(range(len(SPECIAL_TOKENS)))
    config = json.loads((tok_dir / "tokenizer_config.json").read_text())
    assert config["chat_template"] == CHAT_TEMPLATE and config["model_max_length"] > 0


def test_deterministic_per_seed(tok_dir, tmp_path):
    # a smaller corpus keeps this fast; same seed twice -> same bytes, another seed -> other merges
    a = _digest(train_tokenizer(tmp_path / "a", seed=3, domains=DOMAINS))
    b = _digest(train_tokenizer(tmp_path / "b", seed=3, domains=DOMAINS))
    c = _digest(train_tokenizer(tmp_path / "c", seed=4, domains=DOMAINS))
    assert a == b
    assert a["tokenizer.json"] != c["tokenizer.json"]
    assert build_corpus(3, DOMAINS) == build_corpus(3, DOMAINS)


def test_round_trip_and_markers(tok):
    text = "Hello, wörld! 42 * 17 = 714 \t\n{\"user_id\": \"M-000001\"} 日本"
    assert tok.decode(tok.encode(text)) == text
    assert tok.encode(text)[0] != tok.bos_token_id      # plain encode adds no bos
    ids = tok.encode("<tool_call>{}</tool_call><think>x</think><|im_end|>")
    assert ids[0] == SPECIAL_TOKENS.index("<tool_call>")
    kept = tok.decode(ids, skip_special_tokens=True)
    assert kept == "<tool_call>{}</tool_call><think>x</think>"     # tool/think markers survive
    # the vocabulary learned the domain words (a byte-level fallback would need many ids)
    assert len(tok.encode(" reservation")) <= 2


def test_template_matches_transformers(tok):
    tools = [{"type": "function", "function": {"name": "get_user", "description": "Find a user.",
              "parameters": {"type": "object", "properties": {"user_id": {"type": "string"}}}}}]
    messages = [{"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Find M-1"},
                {"role": "assistant", "content": "",
                 "tool_calls": [{"id": "call_1", "type": "function",
                                 "function": {"name": "get_user", "arguments": "{\"user_id\": \"M-1\"}"}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "{\"name\": \"Ann\"}"},
                {"role": "assistant", "content": "It is Ann."}]
    for kw in ({"tools": tools}, {}):
        ours = render_chat(messages, add_generation_prompt=True, **kw)
        theirs = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False, **kw)
        assert ours == theirs
    text = render_chat(messages, tools=tools)
    assert text.startswith("<s><|im_start|>system\nBe brief.\n\n# Tools")
    assert '<tool_call>\n{"name": "get_user", "arguments": {"user_id": "M-1"}}\n</tool_call><|im_end|>' in text
    assert "<|im_start|>tool\n<tool_response>\n{\"name\": \"Ann\"}\n</tool_response><|im_end|>" in text
    assert not text.endswith("<|im_start|>assistant\n")


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="vocab_size"):
        train_tokenizer(tmp_path, vocab_size=100)
    with pytest.raises(ValueError, match="model_max_length"):
        train_tokenizer(tmp_path, model_max_length=0)
