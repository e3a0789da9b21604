"""Experiment construction and the ``orchestrator`` command line.

The CLI (``orchestrator.cli``) is a thin layer over these modules; everything it does can be
called from Python without Ray running.
"""
