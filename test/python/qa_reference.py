#!/usr/bin/python3
"""Hugging Face's extractive question-answering fine-tuning (transformers' examples/pytorch/
question-answering/run_qa.py with BertForQuestionAnswering or DistilBertForQuestionAnswering, the
Trainer's AdamW, utils_qa.py's postprocess_qa_predictions and the `squad` / `squad_v2` metrics) in
plain PyTorch, without transformers or tokenizers, for the parity tests of torch-bert's native
question-answering training to compare against.

Reads one JSON object on stdin:
  folder            a Hugging Face BERT or DistilBERT base-model folder, read as
                    test/python/token_classification_reference.py reads it (config.json's
                    model_type `bert` or `distilbert`; model.safetensors under AutoModel's names or
                    the family's prefix; tokenizer.json, WordPiece, whose single template is
                    [CLS] $A [SEP]). Its dropout must be 0 (BERT: hidden_dropout_prob,
                    attention_probs_dropout_prob; DistilBERT: dropout, attention_dropout and
                    qa_dropout, the dropout before qa_outputs): the reference draws no dropout
                    masks, so a folder whose training would draw some is refused
  train             [{"id", "question", "context", "answers": {"text": [str], "answer_start":
                    [int]}}]: SQuAD's records as datasets has them; answer_start counts Python
                    characters (code points) of the context, as every offset here does
  validation        the same (optional); the ids must differ
  epochs, batchSize, lr, weightDecay, betas [b1, b2], eps, seed,
  maxGradNorm       0: no clipping
  maxLength         run_qa.py's max_seq_length: a row's length limit, special tokens included
  docStride         run_qa.py's doc_stride: the tokens two consecutive windows share
  initializerRange  config.initializer_range: qa_outputs' init std
  frozen            optional, default false: the encoder frozen, qa_outputs alone trained: the
                    encoder's parameters get no gradient (requires_grad False) and are left out of
                    the optimizer and the clipping
  versionTwo        optional, default false: run_qa.py's version_2_with_negative (squad_v2)
  padToMaxLength    optional, default false: run_qa.py's pad_to_max_length: every batch padded to
                    maxLength (the loss's softmax then runs over maxLength positions); else each
                    batch to its longest row
  nBest             optional, default 20: n_best_size
  maxAnswerLength   optional, default 30: max_answer_length (tokens)
  nullScoreDiffThreshold  optional, default 0: null_score_diff_threshold

What is computed:
 1. Features, as run_qa.py's prepare_train_features with pad_to_max_length False: a fast
    tokenizer called as tokenizer(question.lstrip(), context, truncation="only_second",
    max_length=maxLength, stride=docStride, return_overflowing_tokens=True,
    return_offsets_mapping=True), written out here:
    - question tokens: scripts/python/wordpiece.py's WordPieceTokenizer.tokenize of the question
      (added tokens, BertNormalizer, BertPreTokenizer, WordPiece; no special tokens);
    - context tokens, with their character spans: the context as it is split into words, as
      BertPreTokenizer splits (whitespace, wordpiece.py's set, separates; each punctuation
      character, Unicode P* or ASCII punctuation, is a word of its own), each word with its span
      [start, end) in the context; each word normalized alone (wordpiece.py's normalize), split
      again as BertPreTokenizer would (normalizing may part CJK ideographs) and WordPiece'd; its
      pieces' spans are the word's characters cut by the pieces' lengths (a leading
      continuing-subword prefix, `##`, not counted) where those lengths add up to the word's
      length, else (an [UNK] of several characters, a normalization that changed the length)
      every piece spans the whole word. Added tokens written literally in a context are not split
      out (unlike the question's): the tests' contexts hold none;
    - rows: [CLS] question [SEP] window [SEP] (BERT's pair template, DistilBERT's alike; [CLS]
      and [SEP] the single template's), token types 0 up to the first [SEP] and 1 from the window
      on (BERT only: DistilBERT takes none). room = maxLength - len(question) - 3; the windows
      over the n context tokens are tokenizers' overflowing parts: start = 0; a window is tokens
      [start, min(start + room, n)); it is the last when start + room >= n, else start += room -
      docStride. A context of no tokens gives one window of none. Where the context does not fit
      (n > room) and room <= docStride, the tokenizer refuses (tokenizers' `stride` must be
      strictly less than `max_len`, or a question that leaves no room): so does this reference,
      naming the example; a context that fits passes whatever room is;
    - labels: run_qa.py's, with its offset_mapping ((0, 0) at [CLS] and both [SEP]s, the context
      tokens' spans): cls_index = 0; no answer (answer_start empty): start = end = 0. Else
      start_char = answer_start[0], end_char = start_char + len(text[0]); s = the window's first
      context position, e = its last; unless offsets[s][0] <= start_char and offsets[e][1] >=
      end_char, start = end = 0; else while s < len(row) and offsets[s][0] <= start_char: s += 1;
      start = s - 1; while offsets[e][1] >= end_char: e -= 1; end = e + 1. The start walk does
      not stop at the context's end: the final [SEP]'s (0, 0) passes it, so an answer that starts
      in the window's last context token gets start = the final [SEP]'s position (run_qa.py's
      own "edge case"), kept as it is. An answer with no context token in its window (an empty
      context), or an empty answer text at character 0 (whose end walk reads the question's
      offsets), is refused: run_qa.py fails there or reads offsets this reference does not make.
 2. Model: scripts/python/hf_reference.py's encoder (no pooler: BertForQuestionAnswering builds
    BertModel without one), loaded strictly from the folder's weights in float32, as the token
    reference builds it; then, after it is built, torch.manual_seed(seed); qa_outputs = Linear(
    hidden, 2), weight = torch.empty(2, hidden).normal_(0, initializerRange), bias = zeros.
    logits = qa_outputs(last hidden state) ([B, T, 2]; DistilBERT's qa_dropout before it is the
    identity at 0); start_logits = logits[..., 0], end_logits = logits[..., 1] ([B, T]); loss =
    (F.cross_entropy(start_logits, start) + F.cross_entropy(end_logits, end)) / 2, the softmax
    over all T columns of the padded batch, its pads included (BertForQuestionAnswering's: its
    clamp of the labels to T and ignore_index=T never act, a label being a position of its row).
 3. Optimizer: torch.optim.AdamW(lr, betas, eps) over the encoder's parameters then qa_outputs',
    in the Trainer's two groups: weight decay `weightDecay` except for biases and LayerNorm
    weights (names ending in `.bias` or containing `LayerNorm`, `layernorm` or `layer_norm`), 0
    for those. Constant lr: no schedule, no warmup. Frozen: qa_outputs' weight and bias alone.
 4. Epoch e = 1..epochs, train mode: order = torch.randperm(number of train features,
    generator=torch.Generator().manual_seed(seed + e)); batches of batchSize consecutive features
    of the order (windows, not examples), the last partial batch kept; each right-padded to its
    longest row, or to maxLength with padToMaxLength (the pad id of tokenizer.json's `padding`,
    else [PAD]'s; attention mask 0 and token type 0 there); forward, loss, backward; if maxGradNorm > 0,
    torch.nn.utils.clip_grad_norm_(the trained parameters, maxGradNorm); optimizer.step();
    optimizer.zero_grad(set_to_none=True). Each batch's loss is recorded.
 5. After each epoch, with validation data: eval mode, torch.no_grad; the validation features
    made as in 1 (labels included), with prepare_validation_features' offset_mapping: the
    context tokens' spans, None elsewhere; batches of batchSize in order, padded as in training.
    validationLoss = the sum over features of (CE_start + CE_end) / 2 (reduction='sum' per batch,
    halved, the batches' sums added in Python floats) / the number of features. Then
    utils_qa.py's postprocess_qa_predictions on each feature's float32 start and end logits at
    every position of its padded row (as run_qa.py gathers them: a pad's logits may take one of
    the n-best places, then it is skipped, having no offsets), in numpy as utils_qa.py computes
    (float32 scalars added as float32):
    - per example, over its features in order: feature_null_score = start_logits[0] +
      end_logits[0]; min_null_prediction = the lowest one's {offsets (0, 0), score, start_logit,
      end_logit} (the first on a tie); start_indexes = np.argsort(start_logits)[-1 : -nBest - 1
      : -1], end_indexes alike; for each start, then each end: skipped where either offset is
      None, end < start or end - start + 1 > maxAnswerLength; else a candidate {offsets
      (offsets[start][0], offsets[end][1]), score start_logit + end_logit, start_logit,
      end_logit};
    - versionTwo: min_null_prediction is a candidate too, null_score its score; candidates sorted
      by score descending (a stable sort), the first nBest kept; versionTwo and none of them with
      offsets (0, 0): min_null_prediction appended; each one's text = context[o0:o1]; no
      candidate, or one alone whose text is "": {"text": "empty", score, start_logit, end_logit 0}
      inserted first; probability = np.exp(scores - max) / sum over the kept candidates;
    - the answer: candidates[0]'s text; versionTwo: best = the first candidate whose text is not
      "", score_diff = null_score - best.start_logit - best.end_logit, the answer "" where
      score_diff > nullScoreDiffThreshold, else best's text.
    Metrics, as fractions (the metric's value / 100, computed as the sum / the count):
    - squad (SQuAD v1.1's evaluate): normalize_answer = lower, drop string.punctuation's
      characters, replace \\b(a|an|the)\\b with a space, join str.split() with spaces; exactMatch
      = the mean over examples of max over its gold texts of normalized equality; f1 = the mean
      of max over gold texts of the token F1 (Counter overlap of the normalized texts' words; 0
      when nothing is shared). An example without a gold text is refused (the metric fails).
    - versionTwo, squad_v2 (SQuAD 2.0's evaluate, no_answer_probability 0 and its threshold 1, so
      the predictions stand): gold texts that normalize to "" dropped, an example left without
      any has gold [""]; exact as above; F1 = int(gold tokens == predicted tokens) where either
      has no token; hasAnswer / noAnswer: the same over the examples with / without gold texts
      (as given), with their count as total; a block without examples is left out.

Writes JSON on stdout:
  {"features": {"train": [{"ids": [...], "types": [...] (BERT only), "start", "end",
                           "example": index of its example}],
                "validation": [the same, plus "offsets": [[start, end] or null per position]]}
                                                         (validation only where given)
   "batchLosses": [float, ...]   every training batch's loss, all epochs in order
   "epochs": [{"epoch", "validationLoss", "exactMatch", "f1", "hasAnswer", "noAnswer" (versionTwo,
               each {"exactMatch", "f1", "total"}, where there are such examples),
               "predictions": {id: answer}, "nbest": {id: [{"text", "start", "end" (the
               candidate's characters; null for "empty"), "probability", "startLogit",
               "endLogit"}]}}]   (validationLoss, exactMatch, f1, predictions, nbest null without
                                 validation data)
   "qaOutputs": {"weight": [[...]] (2 x hidden), "bias": [...]}   after training
   "qaOutputsInit": the same, as initialized (before the first step)}

  /usr/bin/python3 test/python/qa_reference.py < job.json > result.json

With "mode": "answer", the job is {"mode", "folder", "examples": [{"id", "question", "context"}],
"maxLength", "docStride", "nBest", "maxAnswerLength", "versionTwo", "nullScoreDiffThreshold",
"batchSize", "padToMaxLength" (the last six optional, defaults as above, batchSize 1)}: `folder` is a BertForQuestionAnswering or
DistilBertForQuestionAnswering folder (config.json's architectures exactly that one, as
model_type says; the family's encoder under `bert.` or `distilbert.` and `qa_outputs.weight` /
`bias`, as save_pretrained writes it, nothing else; no pooler); each example's features are made
as in 1 and run in batches of batchSize in order, padded as in 4, in eval mode; their logits are
post-processed as in 5. Writes
{"predictions": {id: answer}, "nbest": {id: [...]}}.
"""

