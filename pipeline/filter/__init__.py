"""The filter stage: parse, verify (math, code), quality steps, dedup, decontamination, selection, report."""
