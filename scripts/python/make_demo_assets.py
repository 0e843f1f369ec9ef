#!/usr/bin/python3
"""Generate the self-made demo assets under assets/demo/ (no download needed):

  reviews.csv     ~800 short movie-review sentences, `text,label` (negative/positive),
                  balanced, shuffled; the demo's and the tests' training data.
  pretrain.csv    ~3,000 more rows from the same generator with another seed, disjoint
                  from reviews.csv; only used by make_encoder.py --pretrain.
  tokenizer.json  a Hugging Face BERT-style WordPiece tokenizer (BertNormalizer,
                  BertPreTokenizer, WordPiece, [CLS] $A [SEP] template) whose vocabulary
                  covers every generated word, with `##` pieces so WordPiece splitting is
                  exercised, and single letters/digits so any ASCII word tokenizes without
                  [UNK].

Deterministic: rerunning rewrites identical files.
  /usr/bin/python3 scripts/python/make_demo_assets.py [--out-dir assets/demo]
"""

from __future__ import annotations

import argparse
import collections
import csv
import io
import json
import os
import random
import string
import sys
from typing import Callable, Dict, List, Sequence, Set, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from wordpiece import WordPieceTokenizer  # noqa: E402

REVIEWS_SEED = 20240501
PRETRAIN_SEED = 777
N_REVIEWS = 800
N_PRETRAIN = 3000
LABEL_NOISE = 0.03  # reviewers are not perfectly consistent

POS, NEG = 1, -1
LABEL_NAME = {POS: "positive", NEG: "negative"}

# ----------------------------------------------------------------------------------------
# Vocabulary of the generator
# ----------------------------------------------------------------------------------------
SUBJECTS = [  # (noun phrase, plural)
    ("the movie", False), ("this film", False), ("the acting", False), ("the plot", False),
    ("the script", False), ("the story", False), ("the soundtrack", False), ("the score", False),
    ("the direction", False), ("the cast", False), ("the ending", False), ("the dialogue", False),
    ("the cinematography", False), ("the pacing", False), ("the editing", False),
    ("the lead performance", False), ("the villain", False), ("the sequel", False),
    ("the humor", False), ("the premise", False), ("the final act", False), ("the opening scene", False),
    ("the visuals", True), ("the characters", True), ("the actors", True), ("the songs", True),
    ("the jokes", True), ("the special effects", True), ("the costumes", True), ("the action scenes", True),
    ("the performances", True), ("the twists", True),
]
POS_ADJ = [
    "good", "great", "excellent", "wonderful", "brilliant", "superb", "delightful", "charming",
    "moving", "touching", "beautiful", "fantastic", "amazing", "enjoyable", "clever", "funny",
    "gripping", "thrilling", "memorable", "stunning", "solid", "fresh", "powerful", "sharp", "warm",
    "smart", "compelling", "lovely", "impressive", "heartfelt", "engaging", "inventive", "witty",
    "tender", "elegant", "satisfying", "uplifting", "masterful", "entertaining", "gorgeous",
]
NEG_ADJ = [
    "bad", "terrible", "awful", "boring", "dull", "weak", "poor", "horrible", "dreadful", "tedious",
    "predictable", "clumsy", "lifeless", "messy", "silly", "bland", "forgettable", "painful", "flat",
    "shallow", "annoying", "disappointing", "confusing", "lazy", "ugly", "stale", "pointless", "cheap",
    "sloppy", "clichéd", "overlong", "hollow", "awkward", "unbearable", "mediocre", "incoherent",
    "grating", "forced", "tiresome", "naïve",
]
INTENSIFIERS = [
    "very", "really", "quite", "truly", "extremely", "incredibly", "rather", "pretty", "so",
    "absolutely", "fairly", "remarkably", "surprisingly", "genuinely", "utterly", "completely",
    "deeply", "strangely", "oddly", "consistently", "endlessly", "thoroughly",
]
NEG_INTENSIFIERS = ["very", "really", "that", "particularly", "especially", "at all"]
NOUNS = [
    "movie", "film", "picture", "experience", "ride", "story", "debut", "sequel", "drama", "comedy",
    "thriller", "documentary", "romance", "musical", "western", "adventure", "mystery", "remake",
]
POS_VP = [
    "the jokes land", "the twists work", "the songs soar", "the story flows naturally",
    "every scene counts", "the characters feel real", "the ending pays off", "the actors shine",
    "the pacing never drags", "the visuals dazzle", "the script sparkles", "the tension builds perfectly",
    "the chemistry between the leads works", "nothing feels wasted",
]
NEG_VP = [
    "the jokes fall flat", "the twists make no sense", "the songs go on forever", "the story goes nowhere",
    "every scene feels padded", "the characters feel fake", "the ending falls apart", "the actors seem lost",
    "the pacing drags badly", "the visuals look cheap", "the script sputters", "the tension never builds",
    "the chemistry between the leads is missing", "nothing works",
]
POS_REACT = [
    "i loved it", "i enjoyed every minute", "we laughed all the way through", "i was hooked from start to finish",
    "it kept me on the edge of my seat", "i would happily watch it again", "my kids adored it",
    "it made me smile", "the audience cheered at the end", "i left the theater grinning",
    "i have already recommended it to my friends", "i was moved to tears",
]
NEG_REACT = [
    "i hated it", "i was bored the whole time", "i walked out halfway", "i fell asleep twice",
    "i want my money back", "i kept checking my watch", "nobody in the theater laughed",
    "i regret watching it", "it wasted two hours of my life", "i could not wait for it to end",
    "i have already forgotten most of it", "i was rolling my eyes",
]
POS_REC = [
    "go see it", "do not miss it", "highly recommended", "worth every penny", "a must see",
    "see it on the big screen", "it deserves every award", "you will not regret it",
]
NEG_REC = [
    "skip this one", "save your money", "avoid it", "not worth the ticket price", "do not bother",
    "wait until it is free", "it deserves to be forgotten", "you will regret it",
]
FILLERS = [
    "i saw it last weekend", "we watched it on a rainy sunday", "my friend picked it",
    "it runs about two hours", "it is based on a novel", "the trailer looked different",
    "i went in with no expectations", "the theater was half empty", "i watched it at home",
    "it opened last friday", "my sister dragged me along", "i rented it on a whim",
    "it is the director's third feature", "it is rated pg-13", "the runtime is 118 minutes",
    "we saw it after dinner at a café", "it was filmed in new zealand", "the studio spent millions on it",
    "i read the book first", "my parents recommended it", "it is a remake of a 1980s hit",
    "i watched it twice", "it stars two unknown actors", "the theater was packed",
]
CRITIC_SOURCES = ["the critics", "my friends", "the poster", "the reviews", "everyone online", "the trailer"]


