"""The imperative shell: real clocks, threads, processes and signals around the pure core."""
