"""Entry point of the Hugging Face Space: the llm-memory demo on the checkpoints in this folder.

`python -m llm_memory.space` puts the repository's app.py here as demo.py, next to the llm_memory
package and checkpoints/. Settings come from the Space's variables (LLM_MEMORY_MODEL, ...).
"""

from demo import main

if __name__ == "__main__":
    main()
