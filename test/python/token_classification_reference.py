#!/usr/bin/python3
"""Hugging Face's token-classification fine-tuning (transformers' examples/pytorch/
token-classification/run_ner.py with BertForTokenClassification or
DistilBertForTokenClassification and the Trainer's AdamW) in plain PyTorch, without transformers,
for the parity tests of torch-bert's native token-classification training to compare against.

Reads one JSON object on stdin:
  folder            a Hugging Face BERT or DistilBERT base-model folder (config.json's model_type
                    `bert` or `distilbert`): config.json, model.safetensors (AutoModel names, or
                    the same under the family's prefix, `bert.` or `distilbert.`, which is
                    stripped; keys outside the prefix, `pooler.*` and `embeddings.position_ids`
                    are dropped; LayerNorm gamma/beta read as weight/bias) and tokenizer.json
                    (WordPiece). Its dropout must be 0 (BERT: hidden_dropout_prob,
                    attention_probs_dropout_prob, classifier_dropout where set; DistilBERT:
                    dropout, attention_dropout): the reference draws no dropout masks, so a folder
                    whose training would draw some is refused
  train             {"words": [[str]], "tags": [[int]]}: one tag in [0, numLabels) per word
  validation        the same (optional)
  numLabels, epochs, batchSize, lr, weightDecay, betas [b1, b2], eps, seed,
  maxGradNorm       0: no clipping
  maxLength         the row's length limit, special tokens included
  initializerRange  config.initializer_range: the classifier's init std
  frozen            optional, default false: technique 'frozen' (the encoder frozen, the head alone
                    trained): the encoder's parameters get no gradient (requires_grad False) and
                    are left out of the optimizer and the clipping; the classifier's weight and
                    bias alone fill the two groups of 3
  labelAllTokens    optional, default false: run_ner.py's label_all_tokens=True (see 1), with
  labelNames        the tags' names in id order, from which its b_to_i_label is made

What is computed:
 1. Rows, as run_ner.py's tokenize_and_align_labels with label_all_tokens=False (a fast tokenizer
    with is_split_into_words=True, truncation=True, max_length=maxLength): each word is tokenized
    alone (scripts/python/wordpiece.py's WordPieceTokenizer.tokenize on the word's text: added
    tokens, BertNormalizer, BertPreTokenizer, WordPiece; no special tokens); a row is the
    template's leading special tokens ([CLS]) + the words' pieces in order, truncated to
    maxLength minus the number of the template's special tokens (2 for BERT: [CLS] and [SEP])
    pieces, + the trailing ones ([SEP]). The first piece of each word carries the word's tag,
    every other position (the other pieces, [CLS], [SEP]) -100; a word with no piece, or whose
    first piece was cut off, carries nothing. With labelAllTokens, each later piece of a word
    carries b_to_i_label[the word's tag] instead of -100: run_ner.py's list, for each tag name in
    id order, the id of 'I-' + its rest where it starts with 'B-' and that name is a tag, else its
    own id. Validation's loss, predictions count and accuracy (5) are then over every piece.
 2. Model: scripts/python/hf_reference.py's encoder (built through hf_folder_reference.py's
    reference_config with pooler=False, so no dropout anywhere: the test folders' dropout is 0),
    loaded strictly from the folder's weights in float32; then, after it is built,
    torch.manual_seed(seed); classifier weight = torch.empty(numLabels, hidden).normal_(0,
    initializerRange), bias = zeros (BertPreTrainedModel._init_weights on the one new module;
    nothing else is drawn from the default generator after the seed). logits = classifier(last
    hidden state) at every position, token_type_ids zero; loss = F.cross_entropy(logits.view(-1,
    C), labels.view(-1), ignore_index=-100), the mean over the batch's labelled positions.
    (BertForTokenClassification's dropout before the classifier, DistilBertForTokenClassification's
    `dropout` there, is the identity at dropout 0.) DistilBERT's encoder is hf_reference.py's
    DistilBertModel: no token types, its LayerNorms `sa_layer_norm` / `output_layer_norm`.
 3. Optimizer: torch.optim.AdamW(lr, betas, eps) over the encoder's parameters (no pooler) then
    the classifier's, in two groups as the Trainer's: weight decay `weightDecay` for every
    parameter except biases and LayerNorm weights (names ending in `.bias` or containing
    `LayerNorm`, `layernorm` or `layer_norm`), 0 for those. Constant lr: no schedule, no warmup.
 4. Epoch e = 1..epochs, the modules in train mode: order = torch.randperm(nTrain,
    generator=torch.Generator().manual_seed(seed + e)); batches of batchSize consecutive indices
    of the order, the last partial batch kept; each batch right-padded to its longest row (the
    pad id of tokenizer.json's `padding`, else [PAD]'s id; attention mask 0 and label -100
    there); forward, loss, backward; if maxGradNorm > 0,
    torch.nn.utils.clip_grad_norm_(the trained parameters: encoder's then classifier's, or the
    classifier's alone when frozen, maxGradNorm);
    optimizer.step(); optimizer.zero_grad(set_to_none=True). Each batch's loss is recorded.
 5. After each epoch, with validation data: eval mode, torch.no_grad, batches of batchSize in
    the given order, padded as in training; validationLoss = the sum over all labelled positions
    of the cross-entropy (F.cross_entropy reduction='sum' per batch, the batches' sums added in
    Python floats) / the number of labelled positions (a token-weighted mean, not a mean of batch
    means); predictions = argmax of the logits at each labelled position (the lowest index on a
    tie); validationAccuracy = right / labelled positions. Both null where nothing is labelled.

Writes JSON on stdout:
  {"rows": {"train": [[ids]], "trainLabels": [[label per position, -100 elsewhere]],
            "validation": [[ids]], "validationLabels": [[...]]}      (before padding; validation
                                                                        only where given)
   "batchLosses": [float, ...]   every training batch's loss, all epochs in order (a batch without
                                 a labelled position gives NaN there, as transformers; written null)
   "epochs": [{"epoch", "validationLoss", "validationAccuracy",
               "predictions": [[predicted tag per word of each validation sentence, -1 for a word
                                without a labelled position]]}]   (null, null, null without
                                                                   validation data)
   "classifier": {"weight": [[...]] (numLabels x hidden), "bias": [...]}   after training
   "classifierInit": the same, as initialized (before the first step)}

  /usr/bin/python3 test/python/token_classification_reference.py < job.json > result.json

With "mode": "predict", the job is {"mode", "folder", "sentences": [[str]], "maxLength", "aggregation"
('first' (default), 'average' or 'max': how a word's tokens are read, as transformers' pipeline's
aggregation_strategy; see aggregate())}: `folder` is
a BertForTokenClassification or DistilBertForTokenClassification folder (config.json's
architectures exactly that one, as model_type says; the family's encoder under `bert.` or
`distilbert.` and `classifier.weight`/`bias`, as save_pretrained writes it, nothing else; no
pooler); each sentence is aligned as in 1, and every word gets the softmax of the logits at its
pieces as `aggregation` reads them (its first piece's by default), in eval mode. Writes {"probabilities": [[[p per tag] or
null (a word without a position) per word] per sentence]}.

With "mode": "entities", the job is {"mode", "folder", "texts": [{"words": [{"word", "start",
"end"}]}], "maxLength", "labels"}: the pipeline's aggregation_strategy='simple' (see entities()).
Writes {"entities": [[[type, start, end, score]] per text], "tokens": [[[token, tag, start, end,
score]] per text]} (the tokens before grouping, O ones included: the pipeline's
aggregation_strategy='none' leaves those out).
"""

