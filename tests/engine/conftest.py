import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from toy_model import ToyPagedModel  # noqa: E402

CHARS = "abcdefghijklmnopqrstuvwxyz .,!?ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


def make_char_tokenizer():
    """A one-character-per-token tokenizer (pad 0, bos 1, eos 2, unk 3), built offline."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3}
    for c in CHARS:
        vocab[c] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tok.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>")


@pytest.fixture(scope="module")
def toy():
    return ToyPagedModel(vocab_size=72)


@pytest.fixture(scope="module")
def char_tokenizer():
    return make_char_tokenizer()
