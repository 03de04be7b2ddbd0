"""``python -m llm_memory.training``: the training command (``run.main``); ``--help`` lists every flag."""

import sys

from llm_memory.training.run import main

if __name__ == "__main__":
    sys.exit(main())
