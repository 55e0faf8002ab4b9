"""The analysis's defaults, in one light module (no numpy, no scipy): the report's α and minimum effect,
and the adaptive sweep's plan, which the sweeper (a Hydra plugin imported by every gptx command), the
replay and gptx.plan all read from here."""

ALPHA = 0.05  # family-wise rate of false better/worse claims
MIN_EFFECT = 0.01  # nats: the smallest effect worth planning for (--min-effect)
MAX_SEEDS = 12  # init seeds an arm gets at most in an adaptive sweep, and what gptx.plan costs
FIRST_WAVE = 3  # seeds of an adaptive sweep's first wave
WAVE_SIZE = 3  # seeds each later wave adds to the arms still undecided
DEFAULT_SPENDING = "obrien_fleming"  # how each arm's α is spent over its looks
