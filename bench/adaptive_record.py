"""The adaptive section of a `reabsnet reproduce` run as a committed record: the adaptive stage's results (with the
command, machine and versions) as JSON and its report section as Markdown, for runs whose settings the committed
full report does not use (escalation, steps added to the suite).

    reabsnet reproduce --profile paper-subset --set adaptive.escalate=3,10
    PYTHONPATH=src python bench/adaptive_record.py --run $REABSNET_HOME/runs/mnist/paper-subset \\
        --title "Escalation of the adaptive suite" --out docs/results/mnist-paper/ESCALATION.md

An existing home reuses every attack set `make reproduce` built; only the new steps' sets are computed.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from reabsnet.artifacts import write_bytes_atomic, write_json_atomic
from reabsnet.rates import command_text
from reabsnet.security.report import adaptive_section


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="the run folder (runs/<dataset>/<profile> under the home)")
    parser.add_argument("--title", required=True, help="the record's heading")
    parser.add_argument("--out", required=True, help="the Markdown file; the JSON goes beside it")
    args = parser.parse_args()
    path = Path(args.run) / "results.json"
    if not path.is_file():
        sys.exit(f"adaptive_record: {path}: no such results (run reabsnet reproduce first)")
    run = json.loads(path.read_text())
    adaptive = run["results"].get("adaptive")
    if not adaptive:
        sys.exit(f"adaptive_record: {path}: the run has no adaptive results")
    # the home a run used is the reader's $REABSNET_HOME (the default): not one machine's folder; -q only
    # quiets the log
    command = re.sub(r"\s--home(=|\s+)\S+|\s-q(?=\s)", "", command_text(run["command"]))
    record = {"command": command, "machine": run["machine"], "versions": run["versions"],
              "stage_seconds": run.get("stage_seconds", {}).get("adaptive attacks"),
              "adaptive_profile": run["profile"]["adaptive"], "adaptive": adaptive}
    out = Path(args.out)
    write_json_atomic(out.with_suffix(".json"), record)
    m, v = run["machine"], run["versions"]
    lines = [f"# {args.title}", "",
             f"`{record['command']}`, then `bench/adaptive_record.py`. {m['cpu_model']} ({m['cpus']} cores), torch "
             f"{v['torch']}. The raw results: [{out.with_suffix('.json').name}]({out.with_suffix('.json').name}).",
             *adaptive_section(adaptive)]
    write_bytes_atomic(out, ("\n".join(lines) + "\n").encode())
    print(f"wrote {out} and {out.with_suffix('.json')}")


if __name__ == "__main__":
    main()
