"""Exceptions that say what the operator must do.

ConfigError stops the program with one clear line. TransientError is retried on
the next block. SimulationReverted means: do not send.
"""


class KeeperError(Exception):
    """Base class for every error the keeper raises on purpose."""


class ConfigError(KeeperError):
    """The configuration is wrong; the message names the key and the problem."""


class TransientError(KeeperError):
    """A network or node problem that may go away: retry later."""


class RpcError(KeeperError):
    """The node answered with a JSON-RPC error object."""

    def __init__(self, method: str, code: int, message: str, data: str | None = None):
        super().__init__(f"{method}: {message} (code {code})")
        self.method = method
        self.code = code
        self.rpc_message = message
        self.data = data


class BadResponseError(TransientError):
    """The node answered something that is not a valid JSON-RPC answer."""


class SimulationReverted(KeeperError):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason
