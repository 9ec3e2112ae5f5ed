"""`python -m qwen_speech status|drift|verify INVENTORY`: see tasks/operate.py."""

import sys

from tasks.operate import main

sys.exit(main())
