"""The model code that ships next to the weights, kept the same as the package's.

``save_pretrained`` copies ``configuration_memory_transformer.py``, ``lstm_memory.py`` and
``modeling_memory_transformer.py`` (and what they import from each other) into every model folder, so that ``trust_remote_code=True`` loads the folder (or its Hub repository)
without this package. A folder saved before a change to those files would run older code than the
package's tests cover; ``refresh`` copies the package's current files over the folder's.

    python -m llm_memory.hub.model_code checkpoints/*      # refresh; exits 1 and names them with --check
"""

import argparse
import importlib.resources
import sys
from pathlib import Path

# The package's model code: the files that a model folder's config.json ``auto_map`` names.
MODELING = importlib.resources.files("llm_memory.modeling")
CODE_FILES = (
    "configuration_memory_transformer.py",
    "lstm_memory.py",
    "modeling_memory_transformer.py",
)


def stale_files(folder: str | Path) -> list[Path]:
    """The code files of ``folder`` that differ from the package's (missing ones count)."""
    folder = Path(folder)
    return [
        folder / name
        for name in CODE_FILES
        if not (folder / name).is_file() or (folder / name).read_bytes() != (MODELING / name).read_bytes()
    ]


def refresh(folder: str | Path) -> list[Path]:
    """Copies the package's code files into the model folder ``folder``; returns those it replaced."""
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder} holds no config.json, so it is not a model folder.")
    stale = stale_files(folder)
    for path in stale:
        path.write_bytes((MODELING / path.name).read_bytes())
    return stale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+", help="Model folders (a training run's --output_dir).")
    parser.add_argument(
        "--check", action="store_true", help="Change nothing; exit 1 if a folder's code differs."
    )
    args = parser.parse_args(argv)
    stale = []
    for folder in args.folders:
        try:
            found = stale_files(folder) if args.check else refresh(folder)
        except FileNotFoundError as err:
            parser.error(str(err))
        stale += found
        for path in found:
            print(f"{'differs' if args.check else 'refreshed'}: {path}")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
