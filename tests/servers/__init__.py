"""Throwaway database servers for tests: started on free ports in temp dirs, stopped by PID."""
