"""The eval stage (`distill eval`): pass@k of teacher, base and students on benchmarks, with the filter's verifiers."""
