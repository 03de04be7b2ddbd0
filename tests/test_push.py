"""Uploading a model folder, offline: HfApi's methods are replaced up to the upload call."""

import pytest
from huggingface_hub import HfApi

from llm_memory import (
    MemoryTransformerConfig,
    MemoryTransformerForCausalLM,
    MemoryTransformerForSequenceClassification,
)
from llm_memory.hub import model_code, push
from llm_memory.hub.model_card import ModelCardInfo, build_model_card

CONFIG = {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 32}


def write_folder(folder, tokenizer, model_class=MemoryTransformerForCausalLM, task="lm"):
    config = MemoryTransformerConfig(vocab_size=len(tokenizer), **CONFIG)
    model_class(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    card = ModelCardInfo(
        model_name="tiny",
        task=task,
        metrics={"eval_perplexity": 12.0, "eval_accuracy": 0.5, "eval_f1": 0.5},
        command="python -m llm_memory.training --preset tiny",
        dataset_name="local files (train.txt)",
        dataset_type="local",
        dataset_description="Local files: train.txt",
        config=config.to_dict(),
    )
    (folder / "README.md").write_text(build_model_card(card))
    (folder / "checkpoint-4").mkdir()  # resumable state: left out of the upload
    (folder / "checkpoint-4" / "optimizer.pt").write_bytes(b"state")
    return folder


@pytest.fixture
def model_folder(tmp_path, tokenizer):
    return write_folder(tmp_path / "model", tokenizer)


@pytest.fixture
def hub_calls(monkeypatch):
    calls = []

    def create_repo(self, repo_id, **kwargs):
        calls.append(("create_repo", repo_id, kwargs, self.token))
        return f"https://huggingface.co/{repo_id}"

    def upload_folder(self, **kwargs):
        calls.append(("upload_folder", kwargs["repo_id"], kwargs, self.token))
        return f"https://huggingface.co/{kwargs['repo_id']}/commit/0"

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    return calls


def test_push_creates_the_repo_and_uploads_the_folder(model_folder, hub_calls, capsys):
    argv = ["--folder", str(model_folder), "--repo_id", "someone/tiny", "--private", "--token", "hf_x"]
    assert push.main(argv) == 0
    (create, repo_id, create_kwargs, token), (upload, _, upload_kwargs, _) = hub_calls
    assert (create, repo_id, token) == ("create_repo", "someone/tiny", "hf_x")
    assert create_kwargs["private"] is True and create_kwargs["exist_ok"] is True
    assert upload == "upload_folder" and upload_kwargs["folder_path"] == str(model_folder)
    assert "checkpoint-*" in upload_kwargs["ignore_patterns"]
    assert "someone/tiny/commit/0" in capsys.readouterr().out


def test_a_classifier_needs_no_generation_config(tmp_path, tokenizer, hub_calls):
    folder = write_folder(
        tmp_path / "cls", tokenizer, MemoryTransformerForSequenceClassification, "classification"
    )
    assert not (folder / "generation_config.json").exists()
    assert push.main(["--folder", str(folder), "--repo_id", "someone/cls"]) == 0
    assert [call[0] for call in hub_calls] == ["create_repo", "upload_folder"]


@pytest.mark.parametrize(
    "missing", ["model.safetensors", "config.json", "tokenizer.json", "README.md", "generation_config.json"]
)
def test_an_incomplete_folder_is_not_uploaded(missing, model_folder, hub_calls, capsys):
    (model_folder / missing).unlink()
    assert push.main(["--folder", str(model_folder), "--repo_id", "someone/tiny"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "not a complete model" in err and missing in err
    assert hub_calls == []


def test_a_missing_folder_or_card_metadata_is_refused(model_folder, tmp_path, hub_calls, capsys):
    assert push.main(["--folder", str(tmp_path / "nowhere"), "--repo_id", "someone/tiny"]) == 1
    assert "is not a folder" in capsys.readouterr().err
    readme = model_folder / "README.md"
    readme.write_text(readme.read_text().split("---\n", 2)[2])
    assert push.main(["--folder", str(model_folder), "--repo_id", "someone/tiny"]) == 1
    assert "no YAML metadata" in capsys.readouterr().err
    assert hub_calls == []


@pytest.mark.parametrize("change", ["edited", "missing"], ids=["edited model code", "missing model code"])
def test_a_folder_whose_model_code_differs_from_the_package_is_not_uploaded(
    change, model_folder, hub_calls, capsys
):
    code = model_folder / "modeling_memory_transformer.py"
    if change == "edited":
        code.write_text(code.read_text() + "\n# an older or edited copy\n")
    else:
        code.unlink()
    assert push.main(["--folder", str(model_folder), "--repo_id", "someone/tiny"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "modeling_memory_transformer.py" in err
    if change == "edited":
        assert "differs from the package's" in err and "python -m llm_memory.hub.model_code" in err
    assert hub_calls == []
    if change == "edited":  # refreshed, the folder goes up
        model_code.refresh(model_folder)
        assert push.main(["--folder", str(model_folder), "--repo_id", "someone/tiny"]) == 0
        assert [call[0] for call in hub_calls] == ["create_repo", "upload_folder"]


@pytest.mark.parametrize(
    ("lstm_layer", "words"),
    [
        (None, "followed by a 1-layer LSTM memory"),
        (1, "LSTM memory after block 1 of 2"),
        (0, "LSTM memory before the first block"),
    ],
)
def test_the_model_card_says_where_the_lstm_runs(lstm_layer, words):
    config = MemoryTransformerConfig(
        vocab_size=64, **{**CONFIG, "num_hidden_layers": 2}, lstm_layer=lstm_layer
    )
    card = ModelCardInfo(
        model_name="tiny",
        task="lm",
        metrics={},
        command="python -m llm_memory.training --preset tiny",
        dataset_name="local files (train.txt)",
        dataset_type="local",
        dataset_description="Local files: train.txt",
        config=config.to_dict(),
    )
    assert words in build_model_card(card)
