"""The pure core: lock records, timings, decisions and the election machine. No I/O here."""
