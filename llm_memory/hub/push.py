"""Upload a trained model folder to the Hugging Face Hub.

The folder is what ``python -m llm_memory.training`` writes: weights, config, tokenizer, the model code and
a model card. It is checked first, so a half-written or wrong folder is never published: it must be
complete, and its model code (what ``trust_remote_code=True`` runs) must be the package's, byte for
byte (``python -m llm_memory.hub.model_code FOLDER`` refreshes it); then ``huggingface_hub.HfApi`` creates the repository (if needed) and uploads the folder in
one commit, leaving out the Trainer's checkpoints.

Example::

    python -m llm_memory.hub.push --folder runs/small-lm --repo_id my-name/memory-transformer-small
"""

import dataclasses
import json
import sys
from pathlib import Path

from huggingface_hub import HfApi
from huggingface_hub.errors import HfHubHTTPError
from transformers import HfArgumentParser

from llm_memory.hub.model_code import stale_files

# Resumable training state, not part of the model.
UPLOAD_IGNORE_PATTERNS = ["checkpoint-*", "runs/*", "training_args.bin", ".*"]


@dataclasses.dataclass
class PushArguments:
    folder: str = dataclasses.field(
        metadata={"help": "The model folder (the --output_dir of a training run)."}
    )
    repo_id: str = dataclasses.field(metadata={"help": "The Hub repository, `user/name` or `org/name`."})
    private: bool = dataclasses.field(default=False, metadata={"help": "Create the repository as private."})
    token: str | None = dataclasses.field(
        default=None,
        metadata={"help": "A Hub token with write access. Default: the one from `hf auth login`."},
    )
    commit_message: str = dataclasses.field(
        default="Upload memory transformer", metadata={"help": "The message of the upload commit."}
    )


def required_files(folder: Path) -> list[str]:
    """What a loadable, documented model folder must hold; generation_config.json only for generators."""
    files = [
        "config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "configuration_memory_transformer.py",
        "lstm_memory.py",
        "modeling_memory_transformer.py",
        "README.md",
    ]
    config_path = folder / "config.json"
    if config_path.is_file():
        architectures = json.loads(config_path.read_text(encoding="utf-8")).get("architectures") or []
        if any(name.endswith("ForCausalLM") for name in architectures):
            files.append("generation_config.json")
    return files


def check_folder(folder: str | Path) -> None:
    """Raises ValueError naming what is missing from a model folder, or its model code that differs from
    the package's."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(
            f"--folder {str(folder)!r} is not a folder; pass the --output_dir of a training run."
        )
    missing = [name for name in required_files(folder) if not (folder / name).is_file()]
    has_weights = (folder / "model.safetensors").is_file() or (
        folder / "model.safetensors.index.json"
    ).is_file()
    if not has_weights:
        missing.insert(1, "model.safetensors")
    if missing:
        raise ValueError(
            f"The folder {str(folder)!r} is not a complete model: missing {', '.join(missing)}. "
            "Push the --output_dir of a training run that finished."
        )
    readme = (folder / "README.md").read_text(encoding="utf-8")
    if not readme.startswith("---\n"):
        raise ValueError(f"{str(folder / 'README.md')!r} has no YAML metadata block (a first line of `---`).")
    stale = stale_files(folder)
    if stale:
        raise ValueError(
            f"The model code in {str(folder)!r} differs from the package's ({', '.join(p.name for p in stale)}), "
            "so the pushed repository would run code that the tests do not cover; refresh it with "
            f"`python -m llm_memory.hub.model_code {folder}` and push again."
        )


def push(args: PushArguments) -> str:
    """Uploads the folder; returns the URL of the commit."""
    check_folder(args.folder)
    api = HfApi(token=args.token)
    api.create_repo(args.repo_id, private=args.private, exist_ok=True, repo_type="model")
    commit = api.upload_folder(
        repo_id=args.repo_id,
        folder_path=args.folder,
        repo_type="model",
        commit_message=args.commit_message,
        ignore_patterns=UPLOAD_IGNORE_PATTERNS,
    )
    return getattr(commit, "commit_url", None) or str(commit)


def main(argv: list[str] | None = None) -> int:
    """The command line: returns 0, or 1 after one ``error:`` line on stderr."""
    parser = HfArgumentParser(
        PushArguments, prog="python -m llm_memory.hub.push", description=__doc__.split("\n")[0]
    )
    try:
        (args,) = parser.parse_args_into_dataclasses(args=argv, look_for_args_file=False)
        url = push(args)
    except (ValueError, HfHubHTTPError) as err:  # a bad folder, or the Hub refused (token, name, rights)
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"Uploaded {args.folder} to {url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
