"""`make run`'s progress (issue 17): numbered steps, each timed when it ends, and as many steps
announced as there are (scripts/run.sh)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

RUN = Path(__file__).resolve().parents[2] / "scripts" / "run.sh"


def test_run_announces_as_many_numbered_steps_as_it_has() -> None:
    text = RUN.read_text()
    total = int(re.search(r"^STEPS=(\d+)$", text, flags=re.M).group(1))  # type: ignore[union-attr]
    assert len(re.findall(r'^step "', text, flags=re.M)) == total
    # Every step ends with its time, whichever branch it takes.
    blocks = re.split(r'^step "', text, flags=re.M)[1:]
    assert all("done_step" in block for block in blocks)


def test_a_step_prints_its_number_and_then_its_time() -> None:
    text = RUN.read_text()
    helpers = text[text.index("STEPS=") : text.index('step "')]
    script = helpers + 'step "migrations"; sleep 0.2; done_step\nstep "vLLM"; done_step "skipped"\n'
    result = subprocess.run(  # noqa: S603 - the script's own helpers
        ["/bin/bash", "-c", script], capture_output=True, text=True, check=True, timeout=10
    )
    lines = result.stdout.splitlines()
    assert lines[0] == "[run] 1/9 migrations …"
    assert re.fullmatch(r"\[run\] 1/9 migrations … done \(0\.[2-9] s; 0 s since start\)", lines[1])
    assert lines[2] == "[run] 2/9 vLLM …"
    assert re.fullmatch(r"\[run\] 2/9 vLLM … skipped \(0\.\d s; \d s since start\)", lines[3])