from __future__ import annotations

import collections
import json
import os
import re
import string
import sys
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "scripts", "python"))
from hf_folder_reference import read_base, reference_config  # noqa: E402
from hf_reference import build  # noqa: E402
from token_classification_reference import Aligner, encoder_weights, family_of, finite, no_decay  # noqa: E402
from wordpiece import WordPieceTokenizer, _is_punctuation, _is_whitespace  # noqa: E402

ARCHITECTURES = {"bert": "BertForQuestionAnswering", "distilbert": "DistilBertForQuestionAnswering"}
Span = Tuple[int, int]


def check_no_dropout(cfg: dict) -> None:
    """The reference draws no dropout masks: a folder whose training would draw some is refused.
    (BertForQuestionAnswering has no dropout of its own; DistilBERT's qa_dropout is its head's.)"""
    if family_of(cfg) == "distilbert":
        keys = ["dropout", "attention_dropout", "qa_dropout"]
    else:
        keys = ["hidden_dropout_prob", "attention_probs_dropout_prob"]
    drawn = {k: cfg[k] for k in keys if cfg.get(k) not in (None, 0, 0.0)}
    if drawn:
        raise SystemExit(f"the folder's dropout is not 0 ({drawn}): the reference cannot draw transformers' masks")


# ---- 1. features --------------------------------------------------------------------------------
def word_spans(text: str) -> List[Span]:
    """BertPreTokenizer's words of `text`, as [start, end) character spans of it."""
    spans: List[Span] = []
    start: Optional[int] = None
    for i, ch in enumerate(text):
        if _is_whitespace(ch) or _is_punctuation(ch):
            if start is not None:
                spans.append((start, i))
                start = None
            if not _is_whitespace(ch):
                spans.append((i, i + 1))
        elif start is None:
            start = i
    if start is not None:
        spans.append((start, len(text)))
    return spans


