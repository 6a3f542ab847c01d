"""A small byte-level BPE tokenizer for arith, trained deterministically on the family's own text.

Byte-level (GPT-2's alphabet) so that any text round-trips exactly and vLLM and transformers load it as
an ordinary ``tokenizer.json``; every digit is its own token (``pre_tokenizers.Digits``), so a number's
value is spelled out digit by digit as the arithmetic needs; the merges are learned here, in Python,
with ties broken by the pair itself, because the ``tokenizers`` trainer iterates hash maps and may
order equal-count merges differently in another process.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterable
from typing import Any

PAD, BOS, EOS = "<|pad|>", "<|bos|>", "<|eos|>"


def _pre_tokenizer() -> Any:
    from tokenizers import pre_tokenizers

    return pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )


def learn_merges(words: Counter[str], num_merges: int) -> list[tuple[str, str]]:
    """Classic BPE over word counts: merge the most frequent adjacent pair, ``num_merges`` times.
    Ties go to the smallest pair, so the same counts give the same merges in any process."""
    splits = {word: list(word) for word in words}
    merges: list[tuple[str, str]] = []
    for _ in range(num_merges):
        pairs: Counter[tuple[str, str]] = Counter()
        for word, parts in splits.items():
            for pair in itertools.pairwise(parts):
                pairs[pair] += words[word]
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))
        merges.append(best)
        for word, parts in splits.items():
            i, out = 0, []
            while i < len(parts):
                if i + 1 < len(parts) and (parts[i], parts[i + 1]) == best:
                    out.append(parts[i] + parts[i + 1])
                    i += 2
                else:
                    out.append(parts[i])
                    i += 1
            splits[word] = out
    return merges


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> Any:
    """A ``PreTrainedTokenizerFast`` with ``vocab_size`` ids: 3 special tokens, the 256 byte symbols,
    then the merges learned from ``texts``. Encoding prepends BOS; the model ends a solution with EOS."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    pre = _pre_tokenizer()
    words: Counter[str] = Counter()
    for text in texts:
        words.update(piece for piece, _ in pre.pre_tokenize_str(text))
    specials = [PAD, BOS, EOS]
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    merges = learn_merges(words, vocab_size - len(specials) - len(alphabet))
    vocab = {token: i for i, token in enumerate([*specials, *alphabet, *(a + b for a, b in merges)])}
    tokenizer = Tokenizer(models.BPE(vocab, merges))
    tokenizer.pre_tokenizer = pre
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, vocab[BOS])]
    )
    tokenizer.add_special_tokens(specials)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        clean_up_tokenization_spaces=False,
    )
