"""The filter stage: parse, verify (math; code in pipeline/sandbox/), quality steps, dedup, decontamination, selection, report; and
`distill verify` (verify.py), the same graders as a command."""
