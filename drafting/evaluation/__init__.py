"""Offline studies on public data sets, with no database: the cascade replay on recorded
answers (`replay`) and the tens-of-shot classification study (`fewshot`). Run by the
`cascade_replay` and `fewshot_eval` commands and by bench/."""
