"""A minimal, dependency-free BERT WordPiece tokenizer that reads a Hugging Face
`tokenizer.json` (BertNormalizer + BertPreTokenizer + WordPiece + TemplateProcessing).

It exists so the Python tooling (make_encoder.py --pretrain) can tokenize text without
the `transformers`/`tokenizers` packages. It follows the behaviour of the JS tokenizer the
library uses (`@huggingface/tokenizers`), which is the reference for ids:

- added tokens (e.g. `[CLS]`, `[SEP]` written literally in the text) are split out first,
  longest match first, before normalisation when `normalized` is false;
- BertNormalizer: clean text (drop NUL, U+FFFD and control/format chars except \\t \\n \\r;
  every whitespace char becomes a space), spaces around CJK ideographs, lowercase, strip
  accents (NFD, drop non-spacing marks; on when `strip_accents` is null and lowercase);
- BertPreTokenizer: split on whitespace, and every punctuation char (Unicode P* or ASCII
  punctuation) is its own token;
- WordPiece: greedy longest-match-first with `##` continuation; a word longer than
  `max_input_chars_per_word` or with an unmatched piece becomes the unknown token;
- post-processor: the `single` template (`[CLS] $A [SEP]` for BERT).

Usable as a module (`WordPieceTokenizer.from_file(path)`) or a CLI:
    /usr/bin/python3 scripts/python/wordpiece.py tokenizer.json < lines.txt       # one text per line
    /usr/bin/python3 scripts/python/wordpiece.py tokenizer.json --jsonl < texts   # one JSON string per line
prints one JSON list of ids (with [CLS]/[SEP]) per input line.
"""

from __future__ import annotations

import json
import sys
import unicodedata
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

# JavaScript's `\s` (Unicode mode) and String.prototype.trim() whitespace set.
_JS_WHITESPACE = frozenset(
    "\t\n\u000b\u000c\r \u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006"
    "\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
)


def _is_whitespace(ch: str) -> bool:
    return ch in _JS_WHITESPACE


def _is_control(ch: str) -> bool:
    if ch in ("\t", "\n", "\r"):
        return False
    return unicodedata.category(ch) in ("Cc", "Cf", "Co", "Cs")


def _is_punctuation(ch: str) -> bool:
    cp = ord(ch)
    if 0x21 <= cp <= 0x2F or 0x3A <= cp <= 0x40 or 0x5B <= cp <= 0x60 or 0x7B <= cp <= 0x7E:
        return True
    return unicodedata.category(ch).startswith("P")


def _is_chinese_char(cp: int) -> bool:
    # The JS tokenizer tests UTF-16 code units, so ideographs outside the BMP
    # (0x20000+) are never matched there; we do the same to produce the same ids.
    return (
        0x4E00 <= cp <= 0x9FFF
        or 0x3400 <= cp <= 0x4DBF
        or 0xF900 <= cp <= 0xFAFF
    )


class _Splitter:
    """Longest-match-first splitting of text on a set of literal strings (added tokens)."""

    def __init__(self, words: Iterable[str]):
        self.words = sorted(set(w for w in words if w), key=len, reverse=True)
        self.first = {}
        for w in self.words:
            self.first.setdefault(w[0], []).append(w)

    def split(self, text: str) -> List[str]:
        if not self.words:
            return [text] if text else []
        out: List[str] = []
        start = i = 0
        n = len(text)
        while i < n:
            match = None
            for w in self.first.get(text[i], ()):
                if text.startswith(w, i):
                    match = w
                    break
            if match is not None:
                if i > start:
                    out.append(text[start:i])
                out.append(match)
                i += len(match)
                start = i
            else:
                i += 1
        if start < n:
            out.append(text[start:])
        return out


