"""``python -m failoverd`` is the ``failoverd`` command."""

from failoverd.cli import failoverd_main

failoverd_main()
