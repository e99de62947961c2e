from channelsd.cli import main

raise SystemExit(main())
