"""The evaluation of a patrol programme from its dwell ledger: patrol days against other days,
per hot spot, with crime, harm and cost (docs/interface.md, Evaluation).

Pure like the rest of ``geofences``: rows and text in, rows out; time is integer epoch ms and
local dates are read in the hot spot file's time zone. ``inputs`` parses the files,
``daily`` makes one row per hot spot and local date (with the patrol-day rule, shared with the
live alerts through ``geofences.coverage.instance_covered_ms``), ``summary`` compares patrol
and non-patrol days, the residual effect and the dosage.
"""