from __future__ import annotations

import json
import math
import os
import sys
from typing import Any, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "scripts", "python"))
from hf_folder_reference import read_base, reference_config  # noqa: E402
from hf_reference import build  # noqa: E402
from wordpiece import WordPieceTokenizer  # noqa: E402

IGNORE = -100

# model_type -> (its *ForTokenClassification class, the encoder's prefix in that class's state_dict)
FAMILIES = {"bert": ("BertForTokenClassification", "bert."),
            "distilbert": ("DistilBertForTokenClassification", "distilbert.")}


def family_of(cfg: dict) -> str:
    family = cfg.get("model_type")
    if family not in FAMILIES:
        raise SystemExit(f"model_type {family!r}: the reference knows {sorted(FAMILIES)}")
    return family


def check_no_dropout(cfg: dict) -> None:
    """The reference draws no dropout masks: a folder whose training would draw some is refused."""
    if family_of(cfg) == "distilbert":
        keys = ["dropout", "attention_dropout"]
    else:
        keys = ["hidden_dropout_prob", "attention_probs_dropout_prob", "classifier_dropout"]
    drawn = {k: cfg[k] for k in keys if cfg.get(k) not in (None, 0, 0.0)}
    if drawn:
        raise SystemExit(f"the folder's dropout is not 0 ({drawn}): the reference cannot draw transformers' masks")


