from preskool_dr.cli.main import main

raise SystemExit(main())
