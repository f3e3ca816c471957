"""``python -m kaito.tuning``: the programs inside a tuning Job's containers."""

from kaito.tuning.main import main

raise SystemExit(main())