# ---- 1. tokenize and align ----------------------------------------------------------------------
class Aligner:
    def __init__(self, path: str):
        with open(path, encoding="utf-8") as f:
            spec = json.load(f)
        self.tok = WordPieceTokenizer(spec)
        template = self.tok.template
        seq = [i for i, (kind, _) in enumerate(template) if kind == "seq"]
        if len(seq) != 1:
            raise SystemExit(f"{path}: the single template must hold one sequence, not {len(seq)}")
        self.head = [self.tok.token_to_id(v) for kind, v in template[: seq[0]]]
        self.tail = [self.tok.token_to_id(v) for kind, v in template[seq[0] + 1:]]
        padding = spec.get("padding") or {}
        self.pad_id = int(padding["pad_id"]) if "pad_id" in padding else self.tok.pad_id

    def row(self, words: List[str], tags: List[int], max_length: int,
            b_to_i: Optional[List[int]] = None) -> Tuple[List[int], List[int], List[int]]:
        """Ids, labels (per position) and, per word, its first piece's position or -1. With b_to_i
        (label_all_tokens), a word's later pieces are labelled b_to_i[its tag]."""
        if len(words) != len(tags):
            raise SystemExit(f"a sentence has {len(words)} words and {len(tags)} tags")
        pieces: List[Tuple[int, int]] = []  # (id, word index)
        for w, word in enumerate(words):
            pieces.extend((self.tok.token_to_id(t), w) for t in self.tok.tokenize(word))
        pieces = pieces[: max(0, max_length - len(self.head) - len(self.tail))]
        ids = self.head + [p for p, _ in pieces] + self.tail
        labels = [IGNORE] * len(ids)
        where = [-1] * len(words)
        previous: Optional[int] = None
        for k, (_, w) in enumerate(pieces):
            if w != previous:
                labels[len(self.head) + k] = int(tags[w])
                where[w] = len(self.head) + k
            elif b_to_i is not None:
                labels[len(self.head) + k] = b_to_i[int(tags[w])]
            previous = w
        return ids, labels, where


def b_to_i_label(names: List[str]) -> List[int]:
    """run_ner.py's: each tag's id on a word's later pieces (label_all_tokens)."""
    return [names.index("I-" + n[2:]) if n.startswith("B-") and "I-" + n[2:] in names else i for i, n in enumerate(names)]


def rows(aligner: Aligner, split: Dict[str, Any], name: str, max_length: int, num_labels: int,
         b_to_i: Optional[List[int]] = None):
    words, tags = split.get("words", []), split.get("tags", [])
    if len(words) != len(tags):
        raise SystemExit(f"{name}: {len(words)} sentences of words and {len(tags)} of tags")
    for sentence in tags:
        for t in sentence:
            if not 0 <= int(t) < num_labels:
                raise SystemExit(f"{name}: tag {t} outside [0, {num_labels})")
    out = [aligner.row(w, t, max_length, b_to_i) for w, t in zip(words, tags)]
    return [r[0] for r in out], [r[1] for r in out], [r[2] for r in out]


