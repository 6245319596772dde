"""``python -m fltool`` runs the same CLI as the ``fltool`` command (and is what torchrun launches)."""
from fltool.cli.main import main

if __name__ == "__main__":
    main()
