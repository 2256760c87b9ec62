"""takealook: distributed tracing and performance audit for Python web backends on PostgreSQL.

This package is imported by the agent inside users' apps, so it stays tiny:
no imports here beyond the version.
"""

__version__ = "0.1.0"
