"""Write the small data files of `examples/stream.yaml` (run from anywhere).

Every record is generated here from a fixed seed, from words we chose: no third-party text.
Each task shows one thing a stream file can do (see the comments in `stream.yaml`); the files
are committed, and `tests/test_examples_dir.py` checks that this script still writes them byte
for byte.

    python examples/make_data.py          # rewrites examples/data/
"""

from __future__ import annotations

import csv
import io
import json
import random
from collections.abc import Callable
from pathlib import Path

SEED = 7
SIZES = {"train": 48, "eval": 8, "test": 12}

NAMES = ["Mira", "Tom", "Ana", "Ravi", "Lena", "Omar", "Kim", "Yuki", "Pablo", "Zoe"]
COLOURS = ["red", "blue", "green", "amber", "violet", "teal", "grey", "white"]
THINGS = ["lamp", "kettle", "bicycle", "ladder", "drum", "clock", "tent", "kite"]
PLACES = ["the harbour", "the market", "the station", "the garden", "the library"]
VERBS = ["check", "clean", "close", "label", "move", "store"]

Record = dict[str, str]
ANSWER_KEYS = ("answer", "target", "output")


def parity(rng: random.Random) -> Record:
    """TRACE-style {prompt, answer} with a label set (log-likelihood accuracy)."""
    n = rng.randint(10, 999)
    return {"prompt": f"Is {n} an even number?\nAnswer:", "answer": "yes" if n % 2 == 0 else "no"}


def box_colour(rng: random.Random) -> Record:
    """Keys that differ from the format's ({question, target}): mapped in the stream file."""
    box = f"{rng.choice('ABCDEFGHJKLM')}{rng.randint(1, 9)}"
    colour = COLOURS[(ord(box[0]) + int(box[1])) % len(COLOURS)]
    question = f"Box {box} is painted by rule. What colour is box {box}?"
    return {"question": question, "target": colour}


def trip_summary(rng: random.Random) -> Record:
    """A short report and its one-line summary (ROUGE-L)."""
    who, thing, place = rng.choice(NAMES), rng.choice(THINGS), rng.choice(PLACES)
    start = rng.randint(6, 11)
    hours = rng.randint(1, 5)
    report = (
        f"{who} left home at {start} o'clock. {who} carried a {thing}. "
        f"After {hours} hours {who} reached {place}."
    )
    return {
        "prompt": f"Report: {report}\nSummary:",
        "answer": f"{who} took a {thing} to {place} in {hours} hours.",
    }


def simplify(rng: random.Random) -> Record:
    """A wordy instruction and its plain rewrite (SARI against the sentence in the prompt)."""
    thing, verb, colour = rng.choice(THINGS), rng.choice(VERBS), rng.choice(COLOURS)
    wordy = (
        f"In the event that the {colour} {thing} is found to be unattended, it is necessary "
        f"that you {verb} it without any further delay."
    )
    plain = f"If the {colour} {thing} is left alone, {verb} it now."
    return {"prompt": f"Simplify: {wordy}\nSimple:", "answer": plain}


def complete_code(rng: random.Random) -> Record:
    """Alpaca {instruction, input, output}: finish a Python line (edit similarity)."""
    name = rng.choice(THINGS)
    k = rng.randint(2, 99)
    return {
        "instruction": "Complete the last line of this Python code.",
        "input": f"def scale_{name}_by_{k}(count):\n    return count *",
        "output": f"{k} * {name.upper()}_SIZE",
    }


def largest(rng: random.Random) -> Record:
    """An answer that starts with a choice letter and explains it (choice-letter accuracy)."""
    values = rng.sample(range(10, 99), 3)
    letters = "ABC"
    best = max(range(3), key=lambda i: values[i])
    options = " ".join(f"{letters[i]}. {v}" for i, v in enumerate(values))
    return {
        "prompt": f"Which number is the largest? {options}\nAnswer:",
        "answer": f"{letters[best]}, because {values[best]} is the largest.",
    }


TASKS: dict[str, tuple[Callable[[random.Random], Record], str]] = {
    "parity": (parity, "json"),
    "box_colour": (box_colour, "csv"),
    "trip_summary": (trip_summary, "jsonl"),
    "simplify": (simplify, "json"),
    "complete_code": (complete_code, "jsonl"),
    "largest": (largest, "json"),
}


def _splits(make: Callable[[random.Random], Record], rng: random.Random) -> dict[str, list]:
    """Train, eval and test records, no question asked twice (so eval is disjoint from test)."""
    seen: set[str] = set()
    out: dict[str, list[Record]] = {}
    for split, n in SIZES.items():
        records: list[Record] = []
        for _ in range(1000 * n):
            if len(records) == n:
                break
            record = make(rng)
            asked = {k: v for k, v in record.items() if k not in ANSWER_KEYS}
            key = json.dumps(asked, sort_keys=True)
            if key not in seen:
                seen.add(key)
                records.append(record)
        else:
            raise RuntimeError(f"{make.__name__}: too few distinct records for {split}")
        out[split] = records
    return out


def _text(records: list[Record], kind: str) -> str:
    if kind == "json":
        return json.dumps(records, indent=1, ensure_ascii=False) + "\n"
    if kind == "jsonl":
        return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(records[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(records)
    return buffer.getvalue()


def write_examples(folder: Path) -> list[Path]:
    """Write every task's train/eval/test file under `folder`; returns the paths written."""
    written = []
    for name, (make, kind) in TASKS.items():
        rng = random.Random(f"{SEED}:{name}")
        task_dir = folder / name
        task_dir.mkdir(parents=True, exist_ok=True)
        for split, records in _splits(make, rng).items():
            path = task_dir / f"{split}.{kind}"
            path.write_text(_text(records, kind), encoding="utf-8")
            written.append(path)
    return written


def main() -> None:
    folder = Path(__file__).resolve().parent / "data"
    for path in write_examples(folder):
        print(path.relative_to(folder.parent))


if __name__ == "__main__":
    main()
