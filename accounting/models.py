"""Accounting owns no tables yet: ENCS is computed from drafting's and the support domain's rows."""