def pad(ids: List[List[int]], labels: List[List[int]], pad_id: int) -> Tuple[Tensor, Tensor, Tensor]:
    width = max(len(r) for r in ids)
    return (torch.tensor([r + [pad_id] * (width - len(r)) for r in ids], dtype=torch.long),
            torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in ids], dtype=torch.long),
            torch.tensor([r + [IGNORE] * (width - len(r)) for r in labels], dtype=torch.long))


# ---- 2. model -----------------------------------------------------------------------------------
def encoder_weights(cfg: dict, weights: Dict[str, Tensor]) -> Dict[str, Tensor]:
    """AutoModel names: the family's prefix stripped (keys outside it are heads), no pooler, no
    position_ids buffer, LayerNorm gamma/beta as weight/bias; float32."""
    prefix = cfg["model_type"] + "."
    if any(k.startswith(prefix) for k in weights):
        weights = {k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix)}
    out = {}
    for k, v in weights.items():
        if k.startswith("pooler.") or k == "embeddings.position_ids":
            continue
        k = k.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias")
        out[k] = v.float()
    return out


class TokenClassifier(nn.Module):
    def __init__(self, encoder: nn.Module, classifier: nn.Linear):
        super().__init__()
        self.encoder = encoder
        self.classifier = classifier

    def forward(self, ids: Tensor, mask: Tensor) -> Tensor:
        out = self.encoder(ids, mask)
        hidden = out[0] if isinstance(out, tuple) else out
        return self.classifier(hidden)


def no_decay(name: str) -> bool:
    return name.endswith(".bias") or "LayerNorm" in name or "layernorm" in name or "layer_norm" in name


def finite(x: float) -> Optional[float]:
    return x if math.isfinite(x) else None


