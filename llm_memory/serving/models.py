"""The models a server holds, loaded once, with the batchers that decode and classify their requests.

``load_models`` loads the language model (with its sentence scorer when it has one), an optional
classifier and an optional summarizer, and gives generation one ``Batcher``: a ``GenerationBatcher`` in
this process, or a ``DecoderProcess`` that decodes in a child process. The task functions
(``llm_memory.tasks``) take the ``Models`` it returns.
"""

from dataclasses import dataclass, field

import torch
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, PreTrainedModel

from llm_memory.generation_settings import DEFAULT_MAX_NEW_TOKENS, GENERATION_RANGES
from llm_memory.serving.batcher import Batcher, GenerationBatcher, batcher_options
from llm_memory.serving.classify_batcher import ClassifyBatcher
from llm_memory.serving.decoder_process import DecoderProcess
from llm_memory.serving.loading import (
    ModelLoadError,
    context_window,
    is_summarizer,
    load_model,
    selector_folder,
    source_name,
)
from llm_memory.serving.settings import SERVE_DEFAULTS, ServeSettings
from llm_memory.tasks.sentence_scorer import SentenceScorer, load_sentence_scorer


@dataclass
class Models:
    """Everything the tasks need, loaded once: the language model, the classifier, an optional summarizer.

    ``batcher`` and ``classify_batcher`` default to in-process ones built from ``settings``.
    """

    lm: PreTrainedModel
    lm_tokenizer: object
    classifier: PreTrainedModel | None = None
    classifier_tokenizer: object = None
    summarizer: PreTrainedModel | None = None
    summarizer_tokenizer: object = None
    sources: dict[str, str] = field(default_factory=dict)
    # Ranks sentences for the Summarize tab's learned method; saved with the language model.
    sentence_scorer: SentenceScorer | None = None
    settings: ServeSettings = SERVE_DEFAULTS
    # Decodes sampled and greedy requests: in this process, or a DecoderProcess (decoder_process.py).
    batcher: Batcher | None = field(default=None, repr=False)
    # Classifies requests that arrive together in one batch.
    classify_batcher: ClassifyBatcher | None = field(default=None, repr=False)

    def __post_init__(self):
        if self.batcher is None:
            self.batcher = GenerationBatcher(self.lm, self.lm_tokenizer, **batcher_options(self.settings))
        if self.classify_batcher is None and self.classifier is not None:
            self.classify_batcher = ClassifyBatcher(
                self.classifier,
                self.classifier_tokenizer,
                max_batch_size=self.settings.max_batch_size,
                quiet_s=self.settings.batch_quiet_s,
            )

    @property
    def window(self) -> int:
        return context_window(self.lm, self.lm_tokenizer)

    @property
    def max_new_tokens(self) -> int:
        """The largest max_new_tokens: the range's top, leaving at least one prompt token in the window."""
        return min(GENERATION_RANGES["max_new_tokens"][1], self.window - 1)

    @property
    def default_max_new_tokens(self) -> int:
        return min(DEFAULT_MAX_NEW_TOKENS, self.max_new_tokens)

    @property
    def num_layers(self) -> int:
        return self.lm.config.num_hidden_layers

    @property
    def num_heads(self) -> int:
        return self.lm.config.num_attention_heads


def load_models(
    model_path: str,
    classifier_path: str | None = None,
    summarizer_path: str | None = None,
    decoder_process: bool = False,
    settings: ServeSettings = SERVE_DEFAULTS,
) -> Models:
    """Loads the language model, the classifier and an optional summarizer (local folders or Hub ids).

    A language model whose config marks it as summarization-tuned also serves as the summarizer. The
    summarizer is abstractive (a causal LM that writes ``document <|sep|> summary``) or extractive (a
    selector of sentences, ``training.selection``), whichever its config says.
    Without a classifier, everything but ``classify`` works. With ``decoder_process``, sampled and
    greedy generation is decoded in a child process that loads the language model too (a server's
    own threads then do not slow it; see decoder_process.py), started first so that both load at
    once. Raises ModelLoadError naming the model that failed.
    """
    decoder = None
    if decoder_process:
        decoder = DecoderProcess(model_path, torch.get_num_threads(), settings.stall_timeout_s, settings)
    try:
        pack = settings.packed_linear
        lm, lm_tokenizer = load_model(model_path, AutoModelForCausalLM, "model", pack)
        sources = {"model": source_name(model_path)}
        try:
            sentence_scorer = load_sentence_scorer(model_path, lm)
        except ValueError as error:
            raise ModelLoadError(f"The model at {source_name(model_path)}: {error}", "model") from error
        classifier, classifier_tokenizer = None, None
        if classifier_path:
            classifier, classifier_tokenizer = load_model(
                classifier_path, AutoModelForSequenceClassification, "classifier", pack
            )
            sources["classifier"] = source_name(classifier_path)
        summarizer, summarizer_tokenizer = None, None
        if summarizer_path:
            summarizer_class = (
                AutoModelForSequenceClassification
                if selector_folder(summarizer_path)
                else AutoModelForCausalLM
            )
            summarizer, summarizer_tokenizer = load_model(
                summarizer_path, summarizer_class, "summarizer", pack
            )
            if summarizer_class is AutoModelForSequenceClassification:
                summarizer_tokenizer.truncation_side = (
                    "right"  # a selector reads the start, where its marks are
                )
            sources["summarizer"] = source_name(summarizer_path)
        elif is_summarizer(lm):
            summarizer, summarizer_tokenizer = lm, lm_tokenizer
            sources["summarizer"] = source_name(model_path)
        if decoder is not None:
            decoder.wait_ready()
        return Models(
            lm,
            lm_tokenizer,
            classifier,
            classifier_tokenizer,
            summarizer,
            summarizer_tokenizer,
            sources,
            sentence_scorer,
            settings=settings,
            batcher=decoder,
        )
    except BaseException:
        if decoder is not None:
            decoder.close()
        raise