class Gen:
    def __init__(self, seed: int):
        self.r = random.Random(seed)

    def pick(self, xs: Sequence):
        return xs[self.r.randrange(len(xs))]

    def chance(self, p: float) -> bool:
        return self.r.random() < p

    # -- pieces ---------------------------------------------------------------------------
    def adj(self, pol: int) -> str:
        return self.pick(POS_ADJ if pol == POS else NEG_ADJ)

    def intens(self, p: float = 0.5) -> str:
        if not self.chance(p):
            return ""
        w = self.pick(INTENSIFIERS)
        if self.chance(0.06):
            w = w.upper()
        return w + " "

    def subj(self) -> Tuple[str, str]:
        s, plural = self.pick(SUBJECTS)
        tense = self.r.random() < 0.55
        be = ("were" if plural else "was") if tense else ("are" if plural else "is")
        return s, be

    def clause(self, pol: int) -> str:
        k = self.r.random()
        if k < 0.34:
            s, be = self.subj()
            return f"{s} {be} {self.intens()}{self.adj(pol)}"
        if k < 0.46:  # negation: "not good" -> negative, "not boring" -> positive
            s, be = self.subj()
            neg = self.pick(["not", "not", "never", "hardly"]) if pol == POS else self.pick(["not", "not", "never"])
            i = self.pick(NEG_INTENSIFIERS) + " " if neg == "not" and self.chance(0.3) else ""
            if self.chance(0.3) and neg == "not":
                return f"{s} {be}n't {i}{self.adj(-pol)}"
            return f"{s} {be} {neg} {i}{self.adj(-pol)}"
        if k < 0.60:
            i = self.intens()
            a = self.adj(pol)
            art = "an" if (i or a)[0].lower() in "aeiou" else "a"
            return f"it {self.pick(['is', 'was'])} {art} {i}{a} {self.pick(NOUNS)}"
        if k < 0.76:
            return self.pick(POS_VP if pol == POS else NEG_VP)
        return self.pick(POS_REACT if pol == POS else NEG_REACT)

    def rating(self, pol: int) -> str:
        n = self.r.choice([7, 8, 8, 9, 9, 10]) if pol == POS else self.r.choice([1, 1, 2, 2, 3, 4])
        return self.pick([f"{n} out of 10", f"{n}/10", f"i give it {n} stars out of 10", f"rating: {n}/10"])

    # -- sentences --------------------------------------------------------------------------
    def sentence(self, pol: int) -> str:
        k = self.r.random()
        end = self.pick([".", ".", ".", "!", "..."])
        if k < 0.20:
            s = self.clause(pol) + end
        elif k < 0.32:
            s = f"{self.clause(pol)} and {self.clause(pol)}{end}"
        elif k < 0.44:
            f = self.pick(FILLERS)
            s = f"{f}, and {self.clause(pol)}{end}" if self.chance(0.5) else f"{self.clause(pol)}, {f}{end}"
        elif k < 0.60:  # contrast: the main clause decides
            form = self.r.random()
            if form < 0.6:
                s = f"{self.clause(-pol)}, but {self.clause(pol)}{end}"
            elif form < 0.9:
                s = f"although {self.clause(-pol)}, {self.clause(pol)}{end}"
            else:
                s = f"{self.clause(pol)}, even though {self.clause(-pol)}{end}"
        elif k < 0.70:
            s = f"{self.clause(pol)}. {self.rating(pol)}."
        elif k < 0.79:  # quotes
            src = self.pick(CRITIC_SOURCES)
            verb = self.pick(["called it", "said it was", "described it as"])
            if self.chance(0.5):
                s = f'{src} {verb} "{self.adj(pol)}", and {self.pick(["i agree", "they were right", "it is true"])}.'
            else:
                s = f'{src} {verb} "{self.adj(-pol)}", but {self.pick(["i disagree", "they were wrong", "it is not"])}.'
        elif k < 0.88:
            i = self.intens(0.4)
            a = self.adj(pol)
            art = "an" if (i or a)[0].lower() in "aeiou" else "a"
            s = f"what {art} {i}{a} {self.pick(NOUNS)}! {self.pick(POS_REC if pol == POS else NEG_REC)}."
        else:
            s = f"{self.clause(pol)}; {self.pick(POS_REC if pol == POS else NEG_REC)}{end}"
        s = s[0].upper() + s[1:]
        s = s.replace(" i ", " I ").replace(". i ", ". I ")
        if s.startswith("i "):
            s = "I " + s[2:]
        return s

    def dataset(self, n: int, exclude: Set[str]) -> List[Tuple[str, str]]:
        rows: List[Tuple[str, int]] = []
        seen = set(exclude)
        for pol in [POS] * (n // 2) + [NEG] * (n - n // 2):
            while True:
                s = self.sentence(pol)
                words = len(s.split())
                if 5 <= words <= 30 and s not in seen:
                    break
            seen.add(s)
            rows.append((s, pol))
        # Label noise, the same number of flips in each class so the classes stay balanced.
        k = round(n * LABEL_NOISE / 2)
        for pol in (POS, NEG):
            idx = [i for i, (_, p) in enumerate(rows) if p == pol]
            for i in self.r.sample(idx, k):
                rows[i] = (rows[i][0], -pol)
        self.r.shuffle(rows)
        return [(s, LABEL_NAME[p]) for s, p in rows]


# ----------------------------------------------------------------------------------------
# Tokenizer
# ----------------------------------------------------------------------------------------
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
SUFFIXES = ["s", "es", "ed", "d", "ing", "ly", "er", "est", "y", "ness", "ful", "less"]
COMMON_WORDS = (  # everyday words beyond the generator, so typed demo text mostly avoids letter splits
    "a about after again all also always am an and any are as at be because been before being best "
    "better between both but by can could day did do does doing down during each even ever every few "
    "first for from get go going good had has have he her here him his how i if in into is it its just "
    "know last least like little long look lot made make man many me more most much must my never new "
    "no nor not now of off old on once one only or other our out over own people really right same see "
    "she should show since so some still such take than that the their them then there these they thing "
    "think this those though through time to too two under until up us very want was watch way we well "
    "were what when where which while who why will with without work would year yes yet you your "
    "actor actress animation audience award book camera character cinema comedy director episode fan "
    "horror hero music netflix role scene screen series show star studio television theater tv version "
    "writer writing "
    # stems of generator words, so those split into stem + "##ly"/"##s"/...: "surprisingly" -> "surprising ##ly"
    "surprising genuine complete deep strange odd consistent endless thorough utter natural perfect"
).split()


def tokenizer_spec(vocab: Dict[str, int]) -> dict:
    def added(tok: str) -> dict:
        return {"id": vocab[tok], "content": tok, "single_word": False, "lstrip": False, "rstrip": False,
                "normalized": False, "special": True}

    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [added(t) for t in SPECIALS],
        "normalizer": {"type": "BertNormalizer", "clean_text": True, "handle_chinese_chars": True,
                       "strip_accents": None, "lowercase": True},
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                       {"SpecialToken": {"id": "[SEP]", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": "[SEP]", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}},
                     {"SpecialToken": {"id": "[SEP]", "type_id": 1}}],
            "special_tokens": {
                "[CLS]": {"id": "[CLS]", "ids": [vocab["[CLS]"]], "tokens": ["[CLS]"]},
                "[SEP]": {"id": "[SEP]", "ids": [vocab["[SEP]"]], "tokens": ["[SEP]"]},
            },
        },
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": True},
        "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                  "max_input_chars_per_word": 100, "vocab": vocab},
    }


