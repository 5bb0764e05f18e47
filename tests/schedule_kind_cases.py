"""Configs of every schedule kind beyond TML's four, and their step grids, shared by the tests.

Each case changes shape within a few hundred steps; the sequences nest, start
segments from a later step of their own schedule (``from_step``) and put
piecewise kinds inside later segments, so offsets and cut windows are covered.
"""

from __future__ import annotations

from functional_opt import config

L = config.LearningRate

CASES: dict[str, config.LearningRate] = {
    "linear_down": L(linear={"initial_learning_rate": 0.1, "final_learning_rate": 0.01, "num_steps": 100}),
    "linear_up": L(linear={"initial_learning_rate": 0.0, "final_learning_rate": 0.3, "num_steps": 7}),
    "wsd_linear": L(
        warmup_stable_decay={
            "learning_rate": 0.1,
            "final_learning_rate": 0.001,
            "num_warmup_steps": 10,
            "num_stable_steps": 20,
            "num_decay_steps": 50,
        }
    ),
    "wsd_cosine_no_warmup": L(
        warmup_stable_decay={
            "learning_rate": 0.2,
            "num_stable_steps": 5,
            "num_decay_steps": 40,
            "decay_shape": "cosine",
        }
    ),
    "wsd_sqrt": L(
        warmup_stable_decay={
            "learning_rate": 0.1,
            "final_learning_rate": 0.01,
            "num_warmup_steps": 5,
            "num_decay_steps": 64,
            "decay_shape": "one_minus_sqrt",
        }
    ),
    "wsd_poly2": L(
        warmup_stable_decay={"learning_rate": 0.1, "num_decay_steps": 50, "decay_shape": "polynomial", "power": 2.0}
    ),
    "wsd_poly_default_power": L(
        warmup_stable_decay={
            "learning_rate": 0.1,
            "num_warmup_steps": 3,
            "num_decay_steps": 9,
            "decay_shape": "polynomial",
        }
    ),
    "exp_smooth": L(exponential_decay={"learning_rate": 0.1, "decay_rate": 0.9, "transition_steps": 7}),
    "exp_staircase_begin_final": L(
        exponential_decay={
            "learning_rate": 0.1,
            "decay_rate": 0.5,
            "transition_steps": 10,
            "transition_begin": 5,
            "staircase": True,
            "final_learning_rate": 0.01,
        }
    ),
    "exp_growth_capped": L(
        exponential_decay={"learning_rate": 0.01, "decay_rate": 1.5, "transition_steps": 10, "final_learning_rate": 0.2}
    ),
    "multi_step_repeated_unsorted": L(multi_step={"learning_rate": 0.1, "milestones": [30, 10, 30, 0], "gamma": 0.5}),
    "multi_step_default_gamma": L(multi_step={"learning_rate": 1.0, "milestones": [3, 50]}),
    "cosine_restarts_fixed": L(cosine_restarts={"learning_rate": 0.1, "final_learning_rate": 0.01, "cycle_steps": 7}),
    "cosine_restarts_double": L(cosine_restarts={"learning_rate": 0.1, "cycle_steps": 3, "cycle_mult": 2}),
    "cosine_restarts_triple": L(
        cosine_restarts={"learning_rate": 0.1, "final_learning_rate": 0.02, "cycle_steps": 2, "cycle_mult": 3}
    ),
    "one_cycle_default": L(one_cycle={"max_learning_rate": 0.1, "total_steps": 100}),
    "one_cycle_three_phase_linear": L(
        one_cycle={
            "max_learning_rate": 0.1,
            "total_steps": 100,
            "pct_start": 0.25,
            "anneal_strategy": "linear",
            "three_phase": True,
            "div_factor": 10.0,
            "final_div_factor": 100.0,
        }
    ),
    "one_cycle_fractional_ends": L(one_cycle={"max_learning_rate": 0.05, "total_steps": 37, "pct_start": 0.33}),
    "inverse_sqrt": L(inverse_sqrt={"learning_rate": 0.1, "timescale": 10}),
    "sequence_warmup_cosine": L(
        sequence=[
            {
                "learning_rate": {
                    "linear": {"initial_learning_rate": 0.0, "final_learning_rate": 0.1, "num_steps": 10}
                },
                "num_steps": 10,
            },
            {
                "learning_rate": {
                    "linear_ramp_to_cosine": {
                        "learning_rate": 0.1,
                        "final_learning_rate": 0.001,
                        "num_ramp_steps": 1,
                        "final_num_steps": 60,
                    }
                }
            },
        ]
    ),
    "sequence_nested_from_step": L(
        sequence=[
            {
                "learning_rate": {"linear_ramp_to_constant": {"learning_rate": 0.1, "num_ramp_steps": 10}},
                "num_steps": 10,
            },
            {
                "learning_rate": {
                    "sequence": [
                        {
                            "learning_rate": {"multi_step": {"learning_rate": 0.1, "milestones": [5, 12]}},
                            "num_steps": 20,
                            "from_step": 3,
                        },
                        {
                            "learning_rate": {
                                "piecewise_constant": {
                                    "learning_rate_boundaries": [4, 9],
                                    "learning_rate_values": [0.03, 0.02, 0.01],
                                }
                            }
                        },
                    ]
                },
                "num_steps": 40,
                "from_step": 2,
            },
            {"learning_rate": {"cosine_restarts": {"learning_rate": 0.05, "cycle_steps": 9}}, "from_step": 4},
        ]
    ),
    "sequence_single_segment": L(sequence=[{"learning_rate": {"constant": 0.25}, "from_step": 7}]),
}
"""Named configs: several per new kind."""


def step_grid(lr: config.LearningRate, extra: int = 60) -> list[int]:
    """Steps 0..300, every breakpoint with its neighbours, and a few far steps."""
    points = set(range(301))
    for b in lr.breakpoints:
        points.update(b + d for d in (-2, -1, 0, 1, 2) if b + d >= 0)
    points.update({1000, 12_345, 10**6, 10**9 + 1, 2**31 - 1, 2**31, 2**40})
    return sorted(points)
