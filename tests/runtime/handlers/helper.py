"""A helper module next to the handler, imported by plain name."""

NAME = "helper"
