"""`python -m qwen_speech status|drift|verify|image-cache ...` (or `python PATH/qwen_speech ...`): see tasks/operate.py."""

import os
import sys

# Also `python PATH/qwen_speech status INVENTORY` from any directory: the project's packages.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tasks.operate import main  # noqa: E402

sys.exit(main())
