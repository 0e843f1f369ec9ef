#!/usr/bin/python3
"""A small RoBERTa-style byte-level BPE tokenizer.json (no `tokenizers` package needed), for the
prompt tests: RoBERTa's conventions without a downloaded vocabulary.

  <s>=0 <pad>=1 </s>=2 <unk>=3, the 256 byte-level characters, then whole-word tokens for WORDS
  (each with and without the leading-space marker 'Ġ', built by left-to-right merges), and
  <mask> last (special, lstrip: it takes the space before it, as roberta-base's does).
  Pre-tokenizer ByteLevel (add_prefix_space false), post-processor RobertaProcessing.
  Words not in WORDS split into their bytes, which the verbalizer refusal test relies on.

Usage: make_bpe_tokenizer.py OUT.json   (prints the vocabulary size)
"""
import json
import sys

WORDS = ["great", "terrible", "good", "bad", "it", "was", "It", "The", "the", "film", "movie", "a", "review", "Review",
         "wonderful", "dull", "long", "and", "acted", "is", "fine", "yes", "no", "Yes", "No", "question", "answer"]


def bytes_to_unicode():
    """GPT-2's byte -> printable character table (as in transformers' tokenization_gpt2)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def main() -> int:
    table = bytes_to_unicode()
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    for b in range(256):
        vocab.setdefault(table[b], len(vocab))
    merges = []
    # The spaced forms' merges first: their left parts start with 'Ġ', so each spaced word merges
    # whole before any bare word's merges can apply inside it.
    for form in [" " + w for w in WORDS] + WORDS:
        chars = [table[b] for b in form.encode("utf-8")]
        current = chars[0]
        for c in chars[1:]:
            merge = f"{current} {c}"
            if merge not in merges:
                merges.append(merge)
            current += c
            vocab.setdefault(current, len(vocab))
    mask_id = len(vocab)
    vocab["<mask>"] = mask_id

    def added(i, content, lstrip=False):
        return {"id": i, "content": content, "single_word": False, "lstrip": lstrip, "rstrip": False, "normalized": False, "special": True}

    tok = {
        "version": "1.0",
        "truncation": None,
        # The pad id as TextTokenizer reads it (roberta-base's file leaves it to the tokenizer config).
        "padding": {"strategy": "BatchLongest", "direction": "Right", "pad_to_multiple_of": None, "pad_id": 1, "pad_type_id": 0,
                    "pad_token": "<pad>"},
        "added_tokens": [added(0, "<s>"), added(1, "<pad>"), added(2, "</s>"), added(3, "<unk>"), added(mask_id, "<mask>", True)],
        "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
        "post_processor": {"type": "RobertaProcessing", "sep": ["</s>", 2], "cls": ["<s>", 0], "trim_offsets": True,
                           "add_prefix_space": False},
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": "", "end_of_word_suffix": "",
                  "fuse_unk": False, "byte_fallback": False, "vocab": vocab, "merges": merges},
    }
    with open(sys.argv[1], "w", encoding="utf-8") as f:
        json.dump(tok, f, ensure_ascii=False)
    print(len(vocab))
    return 0


if __name__ == "__main__":
    sys.exit(main())
