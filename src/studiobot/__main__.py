"""``python -m studiobot``."""

from studiobot.cli import main

raise SystemExit(main())
