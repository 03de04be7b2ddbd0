"""The Gradio demo: the app, its tabs and handlers, and the Plotly figures.

``app`` builds and serves it, ``tabs`` and ``handlers`` hold the task tabs, ``memory_tab`` the Memory tab,
``figures`` the attention figures. The only part of the package that imports Gradio.
"""
