"""ENCS accounting: reads the support domain's and drafting's rows (see the accounting issue)."""
