"""Random, readable run names in MLflow's spirit ("brave-owl-417")."""

from __future__ import annotations

import random
from typing import Final

_ADJECTIVES: Final = (
    "able", "bold", "brave", "bright", "calm", "clever", "crisp", "eager", "fair", "gentle",
    "glad", "grand", "keen", "kind", "lively", "lucky", "merry", "nimble", "proud", "quick",
    "quiet", "rare", "sharp", "shy", "smooth", "steady", "sunny", "swift", "tidy", "witty",
)  # fmt: skip
_NOUNS: Final = (
    "ant", "bass", "bee", "carp", "crane", "deer", "dove", "eel", "elk", "finch", "fox",
    "gnu", "hare", "hawk", "heron", "ibis", "jay", "koi", "lark", "lynx", "mole", "moth",
    "newt", "owl", "puma", "quail", "robin", "seal", "swan", "toad", "vole", "wren", "yak",
)  # fmt: skip


def random_run_name() -> str:
    rng = random.SystemRandom()
    return f"{rng.choice(_ADJECTIVES)}-{rng.choice(_NOUNS)}-{rng.randrange(1000)}"
