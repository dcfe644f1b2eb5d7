from geninv.cli import main

raise SystemExit(main())
