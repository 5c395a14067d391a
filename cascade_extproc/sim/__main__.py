"""`python -m cascade_extproc.sim`: the simulated providers alone (as `cascade-extproc sim`)."""
import argparse

from cascade_extproc.sim.standalone import add_arguments, main

_parser = argparse.ArgumentParser(prog="cascade-extproc sim", description="Simulated LLM providers")
add_arguments(_parser)
raise SystemExit(main(_parser.parse_args()))
