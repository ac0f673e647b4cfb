"""The shipped toy task and teacher: procedurally generated arithmetic with worked, digit-by-digit reasoning."""
