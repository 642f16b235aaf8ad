"""``python -m poller`` is the ``poller`` command."""

from poller.cli import main

raise SystemExit(main())
