"""Stores: one interface (`base`), one adapter per backend."""
