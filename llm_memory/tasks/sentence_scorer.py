"""A learned sentence salience for extractive summaries, fitted on document/summary pairs.

A linear scorer over the language model's contextual sentence embeddings and each sentence's place in
the document. Each sentence is read in context (the document in windows of whole sentences) and
described by its mean final hidden state, that state's cosine to the document's mean, its relative
position, whether it is the first, second or third, and its length. A logistic regression fitted on
document/summary pairs learns which sentence is closest (ROUGE-1) to the person's summary, the
extractive oracle label that supervised extractive summarizers train on. It is saved next to the
language model as ``sentence_scorer.json``, so the Summarize tab's ``learned`` method scores with the
model that made its features. Fitting needs scikit-learn and rouge-score (the ``train`` extra);
scoring needs only torch.

    python -m llm_memory.tasks.sentence_scorer --model checkpoints/memory-lm [--max_pairs 3000] [--C 0.1]
"""

import argparse
import hashlib
import json
import math
import os
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from llm_memory.training.data import split_sentences
from llm_memory.training.tokenization import encode

SCORER_FILE = "sentence_scorer.json"
FORMAT = "llm-memory sentence scorer"

# The features after the hidden state, in order (``sentence_features``).
PLACE_FEATURES = (
    "cosine_to_document",
    "relative_position",
    "first",
    "second",
    "third",
    "log_tokens",
    "log_sentences",
)

# Documents with more sentences are left out of fitting (each costs a forward pass per window).
MAX_FIT_SENTENCES = 64


def sentence_windows(sentence_ids: list[list[int]], window: int) -> list[list[int]]:
    """Packs whole sentences (indices) into windows of at most ``window`` tokens, in order."""
    windows, current, used = [], [], 0
    for index, ids in enumerate(sentence_ids):
        size = min(len(ids), window)
        if current and used + size > window:
            windows.append(current)
            current, used = [], 0
        current.append(index)
        used += size
    if current:
        windows.append(current)
    return windows


def sentence_token_ids(
    tokenizer, document: str, spans: list[tuple[int, int]], window: int
) -> list[list[int]]:
    """Each sentence's tokens with the whitespace before it, so that they are those of the running text."""
    starts = [0] + [end for _, end in spans[:-1]]
    return [
        encode(tokenizer, document[start:end])[:window] for start, (_, end) in zip(starts, spans, strict=True)
    ]


def sentence_vectors(
    model, tokenizer, window: int, document: str, spans: list[tuple[int, int]]
) -> tuple[torch.Tensor, list[int]]:
    """The mean final hidden state of each sentence, ``(n, H)``, and its token count; the model reads the
    document in windows of whole sentences."""
    sentence_ids = sentence_token_ids(tokenizer, document, spans, window)
    sums = torch.zeros(len(spans), model.config.hidden_size)
    for indices in sentence_windows(sentence_ids, window):
        ids = [token for i in indices for token in sentence_ids[i]]
        with torch.no_grad():
            output = model(torch.tensor([ids]), output_hidden_states=True, use_cache=False)
        hidden = output.hidden_states[-1][0]  # (T, H)
        position = 0
        for i in indices:
            size = len(sentence_ids[i])
            sums[i] = hidden[position : position + size].float().sum(0)
            position += size
    sizes = [max(len(ids), 1) for ids in sentence_ids]
    return sums / torch.tensor(sizes, dtype=torch.float32)[:, None], sizes


