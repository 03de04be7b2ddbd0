"""``python -m llm_memory.memory``: the memory benchmark's command line (``benchmark.main``)."""

import sys

from llm_memory.memory.benchmark import main

if __name__ == "__main__":
    sys.exit(main())
