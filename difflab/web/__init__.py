"""The local web UI (`difflab serve`): Gradio Blocks over the Pipeline, inference only.

models.py finds the models of a folder and what each takes; jobs.py turns one request into one
`Pipeline.sample` call (edits, previews, cancel); callbacks.py holds the event handlers; app.py the
page; serve.py launches it offline on 127.0.0.1. Nothing in the library imports this package.
"""