def run(job: Dict[str, Any]) -> Dict[str, Any]:
    folder = job["folder"]
    num_labels = int(job["numLabels"])
    epochs = int(job["epochs"])
    bs = int(job["batchSize"])
    seed = int(job["seed"])
    max_length = int(job["maxLength"])
    max_grad_norm = float(job.get("maxGradNorm", 0))
    betas = job.get("betas", [0.9, 0.999])

    aligner = Aligner(os.path.join(folder, "tokenizer.json"))
    b_to_i = b_to_i_label(job["labelNames"]) if job.get("labelAllTokens") else None
    tr_ids, tr_labels, _ = rows(aligner, job["train"], "train", max_length, num_labels, b_to_i)
    val = job.get("validation")
    has_val = bool(val) and len(val.get("words", [])) > 0
    if has_val:
        va_ids, va_labels, va_where = rows(aligner, val, "validation", max_length, num_labels, b_to_i)

    frozen = bool(job.get("frozen", False))
    cfg, raw = read_base(folder)
    family_of(cfg)
    check_no_dropout(cfg)
    encoder, _ = build(reference_config(cfg, pooler=False))
    encoder.load_state_dict(encoder_weights(cfg, raw), strict=True)
    hidden = encoder.embeddings.word_embeddings.weight.shape[1]
    classifier = nn.Linear(hidden, num_labels)  # its default init is overwritten below
    torch.manual_seed(seed)
    with torch.no_grad():
        classifier.weight.copy_(torch.empty(num_labels, hidden).normal_(0.0, float(job["initializerRange"])))
        classifier.bias.zero_()
    classifier_init = {"weight": classifier.weight.detach().tolist(), "bias": classifier.bias.detach().tolist()}
    model = TokenClassifier(encoder, classifier)
    if frozen:
        for p in encoder.parameters():
            p.requires_grad_(False)

    named = [] if frozen else [(n, p) for n, p in encoder.named_parameters()]
    named += [("classifier." + n, p) for n, p in classifier.named_parameters()]
    params = [p for _, p in named]
    opt = torch.optim.AdamW(
        [{"params": [p for n, p in named if not no_decay(n)], "weight_decay": float(job["weightDecay"])},
         {"params": [p for n, p in named if no_decay(n)], "weight_decay": 0.0}],
        lr=float(job["lr"]), betas=(float(betas[0]), float(betas[1])), eps=float(job["eps"]))

    n_train = len(tr_ids)
    batch_losses: List[Optional[float]] = []
    history: List[Dict[str, Any]] = []
    for epoch in range(1, epochs + 1):
        model.train()
        order = torch.randperm(n_train, generator=torch.Generator().manual_seed(seed + epoch)).tolist()
        for s in range(0, n_train, bs):
            idx = order[s:s + bs]
            ids, mask, labels = pad([tr_ids[i] for i in idx], [tr_labels[i] for i in idx], aligner.pad_id)
            logits = model(ids, mask)
            loss = F.cross_entropy(logits.view(-1, num_labels), labels.view(-1), ignore_index=IGNORE)
            loss.backward()
            if max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
            opt.step()
            opt.zero_grad(set_to_none=True)
            batch_losses.append(finite(loss.item()))
        row: Dict[str, Any] = {"epoch": epoch, "validationLoss": None, "validationAccuracy": None, "predictions": None}
        if has_val:
            model.eval()
            total, right, count = 0.0, 0, 0
            predictions: List[List[int]] = []
            with torch.no_grad():
                for s in range(0, len(va_ids), bs):
                    ids, mask, labels = pad(va_ids[s:s + bs], va_labels[s:s + bs], aligner.pad_id)
                    logits = model(ids, mask)
                    total += F.cross_entropy(logits.view(-1, num_labels), labels.view(-1),
                                             ignore_index=IGNORE, reduction="sum").item()
                    predicted = logits.argmax(-1)
                    labelled = labels.ne(IGNORE)
                    right += int((predicted.eq(labels) & labelled).sum())
                    count += int(labelled.sum())
                    for r, where in enumerate(va_where[s:s + bs]):
                        predictions.append([int(predicted[r, k]) if k >= 0 else -1 for k in where])
            row["validationLoss"] = finite(total / count) if count else None
            row["validationAccuracy"] = right / count if count else None
            row["predictions"] = predictions
            print(f"[token_classification_reference] epoch {epoch}: validation loss {row['validationLoss']}"
                  f" accuracy {row['validationAccuracy']}", file=sys.stderr, flush=True)
        history.append(row)

    out_rows: Dict[str, Any] = {"train": tr_ids, "trainLabels": tr_labels}
    if has_val:
        out_rows.update({"validation": va_ids, "validationLabels": va_labels})
    return {"rows": out_rows, "batchLosses": batch_losses, "epochs": history,
            "classifier": {"weight": classifier.weight.detach().tolist(), "bias": classifier.bias.detach().tolist()},
            "classifierInit": classifier_init}


def load_token_classifier(folder: str) -> Tuple[nn.Module, Aligner]:
    """The *ForTokenClassification folder as TokenClassifier (eval mode), and its tokenizer's aligner."""
    aligner = Aligner(os.path.join(folder, "tokenizer.json"))
    cfg, raw = read_base(folder)
    architecture, prefix = FAMILIES[family_of(cfg)]
    assert cfg["architectures"] == [architecture], cfg["architectures"]
    assert not any(k.startswith(prefix + "pooler.") for k in raw), "a token classifier has no pooler"
    assert sorted(k for k in raw if not k.startswith(prefix)) == ["classifier.bias", "classifier.weight"], sorted(raw)
    encoder, _ = build(reference_config(cfg, pooler=False))
    encoder.load_state_dict(encoder_weights(cfg, raw), strict=True)
    classifier = nn.Linear(raw["classifier.weight"].shape[1], raw["classifier.weight"].shape[0])
    with torch.no_grad():
        classifier.weight.copy_(raw["classifier.weight"].float())
        classifier.bias.copy_(raw["classifier.bias"].float())
    return TokenClassifier(encoder, classifier).eval(), aligner


