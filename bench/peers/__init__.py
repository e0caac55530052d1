"""Peer applications: the same no-op and recording tasks, written for each peer."""
