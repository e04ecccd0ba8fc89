"""A chaos soak with an oracle (``./dev chaos``): real processes, random changes and faults, every lookup checked.

One module per job: `topology` (every process, started and killed), `app` (the lookup processes),
`workload` (changes in the Clerk stand-in and the truth they leave), `delivery` (Svix's deliveries),
`faults` (what goes wrong, from a seed), `history` (JSON lines), `oracle` (the checks), `report`,
and `run` (the driver behind ``python -m devstack.chaos``).
"""