def context_tokens(tok: WordPieceTokenizer, context: str) -> List[Tuple[int, Span]]:
    """The context's token ids, each with its character span (see 1)."""
    out: List[Tuple[int, Span]] = []
    for start, end in word_spans(context):
        pieces = tok.wordpiece(tok.pre_tokenize(tok.normalize(context[start:end])))
        lengths = [len(p) - len(tok.prefix) if p.startswith(tok.prefix) else len(p) for p in pieces]
        exact = sum(lengths) == end - start
        at = start
        for piece, length in zip(pieces, lengths):
            out.append((tok.token_to_id(piece), (at, at + length) if exact else (start, end)))
            at += length
    return out


def window_ranges(n: int, room: int, stride: int) -> List[Span]:
    """tokenizers' overflowing parts of n tokens truncated to `room` with `stride` (room > stride
    wherever n > room)."""
    ranges = []
    start = 0
    while True:
        ranges.append((start, min(start + room, n)))
        if start + room >= n:
            return ranges
        start += room - stride


def labels(offsets: List[Optional[Span]], first: int, last: int, answers: Dict[str, Any], example_id: str) -> Span:
    """run_qa.py's start and end positions of one feature: `offsets` its offset_mapping ((0, 0) at
    the special tokens; None at the question's, which the walks below never reach for a
    non-empty answer: the [SEP] before the context stops the end walk), first/last its context
    positions (last < first: none)."""
    if len(answers["answer_start"]) == 0:
        return 0, 0
    start_char = answers["answer_start"][0]
    end_char = start_char + len(answers["text"][0])
    if last < first:
        raise SystemExit(f"example {example_id!r}: an answer in a window without context tokens (run_qa.py fails there)")
    s, e = first, last
    if not (offsets[s][0] <= start_char and offsets[e][1] >= end_char):
        return 0, 0
    while s < len(offsets) and offsets[s][0] <= start_char:
        s += 1
    while offsets[e][1] >= end_char:
        e -= 1
        if offsets[e] is None:
            raise SystemExit(f"example {example_id!r}: an empty answer at character 0 walks into the question's offsets")
    return s - 1, e + 1


