#!/usr/bin/env python
"""Django's template manage.py, unchanged: settings are set with setdefault, after the agent started."""
import os
import sys


def main():
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "orders_site.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
