"""Where a memory model's bAbI answers go wrong: each wrong answer told by what it names.

The memory benchmark (``python -m llm_memory.memory``) counts exact matches. This reads the same test
probes (same seed, test-split filler, aligned to the window) with the LSTM state carried and sorts
every answer into:

- ``correct``;
- ``earlier place``: a place the asked person (qa2: the person who took the object) left before;
- ``another person's place``: where someone else went;
- ``not in the story``: a place the story never names, a default the model falls back on;
- ``right place, a later token wrong``: the place's first token right, one of its later ones not.

An answer is read from its first token, where the choice of place is made: answers are scored teacher
forced, so later tokens follow the right answer. A first token that begins no place is ``not a place``.

    python -m bench.memory_errors --model checkpoints/memory --json bench/memory_results/memory_errors.json
"""

import argparse
import collections
import json
import random
import re

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

import llm_memory  # noqa: F401  (registers the model with the Auto classes)
from llm_memory.memory import probes
from llm_memory.memory.evaluate import run_probe
from llm_memory.memory.recurrence import window_size

TASKS = ("qa1", "qa2")


def story_pattern(verbs) -> re.Pattern:
    people = "|".join(probes.QA1_PEOPLE)
    return re.compile(rf"\b({people}) (?:{'|'.join(map(re.escape, verbs))}) the (\w+)\.")


MOVES = story_pattern(probes.QA1_VERBS)
TAKES = story_pattern(probes.QA2_VERBS)


def asked_person(task: str, text: str) -> str:
    question = text[text.rindex("Where is") :]
    if task == "qa1":
        return re.match(r"Where is (\w+)\?", question).group(1)
    thing = re.match(r"Where is the (\w+)\?", question).group(1)
    return [who for who, what in TAKES.findall(text) if what == thing][-1]


def kind_of_answer(task: str, probe, answer: str) -> str:
    moves = MOVES.findall(probe.text[: probe.text.rindex("Where is")])
    person = asked_person(task, probe.text)
    own = [place for who, place in moves if who == person]
    if answer == probe.answer.strip():
        return "right place, a later token wrong"
    if answer in own[:-1]:
        return "earlier place"
    if answer in [place for who, place in moves if who != person]:
        return "another person's place"
    return "not in the story"


def place_by_first_token(tokenizer) -> dict[int, str]:
    """Each place by its first token (the six places' first tokens differ): where the choice is made."""
    firsts = {
        tokenizer(" " + place, add_special_tokens=False)["input_ids"][0]: place
        for place in probes.QA1_LOCATIONS
    }
    if len(firsts) != len(probes.QA1_LOCATIONS):
        raise SystemExit(
            "two places share a first token in this tokenizer; their answers cannot be told apart."
        )
    return firsts


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="checkpoints/memory")
    parser.add_argument("--distances", default="32,128,256")
    parser.add_argument("--samples", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0, help="the memory benchmark's --seed")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    distances = [int(d) for d in args.distances.split(",")]

    model = AutoModelForCausalLM.from_pretrained(args.model).eval()
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    window = window_size(model)
    distractors = probes.as_distractors(None, tokenizer, "test")
    places = place_by_first_token(tokenizer)
    results = {}
    for task in TASKS:
        rng = random.Random(args.seed)  # drawn as the memory benchmark draws them
        drawn = {
            distance: [
                probes.make_probe(task, distance, tokenizer, rng, distractors, align_to=window)
                for _ in range(args.samples)
            ]
            for distance in distances
        }
        results[task] = {}
        for distance, task_probes in drawn.items():
            kinds, defaults = collections.Counter(), collections.Counter()
            for probe in task_probes:
                run = run_probe(model, probe, window, carry_kv=0, carry_state=True)
                answer = places.get(run.predicted_ids[0])
                if run.correct:
                    kind = "correct"
                elif answer is None:
                    kind = "not a place"
                else:
                    kind = kind_of_answer(task, probe, answer)
                kinds[kind] += 1
                if kind == "not in the story":
                    defaults[answer] += 1
            results[task][distance] = {"answers": dict(kinds), "places_not_in_story": dict(defaults)}

    print(f"{args.model}, window {window}, {args.samples} test probes per distance, LSTM state carried\n")
    columns = (
        "correct",
        "earlier place",
        "another person's place",
        "not in the story",
        "right place, a later token wrong",
        "not a place",
    )
    print("| task | distance | " + " | ".join(columns) + " | the places not in the story |")
    print("|---|---|" + "---|" * (len(columns) + 1))
    for task, rows in results.items():
        for distance, row in rows.items():
            counts = " | ".join(str(row["answers"].get(column, 0)) for column in columns)
            firsts = ", ".join(
                f"{place} {count}"
                for place, count in sorted(row["places_not_in_story"].items(), key=lambda x: -x[1])
            )
            print(f"| {task} | {distance} | {counts} | {firsts} |")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as file:
            json.dump(
                {"model": args.model, "window": window, "samples": args.samples, "results": results},
                file,
                indent=2,
            )
            file.write("\n")
    return results


if __name__ == "__main__":
    main()