def sentence_features(vectors: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    """``(n, H + len(PLACE_FEATURES))``: each sentence's mean hidden state, then its place features."""
    n = len(sizes)
    weights = torch.tensor(sizes, dtype=torch.float32)
    centroid = (vectors * weights[:, None]).sum(0) / weights.sum()
    index = torch.arange(n, dtype=torch.float32)
    place = torch.stack(
        [
            torch.nn.functional.cosine_similarity(vectors, centroid[None], dim=1),
            index / n,
            (index == 0).float(),
            (index == 1).float(),
            (index == 2).float(),
            torch.log1p(weights),
            torch.full((n,), math.log(n)),
        ],
        dim=1,
    )
    return torch.cat([vectors, place], dim=1)


@dataclass
class SentenceScorer:
    """``score = ((features - mean) / scale) @ coef + intercept``, one per sentence."""

    hidden_size: int
    # ``weights_fingerprint`` of the model whose hidden states it was fitted on.
    model_fingerprint: str
    mean: list[float]
    scale: list[float]
    coef: list[float]
    intercept: float
    # How it was fitted and what it scored on validation pairs.
    fitted: dict = field(default_factory=dict)

    def __post_init__(self):
        width = self.hidden_size + len(PLACE_FEATURES)
        for name in ("mean", "scale", "coef"):
            values = getattr(self, name)
            if len(values) != width or not all(math.isfinite(v) for v in values):
                raise ValueError(
                    f"{name} must hold {width} finite numbers (hidden size {self.hidden_size} + place features)."
                )
        if any(v <= 0 for v in self.scale) or not math.isfinite(self.intercept):
            raise ValueError("scale must be positive and intercept finite.")

    def scores(self, features: torch.Tensor) -> list[float]:
        mean, scale, coef = (torch.tensor(getattr(self, name)) for name in ("mean", "scale", "coef"))
        return (((features - mean) / scale) @ coef + self.intercept).tolist()

    def save(self, folder: str | os.PathLike) -> Path:
        path = Path(folder) / SCORER_FILE
        path.write_text(
            json.dumps(
                {"format": FORMAT, "features": ["hidden_state", *PLACE_FEATURES], **asdict(self)}, indent=1
            )
            + "\n"
        )
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, model) -> "SentenceScorer":
        """The scorer in ``path``, checked against ``model`` (its hidden size and weights); a clear
        ValueError otherwise."""
        refit = f"Refit it: python -m llm_memory.tasks.sentence_scorer --model FOLDER ({path})."
        try:
            data = json.loads(Path(path).read_text())
            if not isinstance(data, dict) or data.get("format") != FORMAT:
                raise ValueError(f"it is not a {FORMAT} file")
            keys = ("hidden_size", "model_fingerprint", "mean", "scale", "coef", "intercept")
            scorer = cls(**{key: data[key] for key in keys}, fitted=data.get("fitted", {}))
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise ValueError(f"The sentence scorer {SCORER_FILE} cannot be read: {error}. {refit}") from error
        if scorer.hidden_size != model.config.hidden_size:
            raise ValueError(
                f"The sentence scorer was fitted on hidden states of size {scorer.hidden_size}, but the "
                f"model's are {model.config.hidden_size}. {refit}"
            )
        if scorer.model_fingerprint != weights_fingerprint(model):
            raise ValueError(
                f"The sentence scorer was fitted on another model's hidden states (its weights changed since). {refit}"
            )
        return scorer


def weights_fingerprint(model) -> str:
    """A short hash of the model's input embeddings: a scorer fitted on one model's hidden states is
    refused by a retrained one of the same shape. (The embeddings, not every weight: serving may repack
    the linear layers. A retraining that left the embeddings frozen would not be caught.)"""
    weights = model.get_input_embeddings().weight.detach().float().cpu().contiguous()
    return hashlib.sha256(weights.numpy().tobytes()).hexdigest()[:16]


def load_sentence_scorer(model_path: str | os.PathLike, model) -> SentenceScorer | None:
    """The scorer saved with the language model at ``model_path`` (a folder or a Hub id), checked against
    the loaded ``model``, or None when there is none."""
    from transformers.utils import cached_file

    path = cached_file(
        str(model_path),
        SCORER_FILE,
        _raise_exceptions_for_missing_entries=False,
        _raise_exceptions_for_connection_errors=False,
    )
    return SentenceScorer.load(path, model) if path else None


def oracle_overlaps(document: str, spans: list[tuple[int, int]], summary: str, scorer) -> list[float]:
    """Each sentence's ROUGE-1 F1 against the summary (``scorer``: a rouge_score RougeScorer)."""
    return [scorer.score(summary, document[start:end])["rouge1"].fmeasure for start, end in spans]


def oracle_sentence(document: str, spans: list[tuple[int, int]], summary: str, scorer) -> int | None:
    """The index of the sentence with the highest ROUGE-1 F1 against ``summary`` (the first of equals),
    or None when no sentence shares a word with it: the extractive oracle label."""
    overlaps = oracle_overlaps(document, spans, summary, scorer)
    best = max(overlaps)
    return overlaps.index(best) if best > 0 else None


def document_features(
    model, tokenizer, window: int, document: str
) -> tuple[list[tuple[int, int]], torch.Tensor]:
    """The document's sentence spans and their features (``sentence_features``)."""
    spans = split_sentences(document)
    vectors, sizes = sentence_vectors(model, tokenizer, window, document, spans)
    return spans, sentence_features(vectors, sizes)