def predict(job: Dict[str, Any]) -> Dict[str, Any]:
    model, aligner = load_token_classifier(job["folder"])
    out = []
    with torch.no_grad():
        for words in job["sentences"]:
            ids, _, where = aligner.row(words, [0] * len(words), int(job["maxLength"]))
            probabilities = torch.softmax(model(torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.long))[0], -1)
            out.append([aggregate(probabilities, where, w, len(ids) - len(aligner.tail), job.get("aggregation", "first"))
                        for w in range(len(words))])
    return {"probabilities": out}


def entities(job: Dict[str, Any]) -> Dict[str, Any]:
    """transformers' TokenClassificationPipeline with aggregation_strategy='simple' on texts given
    with their words (each {"word", "start", "end"} in the text): each piece's tag the argmax of
    its softmax, its score that probability; a piece's characters its word's, cut by the pieces'
    lengths ('##' not counted) where they add up to the word's, else the whole word; then the
    pipeline's group_entities: a piece joins the group before it when its type is the group's
    last one's and it is not B-, else starts a group; a group's type the first piece's without
    its B-/I-, its score the mean of its pieces', its characters from its first piece's start to
    its last's end; groups of type O dropped. Each text must fit in one row of maxLength."""
    model, aligner = load_token_classifier(job["folder"])
    labels = job["labels"]
    out, tokens = [], []
    with torch.no_grad():
        for text in job["texts"]:
            words = [w["word"] for w in text["words"]]
            ids, _, where = aligner.row(words, [0] * len(words), int(job["maxLength"]))
            assert len(ids) - len(aligner.head) - len(aligner.tail) == sum(len(aligner.tok.tokenize(w)) for w in words), "text too long"
            p = torch.softmax(model(torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.long))[0], -1)
            pieces = []
            for w, word in enumerate(text["words"]):
                strings = aligner.tok.tokenize(word["word"])
                lengths = [len(t) - 2 if t.startswith("##") else len(t) for t in strings]
                at = word["start"]
                for k, length in enumerate(lengths):
                    span = (at, at + length) if sum(lengths) == len(word["word"]) else (word["start"], word["end"])
                    at += length
                    q = p[where[w] + k]
                    pieces.append({"entity": labels[int(q.argmax())], "score": float(q.max()), "start": span[0], "end": span[1],
                                   "word": strings[k]})
            tokens.append([[x["word"], x["entity"], x["start"], x["end"], x["score"]] for x in pieces])
            groups: List[List[Dict[str, Any]]] = []
            for piece in pieces:
                bi, tag = get_tag(piece["entity"])
                if groups and tag == get_tag(groups[-1][-1]["entity"])[1] and bi != "B":
                    groups[-1].append(piece)
                else:
                    groups.append([piece])
            found = [[g[0]["entity"].split("-", 1)[-1], g[0]["start"], g[-1]["end"], sum(x["score"] for x in g) / len(g)] for g in groups]
            out.append([e for e in found if e[0] != "O"])
    return {"entities": out, "tokens": tokens}


def get_tag(name: str) -> Tuple[str, str]:
    """The pipeline's get_tag: ('B', type) for B-type, ('I', type) for I-type, else ('I', name)."""
    if name.startswith("B-"):
        return "B", name[2:]
    if name.startswith("I-"):
        return "I", name[2:]
    return "I", name


def aggregate(probabilities: Tensor, where: List[int], w: int, end: int, aggregation: str) -> Optional[List[float]]:
    """Word w's probabilities as transformers' TokenClassificationPipeline aggregates a word's
    tokens: 'first' its first token's; 'average' its tokens' mean; 'max' those of its token whose
    best probability is highest. A word's tokens run from its first to the next word's first (or
    the row's end)."""
    if where[w] < 0:
        return None
    following = [k for k in where[w + 1:] if k >= 0]
    rows = probabilities[where[w]:(following[0] if following else end)]
    if aggregation == "first":
        return rows[0].tolist()
    if aggregation == "average":
        return rows.mean(0).tolist()
    return rows[int(rows.max(-1).values.argmax())].tolist()


def main() -> int:
    torch.set_num_threads(1)
    job = json.load(sys.stdin)
    modes = {"predict": predict, "entities": entities}
    json.dump(modes.get(job.get("mode"), run)(job), sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
