"""The ways in: the Litestar app (serve/app.py and its controllers), `python -m serve`, the batch
scorer and the client. Domain code (recording -> timeline, the model file and its runtime) lives
in `har/`; this package only adapts it to HTTP and the command line.
"""
