"""``python -m clerk_org_cache_cli``: the same as the installed ``clerk-org-cache`` command."""

import sys

from clerk_org_cache_cli.commands import main

sys.exit(main())
