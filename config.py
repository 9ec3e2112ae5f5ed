"""pyinfra's config file (read before the inventory when pyinfra runs in this directory).

It loads the inventory file once first, so an inventory that does not import (a syntax error, a
missing module, a sandbox that is not running) stops the run with one line naming the file and
the error, instead of pyinfra's "internal exception" and a traceback. pyinfra reads config.py
only from the working directory; run from elsewhere, its own message still names the file.
It also refuses a --data without '=' and a --limit that selects no host, with one line each
(pyinfra itself gives a traceback for the first and runs nothing, exiting 0, for the second).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from qwen_speech.inventory_file import check_command_line, check_loads  # noqa: E402

check_loads()
check_command_line()
