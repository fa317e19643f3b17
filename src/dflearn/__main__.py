import sys

from .cli import _quiet_stdout, main

code = main()
try:  # a reader that left (`dflearn rules | head`) makes the final flush fail: no traceback for that
    sys.stdout.flush()
except BrokenPipeError:
    _quiet_stdout()
sys.exit(code)