class WordPieceTokenizer:
    def __init__(self, spec: dict):
        model = spec["model"]
        mtype = model.get("type", "WordPiece")
        if mtype != "WordPiece":
            raise ValueError(f"tokenizer.json model type {mtype!r} is not WordPiece")
        self.vocab: Dict[str, int] = dict(model["vocab"])
        self.unk_token: str = model.get("unk_token", "[UNK]")
        self.prefix: str = model.get("continuing_subword_prefix", "##")
        self.max_chars: int = int(model.get("max_input_chars_per_word", 100))

        norm = spec.get("normalizer") or {}
        if norm and norm.get("type") != "BertNormalizer":
            raise ValueError(f"normalizer {norm.get('type')!r} is not supported (BertNormalizer only)")
        self.has_normalizer = bool(norm)
        self.clean_text = bool(norm.get("clean_text", True))
        self.handle_chinese_chars = bool(norm.get("handle_chinese_chars", True))
        self.lowercase = bool(norm.get("lowercase", True))
        self.strip_accents = norm.get("strip_accents", None)

        pre = spec.get("pre_tokenizer") or {}
        if pre and pre.get("type") != "BertPreTokenizer":
            raise ValueError(f"pre_tokenizer {pre.get('type')!r} is not supported (BertPreTokenizer only)")

        self.added: Dict[str, dict] = {}
        unnormalized, normalized = [], []
        for tok in spec.get("added_tokens") or []:
            content = tok["content"]
            self.vocab[content] = tok["id"]
            special = tok.get("special", False)
            is_norm = tok.get("normalized", not special)
            self.added[content] = tok
            if is_norm and self.has_normalizer:
                nc = self.normalize(content)
                self.added[nc] = tok
                normalized.append(nc)
            else:
                unnormalized.append(content)
        self._split_raw = _Splitter(unnormalized)
        self._split_norm = _Splitter(normalized)
        self.unk_id = self.vocab[self.unk_token]

        self.template: List[Tuple[str, str]] = []  # ("special", token) | ("seq", "A")
        post = spec.get("post_processor")
        if post is None:
            self.template = [("seq", "A")]
        elif post.get("type") == "TemplateProcessing":
            for item in post["single"]:
                if "SpecialToken" in item:
                    self.template.append(("special", item["SpecialToken"]["id"]))
                else:
                    self.template.append(("seq", item["Sequence"]["id"]))
        elif post.get("type") == "BertProcessing":
            self.template = [("special", post["cls"][0]), ("seq", "A"), ("special", post["sep"][0])]
        else:
            raise ValueError(f"post_processor {post.get('type')!r} is not supported")

        self.pad_id = self.vocab.get("[PAD]", 0)
        self.vocab_size = max(self.vocab.values()) + 1

    @classmethod
    def from_file(cls, path: str) -> "WordPieceTokenizer":
        with open(path, "r", encoding="utf-8") as f:
            return cls(json.load(f))

    # -- pipeline -----------------------------------------------------------------------
    def normalize(self, text: str) -> str:
        if self.clean_text:
            out = []
            for ch in text:
                cp = ord(ch)
                if cp == 0 or cp == 0xFFFD or _is_control(ch):
                    continue
                out.append(" " if _is_whitespace(ch) else ch)
            text = "".join(out)
        if self.handle_chinese_chars:
            out = []
            for ch in text:
                if _is_chinese_char(ord(ch)):
                    out.append(" " + ch + " ")
                else:
                    out.append(ch)
            text = "".join(out)
        if self.lowercase:
            text = text.lower()
            if self.strip_accents is not False:
                text = self._strip_accents(text)
        elif self.strip_accents:
            text = self._strip_accents(text)
        return text

    @staticmethod
    def _strip_accents(text: str) -> str:
        return "".join(c for c in unicodedata.normalize("NFD", text) if unicodedata.category(c) != "Mn")

    @staticmethod
    def pre_tokenize(text: str) -> List[str]:
        words: List[str] = []
        cur: List[str] = []
        for ch in text:
            if _is_whitespace(ch):
                if cur:
                    words.append("".join(cur))
                    cur = []
            elif _is_punctuation(ch):
                if cur:
                    words.append("".join(cur))
                    cur = []
                words.append(ch)
            else:
                cur.append(ch)
        if cur:
            words.append("".join(cur))
        return words

    def wordpiece(self, words: Sequence[str]) -> List[str]:
        out: List[str] = []
        for word in words:
            if len(word) > self.max_chars:
                out.append(self.unk_token)
                continue
            pieces: List[str] = []
            start, n = 0, len(word)
            bad = False
            while start < n:
                end = n
                cur = None
                while start < end:
                    sub = word[start:end]
                    if start > 0:
                        sub = self.prefix + sub
                    if sub in self.vocab:
                        cur = sub
                        break
                    end -= 1
                if cur is None:
                    bad = True
                    break
                pieces.append(cur)
                start = end
            if bad:
                out.append(self.unk_token)
            else:
                out.extend(pieces)
        return out

    def _strip_around(self, sections: List[str]) -> None:
        for i, s in enumerate(sections):
            tok = self.added.get(s)
            if tok is None:
                continue
            if tok.get("lstrip") and i > 0:
                sections[i - 1] = sections[i - 1].rstrip()
            if tok.get("rstrip") and i < len(sections) - 1:
                sections[i + 1] = sections[i + 1].lstrip()

    def tokenize(self, text: str) -> List[str]:
        """Tokens of `text` without special tokens."""
        tokens: List[str] = []
        sections = self._split_raw.split(text)
        self._strip_around(sections)
        for sec in sections:
            if not sec:
                continue
            if sec in self.added:
                tokens.append(sec)
                continue
            if self.has_normalizer:
                sec = self.normalize(sec)
            if not sec:
                continue
            subs = self._split_norm.split(sec)
            self._strip_around(subs)
            for sub in subs:
                if not sub:
                    continue
                if sub in self.added:
                    tokens.append(sub)
                    continue
                tokens.extend(self.wordpiece(self.pre_tokenize(sub)))
        return tokens

    def encode_tokens(self, text: str, add_special_tokens: bool = True) -> List[str]:
        toks = self.tokenize(text)
        if not add_special_tokens:
            return toks
        out: List[str] = []
        for kind, value in self.template:
            if kind == "special":
                out.append(value)
            elif value == "A":
                out.extend(toks)
        return out

    def token_to_id(self, token: str) -> int:
        tok = self.added.get(token)
        if tok is not None:
            return tok["id"]
        return self.vocab.get(token, self.unk_id)

    def encode(self, text: str, add_special_tokens: bool = True) -> List[int]:
        return [self.token_to_id(t) for t in self.encode_tokens(text, add_special_tokens)]

    def encode_batch(
        self, texts: Sequence[str], max_length: Optional[int] = None
    ) -> Tuple[List[List[int]], List[List[int]]]:
        """Ids and attention masks, truncated to `max_length` (keeping the final special
        token, e.g. [SEP]) and right-padded with [PAD] to the longest row."""
        rows = []
        for t in texts:
            ids = self.encode(t)
            if max_length is not None and len(ids) > max_length:
                tail = [ids[-1]] if self.template and self.template[-1][0] == "special" else []
                ids = ids[: max_length - len(tail)] + tail
            rows.append(ids)
        width = max((len(r) for r in rows), default=0)
        ids = [r + [self.pad_id] * (width - len(r)) for r in rows]
        mask = [[1] * len(r) + [0] * (width - len(r)) for r in rows]
        return ids, mask


def main(argv: Sequence[str]) -> int:
    args = [a for a in argv if a != "--jsonl"]
    jsonl = len(args) != len(argv)
    if len(args) != 1 or args[0] in ("-h", "--help"):
        print("usage: wordpiece.py TOKENIZER_JSON [--jsonl] < lines  (prints one JSON list of ids per line)", file=sys.stderr)
        return 2
    tok = WordPieceTokenizer.from_file(args[0])
    sys.stdin.reconfigure(encoding="utf-8", errors="surrogatepass")
    for line in sys.stdin:
        if not line.strip() and jsonl:
            continue
        text = json.loads(line) if jsonl else line.rstrip("\n")
        sys.stdout.write(json.dumps(tok.encode(text)) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
