"""Errors of the vmsan core, each with the exit status the CLI maps it to.

Both faces (the ``vmsan`` command and the Ansible modules) render these the same
way: the message is complete and names the flag or parameter at fault.
"""


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
    """The request collides with something that exists (a port, a slot): exit 2."""

    exit_code = 2


class NotRootError(VmsanError):
    exit_code = 1
