"""The stream runtime: the Faust worker (`worker`, `pipeline`, `retries`, `kafka_transport`,
`runtime`), the learner's whole-base jobs (`learner`), topics (`topics`), the bulk loader
(`bulk_load`), and the embedded local servers (`embedded`) with the supervisor that runs
them and the engine's processes (`supervisor`). Never imports `api` or `engine.sim`.
"""