def build_vocab(texts: Sequence[str]) -> Dict[str, int]:
    # Use our own BertNormalizer/BertPreTokenizer (a stub spec with an empty vocab).
    stub = WordPieceTokenizer(tokenizer_spec({t: i for i, t in enumerate(SPECIALS)}))
    counts: collections.Counter = collections.Counter()
    for t in texts:
        counts.update(stub.pre_tokenize(stub.normalize(t)))
    for w in COMMON_WORDS:
        counts[w] += 0
    words = set(counts)
    # A word that is a vocabulary stem plus a suffix piece is left out, so WordPiece
    # splits it ("films" -> "film" "##s", "surprisingly" -> "surprising" "##ly").
    split: Set[str] = set()
    for w in sorted(words):
        for suf in SUFFIXES:
            stem = w[: -len(suf)]
            if w.endswith(suf) and len(stem) >= 3 and stem in words and stem not in split:
                split.add(w)
                break
    chars = list(string.ascii_lowercase) + list(string.digits)
    punct = list(string.punctuation)
    kept = [w for w in words if w not in split and w not in chars and w not in punct]
    kept.sort(key=lambda w: (-counts[w], w))
    pieces = list(dict.fromkeys(["##" + s for s in SUFFIXES] + ["##" + c for c in chars]))
    ordered = SPECIALS + punct + chars + kept + pieces
    assert len(set(ordered)) == len(ordered), "duplicate vocabulary entries"
    return {tok: i for i, tok in enumerate(ordered)}


