"""Fault injection, hostile input and load: the campaigns `make faults` runs (and the short
variants `make faults-quick` and the normal test command run). See tests/faults/README.md."""
