from qunlearn.cli import main

raise SystemExit(main())