def fit_sentence_scorer(
    model, tokenizer, window: int, documents: list[str], summaries: list[str], C: float = 0.1
) -> SentenceScorer:
    """Fits the scorer to pick, in each document, the sentence with the highest ROUGE-1 against its summary
    (documents where no sentence shares a word with it are left out)."""
    from rouge_score import rouge_scorer
    from sklearn.linear_model import LogisticRegression

    rouge = rouge_scorer.RougeScorer(["rouge1"], use_stemmer=True)
    rows, labels = [], []
    for document, summary in zip(documents, summaries, strict=True):
        spans = split_sentences(document)
        if not 2 <= len(spans) <= MAX_FIT_SENTENCES:
            continue
        best = oracle_sentence(document, spans, summary, rouge)
        if best is None:
            continue
        rows.append(document_features(model, tokenizer, window, document)[1])
        labels += [int(i == best) for i in range(len(spans))]
    if not rows or len(set(labels)) < 2:
        raise ValueError(
            "No document of two or more sentences shares a word with its summary; give more pairs."
        )
    features = torch.cat(rows)
    mean, scale = features.mean(0), features.std(0).clamp_min(1e-6)
    regression = LogisticRegression(C=C, max_iter=2000).fit(((features - mean) / scale).numpy(), labels)
    return SentenceScorer(
        hidden_size=model.config.hidden_size,
        model_fingerprint=weights_fingerprint(model),
        mean=mean.tolist(),
        scale=scale.tolist(),
        coef=regression.coef_[0].tolist(),
        intercept=float(regression.intercept_[0]),
        fitted={"documents": len(rows), "sentences": len(labels), "C": C},
    )


def validation_rouge(
    model, tokenizer, window: int, documents: list[str], summaries: list[str], scorer: SentenceScorer
) -> dict[str, dict[str, float]]:
    """Mean ROUGE-1 and ROUGE-L F1 (x100) of the one sentence that ``scorer`` ranks first in each document,
    and of the first sentence (lead-1), side by side."""
    from rouge_score import rouge_scorer

    rouge = rouge_scorer.RougeScorer(["rouge1", "rougeL"], use_stemmer=True)
    totals = {system: {"rouge1": [], "rougeL": []} for system in ("learned", "lead")}
    for document, summary in zip(documents, summaries, strict=True):
        spans, features = document_features(model, tokenizer, window, document)
        scores = scorer.scores(features)
        for system, index in (("learned", scores.index(max(scores))), ("lead", 0)):
            start, end = spans[index]
            for metric, score in rouge.score(summary, document[start:end]).items():
                totals[system][metric].append(score.fmeasure)
    return {
        system: {metric: round(100 * statistics.fmean(values), 2) for metric, values in metrics.items()}
        for system, metrics in totals.items()
    }


def main(argv: list[str] | None = None) -> int:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llm_memory.training.docstrings import load_package_docstrings

    parser = argparse.ArgumentParser(
        prog="python -m llm_memory.tasks.sentence_scorer", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--model", required=True, help="The language model folder; the scorer is saved into it."
    )
    parser.add_argument("--output", help="Folder to save the scorer in (default: --model).")
    parser.add_argument(
        "--max_pairs", type=int, default=3000, help="Training pairs (package docstrings, shuffled)."
    )
    parser.add_argument("--validation_pairs", type=int, default=600, help="Validation pairs to report on.")
    parser.add_argument(
        "--C", type=float, default=0.1, help="Inverse L2 strength of the logistic regression."
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.max_pairs < 1 or args.validation_pairs < 1 or not args.C > 0:
        parser.error("--max_pairs and --validation_pairs must be at least 1, and --C above 0.")
    if args.output is None and not Path(args.model).is_dir():
        parser.error(
            f"--model {args.model} is not a local folder; give --output FOLDER to save the scorer in."
        )
    output = Path(args.output or args.model)
    output.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    model = AutoModelForCausalLM.from_pretrained(args.model).eval()
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    window = model.config.max_position_embeddings
    corpus = load_package_docstrings()
    train = corpus["train"].shuffle(seed=args.seed)
    train = train.select(range(min(args.max_pairs, len(train))))
    validation = corpus["validation"].select(range(min(args.validation_pairs, len(corpus["validation"]))))
    validation = [
        (d, s)
        for d, s in zip(validation["document"], validation["summary"], strict=True)
        if len(split_sentences(d)) <= MAX_FIT_SENTENCES
    ]
    scorer = fit_sentence_scorer(model, tokenizer, window, train["document"], train["summary"], C=args.C)
    documents, summaries = [d for d, _ in validation], [s for _, s in validation]
    figures = validation_rouge(model, tokenizer, window, documents, summaries, scorer)
    scorer.fitted |= {
        "model": str(args.model),
        "data": f"package_docstrings train, {len(train)} pairs shuffled with seed {args.seed}",
        "validation_pairs": len(validation),
        "validation_rouge": figures,
    }
    path = scorer.save(output)
    learned, lead = figures["learned"], figures["lead"]
    print(
        f"Fitted on {scorer.fitted['documents']} documents ({scorer.fitted['sentences']} sentences). "
        f"One sentence on {len(validation)} validation pairs: learned ROUGE-1 {learned['rouge1']}, "
        f"ROUGE-L {learned['rougeL']}; lead ROUGE-1 {lead['rouge1']}, ROUGE-L {lead['rougeL']}. Wrote {path}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
