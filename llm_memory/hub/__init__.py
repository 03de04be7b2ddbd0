"""Publishing to the Hugging Face Hub: the model card, the model code shipped next to the weights,
``push`` for a model folder and ``space`` for the demo's Space."""
