"""``python -m lab.donations --host H --port P --dsn DSN --node NAME``: run the demo app."""

from lab.donations.app import main

raise SystemExit(main())
