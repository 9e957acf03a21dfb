# The two commands of the README: `make run` and `make test`. Everything else is a helper.
.PHONY: run test test-fast lint format install services bench-ingest bench-cascade bench-encs bench-replay \
	bench-fewshot bench-learning bench-load bench-faults bench-observability bench-vectors bench-knowledge bench-grounding bench-streaming lock \
	compose-config clean

run:            ## install, migrate, seed the demo, start web + worker + local vLLM
	scripts/run.sh

test:           ## install services and tools, then ruff, mypy and the whole pytest suite
	scripts/test.sh

install:        ## the project's virtualenv with the test and lint tools (`make run` installs the runtime set only)
	scripts/bootstrap.sh

test-fast:      ## the inner loop: lint, then pytest without the slow parts (vLLM, browser, load, training)
	scripts/test.sh --fast

lint: install   ## what CI checks before the tests: style, format, types, layers, migrations
	scripts/lint.sh

format:         ## apply ruff's formatting and import order
	.venv/bin/ruff format .
	.venv/bin/ruff check --fix --select I .

services:       ## PostgreSQL + Redis for local development (prints their URLs)
	scripts/services.sh up

bench-ingest: install services
	.venv/bin/python bench/ingest.py

bench-cascade: install services
	.venv/bin/python bench/cascade.py

bench-encs: install services    ## ARGS="--actions 200000", "--reuse" (keeps the seeded database)
	.venv/bin/python bench/encs.py $(ARGS)

bench-replay: install    ## cascade replay on OVERRULING over seeded splits; ARGS="--seeds 10"
	.venv/bin/python bench/replay.py $(ARGS)

bench-fewshot: install  ## Banking77 and FOMC tens-of-shot studies, MiniLM and the vLLM embedding server
	DJANGO_DEBUG=$${DJANGO_DEBUG:-1} .venv/bin/python manage.py local_llm serve --embed --background
	.venv/bin/python bench/fewshot.py $(ARGS)

bench-learning: install ## learned scorer: training and scoring time, embedding throughput of both back ends
	DJANGO_DEBUG=$${DJANGO_DEBUG:-1} .venv/bin/python manage.py local_llm serve --embed --background
	.venv/bin/python bench/learning.py $(ARGS)

bench-load: install services    ## ingest + console + actions under load, drafts flowing (own Postgres/Redis/workers)
	.venv/bin/python bench/load.py $(ARGS)

bench-faults: install services  ## the same under faults: Redis and Postgres restarts, worker killed, local model stopped
	.venv/bin/python bench/load.py --faults $(ARGS)

bench-observability: install services  ## /metrics scrape time and middleware overhead
	.venv/bin/python bench/observability.py $(ARGS)

bench-vectors: install  ## pgvector HNSW kNN with a team filter on its own PostgreSQL; ARGS="--sizes 10000,100000,1000000"
	.venv/bin/python bench/vectors.py $(ARGS)

bench-knowledge: install services  ## hybrid knowledge retrieval at 100 k chunks (scratch database on DATABASE_URL's server)
	.venv/bin/python bench/knowledge.py $(ARGS)

bench-grounding: install services  ## ROUGE-L of local-model drafts with vs without passages on DSTC11 turns; ARGS="--n 40"
	.venv/bin/python bench/grounding_rouge.py $(ARGS)

bench-streaming: install services  ## time to the first visible text vs the final draft, local vLLM (start it: manage.py local_llm serve --background); ARGS="--drafts 20"
	.venv/bin/python bench/streaming.py $(ARGS)

lock:           ## regenerate requirements.lock (runtime) and requirements-dev.lock (+ test and lint tools), exact pins with hashes
	scripts/lock.sh

compose-config: install  ## validate compose.yaml with Docker Compose v2
	scripts/compose.sh config

clean:
	rm -rf var artifacts .pytest_cache .mypy_cache .ruff_cache
