"""Publishing to the Hugging Face Hub: model cards, model code, model repositories and the demo's Space.

``model_card`` writes a folder's README, ``model_code`` keeps the code next to the weights the package's,
``push`` uploads a model folder and ``space`` builds and uploads the Space.
"""
