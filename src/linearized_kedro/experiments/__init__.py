"""The experiment API: one function per experiment, arrays and a typed config in, a typed result out.

Nodes, notebooks and benchmarks call these functions; nothing here imports Kedro.
"""
