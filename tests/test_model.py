"""Model tests: parity (cache vs none, eager vs SDPA, saved vs loaded, padded vs alone, ours vs GPT-2)."""

import json
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest
import torch
import transformers
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    DynamicCache,
    GPT2Config,
    GPT2LMHeadModel,
    pipeline,
)

from llm_memory import (
    MemoryTransformerConfig,
    MemoryTransformerForCausalLM,
    MemoryTransformerForSequenceClassification,
    MemoryTransformerModel,
)

# A deprecated Transformers API used by the model (or the code shipped next to its weights) fails here,
# not first on a release that removes it.
pytestmark = pytest.mark.filterwarnings("error::FutureWarning")

POSITION_TYPES = ("learned", "sinusoidal", "rope")


def random_ids(batch, length, seed=1, low=5, high=97):
    return torch.randint(low, high, (batch, length), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("use_lstm", [False, True])
@pytest.mark.parametrize("position_embedding_type", POSITION_TYPES)
def test_incremental_decoding_equals_full_forward(tiny_lm, use_lstm, position_embedding_type):
    model = tiny_lm(use_lstm=use_lstm, position_embedding_type=position_embedding_type)
    ids = random_ids(2, 12)
    with torch.no_grad():
        full = model(ids, use_cache=False).logits
        cache = DynamicCache(config=model.config)
        first = model(ids[:, :5], past_key_values=cache, use_cache=True).logits
        steps = [model(ids[:, t : t + 1], past_key_values=cache, use_cache=True).logits for t in range(5, 12)]
    torch.testing.assert_close(torch.cat([first, *steps], dim=1), full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("use_lstm", [False, True])
@pytest.mark.parametrize(
    "generation",
    [
        dict(do_sample=False),
        dict(do_sample=True, top_k=20, top_p=0.9, temperature=0.8),
        dict(do_sample=False, num_beams=3, num_return_sequences=2),
    ],
    ids=["greedy", "sampling", "beam"],
)
def test_generate_same_with_and_without_cache(tiny_lm, use_lstm, generation):
    model = tiny_lm(use_lstm=use_lstm)
    prompt = random_ids(2, 6)
    outputs = []
    for use_cache in (True, False):
        torch.manual_seed(123)
        outputs.append(
            model.generate(
                prompt,
                attention_mask=torch.ones_like(prompt),
                max_new_tokens=12,
                min_new_tokens=12,
                use_cache=use_cache,
                pad_token_id=0,
                **generation,
            )
        )
    assert outputs[0].shape[1] == prompt.shape[1] + 12
    assert torch.equal(outputs[0], outputs[1])


@pytest.mark.parametrize("position_embedding_type", POSITION_TYPES)
@pytest.mark.parametrize("assistance", ["assistant_model", "prompt_lookup"])
def test_assisted_decoding_equals_greedy_without_the_lstm_and_is_refused_with_it(
    tiny_lm, position_embedding_type, assistance
):
    prompt = torch.cat([random_ids(1, 6, seed=7)] * 3, dim=1)  # repeats, for prompt lookup to find
    kwargs = dict(attention_mask=torch.ones_like(prompt), max_new_tokens=10, do_sample=False, pad_token_id=0)
    for use_lstm in (False, True):
        model = tiny_lm(use_lstm=use_lstm, position_embedding_type=position_embedding_type)
        extra = (
            {
                "assistant_model": tiny_lm(
                    seed=5, use_lstm=False, position_embedding_type=position_embedding_type
                )
            }
            if assistance == "assistant_model"
            else {"prompt_lookup_num_tokens": 3}
        )
        if use_lstm:
            with pytest.raises(ValueError, match="assisted generation is not supported with stateful models"):
                model.generate(prompt, **kwargs, **extra)
        else:
            torch.testing.assert_close(
                model.generate(prompt, **kwargs, **extra), model.generate(prompt, **kwargs)
            )


@pytest.mark.parametrize("position_embedding_type", POSITION_TYPES)
def test_a_packed_row_gives_the_logits_of_its_sequences_padded(tiny_lm, position_embedding_type):
    """Padding-free batches (DataCollatorWithFlattening): position ids restart at each sequence, and
    attention and the LSTM state both start afresh there."""
    from transformers import DataCollatorWithFlattening

    model = tiny_lm(use_lstm=True, position_embedding_type=position_embedding_type)
    sequences = [random_ids(1, n, seed=n)[0].tolist() for n in (7, 4, 9)]
    packed = DataCollatorWithFlattening(return_position_ids=True)([{"input_ids": s} for s in sequences])
    longest = max(map(len, sequences))
    padded = torch.tensor([s + [0] * (longest - len(s)) for s in sequences])
    mask = (torch.arange(longest) < torch.tensor([len(s) for s in sequences])[:, None]).long()
    with torch.no_grad():
        # use_cache=False, as in training: Transformers reads packing from position ids only without a cache.
        packed_logits = model(
            packed["input_ids"], position_ids=packed["position_ids"], use_cache=False
        ).logits[0]
        padded_logits = model(padded, attention_mask=mask).logits
    expected = torch.cat([padded_logits[i, : len(s)] for i, s in enumerate(sequences)])
    torch.testing.assert_close(packed_logits, expected, atol=1e-5, rtol=1e-5)

    # Trained padding-free, the loss and gradients are those of the padded batch (the same 17 targets).
    losses, grads = [], []
    for inputs in (
        dict(input_ids=packed["input_ids"], position_ids=packed["position_ids"], labels=packed["labels"]),
        dict(input_ids=padded, attention_mask=mask, labels=padded.masked_fill(mask == 0, -100)),
    ):
        model.zero_grad()
        loss = model(**inputs, use_cache=False).loss
        loss.backward()
        losses.append(loss.detach())
        grads.append([p.grad.clone() for p in model.parameters()])
    torch.testing.assert_close(losses[0], losses[1], atol=1e-5, rtol=1e-5)
    for packed_grad, padded_grad in zip(*grads, strict=True):
        torch.testing.assert_close(packed_grad, padded_grad, atol=1e-5, rtol=1e-4)


def test_beam_search_reorders_lstm_state(tiny_lm):
    """Beams that swap places must take their LSTM state with them: cached beams equal uncached ones."""
    model = tiny_lm(use_lstm=True, seed=3)
    prompt = random_ids(1, 5, seed=4)
    kwargs = dict(max_new_tokens=10, min_new_tokens=10, num_beams=4, num_return_sequences=4, pad_token_id=0)
    with_cache = model.generate(
        prompt, use_cache=True, output_scores=True, return_dict_in_generate=True, **kwargs
    )
    without = model.generate(
        prompt, use_cache=False, output_scores=True, return_dict_in_generate=True, **kwargs
    )
    assert torch.equal(with_cache.sequences, without.sequences)
    torch.testing.assert_close(with_cache.sequences_scores, without.sequences_scores)


@pytest.mark.parametrize("use_lstm", [False, True])
def test_eager_and_sdpa_logits_equal(tiny_lm, use_lstm):
    model = tiny_lm(use_lstm=use_lstm)
    ids = random_ids(3, 16)
    mask = torch.ones_like(ids)
    mask[0, :4] = 0
    with torch.no_grad():
        model.set_attn_implementation("sdpa")
        sdpa = model(ids, attention_mask=mask).logits
        model.set_attn_implementation("eager")
        eager = model(ids, attention_mask=mask).logits
    real = mask.bool()
    torch.testing.assert_close(sdpa[real], eager[real], atol=1e-5, rtol=1e-5)


def test_output_attentions_on_every_backend(tiny_lm):
    model = tiny_lm()
    ids = random_ids(2, 9)
    with torch.no_grad():
        model.set_attn_implementation("eager")
        eager = model(ids, output_attentions=True, output_hidden_states=True)
        model.set_attn_implementation("sdpa")
        sdpa = model(ids, output_attentions=True, output_hidden_states=True)
    assert model.config._attn_implementation == "sdpa"
    assert len(sdpa.attentions) == model.config.num_hidden_layers
    for eager_weights, sdpa_weights in zip(eager.attentions, sdpa.attentions, strict=True):
        assert sdpa_weights.shape == (2, 4, 9, 9)
        torch.testing.assert_close(sdpa_weights, eager_weights)
        torch.testing.assert_close(sdpa_weights.sum(-1), torch.ones(2, 4, 9))
        assert torch.all(sdpa_weights.triu(diagonal=1) == 0)  # causal
    assert len(sdpa.hidden_states) == model.config.num_hidden_layers + 1
    torch.testing.assert_close(sdpa.logits, eager.logits, atol=1e-5, rtol=1e-5)


# Without a cache (as the Trainer runs), a right-padded batch takes the LSTM's unpacked path.
@pytest.mark.parametrize("use_cache", [True, False])
@pytest.mark.parametrize("padding_side", ["left", "right"])
@pytest.mark.parametrize("position_embedding_type", POSITION_TYPES)
def test_padded_batch_equals_each_sequence_alone(tiny_lm, padding_side, position_embedding_type, use_cache):
    model = tiny_lm(use_lstm=True, position_embedding_type=position_embedding_type)
    lengths = [11, 6, 3]
    sequences = [random_ids(1, n, seed=n)[0] for n in lengths]
    width = max(lengths)
    ids = torch.zeros(len(lengths), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, seq in enumerate(sequences):
        span = slice(width - len(seq), width) if padding_side == "left" else slice(0, len(seq))
        ids[row, span], mask[row, span] = seq, 1
    with torch.no_grad():
        batched = model(ids, attention_mask=mask, use_cache=use_cache).logits
        for row, seq in enumerate(sequences):
            alone = model(seq[None]).logits[0]
            torch.testing.assert_close(batched[row][mask[row].bool()], alone, atol=1e-5, rtol=1e-5)


def test_left_padded_batch_generation_equals_each_prompt_alone(tiny_lm):
    model = tiny_lm(use_lstm=True)
    prompts = [random_ids(1, 8, seed=8)[0], random_ids(1, 3, seed=3)[0]]
    ids = torch.zeros(2, 8, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, p in enumerate(prompts):
        ids[row, 8 - len(p) :], mask[row, 8 - len(p) :] = p, 1
    kwargs = dict(max_new_tokens=8, min_new_tokens=8, do_sample=False, pad_token_id=0)
    batched = model.generate(ids, attention_mask=mask, **kwargs)
    for row, p in enumerate(prompts):
        alone = model.generate(p[None], attention_mask=torch.ones(1, len(p), dtype=torch.long), **kwargs)
        assert torch.equal(batched[row, 8:], alone[0, len(p) :])


@pytest.mark.parametrize("use_lstm", [False, True])
def test_static_cache_generation_equals_dynamic(tiny_lm, use_lstm):
    """generate(cache_implementation="static") preallocates the keys and values; with left padding and
    the LSTM state in the cache it makes the same tokens as the default cache."""
    model = tiny_lm(use_lstm=use_lstm)
    ids = torch.cat([torch.zeros(1, 5, dtype=torch.long), random_ids(1, 3, seed=3)], dim=1)
    ids = torch.cat([ids, random_ids(1, 8, seed=8)])
    mask = (ids != 0).long()
    kwargs = dict(max_new_tokens=8, min_new_tokens=8, do_sample=False, pad_token_id=0)
    dynamic = model.generate(ids, attention_mask=mask, **kwargs)
    static = model.generate(ids, attention_mask=mask, cache_implementation="static", **kwargs)
    assert torch.equal(static, dynamic)


def test_long_text_scored_window_by_window_with_carried_state_equals_one_call(tiny_lm):
    """Carrying the cache chunk by chunk (keys, values and LSTM state) equals one forward pass."""
    model = tiny_lm(use_lstm=True)
    ids = random_ids(2, 40)
    with torch.no_grad():
        full = model(ids).logits
        cache = DynamicCache(config=model.config)
        chunks = [
            model(ids[:, i : i + 16], past_key_values=cache, use_cache=True).logits for i in (0, 16, 32)
        ]
    torch.testing.assert_close(torch.cat(chunks, dim=1), full, atol=1e-5, rtol=1e-5)


def test_cache_without_lstm_slot_is_refused(tiny_lm):
    model = tiny_lm(use_lstm=True)
    with pytest.raises(ValueError, match="DynamicCache\\(config=model.config\\)"):
        model(random_ids(1, 4), past_key_values=DynamicCache(), use_cache=True)


def test_too_long_input_for_learned_positions_is_refused(tiny_lm):
    model = tiny_lm(position_embedding_type="learned")
    with pytest.raises(ValueError, match="max_position_embeddings=64"):
        model(random_ids(1, 65))


def test_matches_gpt2_with_the_same_weights(tiny_config):
    """With learned positions and no LSTM, the math is GPT-2's (our GELU is its tanh form, fused):
    same logits, same greedy tokens."""
    config = tiny_config(use_lstm=False)
    ours = MemoryTransformerForCausalLM(config).eval()
    gpt2 = GPT2LMHeadModel(
        GPT2Config(
            vocab_size=config.vocab_size,
            n_embd=config.hidden_size,
            n_layer=config.num_hidden_layers,
            n_head=config.num_attention_heads,
            n_inner=config.intermediate_size,
            n_positions=config.max_position_embeddings,
            activation_function="gelu_new",
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            layer_norm_epsilon=config.layer_norm_eps,
            bos_token_id=1,
            eos_token_id=2,
        )
    ).eval()
    ours_state = ours.state_dict()
    mapping = {
        "transformer.wte.weight": "model.embed_tokens.weight",
        "transformer.wpe.weight": "model.embed_positions.weight",
    }
    mapping |= {f"transformer.ln_f.{p}": f"model.norm.{p}" for p in ("weight", "bias")}
    for i in range(config.num_hidden_layers):
        g, o = f"transformer.h.{i}.", f"model.layers.{i}."
        for a, b in [("ln_1", "ln_1"), ("ln_2", "ln_2"), ("attn.c_attn", "attn.qkv_proj"),
                     ("attn.c_proj", "attn.o_proj"), ("mlp.c_fc", "mlp.fc_in"), ("mlp.c_proj", "mlp.fc_out")]:  # fmt: skip
            mapping[g + a + ".weight"] = o + b + ".weight"
            mapping[g + a + ".bias"] = o + b + ".bias"
    converted = {}
    for name in gpt2.state_dict():
        if name in mapping:
            source = ours_state[mapping[name]]
            is_conv1d = name.endswith(".weight") and ".attn." in name or ".mlp." in name
            converted[name] = (
                source.t() if is_conv1d and name.endswith(".weight") else source
            )  # Conv1D: (in, out)
    gpt2.load_state_dict(converted, strict=False)
    ids = random_ids(2, 20)
    with torch.no_grad():
        torch.testing.assert_close(ours(ids).logits, gpt2(ids).logits, atol=1e-5, rtol=1e-5)
    kwargs = dict(max_new_tokens=10, do_sample=False, pad_token_id=0)
    assert torch.equal(ours.generate(ids[:1], **kwargs), gpt2.generate(ids[:1], **kwargs))
    # Training too: the same loss gives the same gradients, so the two train alike from the same weights.
    for model in (ours, gpt2):
        model.zero_grad()
        model(ids, labels=ids).loss.backward()
    ours_params = dict(ours.named_parameters())
    for name, param in gpt2.named_parameters():
        if name in mapping:
            grad = ours_params[mapping[name]].grad
            is_conv1d = name.endswith(".weight") and (".attn." in name or ".mlp." in name)
            torch.testing.assert_close(param.grad, grad.t() if is_conv1d else grad, atol=1e-6, rtol=1e-4)


def test_save_and_load_give_identical_logits(tiny_lm, tmp_path):
    model = tiny_lm(use_lstm=True, position_embedding_type="rope")
    model.save_pretrained(tmp_path)
    files = {p.name for p in tmp_path.iterdir()}
    assert {"model.safetensors", "config.json", "modeling_memory_transformer.py", "lstm_memory.py"} <= files
    assert "configuration_memory_transformer.py" in files
    auto_map = json.loads((tmp_path / "config.json").read_text())["auto_map"]
    assert set(auto_map) == {
        "AutoConfig",
        "AutoModel",
        "AutoModelForCausalLM",
        "AutoModelForSequenceClassification",
    }
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert isinstance(loaded, MemoryTransformerForCausalLM)
    ids = random_ids(2, 10)
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, model(ids).logits)
    assert isinstance(AutoModel.from_pretrained(tmp_path), MemoryTransformerModel)
    assert AutoConfig.from_pretrained(tmp_path).position_embedding_type == "rope"


def test_loads_in_bfloat16(tiny_lm, tmp_path):
    tiny_lm(use_lstm=True).save_pretrained(tmp_path)
    model = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.bfloat16).eval()
    assert model.dtype == torch.bfloat16
    assert model.model.memory.lstm.weight_ih_l0.dtype == torch.bfloat16
    out = model.generate(
        random_ids(1, 5), max_new_tokens=4, min_new_tokens=4, do_sample=False, pad_token_id=0
    )
    assert out.shape == (1, 9)


@pytest.fixture(scope="session")
def newest_transformers_python(tmp_path_factory) -> str:
    """The python of a throwaway virtualenv that sees this one's packages but has the newest
    Transformers release the package index offers (and what it needs) installed over them."""
    folder = tmp_path_factory.mktemp("newest-transformers") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True, timeout=120)
    python = str(folder / "bin" / "python")
    own_site = subprocess.run(
        [python, "-c", "import site; print(site.getsitepackages()[0])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    Path(own_site, "project-packages.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    # This environment's pip, run for the new one: it resolves against the packages that the .pth shows.
    subprocess.run(
        [python, "-m", "pip", "install", "--quiet", "--upgrade", "transformers"], check=True, timeout=600
    )
    return python


# "newest" installs the newest Transformers into a throwaway virtualenv from the package index: slow.
@pytest.mark.parametrize("transformers_release", ["pinned", pytest.param("newest", marks=pytest.mark.slow)])
def test_remote_code_load_without_the_package(tiny_lm, tmp_path, tokenizer, transformers_release, request):
    """A saved folder loads with trust_remote_code=True where only torch and transformers are importable,
    under the pinned Transformers and the newest release, with FutureWarnings as errors."""
    python = (
        sys.executable
        if transformers_release == "pinned"
        else request.getfixturevalue("newest_transformers_python")
    )
    model = tiny_lm(use_lstm=True, vocab_size=len(tokenizer))
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    ids = random_ids(1, 7, high=len(tokenizer))
    with torch.no_grad():
        expected = model(ids).logits
    torch.save({"ids": ids, "logits": expected}, tmp_path / "expected.pt")
    script = textwrap.dedent(
        f"""
        import sys

        class BlockPackage:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] == "llm_memory":
                    raise ImportError("llm_memory is blocked in this process")

        sys.meta_path.insert(0, BlockPackage())
        try:
            import llm_memory  # noqa: F401
        except ImportError:
            pass
        else:
            raise SystemExit("llm_memory should not be importable here")
        import torch
        from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

        folder = {str(tmp_path / "model")!r}
        model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True).eval()
        expected = torch.load({str(tmp_path / "expected.pt")!r})
        with torch.no_grad():
            torch.testing.assert_close(model(expected["ids"]).logits, expected["logits"])
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        out = model.generate(expected["ids"], max_new_tokens=3, do_sample=False, pad_token_id=0)
        assert out.shape == (1, 10)
        classifier = AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True, num_labels=2)
        AutoTokenizer.from_pretrained(folder)
        import transformers
        print("REMOTE_OK", type(classifier).__name__, transformers.__version__)
        """
    )
    env = {k: v for k, v in __import__("os").environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"))
    result = subprocess.run(
        [python, "-W", "error::FutureWarning", "-c", script],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "REMOTE_OK MemoryTransformerForSequenceClassification" in result.stdout
    version = result.stdout.split()[-1]
    if transformers_release == "newest":
        pinned = tuple(int(part) for part in transformers.__version__.split(".")[:2])
        assert tuple(int(part) for part in version.split(".")[:2]) >= pinned, version


def test_text_generation_and_classification_pipelines(tiny_lm, tiny_config, tmp_path, tokenizer):
    lm = tiny_lm(use_lstm=True, vocab_size=len(tokenizer))
    lm.save_pretrained(tmp_path / "lm")
    tokenizer.save_pretrained(tmp_path / "lm")
    generator = pipeline("text-generation", model=str(tmp_path / "lm"))
    text = generator("The movie was", max_new_tokens=5, do_sample=False)[0]["generated_text"]
    assert text.startswith("The movie was") and len(text) > len("The movie was")

    torch.manual_seed(0)
    config = tiny_config(
        vocab_size=len(tokenizer), id2label={0: "neg", 1: "pos"}, label2id={"neg": 0, "pos": 1}
    )
    MemoryTransformerForSequenceClassification(config).save_pretrained(tmp_path / "clf")
    tokenizer.save_pretrained(tmp_path / "clf")
    classifier = pipeline("text-classification", model=str(tmp_path / "clf"), top_k=None)
    scores = classifier(["a great film", "dull, far too long and badly acted"])
    for result in scores:
        assert {r["label"] for r in result} == {"neg", "pos"}
        assert sum(r["score"] for r in result) == pytest.approx(1.0, abs=1e-5)


def test_classification_pools_last_real_token_under_padding(tiny_config):
    torch.manual_seed(0)
    model = MemoryTransformerForSequenceClassification(tiny_config(num_labels=3)).eval()
    short, long = random_ids(1, 4, seed=5)[0], random_ids(1, 9, seed=6)[0]
    for side in ("left", "right"):
        ids = torch.zeros(2, 9, dtype=torch.long)
        mask = torch.zeros_like(ids)
        ids[1], mask[1] = long, 1
        span = slice(5, 9) if side == "left" else slice(0, 4)
        ids[0, span], mask[0, span] = short, 1
        labels = torch.tensor([2, 0])
        with torch.no_grad():
            out = model(ids, attention_mask=mask, labels=labels)
            alone = torch.cat([model(short[None]).logits, model(long[None]).logits])
        torch.testing.assert_close(out.logits, alone, atol=1e-5, rtol=1e-5)
        expected = torch.nn.functional.cross_entropy(alone, labels)
        torch.testing.assert_close(out.loss, expected, atol=1e-5, rtol=1e-5)


def test_classification_loss_trains(tiny_config):
    torch.manual_seed(0)
    model = MemoryTransformerForSequenceClassification(tiny_config(num_labels=2))
    ids = random_ids(8, 10)
    labels = (ids[:, -1] > 50).long()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        loss = model(ids, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_causal_lm_loss_is_shifted_cross_entropy(tiny_lm):
    model = tiny_lm()
    ids = random_ids(2, 10)
    out = model(ids, labels=ids)
    expected = torch.nn.functional.cross_entropy(out.logits[:, :-1].reshape(-1, 97), ids[:, 1:].reshape(-1))
    torch.testing.assert_close(out.loss, expected)


def test_gradient_checkpointing_gives_the_same_gradients(tiny_lm):
    model = tiny_lm(use_lstm=True).train()
    ids = random_ids(2, 12)
    model(ids, labels=ids).loss.backward()
    plain = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    model.activation_checkpointing_enable()
    assert model.is_activation_checkpointing
    model(ids, labels=ids).loss.backward()
    for name, param in model.named_parameters():
        torch.testing.assert_close(param.grad, plain[name], msg=name)


def test_resize_token_embeddings_keeps_weights_tied(tiny_lm):
    model = tiny_lm()
    model.resize_token_embeddings(120)
    assert model.config.vocab_size == 120
    assert model.lm_head.weight.shape == (120, 32)
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    assert model(random_ids(1, 5, high=120)).logits.shape == (1, 5, 120)


def test_auto_classes_are_registered(tiny_config):
    config = tiny_config()
    assert isinstance(AutoConfig.for_model("memory_transformer"), MemoryTransformerConfig)
    assert isinstance(AutoModelForCausalLM.from_config(config), MemoryTransformerForCausalLM)
    assert isinstance(
        AutoModelForSequenceClassification.from_config(config), MemoryTransformerForSequenceClassification
    )
    assert isinstance(AutoModel.from_config(config), MemoryTransformerModel)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (dict(hidden_size=30, num_attention_heads=4), "num_attention_heads"),
        (dict(position_embedding_type="alibi"), "position_embedding_type"),
        (dict(hidden_size=0), "hidden_size"),
        (dict(vocab_size=-1), "vocab_size"),
        (dict(num_hidden_layers=0), "num_hidden_layers"),
        (dict(num_attention_heads=0), "num_attention_heads"),
        (dict(intermediate_size=0), "intermediate_size"),
        (dict(max_position_embeddings=0), "max_position_embeddings"),
        (dict(lstm_num_layers=0), "lstm_num_layers"),
        (dict(num_hidden_layers=2, lstm_layer=3), "lstm_layer"),
        (dict(lstm_layer=-1), "lstm_layer"),
        (dict(hidden_dropout=1.5), "hidden_dropout"),
        (dict(attention_dropout=-0.1), "attention_dropout"),
        (dict(layer_norm_eps=0.0), "layer_norm_eps"),
        (dict(hidden_size=30, num_attention_heads=6, position_embedding_type="rope"), "even head size"),
        (
            dict(hidden_size=33, num_attention_heads=3, position_embedding_type="sinusoidal"),
            "even `hidden_size`",
        ),
    ],
)
def test_config_errors_name_the_field(tiny_config, overrides, message):
    with pytest.raises(ValueError, match=message):
        tiny_config(**overrides)


def test_config_round_trips(tiny_config, tmp_path):
    config = tiny_config(
        use_lstm=False, position_embedding_type="sinusoidal", lstm_num_layers=2, lstm_layer=1
    )
    config.save_pretrained(tmp_path)
    loaded = MemoryTransformerConfig.from_pretrained(tmp_path)
    fields = (
        "use_lstm",
        "position_embedding_type",
        "lstm_num_layers",
        "lstm_layer",
        "hidden_size",
        "layer_types",
    )
    for field in fields:
        assert getattr(loaded, field) == getattr(config, field)
    assert loaded.layer_types == ["full_attention", "full_attention"]


@pytest.mark.parametrize("lstm_layer", [0, 1, 2, None])
def test_the_lstm_runs_after_lstm_layer_blocks(tiny_lm, lstm_layer):
    model = tiny_lm(lstm_layer=lstm_layer)  # two blocks
    order = []
    for name, module in [
        ("memory", model.model.memory),
        *((f"block{i}", b) for i, b in enumerate(model.model.layers)),
    ]:
        module.register_forward_pre_hook(lambda *_, name=name: order.append(name))
    with torch.no_grad():
        model(random_ids(1, 4))
    expected = ["block0", "block1"]
    expected.insert(2 if lstm_layer is None else lstm_layer, "memory")
    assert order == expected


@pytest.mark.parametrize("lstm_layer", [0, 1])
def test_an_lstm_between_blocks_carries_its_state_like_one_pass(tiny_lm, lstm_layer):
    """Token by token and chunk by chunk, with the LSTM state in the cache's last layer, the logits are
    those of one pass; the placement changes them (the same weights read other features)."""
    model = tiny_lm(lstm_layer=lstm_layer)
    ids = random_ids(2, 24)
    with torch.no_grad():
        full = model(ids).logits
        cache = DynamicCache(config=model.config)
        steps = [model(ids[:, t : t + 1], past_key_values=cache, use_cache=True).logits for t in range(8)]
        chunks = [model(ids[:, i : i + 8], past_key_values=cache, use_cache=True).logits for i in (8, 16)]
        model.config.lstm_layer = None
        after_all_blocks = model(ids).logits
    torch.testing.assert_close(torch.cat(steps + chunks, dim=1), full, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(after_all_blocks, full, atol=1e-3)


def test_two_layer_lstm_decodes_step_by_step_like_the_full_pass(tiny_lm):
    model = tiny_lm(lstm_num_layers=2)
    ids = random_ids(2, 9)
    with torch.no_grad():
        full = model(ids).logits
        cache = DynamicCache(config=model.config)
        steps = [model(ids[:, t : t + 1], past_key_values=cache, use_cache=True).logits for t in range(9)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)


def test_residual_projections_get_gpt2_scaled_init(tiny_config):
    torch.manual_seed(0)
    config = tiny_config(hidden_size=64, intermediate_size=256, num_hidden_layers=4)
    model = MemoryTransformerForCausalLM(config)
    scaled = config.initializer_range / (2 * config.num_hidden_layers) ** 0.5
    block = model.model.layers[0]
    for weight in (block.attn.o_proj.weight, block.mlp.fc_out.weight):
        assert weight.std().item() == pytest.approx(scaled, rel=0.1)
    assert block.attn.qkv_proj.weight.std().item() == pytest.approx(config.initializer_range, rel=0.1)
    forget_gate = model.model.memory.lstm.bias_ih_l0[config.hidden_size : 2 * config.hidden_size]
    assert torch.all(forget_gate == 1.0)


@pytest.mark.parametrize("use_lstm", [False, True])
@pytest.mark.parametrize("position_embedding_type", POSITION_TYPES)
def test_torch_export_with_a_padding_mask_gives_the_eager_logits(tiny_lm, position_embedding_type, use_lstm):
    model = tiny_lm(use_lstm=use_lstm, position_embedding_type=position_embedding_type)
    ids = random_ids(3, 9)
    mask = torch.ones_like(ids)
    mask[0, :3] = 0  # left padding
    mask[1, 6:] = 0  # right padding
    exported = torch.export.export(model, (), {"input_ids": ids, "attention_mask": mask, "use_cache": False})
    with torch.no_grad():
        eager = model(ids, attention_mask=mask, use_cache=False).logits
        traced = exported.module()(input_ids=ids, attention_mask=mask, use_cache=False).logits
    real = mask.bool()
    torch.testing.assert_close(traced[real], eager[real], atol=1e-5, rtol=1e-5)


def test_the_lstms_traced_path_equals_its_packed_path(tiny_lm):
    memory = tiny_lm(use_lstm=True).model.memory
    x = torch.randn(3, 7, memory.lstm.input_size)
    mask = torch.tensor(
        [[0, 0, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0, 0], [0, 0, 0, 0, 0, 0, 0]], dtype=torch.bool
    )
    state = (torch.randn(1, 3, memory.lstm.hidden_size), torch.randn(1, 3, memory.lstm.hidden_size))
    with torch.no_grad():
        packed, (h, c) = memory._packed(x, mask, state)
        stepped, (h2, c2) = memory._masked_steps(x, mask, state)
    torch.testing.assert_close(stepped, packed, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close((h2, c2), (h, c), atol=1e-5, rtol=1e-5)  # the empty row keeps its state


def compile_config(backend: str):
    from transformers import CompileConfig

    config = CompileConfig(fullgraph=True, dynamic=False, backend=backend, mode=None)
    config._compile_all_devices = True  # Transformers compiles generate() by itself only on accelerators
    return config


@pytest.mark.parametrize("use_lstm", [False, True])
@pytest.mark.parametrize("position_embedding_type", POSITION_TYPES)
def test_fullgraph_compiled_static_cache_decoding_equals_eager(tiny_lm, position_embedding_type, use_lstm):
    """Every decoding step traces as one graph (Dynamo, fullgraph) with the LSTM state in the static
    cache, left padding included, and gives eager decoding's tokens. The eager backend checks the trace
    alone; the inductor test below compiles one variant for real."""
    torch._dynamo.reset()
    model = tiny_lm(use_lstm=use_lstm, position_embedding_type=position_embedding_type)
    assert model._can_compile_fullgraph
    ids = torch.cat([torch.zeros(1, 3, dtype=torch.long), random_ids(1, 5, seed=3)], dim=1)
    ids = torch.cat([ids, random_ids(1, 8, seed=8)])
    mask = (ids != 0).long()
    kwargs = dict(max_new_tokens=10, min_new_tokens=10, do_sample=False, pad_token_id=0, attention_mask=mask)
    eager = model.generate(ids, **kwargs)
    with torch._dynamo.config.patch(error_on_recompile=True):  # fixed shapes: one graph for all steps
        compiled = model.generate(
            ids, cache_implementation="static", compile_config=compile_config("eager"), **kwargs
        )
        again = model.generate(
            ids, cache_implementation="static", compile_config=compile_config("eager"), **kwargs
        )
    assert torch.equal(compiled, eager) and torch.equal(again, eager)


def test_inductor_compiled_decoding_with_the_lstm_equals_eager(tiny_lm):
    torch._dynamo.reset()
    model = tiny_lm(use_lstm=True)
    ids = random_ids(1, 6)
    kwargs = dict(max_new_tokens=6, min_new_tokens=6, do_sample=False, pad_token_id=0)
    eager = model.generate(ids, **kwargs)
    compiled = model.generate(
        ids, cache_implementation="static", compile_config=compile_config("inductor"), **kwargs
    )
    assert torch.equal(compiled, eager)


@pytest.mark.parametrize("position_embedding_type", POSITION_TYPES)
def test_torch_export_of_a_packed_row_gives_the_eager_logits(tiny_lm, position_embedding_type):
    """Positions that restart inside a row (DataCollatorWithFlattening) reset the LSTM in the traced
    graph as in eager mode, without branching on where they restart."""
    model = tiny_lm(use_lstm=True, position_embedding_type=position_embedding_type)
    ids = random_ids(1, 10)
    position_ids = torch.tensor([[0, 1, 2, 3, 0, 1, 2, 0, 1, 2]])
    exported = torch.export.export(
        model, (), {"input_ids": ids, "position_ids": position_ids, "use_cache": False}
    )
    other = torch.tensor([[0, 1, 2, 0, 1, 2, 3, 4, 0, 1]])  # other boundaries, the same graph
    with torch.no_grad():
        for positions in (position_ids, other):
            eager = model(ids, position_ids=positions, use_cache=False).logits
            traced = exported.module()(input_ids=ids, position_ids=positions, use_cache=False).logits
            torch.testing.assert_close(traced, eager, atol=1e-5, rtol=1e-5)


def test_the_lstms_traced_path_resets_where_the_segmented_path_does(tiny_lm):
    memory = tiny_lm(use_lstm=True).model.memory
    x = torch.randn(2, 7, memory.lstm.input_size)
    mask = torch.tensor([[1, 1, 1, 1, 1, 1, 1], [0, 1, 1, 1, 1, 1, 1]], dtype=torch.bool)
    resets = torch.tensor([[0, 0, 1, 0, 0, 1, 0], [0, 0, 0, 1, 0, 0, 0]], dtype=torch.bool)
    state = (torch.randn(1, 2, memory.lstm.hidden_size), torch.randn(1, 2, memory.lstm.hidden_size))
    with torch.no_grad():
        segmented, (h, c) = memory._segmented(x, mask, state, resets)
        stepped, (h2, c2) = memory._masked_steps(x, mask, state, resets)
    torch.testing.assert_close(stepped * mask[..., None], segmented * mask[..., None], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close((h2, c2), (h, c), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("use_lstm", [False, True])
def test_a_4d_boolean_mask_gives_the_2d_masks_logits_and_attentions(tiny_lm, use_lstm):
    """A 4D mask made for SDPA (booleans) also serves the eager kernel that output_attentions needs, and
    the LSTM reads which tokens are pads from its diagonal."""
    from transformers.masking_utils import create_causal_mask

    model = tiny_lm(use_lstm=use_lstm)
    ids = random_ids(2, 7)
    mask = torch.ones_like(ids)
    mask[0, :2] = 0
    embeds = model.model.embed_tokens(ids)
    mask_4d = create_causal_mask(model.config, embeds, mask, None, None)
    assert mask_4d.dtype == torch.bool and mask_4d.dim() == 4
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        plain = model(ids, attention_mask=mask, output_attentions=True)
        given = model(ids, attention_mask=mask_4d, position_ids=position_ids, output_attentions=True)
    real = mask.bool()
    torch.testing.assert_close(given.logits[real], plain.logits[real], atol=1e-5, rtol=1e-5)
    for ours, theirs in zip(given.attentions, plain.attentions, strict=True):
        # (B, nh, T, S) -> the rows of real queries
        torch.testing.assert_close(
            ours.transpose(1, 2)[real], theirs.transpose(1, 2)[real], atol=1e-5, rtol=1e-5
        )


@pytest.mark.parametrize("position_embedding_type", POSITION_TYPES)
def test_exported_with_transformers_static_cache_decodes_like_eager(tiny_lm, position_embedding_type):
    """Transformers' export recipe for decoder-only models (the static cache as buffers, one token per
    call) gives the eager logits. It carries keys and values only, so it covers the model without the
    LSTM; the LSTM's state has no buffer there."""
    from transformers import GenerationConfig
    from transformers.integrations.executorch import TorchExportableModuleForDecoderOnlyLM

    model = tiny_lm(use_lstm=False, position_embedding_type=position_embedding_type)
    model.generation_config = GenerationConfig(
        use_cache=True,
        cache_implementation="static",
        max_length=16,
        cache_config={"batch_size": 1, "max_cache_len": 16, "device": "cpu"},
    )
    exported = TorchExportableModuleForDecoderOnlyLM(model).export(
        input_ids=torch.tensor([[5]]), cache_position=torch.tensor([0])
    )
    ids = random_ids(1, 8)
    with torch.no_grad():
        eager = model(ids).logits[0]
        module = exported.module()
        stepped = torch.stack(
            [module(input_ids=ids[:, t : t + 1], cache_position=torch.tensor([t]))[0, -1] for t in range(8)]
        )
    torch.testing.assert_close(stepped, eager, atol=1e-5, rtol=1e-5)
