"""The HTTP API (FastAPI): events in, customer profiles and next-best actions out.

Imports the domain packages and `engine.core` (settings, the Redis client), never the
stream runtime, the simulator or Faust.
"""
