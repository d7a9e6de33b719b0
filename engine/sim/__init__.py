"""The simulated bank and the demo: customers and their products (`simulated_products`),
their events on the wire (`simulated_wire`), their behaviour (`simulator`), and `nba demo`
(`demo`), which drives a running system over HTTP. Never imports the stream runtime or `api`.
"""