def featurize(aligner: Aligner, examples: List[Dict[str, Any]], max_length: int, stride: int,
              types: bool) -> List[Dict[str, Any]]:
    """Every example's features in order: {"ids", "types" (BERT), "offsets" (the context tokens'
    spans, None elsewhere), "example", and "start", "end" where the example has answers}."""
    tok = aligner.tok
    if len(aligner.head) != 1 or len(aligner.tail) != 1:
        raise SystemExit("tokenizer.json's single template must be [CLS] $A [SEP]")
    cls_id, sep_id = aligner.head[0], aligner.tail[0]
    features = []
    for index, example in enumerate(examples):
        question = [tok.token_to_id(t) for t in tok.tokenize(example["question"].lstrip())]
        context = context_tokens(tok, example["context"])
        room = max_length - len(question) - 3
        if len(context) > room and room <= stride:
            raise SystemExit(f"example {example['id']!r}: its question leaves {room} context tokens a row, "
                             f"not more than docStride {stride}: the tokenizer refuses to truncate so")
        first = len(question) + 2
        for start, stop in window_ranges(len(context), room, stride):
            window = context[start:stop]
            ids = [cls_id] + question + [sep_id] + [i for i, _ in window] + [sep_id]
            spans: List[Optional[Span]] = [None] * first + [span for _, span in window] + [None]
            feature: Dict[str, Any] = {"ids": ids, "offsets": spans, "example": index}
            if types:
                feature["types"] = [0] * first + [1] * (len(window) + 1)
            if "answers" in example:
                specials = {0: (0, 0), first - 1: (0, 0), len(ids) - 1: (0, 0)}
                mapping = [specials.get(k, span) for k, span in enumerate(spans)]
                feature["start"], feature["end"] = labels(mapping, first, first + len(window) - 1,
                                                          example["answers"], example["id"])
            features.append(feature)
    return features


