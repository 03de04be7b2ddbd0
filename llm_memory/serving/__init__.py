"""Serving the models to many users at once: loading, the settings, the batchers (in this process or a
decoding child process), the sampler, the reserving cache, shared-prefix attention and packed linear
layers. Imports neither Gradio nor Plotly."""
