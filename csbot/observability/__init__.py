"""Observability: Prometheus metrics, structured logs with request and draft ids, health probes.

- `context`: the ids a log line carries (request_id on the web, task/draft/message ids in
  the worker), kept in a context variable so any logger picks them up.
- `logs`: the JSON and plain formatters, the filter that adds those ids, secret redaction.
- `metrics`: HTTP request metrics (per process, or shared by gunicorn's workers through
  PROMETHEUS_MULTIPROC_DIR) and a collector that reads drafts, attempts, spend and queue depth
  from the database and the broker at scrape time: the rows are the truth, whichever process
  (web or worker, on whichever machine) wrote them.
- `health`: liveness and readiness checks (database, broker, model endpoints).
- `middleware`: request ids, request metrics and the access log; the probe paths.
"""