def batch(features: List[Dict[str, Any]], pad_id: int, width: Optional[int] = None) -> Dict[str, Optional[Tensor]]:
    """The features right-padded to `width` (run_qa.py's pad_to_max_length: max_seq_length), else
    to the longest: ids, attention mask, token types (BERT) and labels (where they have them)."""
    width = width or max(len(f["ids"]) for f in features)

    def padded(key: str, value: int) -> Tensor:
        return torch.tensor([f[key] + [value] * (width - len(f[key])) for f in features], dtype=torch.long)

    return {"ids": padded("ids", pad_id),
            "mask": torch.tensor([[1] * len(f["ids"]) + [0] * (width - len(f["ids"])) for f in features], dtype=torch.long),
            "types": padded("types", 0) if "types" in features[0] else None,
            "start": torch.tensor([f["start"] for f in features]) if "start" in features[0] else None,
            "end": torch.tensor([f["end"] for f in features]) if "end" in features[0] else None}


# ---- 2. model -----------------------------------------------------------------------------------
class QuestionAnswering(nn.Module):
    def __init__(self, encoder: nn.Module, qa_outputs: nn.Linear):
        super().__init__()
        self.encoder = encoder
        self.qa_outputs = qa_outputs

    def forward(self, ids: Tensor, mask: Tensor, types: Optional[Tensor]) -> Tuple[Tensor, Tensor]:
        out = self.encoder(ids, mask, types)
        hidden = out[0] if isinstance(out, tuple) else out
        start, end = self.qa_outputs(hidden).split(1, dim=-1)
        return start.squeeze(-1), end.squeeze(-1)


def qa_loss(start_logits: Tensor, end_logits: Tensor, b: Dict[str, Optional[Tensor]], reduction: str = "mean") -> Tensor:
    return (F.cross_entropy(start_logits, b["start"], reduction=reduction)
            + F.cross_entropy(end_logits, b["end"], reduction=reduction)) / 2


def logits_of(model: QuestionAnswering, features: List[Dict[str, Any]], bs: int, pad_id: int, width: Optional[int] = None):
    """Eval mode, no_grad: each feature's float32 start and end logits at every position of its padded row, and
    (labelled features) the sum of their losses."""
    model.eval()
    starts: List[np.ndarray] = []
    ends: List[np.ndarray] = []
    total = 0.0
    with torch.no_grad():
        for s in range(0, len(features), bs):
            chunk = features[s:s + bs]
            b = batch(chunk, pad_id, width)
            start_logits, end_logits = model(b["ids"], b["mask"], b["types"])
            if b["start"] is not None:
                total += qa_loss(start_logits, end_logits, b, reduction="sum").item()
            # Every position of the padded row, as run_qa.py's evaluation loop gathers them: a pad
            # may take one of the n best places (postprocess then skips it: it has no offsets).
            for r in range(len(chunk)):
                starts.append(start_logits[r].numpy())
                ends.append(end_logits[r].numpy())
    return starts, ends, total


