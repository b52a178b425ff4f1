"""Exporters: an episode store out in another project's dataset format (`wm export FORMAT STORE --out DIR`)."""
