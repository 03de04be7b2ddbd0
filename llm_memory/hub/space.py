"""Builds the Hugging Face Space folder of the demo, and uploads it.

    python -m llm_memory.hub.space --repo_id USER/llm-memory --out build/space [--dry-run]
        [--model checkpoints/memory-lm] [--classifier checkpoints/sentiment] [--summarizer PATH]

Run from a checkout's root: the paths default to its ``spaces/`` template and ``checkpoints/``. The folder
holds the template (a README whose YAML front matter configures the Space, its requirements, a thin
``app.py`` that starts ``llm_memory.demo``), a copy of the ``llm_memory`` package, and the checkpoints, so
that the Space starts with nothing to download. A model given as a Hub id is not copied: it is listed in
the README's ``models`` and set as a Space variable instead. The upload is
``huggingface_hub.HfApi().upload_folder(repo_type="space")``; ``--dry-run`` only builds.
"""

import argparse
import importlib.resources
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

# The package that the Space runs: this one, wherever it is installed.
PACKAGE_DIR = Path(str(importlib.resources.files("llm_memory")))
TEMPLATE_FILES = ("README.md", "requirements.txt", "app.py")

# Where each model goes in the Space (the demo's defaults), and the variable that names a Hub model.
CHECKPOINTS = {
    "model": ("checkpoints/memory-lm", "LLM_MEMORY_MODEL"),
    "classifier": ("checkpoints/sentiment", "LLM_MEMORY_CLASSIFIER"),
    "summarizer": ("checkpoints/summarizer", "LLM_MEMORY_SUMMARIZER"),
}
# The Memory tab's model, where the demo looks for it.
MEMORY_CHECKPOINT = "checkpoints/memory"
# Training leftovers that a Space does not need.
SKIPPED = shutil.ignore_patterns(
    "checkpoint-*",
    "optimizer.pt",
    "scheduler.pt",
    "rng_state*.pth",
    "trainer_state.json",
    "training_args.bin",
    "runs",
    "__pycache__",
    "*.pyc",
)
MODELS_LINE = "models: []"


class SpaceError(ValueError):
    """A build that cannot go ahead (a missing template or model, an output folder in the way)."""


@dataclass
class SpaceBuild:
    folder: Path
    hub_models: dict[str, str]  # Space variable -> Hub id, for the models that were not copied


def front_matter_models(readme: str, hub_ids: list[str]) -> str:
    """The README with its ``models: []`` line listing ``hub_ids``."""
    if MODELS_LINE not in readme:
        raise SpaceError(f"The Space README template has no {MODELS_LINE!r} line to fill.")
    listed = "models:" + "".join(f"\n  - {hub_id}" for hub_id in hub_ids) if hub_ids else MODELS_LINE
    return readme.replace(MODELS_LINE, listed, 1)


def build_space(
    out: str | os.PathLike,
    model: str,
    classifier: str,
    summarizer: str | None = None,
    overwrite: bool = False,
    template_dir: str | os.PathLike = "spaces",
    memory_model: str | os.PathLike | None = None,
) -> SpaceBuild:
    """Assembles the Space folder in ``out`` from ``template_dir``; models are local folders (copied) or
    Hub ids (linked). ``memory_model``, the Memory tab's fine-tuned folder, travels too when it exists."""
    out, template_dir = Path(out), Path(template_dir)
    missing = [name for name in TEMPLATE_FILES if not (template_dir / name).is_file()]
    if missing:
        raise SpaceError(
            f"The Space template {str(template_dir)!r} is incomplete (missing {', '.join(missing)}); run this "
            "from a checkout's root, where spaces/ sits, or pass --template."
        )
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise SpaceError(f"{out} is not empty; pass --overwrite to replace it.")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)

    hub_models = {}
    for role, source in (("model", model), ("classifier", classifier), ("summarizer", summarizer)):
        if source is None:
            continue
        target, variable = CHECKPOINTS[role]
        if Path(source).is_dir():
            shutil.copytree(source, out / target, ignore=SKIPPED)
        elif Path(source).is_absolute() or str(source).startswith(".") or Path(source).exists():
            raise SpaceError(f"The {role} folder {source!r} does not exist.")
        else:
            hub_models[variable] = str(source)

    # The Memory tab's fine-tuned model travels too, when it exists, with its curves in its folder.
    if memory_model is not None and Path(memory_model).is_dir():
        shutil.copytree(memory_model, out / MEMORY_CHECKPOINT, ignore=SKIPPED)

    for name in TEMPLATE_FILES:
        shutil.copy2(template_dir / name, out / name)
    readme = (out / "README.md").read_text(encoding="utf-8")
    (out / "README.md").write_text(front_matter_models(readme, list(hub_models.values())), encoding="utf-8")
    shutil.copytree(PACKAGE_DIR, out / "llm_memory", ignore=SKIPPED)
    return SpaceBuild(out, hub_models)


def upload_space(build: SpaceBuild, repo_id: str, private: bool = False, token: str | None = None) -> str:
    """Creates the Space if needed, uploads the folder, sets the variables; returns the Space's URL."""
    from huggingface_hub import HfApi  # only needed to upload

    api = HfApi(token=token)
    url = api.create_repo(repo_id, repo_type="space", space_sdk="gradio", private=private, exist_ok=True)
    api.upload_folder(
        folder_path=build.folder,
        repo_id=repo_id,
        repo_type="space",
        commit_message="Update the llm-memory demo",
    )
    for variable, value in build.hub_models.items():
        api.add_space_variable(repo_id, variable, value)
    return str(url)


def main(argv=None):
    parser = argparse.ArgumentParser(description="Build the demo's Hugging Face Space folder and upload it.")
    parser.add_argument("--repo_id", required=True, help="The Space, e.g. USER/llm-memory.")
    parser.add_argument("--out", default="build/space", help="Folder to build the Space in.")
    parser.add_argument("--dry-run", "--dry_run", dest="dry_run", action="store_true", help="Build only.")
    parser.add_argument("--overwrite", action="store_true", help="Replace a non-empty --out folder.")
    parser.add_argument("--model", default=CHECKPOINTS["model"][0])
    parser.add_argument("--classifier", default=CHECKPOINTS["classifier"][0])
    parser.add_argument(
        "--template", default="spaces", help="The Space template folder (a checkout's spaces/)."
    )
    embedded_summarizer = Path(CHECKPOINTS["summarizer"][0])
    parser.add_argument(
        "--summarizer",
        default=str(embedded_summarizer) if embedded_summarizer.is_dir() else None,
        help="Summarization-tuned model (default: the embedded checkpoints/summarizer, when there is one).",
    )
    parser.add_argument("--private", action="store_true")
    parser.add_argument("--token", default=None, help="Hub token (default: the saved login or HF_TOKEN).")
    args = parser.parse_args(argv)
    try:
        build = build_space(
            args.out,
            args.model,
            args.classifier,
            args.summarizer,
            args.overwrite,
            template_dir=args.template,
            memory_model=MEMORY_CHECKPOINT,
        )
    except SpaceError as err:
        parser.exit(2, f"error: {err}\n")
    print(f"Built the Space in {build.folder}")
    for variable, value in build.hub_models.items():
        print(f"  Space variable {variable}={value}")
    if args.dry_run:
        print(f"Dry run: not uploaded. To try it: cd {build.folder} && python app.py")
        return
    print(f"Uploaded to {upload_space(build, args.repo_id, args.private, args.token)}")


if __name__ == "__main__":
    main()
