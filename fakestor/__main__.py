from fakestor.cli import main

raise SystemExit(main())
