"""`manage.py reembed [--batch-size N] [--limit N] [--dry-run]`: embed the stored questions
(semantic cache entries, few-shot examples) again with the configured embedder, after
EMBEDDING_BACKEND changed. The beat does the same in the background a batch at a time; this is
the way to do it all now, with a progress bar on stderr. Searches ignore a row until it is done.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from drafting.engine.embeddings import EmbeddingError, embedder
from drafting.engine.vectors import ReembedProgress, reembed, stale_vector_count


class Command(BaseCommand):
    help = "Embed stored questions again with the configured embedder (after changing it)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--batch-size", type=int, default=64, help="rows per embedding call")
        parser.add_argument("--limit", type=int, default=None, help="stop after this many rows")
        parser.add_argument(
            "--dry-run", action="store_true", help="only say how many rows are stale"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["batch_size"] < 1 or (options["limit"] is not None and options["limit"] < 1):
            raise CommandError("--batch-size and --limit must be positive")
        try:
            model = embedder()
            if model is None:
                raise CommandError("EMBEDDING_BACKEND is 'none': there is nothing to embed with")
            stale = stale_vector_count()
            self.stdout.write(f"{stale} stored question(s) not embedded by {model.name}")
            if options["dry_run"] or stale == 0:
                return
            started = time.monotonic()

            def show(state: ReembedProgress) -> None:
                elapsed = max(time.monotonic() - started, 1e-9)
                share = state.done / max(state.total, 1)
                rate = state.done / elapsed
                left = (state.total - state.done) / rate if rate else 0
                bar = "#" * int(share * 30)
                sys.stderr.write(
                    f"\r[{bar:<30}] {state.done}/{state.total} ({share:.0%}) "
                    f"{rate:.0f}/s, {left:.0f} s left "
                )
                sys.stderr.flush()

            result = reembed(
                batch_size=options["batch_size"], limit=options["limit"], progress=show
            )
        except EmbeddingError as exc:
            raise CommandError(f"the embedder failed: {exc}") from exc
        sys.stderr.write("\n")
        if result.failed:
            raise CommandError(f"stopped after {result.done} row(s): the embedder failed (logged)")
        self.stdout.write(
            f"re-embedded {result.done} row(s) with {result.model} "
            f"in {time.monotonic() - started:.1f} s"
        )
