"""Test-wide plugins: throwaway servers for the backends that need one."""

pytest_plugins = [
    "tests.servers.mysql",
    "tests.servers.mongodb",
    "tests.servers.postgresql",
    "tests.servers.redis",
]
