"""The HTTP API (FastAPI): events in, customer profiles and next-best actions out.

Imports the domain packages and `engine.settings`, never the Faust app.
"""