# ---- 5. utils_qa.py's postprocess_qa_predictions and the metrics --------------------------------
def postprocess(examples: List[Dict[str, Any]], features: List[Dict[str, Any]], all_starts: List[np.ndarray],
                all_ends: List[np.ndarray], version_two: bool, n_best: int, max_answer_length: int,
                threshold: float) -> Tuple[Dict[str, str], Dict[str, List[Dict[str, Any]]]]:
    per_example: Dict[int, List[int]] = collections.defaultdict(list)
    for i, f in enumerate(features):
        per_example[f["example"]].append(i)
    answers: Dict[str, str] = {}
    nbest: Dict[str, List[Dict[str, Any]]] = {}
    for index, example in enumerate(examples):
        min_null: Optional[Dict[str, Any]] = None
        prelim = []
        for i in per_example[index]:
            start_logits, end_logits, offsets = all_starts[i], all_ends[i], features[i]["offsets"]
            null_score = start_logits[0] + end_logits[0]
            if min_null is None or min_null["score"] > null_score:
                min_null = {"offsets": (0, 0), "score": null_score, "start_logit": start_logits[0], "end_logit": end_logits[0]}
            for s in np.argsort(start_logits)[-1: -n_best - 1: -1].tolist():
                for e in np.argsort(end_logits)[-1: -n_best - 1: -1].tolist():
                    # A pad of the batch (past the row's offsets) or a position outside the context.
                    if s >= len(offsets) or e >= len(offsets) or offsets[s] is None or offsets[e] is None \
                            or e < s or e - s + 1 > max_answer_length:
                        continue
                    prelim.append({"offsets": (offsets[s][0], offsets[e][1]), "score": start_logits[s] + end_logits[e],
                                   "start_logit": start_logits[s], "end_logit": end_logits[e]})
        if version_two:
            prelim.append(min_null)
        candidates = sorted(prelim, key=lambda p: p["score"], reverse=True)[:n_best]
        if version_two and not any(p["offsets"] == (0, 0) for p in candidates):
            candidates.append(min_null)
        for p in candidates:
            p["text"] = example["context"][p["offsets"][0]:p["offsets"][1]]
        if len(candidates) == 0 or (len(candidates) == 1 and candidates[0]["text"] == ""):
            candidates.insert(0, {"text": "empty", "offsets": None, "start_logit": 0.0, "end_logit": 0.0, "score": 0.0})
        # np.array of the scores as utils_qa.py makes it: float32 unless "empty"'s Python 0.0 joins them.
        scores = np.array([p["score"] for p in candidates])
        exp_scores = np.exp(scores - np.max(scores))
        probabilities = exp_scores / exp_scores.sum()
        if version_two:
            best = next(p for p in candidates if p["text"] != "")
            score_diff = min_null["score"] - best["start_logit"] - best["end_logit"]
            answers[example["id"]] = "" if score_diff > threshold else best["text"]
        else:
            answers[example["id"]] = candidates[0]["text"]
        nbest[example["id"]] = [{"text": p["text"], "start": None if p["offsets"] is None else p["offsets"][0],
                                 "end": None if p["offsets"] is None else p["offsets"][1], "probability": float(q),
                                 "startLogit": float(p["start_logit"]), "endLogit": float(p["end_logit"])}
                                for p, q in zip(candidates, probabilities)]
    return answers, nbest


PUNCTUATION = set(string.punctuation)


def normalize_answer(s: str) -> str:
    """SQuAD's evaluate scripts' (v1.1 and v2.0 alike)."""
    s = "".join(ch for ch in s.lower() if ch not in PUNCTUATION)
    return " ".join(re.sub(r"\b(a|an|the)\b", " ", s).split())


def token_f1(gold_tokens: List[str], predicted_tokens: List[str]) -> float:
    same = sum((collections.Counter(gold_tokens) & collections.Counter(predicted_tokens)).values())
    if same == 0:
        return 0
    precision = same / len(predicted_tokens)
    recall = same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def squad_v1(examples: List[Dict[str, Any]], predictions: Dict[str, str]) -> Dict[str, Any]:
    exact = f1 = 0.0
    for example in examples:
        golds = example["answers"]["text"]
        if not golds:
            raise SystemExit(f"example {example['id']!r} has no answer: the squad metric (versionTwo false) needs one")
        predicted = normalize_answer(predictions[example["id"]])
        exact += max(float(normalize_answer(g) == predicted) for g in golds)
        f1 += max(token_f1(normalize_answer(g).split(), predicted.split()) for g in golds)
    return {"exactMatch": exact / len(examples), "f1": f1 / len(examples)}


