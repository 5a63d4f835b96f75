"""Run shell-command jobs across a fleet of hosts through beanstalkd."""

__version__ = "0.1.0"
