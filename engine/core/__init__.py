"""What the stream runtime and the API share: the one settings class (`settings`), the
clients built from it (`clients`), and the generator of docs/configuration.md
(`settings_docs`). Imports the domain packages only, never Faust or HTTP.
"""