# ----------------------------------------------------------------------------------------
def write_csv(path: str, rows: Sequence[Tuple[str, str]]) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, quoting=csv.QUOTE_MINIMAL, lineterminator="\n")  # RFC 4180 quoting, LF line ends
    w.writerow(["text", "label"])
    w.writerows(rows)
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write(buf.getvalue())


def main() -> int:
    p = argparse.ArgumentParser(description="Generate assets/demo/{reviews.csv,pretrain.csv,tokenizer.json}.")
    p.add_argument("--out-dir", default=os.path.join(HERE, "..", "..", "assets", "demo"))
    args = p.parse_args()
    out = os.path.normpath(args.out_dir)
    os.makedirs(out, exist_ok=True)

    reviews = Gen(REVIEWS_SEED).dataset(N_REVIEWS, set())
    pretrain = Gen(PRETRAIN_SEED).dataset(N_PRETRAIN, {t for t, _ in reviews})
    assert not ({t for t, _ in reviews} & {t for t, _ in pretrain})

    vocab = build_vocab([t for t, _ in reviews] + [t for t, _ in pretrain])
    spec = tokenizer_spec(vocab)
    with open(os.path.join(out, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(spec, f, ensure_ascii=False, indent=2)
        f.write("\n")
    write_csv(os.path.join(out, "reviews.csv"), reviews)
    write_csv(os.path.join(out, "pretrain.csv"), pretrain)

    tok = WordPieceTokenizer(spec)
    unk = sum(tok.encode(t).count(tok.unk_id) for t, _ in reviews + pretrain)
    lens = [len(tok.encode(t)) for t, _ in reviews]
    n_split = sum(1 for t, _ in reviews for x in tok.encode_tokens(t) if x.startswith("##"))
    bal = collections.Counter(lab for _, lab in reviews)
    print(f"vocab {len(vocab)} tokens; reviews.csv {len(reviews)} rows {dict(bal)}, pretrain.csv {len(pretrain)} rows; "
          f"tokens per review {min(lens)}-{max(lens)} (mean {sum(lens) / len(lens):.1f}); "
          f"{n_split} '##' pieces in reviews; [UNK] count {unk}", file=sys.stderr)
    if unk:
        raise SystemExit("generated text contains [UNK] tokens")
    return 0


if __name__ == "__main__":
    sys.exit(main())
