"""``python -m inferd``: the same entry point as the ``inferd`` console script."""

from inferd.server.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
