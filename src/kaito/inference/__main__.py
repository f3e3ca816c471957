"""``python -m kaito.inference``: the server inside every inference pod."""

from kaito.inference.server import main

raise SystemExit(main())
