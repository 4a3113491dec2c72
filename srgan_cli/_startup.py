"""Imported first by `app`: pauses Python's cyclic garbage collector while the CLI starts.

Importing torch and the CLI's libraries creates a few million objects, and the collector walked
them again and again as they appeared: about 0.3 s of the 1.6 s of CPU time that start-up took
on the development machine (one thread, `python -c "import srgan.cli.app"`). `app` re-enables
it once everything is imported, after moving what the imports made into the permanent
generation (`gc.freeze`), which the collector never scans.
"""

import gc

gc.disable()
