"""The DICOM node: ``lungautoseg serve --config node.toml``.

A scanner or PACS sends a CT series by C-STORE; the node spools it (``spool``), notices when the
series is complete, contours it with the engine's ``run_segment`` (the model loaded once) and
sends the RTSTRUCT to the planning system by C-STORE (``worker``). Every step is a state in a
SQLite journal (``journal``), committed before the step acts, so a restart resumes where the
node stopped. Qt-free and Slicer-free; pynetdicom comes with the ``[node]`` extra.
"""
