"""A small Django site shaped like a Wagtail CMS with a DRF-style API (see test_real_apps.py)."""
