"""The exceptions glowtools raises, each with the exit status a tool turns it into.

Exit statuses, shared by every tool:
  0  success
  1  a bug: an unexpected exception, shown with its traceback
  2  usage: a bad option or argument (typer's own status)
  3  the beanstalkd server could not be reached or stopped answering
  4  invalid input: a job, a body or a file that is not acceptable
  5  the server refused a command (out of memory, draining, ...)
  6  not found: a job or tube that does not exist
  7  configuration: a setting or file the tool needs is unusable
  8  interrupted: a batch stopped part-way (the message says what was done)
"""


class GlowError(Exception):
    """Base of every expected glowtools failure; its message is one line."""

    exit_status = 1


class QueueUnreachable(GlowError):
    """The beanstalkd server at an address cannot be reached or does not answer."""

    exit_status = 3

    def __init__(self, address: str, problem: str) -> None:
        self.address = address
        self.problem = problem
        super().__init__(
            f"beanstalkd at {address}: {problem} "
            "(start beanstalkd there, or point GLOW_QUEUE or --queue at a running one)"
        )


class AddressInvalid(GlowError):
    """A queue address is not of the form host:port."""

    exit_status = 3

    def __init__(self, address: str, problem: str) -> None:
        self.address = address
        super().__init__(
            f"queue address {address!r} {problem} (write it as host:port, "
            "e.g. 127.0.0.1:11300)"
        )


class JobInvalid(GlowError):
    """A job is not acceptable; `where` names it (job 3 on line 3, field args)."""

    exit_status = 4

    def __init__(self, where: str, problem: str) -> None:
        self.where = where
        self.problem = problem
        super().__init__(f"{where}: {problem}")

    def __reduce__(self):
        # Pickled by glow-put's helper process, which reads half of a batch.
        return type(self), (self.where, self.problem)


class ServerRefused(GlowError):
    """beanstalkd answered a command with an error."""

    exit_status = 5


class NotFound(GlowError):
    """A job or tube does not exist on the server."""

    exit_status = 6


class ConfigInvalid(GlowError):
    """A setting or a file a tool needs is unusable."""

    exit_status = 7


class Interrupted(GlowError):
    """A batch stopped part-way; the message says what was done and what was not."""

    exit_status = 8
