"""The engine, by room: `core` (settings and client factories, shared with `api`),
`stream` (the Faust worker, the learner, the embedded servers and their supervisor),
`sim` (the simulated bank and the demo), and `cli` (the `nba` command) above them all.
"""
