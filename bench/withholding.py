"""Withholding drafts whose expected ENCS is negative, simulated (no database, no model).

    .venv/bin/python bench/withholding.py [--messages 20000] [--seeds 10]

Drafts with known action probabilities (drafting.evaluation.withholding: true P(good) from
Beta(2, 2), split 70/30 use/light edit given good and 30/70 heavy edit/ignore given bad;
S_use $0.90, S_edit $0.45, S_ignore −$0.40, cost $0.002 a draft) under two policies sharing
every agent action: show all, and withhold the drafts whose estimated value of showing is
negative but for a show share. Scorers: calibrated (the estimate is the true P(good)) and
miscalibrated (logit noise σ = 0.5 and 1.0: overconfident estimates). Prints one JSON object:
per scorer and show share, the mean over seeds of ENCS per message for both policies, the gain,
the show share's realised cost, the share of drafts withheld, and the worst seed's gain.
"""

from __future__ import annotations

import argparse
import json
from decimal import Decimal

from drafting.evaluation.withholding import simulate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--seeds", type=int, default=10)
    args = parser.parse_args()
    rows = []
    for noise in (0.0, 0.5, 1.0):
        for share in ("0", "0.1", "0.2"):
            runs = [
                simulate(seed=seed, messages=args.messages, noise=noise, show_share=Decimal(share))
                for seed in range(args.seeds)
            ]
            n = len(runs)
            rows.append(
                {
                    "scorer_logit_noise": noise,
                    "show_share": share,
                    "show_all_encs_per_message_usd": f"{sum(r.show_all_encs_per_message for r in runs) / n:.6f}",
                    "withhold_encs_per_message_usd": f"{sum(r.withhold_encs_per_message for r in runs) / n:.6f}",
                    "gain_per_message_usd": f"{sum(r.gain_per_message for r in runs) / n:.6f}",
                    "worst_seed_gain_per_message_usd": f"{min(r.gain_per_message for r in runs):.6f}",
                    "show_share_cost_per_message_usd": f"{sum(r.exploration_cost_per_message for r in runs) / n:.6f}",
                    "withheld_share": round(sum(r.withheld for r in runs) / (n * args.messages), 4),
                }
            )
    print(json.dumps({"messages": args.messages, "seeds": args.seeds, "runs": rows}, indent=2))


if __name__ == "__main__":
    main()
