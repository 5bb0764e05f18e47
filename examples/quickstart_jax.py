"""Prints a TML learning-rate schedule evaluated by the pure JAX functions."""

from functional_opt import config, schedules

lr = config.LearningRate(
    linear_ramp_to_cosine=config.LinearRampToCosine(
        learning_rate=1e-3, final_learning_rate=1e-5, num_ramp_steps=100, final_num_steps=1000
    )
)
sched = schedules.schedule_from_config(lr)
for step in (0, 50, 100, 550, 1000, 5000):
    print(f"step {step:>5}: lr = {float(sched(step)):.6g} (float64 reference {schedules.compute_lr(lr, step):.6g})")