def squad_v2(examples: List[Dict[str, Any]], predictions: Dict[str, str]) -> Dict[str, Any]:
    def f1_v2(gold: str, predicted: str) -> float:
        gold_tokens, predicted_tokens = normalize_answer(gold).split(), normalize_answer(predicted).split()
        if not gold_tokens or not predicted_tokens:
            return int(gold_tokens == predicted_tokens)
        return token_f1(gold_tokens, predicted_tokens)

    scores = []  # (exact, f1, has an answer) per example
    for example in examples:
        golds = [t for t in example["answers"]["text"] if normalize_answer(t)] or [""]
        predicted = predictions[example["id"]]
        scores.append((max(int(normalize_answer(g) == normalize_answer(predicted)) for g in golds),
                       max(f1_v2(g, predicted) for g in golds), bool(example["answers"]["text"])))

    def block(rows: List[Tuple[int, float, bool]]) -> Dict[str, Any]:
        return {"exactMatch": sum(r[0] for r in rows) / len(rows), "f1": sum(r[1] for r in rows) / len(rows), "total": len(rows)}

    out = {k: v for k, v in block(scores).items() if k != "total"}
    for name, has in (("hasAnswer", True), ("noAnswer", False)):
        rows = [r for r in scores if r[2] == has]
        if rows:
            out[name] = block(rows)
    return out


# ---- train / answer -----------------------------------------------------------------------------
def check_ids(examples: List[Dict[str, Any]], name: str) -> None:
    ids = [e["id"] for e in examples]
    if len(set(ids)) != len(ids):
        raise SystemExit(f"{name}: the examples' ids repeat (utils_qa.py maps an id to one example)")


def linear_dict(layer: nn.Linear) -> Dict[str, Any]:
    return {"weight": layer.weight.detach().tolist(), "bias": layer.bias.detach().tolist()}


def public(feature: Dict[str, Any], offsets: bool) -> Dict[str, Any]:
    """A feature as the output writes it."""
    keys = ["ids", "types", "start", "end", "example"] + (["offsets"] if offsets else [])
    return {k: [list(o) if o is not None else None for o in feature[k]] if k == "offsets" else feature[k]
            for k in keys if k in feature}


def run(job: Dict[str, Any]) -> Dict[str, Any]:
    folder = job["folder"]
    epochs = int(job["epochs"])
    bs = int(job["batchSize"])
    seed = int(job["seed"])
    max_length, stride = int(job["maxLength"]), int(job["docStride"])
    width = max_length if job.get("padToMaxLength", False) else None
    max_grad_norm = float(job.get("maxGradNorm", 0))
    betas = job.get("betas", [0.9, 0.999])
    version_two = bool(job.get("versionTwo", False))
    post = (version_two, int(job.get("nBest", 20)), int(job.get("maxAnswerLength", 30)), float(job.get("nullScoreDiffThreshold", 0)))

    cfg, raw = read_base(folder)
    family = family_of(cfg)
    check_no_dropout(cfg)
    aligner = Aligner(os.path.join(folder, "tokenizer.json"))
    train = featurize(aligner, job["train"], max_length, stride, family == "bert")
    validation_examples = job.get("validation") or []
    check_ids(validation_examples, "validation")
    validation = featurize(aligner, validation_examples, max_length, stride, family == "bert")

    frozen = bool(job.get("frozen", False))
    encoder, _ = build(reference_config(cfg, pooler=False))
    encoder.load_state_dict(encoder_weights(cfg, raw), strict=True)
    hidden = encoder.embeddings.word_embeddings.weight.shape[1]
    qa_outputs = nn.Linear(hidden, 2)  # its default init is overwritten below
    torch.manual_seed(seed)
    with torch.no_grad():
        qa_outputs.weight.copy_(torch.empty(2, hidden).normal_(0.0, float(job["initializerRange"])))
        qa_outputs.bias.zero_()
    qa_init = linear_dict(qa_outputs)
    model = QuestionAnswering(encoder, qa_outputs)
    if frozen:
        for p in encoder.parameters():
            p.requires_grad_(False)

    named = [] if frozen else list(encoder.named_parameters())
    named += [("qa_outputs." + n, p) for n, p in qa_outputs.named_parameters()]
    params = [p for _, p in named]
    opt = torch.optim.AdamW(
        [{"params": [p for n, p in named if not no_decay(n)], "weight_decay": float(job["weightDecay"])},
         {"params": [p for n, p in named if no_decay(n)], "weight_decay": 0.0}],
        lr=float(job["lr"]), betas=(float(betas[0]), float(betas[1])), eps=float(job["eps"]))

    batch_losses: List[Optional[float]] = []
    history: List[Dict[str, Any]] = []
    for epoch in range(1, epochs + 1):
        model.train()
        order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed + epoch)).tolist()
        for s in range(0, len(train), bs):
            b = batch([train[i] for i in order[s:s + bs]], aligner.pad_id, width)
            start_logits, end_logits = model(b["ids"], b["mask"], b["types"])
            loss = qa_loss(start_logits, end_logits, b)
            loss.backward()
            if max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
            opt.step()
            opt.zero_grad(set_to_none=True)
            batch_losses.append(finite(loss.item()))
        row: Dict[str, Any] = {"epoch": epoch, "validationLoss": None, "exactMatch": None, "f1": None,
                               "predictions": None, "nbest": None}
        if validation:
            starts, ends, total = logits_of(model, validation, bs, aligner.pad_id, width)
            predictions, nbest = postprocess(validation_examples, validation, starts, ends, *post)
            metrics = (squad_v2 if version_two else squad_v1)(validation_examples, predictions)
            row.update({"validationLoss": finite(total / len(validation)), **metrics, "predictions": predictions, "nbest": nbest})
            print(f"[qa_reference] epoch {epoch}: validation loss {row['validationLoss']} exact {row['exactMatch']}"
                  f" f1 {row['f1']}", file=sys.stderr, flush=True)
        history.append(row)

    features: Dict[str, Any] = {"train": [public(f, False) for f in train]}
    if validation:
        features["validation"] = [public(f, True) for f in validation]
    return {"features": features, "batchLosses": batch_losses, "epochs": history,
            "qaOutputs": linear_dict(qa_outputs), "qaOutputsInit": qa_init}


