from cascade_extproc.cli import main

raise SystemExit(main())
