from takealook.cli import main

raise SystemExit(main())