def load_question_answering(folder: str) -> Tuple[QuestionAnswering, Aligner, str]:
    """The *ForQuestionAnswering folder as QuestionAnswering (eval mode), its tokenizer's aligner
    and its family."""
    aligner = Aligner(os.path.join(folder, "tokenizer.json"))
    cfg, raw = read_base(folder)
    family = family_of(cfg)
    prefix = family + "."
    if cfg.get("architectures") != [ARCHITECTURES[family]]:
        raise SystemExit(f"config.json's architectures {cfg.get('architectures')}: not [{ARCHITECTURES[family]!r}]")
    if any(k.startswith(prefix + "pooler.") for k in raw):
        raise SystemExit("a question-answering model has no pooler")
    heads = sorted(k for k in raw if not k.startswith(prefix))
    if heads != ["qa_outputs.bias", "qa_outputs.weight"]:
        raise SystemExit(f"the keys outside {prefix!r} are {heads}, not qa_outputs' weight and bias")
    encoder, _ = build(reference_config(cfg, pooler=False))
    encoder.load_state_dict(encoder_weights(cfg, raw), strict=True)
    qa_outputs = nn.Linear(raw["qa_outputs.weight"].shape[1], 2)
    with torch.no_grad():
        qa_outputs.weight.copy_(raw["qa_outputs.weight"].float())
        qa_outputs.bias.copy_(raw["qa_outputs.bias"].float())
    return QuestionAnswering(encoder, qa_outputs).eval(), aligner, family


def answer(job: Dict[str, Any]) -> Dict[str, Any]:
    model, aligner, family = load_question_answering(job["folder"])
    examples = job["examples"]
    check_ids(examples, "examples")
    features = featurize(aligner, examples, int(job["maxLength"]), int(job["docStride"]), family == "bert")
    max_length = int(job["maxLength"])
    width = max_length if job.get("padToMaxLength", False) else None
    starts, ends, _ = logits_of(model, features, int(job.get("batchSize", 1)), aligner.pad_id, width)
    predictions, nbest = postprocess(examples, features, starts, ends, bool(job.get("versionTwo", False)),
                                     int(job.get("nBest", 20)), int(job.get("maxAnswerLength", 30)),
                                     float(job.get("nullScoreDiffThreshold", 0)))
    return {"predictions": predictions, "nbest": nbest}


def main() -> int:
    torch.set_num_threads(1)
    job = json.load(sys.stdin)
    json.dump(answer(job) if job.get("mode") == "answer" else run(job), sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
