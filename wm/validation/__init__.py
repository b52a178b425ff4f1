"""Validation runs on a robot (`wm validate`): the episode loop, what it records per step, and how an episode is
judged. The layout of a run's folder is documented in `wm.validation.session`."""
