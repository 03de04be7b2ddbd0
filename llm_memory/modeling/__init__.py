"""The model: its configuration and its modeling code, the two files copied next to the weights.

Both import only torch, transformers and huggingface_hub, so a saved folder (or its Hub repository)
loads with ``trust_remote_code=True`` where this package is not installed. The package's ``__init__``
registers them with Transformers' Auto classes.
"""
