"""Serving the models to many users at once, in this process or a decoding child process.

Loading, the settings, the batchers, the sampler, the reserving cache, shared-prefix attention and
packed linear layers. Imports neither Gradio nor Plotly.
"""
