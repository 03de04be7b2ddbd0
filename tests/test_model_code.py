"""The model code next to the weights: the embedded checkpoints run the package's code, byte for byte."""

import shutil
from pathlib import Path

import pytest

from llm_memory.hub import model_code

CHECKPOINTS = sorted(
    path.parent for path in (Path(__file__).resolve().parent.parent / "checkpoints").glob("*/config.json")
)


@pytest.mark.parametrize("folder", CHECKPOINTS, ids=lambda path: path.name)
def test_embedded_checkpoints_ship_the_package_code(folder):
    assert model_code.stale_files(folder) == [], (
        f"{folder.name} ships code that differs from the package's; run "
        f"`python -m llm_memory.hub.model_code checkpoints/*`"
    )


def test_refresh_replaces_stale_code_and_check_names_it(tmp_path, capsys):
    folder = tmp_path / "model"
    shutil.copytree(CHECKPOINTS[0], folder, ignore=shutil.ignore_patterns("*.safetensors"))
    (folder / "modeling_memory_transformer.py").write_text("# old code\n")
    (folder / "configuration_memory_transformer.py").unlink()
    assert model_code.main([str(folder), "--check"]) == 1
    assert capsys.readouterr().out.count("differs: ") == 2
    assert model_code.main([str(folder)]) == 0
    assert model_code.stale_files(folder) == []
    assert model_code.main([str(folder), "--check"]) == 0


def test_refresh_refuses_a_folder_that_is_not_a_model(tmp_path):
    with pytest.raises(SystemExit):
        model_code.main([str(tmp_path)])
    with pytest.raises(FileNotFoundError, match="holds no config.json"):
        model_code.refresh(tmp_path)
