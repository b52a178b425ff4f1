"""Evaluation, shared by every job: metrics and intervals, goal reaching for any controller (held-out problems, the
zero-action baseline, env-judged runs, the report), open-loop model evaluation, the simulator oracle, and the media
(videos, plots) people look at."""
