"""The metrics of a run: perplexity, classification accuracy and macro-F1, and ROUGE of greedy summaries.

ROUGE follows Lin (2004) with Porter stemming, as the summarization papers report it; the summaries are
generated from the prompt ``data.summary_prompt`` builds, the format the summarizer trains on.
"""

import math
from collections.abc import Sequence

import numpy as np
import torch

from llm_memory.training import data


def perplexity(loss: float) -> float:
    return math.exp(loss) if loss < 700 else math.inf  # exp overflows a float past ~709


def classification_metrics(eval_pred) -> dict[str, float]:
    """Accuracy and macro-F1 (every class counts the same, whatever its size)."""
    from sklearn.metrics import accuracy_score, f1_score  # here: a second's import only this task needs

    logits = eval_pred.predictions[0] if isinstance(eval_pred.predictions, tuple) else eval_pred.predictions
    predictions = np.argmax(logits, axis=-1)
    return {
        "accuracy": float(accuracy_score(eval_pred.label_ids, predictions)),
        "f1": float(f1_score(eval_pred.label_ids, predictions, average="macro")),
    }


@torch.no_grad()
def generate_summaries(
    model, tokenizer, documents: Sequence[str], max_new_tokens: int, block_size: int, batch_size: int = 8
) -> list[str]:
    """Greedy summaries: each prompt is the document (cut to fit) followed by the separator token."""
    room = block_size - max_new_tokens - 1
    prompts = [
        data.summary_prompt(tokenizer, ids, room)
        for ids in tokenizer(list(documents), add_special_tokens=False)["input_ids"]
    ]
    model.eval()
    summaries = []
    for start in range(0, len(prompts), batch_size):
        batch = prompts[start : start + batch_size]
        width = max(len(p) for p in batch)
        # Left padding, so every row's new tokens start at column `width`.
        input_ids = torch.tensor([[tokenizer.pad_token_id] * (width - len(p)) + p for p in batch])
        attention_mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in batch])
        output = model.generate(
            input_ids=input_ids.to(model.device),
            attention_mask=attention_mask.to(model.device),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        summaries += tokenizer.batch_decode(output[:, width:], skip_special_tokens=True)
    return [summary.strip() for summary in summaries]


def rouge_scores(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Mean ROUGE-1/2/L F1 in percent (Lin, 2004), with Porter stemming as in the summarization papers."""
    from rouge_score import rouge_scorer  # here: only summarization needs it (and nltk under it)

    kinds = ("rouge1", "rouge2", "rougeL")
    scorer = rouge_scorer.RougeScorer(list(kinds), use_stemmer=True)
    totals = dict.fromkeys(kinds, 0.0)
    for prediction, reference in zip(predictions, references, strict=True):
        for kind, score in scorer.score(reference, prediction).items():
            totals[kind] += score.fmeasure
    return {kind: 100 * total / max(len(predictions), 1) for kind, total in totals.items()}
