"""``python -m bench.launch.cancel …`` = ``valley-cancel …`` (for checkouts whose console scripts are not installed)."""
from bench.launch.status import cancel_main

if __name__ == "__main__":
    cancel_main()
