"""One module per CLI command: argument wiring, printing, exit codes. Domain modules return
typed results and raise typed errors; cli.py only assembles these."""

from . import (
    bake, chain, check, compare, config, demo, fleet, hw, inspect, launch, make_tiny, pull, run, serve, validate,
    verify_weights,
)

# the order of `mlvalidate --help`
COMMANDS = [demo, validate, run, fleet, serve, inspect, check, make_tiny, bake, pull, verify_weights, launch, config,
            hw, compare, chain]
