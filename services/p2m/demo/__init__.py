"""The web demo of a deployed model: a Gradio page that calls its KServe endpoint."""
