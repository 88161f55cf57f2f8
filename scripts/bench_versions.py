"""The CPU cases of two versions of handgrad, measured in alternating rounds.

    python scripts/bench_versions.py ../before            # that checkout against this one
    python scripts/bench_versions.py OLD NEW --rounds 7 --repeats 3 --json versions.json

Round k runs ``scripts/bench.py --cases cpu --repeats R --json ...`` of each checkout in
a fresh process, in an order rotated each round (before, after; then after, before; ...),
so that a machine whose speed drifts over minutes shifts both versions alike. Each
checkout runs its own code (its scripts put its root first on the path) in this Python.

Then, per case and contender, the median over the rounds of bench.py's ratio (contender
time / handgrad numpy time: above 1, handgrad is faster) for each version, with its
lowest and highest round, and the median over the rounds of after's ratio / before's in
the same round (above 1: after is faster against that contender), with its range; and
handgrad numpy's own time per epoch, before / after in the same round. Where the range
of the paired column includes 1, the rounds do not tell a drop from noise.

--skip (default: 'handgrad torch') is passed to the versions whose bench.py has it, so
that both run the same contenders and their rounds take the same time.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import _cli

from backends import ConfigError
from model.checkpoint import atomic_write
from model.folders import check_output_file, refuse_replacing

HERE = Path(__file__).resolve().parents[1]
REFERENCE = "handgrad numpy"


def parse(argv: Sequence[str] | None):
    p = _cli.parser(__doc__ or "")
    p.add_argument("before", help="the checkout (its root folder) to compare against")
    p.add_argument("after", nargs="?", default=str(HERE), help="default: this checkout")
    p.add_argument("--rounds", type=int, default=5, help="rounds (default: 5)")
    p.add_argument("--repeats", type=int, default=3, help="bench.py --repeats (default: 3)")
    p.add_argument("--quick", action="store_true", help="bench.py --quick: checks the driver")
    p.add_argument("--skip", action="append", help="passed on to bench.py --skip where known")
    p.add_argument("--json", metavar="PATH", help="also write every round's rows as JSON")
    p.add_argument("--overwrite", action="store_true", help="allow --json to replace a file")
    args = p.parse_args(argv)
    for name in ("rounds", "repeats"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be at least 1, got {getattr(args, name)}")
    args.skip = ["handgrad torch"] if args.skip is None else args.skip
    return args


def entry(checkout: str) -> Path:
    """``checkout``'s scripts/bench.py, or a one-line error."""
    path = Path(checkout) / "scripts" / "bench.py"
    if not path.is_file():
        raise ConfigError(f"{checkout} has no scripts/bench.py; give a handgrad checkout")
    return path


def bench_command(script: Path, args, out: Path) -> list[str]:
    """The bench.py command line of one run of ``script``'s CPU cases."""
    command = [sys.executable, str(script), "--cases", "cpu", "--json", str(out)]
    command += ["--quick"] if args.quick else ["--repeats", str(args.repeats)]
    helped = subprocess.run([sys.executable, str(script), "--help"], capture_output=True,
                            text=True, check=False).stdout  # fmt: skip
    if "--skip" in helped:
        for name in args.skip:
            command += ["--skip", name]
    return command


def run_bench(command: list[str]) -> dict:
    """Run one bench.py command in a fresh process; its JSON."""
    out = Path(command[command.index("--json") + 1])
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr}")
    return json.loads(out.read_text())


def measure(commands: dict, rounds: int, folder: Path) -> dict:
    """version -> one bench.py JSON per round, the versions' order rotated each round."""
    names = list(commands)
    results: dict = {name: [] for name in names}
    for k in range(rounds):
        for name in names[k % len(names) :] + names[: k % len(names)]:
            command = [str(folder / f"{name}-{k}.json") if c == "{out}" else c
                       for c in commands[name]]  # fmt: skip
            results[name].append(run_bench(command))
            print(f"round {k + 1}/{rounds}: {name} done", file=sys.stderr, flush=True)
    return results


def per_round(runs: list) -> dict:
    """(case, contender) -> that value in each round: the contenders' ``vs_handgrad``,
    and handgrad numpy's ms / epoch under the contender name "ms / epoch"."""
    values: dict = {}
    for data in runs:
        for r in data["rows"]:
            key = (r["case"], "ms / epoch" if r["contender"] == REFERENCE else r["contender"])
            value = r["epoch_ms"] if r["contender"] == REFERENCE else r["vs_handgrad"]
            values.setdefault(key, []).append(value)
    return values


def summary(before: list, after: list) -> list[dict]:
    """Per (case, contender) in both versions: medians, ranges and the paired change."""
    old, new = per_round(before), per_round(after)
    rows = []
    for key in [k for k in new if k in old]:
        b, a = old[key], new[key]
        faster = [x / y if key[1] == "ms / epoch" else y / x for x, y in zip(b, a, strict=True)]
        rows.append({"case": key[0], "against": key[1], "before": b, "after": a,
                     "after_vs_before": faster})  # fmt: skip
    return rows


def _spread(values: list, digits: int = 2) -> str:
    middle = statistics.median(values)
    return f"{middle:.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def format_summary(rows: list) -> str:
    """The summary as a Markdown table: medians over the rounds (lowest-highest round)."""
    lines = [
        "| case | handgrad numpy vs | before | after | after vs before, paired |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['case']} | {r['against']} | {_spread(r['before'])} | "
            f"{_spread(r['after'])} | {_spread(r['after_vs_before'], 3)} |"
        )
    return "\n".join(lines)


def _load(runs: dict) -> str:
    """The load averages and other processes' cores over every run, for the record."""
    first = [d["environment"]["loadavg_before"][0] for v in runs.values() for d in v]
    cores = [r.get("other_cores", 0.0) for v in runs.values() for d in v for r in d["rows"]]
    return (
        f"1-minute load average at the runs' starts {min(first):.2f}-{max(first):.2f}; "
        f"other processes kept {min(cores):.2f}-{max(cores):.2f} cores busy per case"
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    if args.json is not None:
        refuse_replacing(check_output_file(args.json, "json"), (), args.overwrite, "json")
    scripts = {"before": entry(args.before), "after": entry(args.after)}
    commands = {name: bench_command(path, args, Path("{out}")) for name, path in scripts.items()}
    load = os.getloadavg()
    with tempfile.TemporaryDirectory() as folder:
        runs = measure(commands, args.rounds, Path(folder))
    rows = summary(runs["before"], runs["after"])
    print(f"before: {args.before}\nafter: {args.after}\n{args.rounds} rounds of "
          f"{' '.join(commands['after'][1:]).replace('{out}', 'PATH')}\nload average before "
          f"{', '.join(f'{v:.2f}' for v in load)}, after "
          f"{', '.join(f'{v:.2f}' for v in os.getloadavg())}; {_load(runs)}")  # fmt: skip
    print(format_summary(rows))
    if args.json:
        text = json.dumps({"summary": rows, "runs": runs}, indent=2)
        atomic_write(args.json, lambda f: f.write(text.encode()))
    return 0


if __name__ == "__main__":
    sys.exit(_cli.run(main))
