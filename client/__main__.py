"""`python -m client` is the `anyface` command."""

from client.cli import main

raise SystemExit(main())
