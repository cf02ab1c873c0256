"""Protocols: the benchmarks of docs/protocols.md, run by ``metarec bench NAME`` on any dataset."""
