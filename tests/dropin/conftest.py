"""service_tests/ is the drop-in service's own suite: test_dropin.py runs it in processes of
its own (with DROPIN_REGISTER set), never inside this suite's process."""

import os

collect_ignore = [] if os.environ.get("DROPIN_REGISTER") else ["service_tests"]
