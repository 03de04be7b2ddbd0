"""The package as ``pip install .`` installs it (not editable), used away from the checkout: it trains a tiny
model from a shipped preset, the folder it writes ships the package's model code, and it builds the demo
and decodes in a child process on checkpoint folders given by path."""

import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest

# A virtualenv, a pip install and processes of their own: slow.
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[str, Path]:
    """The python of a throwaway virtualenv that sees this environment's packages but holds its own,
    non-editable install of llm_memory, and a working folder away from the checkout."""
    root = tmp_path_factory.mktemp("install")
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(root / "venv")], check=True, timeout=120
    )
    python = str(root / "venv" / "bin" / "python")
    own_site = subprocess.run(
        [python, "-c", "import site; print(site.getsitepackages()[0])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    # This environment's packages as a plain path: its .pth files (an editable llm_memory) stay inactive.
    Path(own_site, "project-packages.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    source = root / "source"  # what the wheel is built from, without the checkpoints and tests
    shutil.copytree(ROOT / "llm_memory", source / "llm_memory", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    subprocess.run(
        [python, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", str(source)],
        check=True,
        timeout=300,
    )
    work = root / "work"
    work.mkdir()
    return python, work


def run(python: str, work: Path, code: str, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.startswith("LLM_MEMORY_")}
    env.update(HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    result = subprocess.run(
        [python, "-c", textwrap.dedent(code), *args],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def test_the_installed_package_trains_from_a_shipped_preset_and_ships_its_model_code(installed):
    python, work = installed
    lines = [f"A review number {i} says the film was good and the acting was fine." for i in range(120)]
    (work / "train.txt").write_text("\n".join(lines[:100]) + "\n")
    (work / "valid.txt").write_text("\n".join(lines[100:]) + "\n")
    out = run(
        python,
        work,
        """
        import sys
        import llm_memory
        from llm_memory.hub.model_code import stale_files
        from llm_memory.training.run import main

        assert llm_memory.__file__.startswith(sys.prefix), llm_memory.__file__  # the venv's own copy
        flags = ["--preset", "tiny", "--train_file", "train.txt", "--validation_file", "valid.txt"]
        assert main([*flags, "--output_dir", "run", "--disable_tqdm", "true"]) == 0
        assert stale_files("run") == []
        from transformers import AutoModelForCausalLM
        model = AutoModelForCausalLM.from_pretrained("run")
        print("TRAINED", type(model).__module__)
        """,
    )
    assert "TRAINED llm_memory.modeling.modeling_memory_transformer" in out


def test_the_installed_package_serves_checkpoint_folders_given_by_path(installed):
    python, work = installed
    out = run(
        python,
        work,
        """
        import sys
        from llm_memory.demo.app import build_demo
        from llm_memory.serving.decoder_process import DecoderProcess
        from llm_memory.serving.models import load_models
        from llm_memory.tasks.generate import generate

        models = load_models(sys.argv[1], sys.argv[2], decoder_process=True)
        try:
            assert isinstance(models.batcher, DecoderProcess)
            build_demo(models)
            print("TEXT", generate(models, "The movie was", max_new_tokens=4, seed=0).num_tokens)
        finally:
            models.batcher.close()
        """,
        str(ROOT / "checkpoints" / "memory-lm"),
        str(ROOT / "checkpoints" / "sentiment"),
    )
    assert "TEXT " in out
