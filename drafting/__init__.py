"""Drafting: replies drafted through a cost-aware cascade, and what agents did with them.

The app's public face is at this level: `models` (the rows), `services` (write flows),
`selectors` (reads), `tasks` (Celery doorbells, ids in), `signals` (what accounting listens
to), `observability` (metrics and readiness for csbot's /metrics and /readyz). Inside:
`engine/` the hot path, `learning/` what is trained (the only scikit-learn), `evaluation/`
offline studies, `localserver/` the local vLLM server, `admin/` the admin pages. The layers
and their import contracts: docs/architecture.md.
"""
