"""Prefect flows that wire the stage tasks together, and the `mm` command line."""

from flows.env import configure

configure()
