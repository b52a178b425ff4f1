"""Evaluation, shared by every job: metrics and intervals, held-out splits, open-loop model evaluation, closed-loop
episodes judged by the env, and the media (videos, plots) people look at."""
