"""Names, defaults and limits that every glowtools tool shares."""

QUEUE_ENV = "GLOW_QUEUE"
DEFAULT_QUEUE = "127.0.0.1:11300"
DEFAULT_PORT = 11300
CONNECT_TIMEOUT = 5.0
COMMAND_TIMEOUT = 10.0
TIMEOUT_ENV = "GLOW_COMMAND_TIMEOUT"

DEFAULT_PRI = 1024
DEFAULT_DELAY = 0
DEFAULT_TTR = 120
DEFAULT_WORKDIR = "/tmp"
DEFAULT_OUTPUT = "/dev/null"
MAX_PRI = 2**32 - 1
MAX_TTR = 2**32 - 1
# Held jobs sit in their tube with this delay; a user's delay must stay below it.
HOLD_DELAY = 2**31 - 1
MAX_DELAY = HOLD_DELAY - 1
MAX_TUBE_NAME = 200
# beanstalkd's job ids are 64-bit; a larger id is a protocol error, not "not found".
MAX_JOB_ID = 2**64 - 1
# beanstalkd's own default for -z; the server's stats override it when known.
DEFAULT_MAX_JOB_SIZE = 65535

# Signed jobs: the secret files' variable (a:b for several) and a secret's minimum.
SECRET_ENV = "GLOW_SECRET_FILE"
MIN_SECRET_LENGTH = 16

# Tubes that glowtools keeps for itself; listeners never reserve from them.
ERROR_TUBE = "GLOW_ERRORS"
# glow-put's mark, put and deleted at once: jobs of a broken batch have lower ids.
UNDO_TUBE = "GLOW_UNDO"
# How many ids below the mark glow-put looks at beyond the puts left unanswered.
UNDO_SLACK = 1000
INTERNAL_PREFIX = "GLOW_"
ERROR_TTR = 3600
# Held jobs: the index tube prefix, and the rules file variable glow-put reads.
HELD_PREFIX = "GLOW_HELD."
DEPS_ENV = "GLOW_DEPS"
# glow-dep leases index records for HELD_TTR s and touches them every DEP_SWEEP s;
# it checks upstream tubes every DEP_CHECK s while it holds anything.
HELD_TTR = 300
DEP_SWEEP = 60.0
DEP_CHECK = 0.5
# A running glow-dep shows what it holds in GLOW_DEP.<host>.<pid>, a job delayed
# by VIEW_TTL s and renewed every VIEW_REFRESH s: a ready one is a dead glow-dep's.
VIEW_PREFIX = "GLOW_DEP."
VIEW_TTL = 20
VIEW_REFRESH = 5.0

# How much of a job's output a failure report keeps, per stream.
TAIL_LINES = 20
TAIL_BYTES = 4096

# A listener asks for new tubes at most this often, in seconds.
TUBE_REFRESH = 0.5
# reserve-with-timeout's wait while idle, in whole seconds (the protocol's unit).
RESERVE_WAIT = 1
# Time a job's process tree gets between SIGTERM and SIGKILL.
KILL_GRACE = 5.0
# A listener says a job's start (without -v) once it has run this long, in
# seconds: a shorter job gets one log line, when it ends.
SAY_RUNNING_AFTER = 1.0

# Failure mail: the SMTP port when --smtp names none, seconds a send may take,
# mails waiting at most, and the variables holding the login (never flags).
SMTP_PORT = 25
MAIL_TIMEOUT = 10.0
MAIL_QUEUE_MAX = 100
SMTP_USER_ENV = "GLOW_SMTP_USER"
SMTP_PASSWORD_ENV = "GLOW_SMTP_PASSWORD"
SMTP_PASSWORD_FILE_ENV = "GLOW_SMTP_PASSWORD_FILE"
# Variables of the listener that jobs never see.
PRIVATE_ENV_PREFIX = "GLOW_SMTP_"


# Tubes that carry glowtools' own state next to a user's tube (name + tube).
PAUSED_PREFIX = "GLOW_PAUSED."
LISTENER_PREFIX = "GLOW_LISTENER."
# A job in GLOW_WAKE.<host>.<pid>, which every slot of that listener watches, ends
# an idle slot's wait so that it watches a tube that appeared; looked for this often.
WAKE_PREFIX = "GLOW_WAKE."
WAKE_CHECK = 0.25
# A listener replaces its status job in its GLOW_LISTENER tube at most this often.
PRESENCE_INTERVAL = 1.0
# glow-drain pauses a tube this long and renews the pause while it drains.
DRAIN_PAUSE = 10
# glow-stats and glow-peek read at most this many failure reports.
REPORT_SCAN_MAX = 10000


def is_internal_tube(tube: str) -> bool:
    """Tells whether a tube belongs to glowtools' own bookkeeping."""
    return tube.startswith(INTERNAL_PREFIX)
