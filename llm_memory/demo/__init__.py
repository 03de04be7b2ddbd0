"""The Gradio demo: the app (``app``), its task tabs (``tabs``, ``handlers``), the Memory tab and the
Plotly figures. The only part of the package that imports Gradio."""
