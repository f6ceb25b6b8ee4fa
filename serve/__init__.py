"""The inference service: a Litestar app over one onnxruntime session per process.

`python -m serve` starts it (see serve/__main__.py). Submodules are kept importable on
their own: `serve.modelfile` and `serve.runtime` need only onnx / onnxruntime, and
`serve.timeline` only the pipeline's own `har` code, so stages and CLIs can reuse them
without pulling in the web stack.
"""
