"""The drafting hot path, imported by web and worker alike: the cascade and what it asks
(providers, prices, spend caps, breakers, prompts, PII masking, the `Scorer` protocol), the
completion cache and few-shot examples with their embeddings, and the edit-distance rule.
It never imports `drafting.learning`: a learned model reaches it through a protocol."""
