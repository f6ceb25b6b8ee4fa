"""`python -m serve.batch`: the command line of serve/batch/__init__.py.

The work is done by the package's modules (`serve.batch.task.score_recording` and the rest), never by
this file run as __main__: Dask pickles the task by reference, and a worker imports it from there.
"""
import sys

from serve.batch import main

sys.exit(main())
