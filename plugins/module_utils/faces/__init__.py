"""Layer ``faces``: the ``vmsan`` command and what the Ansible modules share.
They parse arguments, call the layers below and render the result; no
decision about the kernel is made here.

Private to the collection ``vmsan.network``.
"""
