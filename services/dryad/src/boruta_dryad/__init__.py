"""boruta dryad: the agent on each board's host. It prepares a fresh Unix user and RSA key
for every job, drives the board's hardware and reports to the scheduler."""

__version__ = "0.1.0"
