"""The memory benchmark with busier bAbI stories to train on: more moves by other people.

Most wrong qa1 answers inside the window name another person's place, and beyond it a third of them
do (``bench/memory_errors.py``): the model does not bind places to people. This trains on stories
where that matters more often: each qa1 and qa2 training story gets ``--extra_moves`` more moves by
people other than the one asked about, placed like the story's other free facts (after the supporting
fact when they fit, so some fall close to the question). Evaluation is unchanged: the benchmark makes
its test probes from the standard stories before any training.

    python -m bench.memory_binding --extra_moves 2-4 --model checkpoints/memory --task qa1,qa2 ...

Every other argument is the memory benchmark's (``python -m llm_memory.memory --help``).
"""

import argparse
import contextlib
import dataclasses
import random
import re
import sys

from llm_memory.memory import benchmark, finetune, probes


def asked_person(story: probes.Story) -> str:
    """qa1: the person in the question; qa2: the one who took the object (the first earlier fact)."""
    if story.question.before.startswith("Where is the"):
        return story.earlier[0].before.split()[0]
    return re.match(r"Where is (\w+)\?", story.question.before).group(1)


def busier(story_maker, extra: tuple[int, int]):
    """``story_maker`` with ``extra`` (a range) more moves by the other people, as free facts."""

    def story(rng: random.Random) -> probes.Story:
        base = story_maker(rng)
        others = [who for who in probes.QA1_PEOPLE if who != asked_person(base)]
        moves = tuple(
            probes.Fact(
                f"{rng.choice(others)} {rng.choice(probes.QA1_VERBS)} the",
                rng.choice(probes.QA1_LOCATIONS),
                ".",
                False,
            )
            for _ in range(rng.randint(*extra))
        )
        return dataclasses.replace(base, others=base.others + moves)

    return story


@contextlib.contextmanager
def busier_training_stories(extra: tuple[int, int]):
    """While active, the fine-tuning's training probes come from busier qa1 and qa2 stories."""
    make_training_probes = finetune.training_probes

    def training_probes(*args, **kwargs):
        standard = dict(probes.STORIES)
        probes.STORIES.update({task: busier(standard[task], extra) for task in ("qa1", "qa2")})
        try:
            return make_training_probes(*args, **kwargs)
        finally:
            probes.STORIES.update(standard)

    finetune.training_probes = training_probes
    try:
        yield
    finally:
        finetune.training_probes = make_training_probes


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--extra_moves", default="2-4", help="Range of extra moves per training story.")
    args, rest = parser.parse_known_args(argv)
    low, _, high = args.extra_moves.partition("-")
    if not (low.isdigit() and (high or low).isdigit() and int(low) <= int(high or low)):
        parser.error(f"--extra_moves takes N or LOW-HIGH (counts of moves), got {args.extra_moves!r}.")
    with busier_training_stories((int(low), int(high or low))):
        return benchmark.main(rest)


if __name__ == "__main__":
    sys.exit(main())
