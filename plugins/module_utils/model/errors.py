"""Errors of the vmsan core, each with the exit status the CLI maps it to.

Both faces (the ``vmsan`` command and the Ansible modules) render these the same
way: the message is complete and names the flag or parameter at fault.
"""

import os


class VmsanError(Exception):
    """A runtime failure: the input was fine but the host could not do it (exit 1)."""

    exit_code = 1


class InputError(VmsanError):
    """Bad input: names the parameter and the accepted form (exit 2).

    ``param`` is the neutral parameter name (``allowed_cidrs``); each face
    renders it in its own vocabulary (``--allowed-cidr`` or ``allowed_cidrs``).
    """

    exit_code = 2

    def __init__(self, param, message, accepted=None):
        self.param = param
        self.detail = message
        self.accepted = accepted
        super().__init__(self.render(param))

    def render(self, param_label):
        text = "%s: %s" % (param_label, self.detail)
        if self.accepted:
            text += " (accepted: %s)" % self.accepted
        return text


class NotFoundError(VmsanError):
    """The named VM does not exist (exit 2: the caller named something wrong)."""

    exit_code = 2


class ConflictError(VmsanError):
    """The request collides with something that exists (a port, a slot): exit 2.

    ``param``, when given, is the neutral name of the parameter whose value
    collides; each face renders it in its own vocabulary, as for InputError."""

    exit_code = 2

    def __init__(self, message, param=None):
        self.param = param
        self.detail = message
        super().__init__(message)

    def render(self, param_label):
        return "%s: %s" % (param_label, self.detail) if self.param else self.detail


class NotRootError(VmsanError):
    exit_code = 1


class KernelError(VmsanError, OSError):
    """The kernel refused a request, or did not answer it (exit 1). Made by
    the kernel adapters from the libraries' own errors (pyroute2's
    NetlinkError, python-iptables' IPTCError and XTablesError, OSError), so
    both faces print one line: what was being done, and why it failed.

    An OSError too, so code that handles system errors handles these.
    ``errno``: the kernel's error number (None when the library gave none);
    ``doing``: what was being done ("delete chain vmsan-web-out")."""

    def __init__(self, err, doing, reason=None):
        if reason is None:
            reason = os.strerror(err) if err and err < 4096 else "error %s" % err
        self.doing = doing
        self.message = "%s: %s" % (doing, reason)
        OSError.__init__(self, err, self.message)

    def __str__(self):
        return self.message
